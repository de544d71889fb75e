package policy

import (
	"fmt"
	"strings"
)

// Problem is one thing wrong with a policy directory.
type Problem struct {
	// File is the policy file, joined to the directory given to Load; the
	// directory itself when the problem is with the directory.
	File string
	// Line is 1-based; 0 when the problem concerns the whole file.
	Line int
	Msg  string
}

// String returns the problem as FILE:LINE: message, the form editors and
// CI logs link to its place.
func (p Problem) String() string {
	if p.Line == 0 {
		return p.File + ": " + p.Msg
	}
	return fmt.Sprintf("%s:%d: %s", p.File, p.Line, p.Msg)
}

// Error is every problem Load found, so that an operator fixes them in one
// round, in file and line order.
type Error struct {
	Problems []Problem
}

func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}
