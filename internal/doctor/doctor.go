// Package doctor checks that a node is set up for imagegate to protect it:
// that the containerd which answers on the configured address calls
// imagegate through NRI and refuses to create containers while it is down,
// that the policy loads, its keys are safe, its registries answer, and the
// clock can be trusted to judge scan ages.
package doctor

import (
	"context"
	"fmt"
	"slices"
	"strings"
)

// Status is the outcome of one check.
type Status int

const (
	OK Status = iota
	// Warn is a doubt that does not fail the node.
	Warn
	Fail
)

// Result is one line of the report.
type Result struct {
	Status Status
	// Check names what was checked, with what was found when it passed.
	Check string
	// Fix says what is wrong and what to do about it; empty when OK.
	Fix string
}

func (r Result) String() string {
	switch r.Status {
	case OK:
		return "OK  " + r.Check
	case Warn:
		return "WARN " + r.Check + ": " + r.Fix
	}
	return "FAIL " + r.Check + ": " + r.Fix
}

func ok(check string, args ...any) Result {
	return Result{Status: OK, Check: fmt.Sprintf(check, args...)}
}

func fail(check, fix string, args ...any) Result {
	return Result{Status: Fail, Check: check, Fix: fmt.Sprintf(fix, args...)}
}

func warn(check, fix string, args ...any) Result {
	return Result{Status: Warn, Check: check, Fix: fmt.Sprintf(fix, args...)}
}

// Config is what the checks need of imagegate's daemon config.
type Config struct {
	ContainerdAddress string
	NRISocket         string
	PolicyDir         string
}

// Run runs every check and returns their results in report order.
func Run(ctx context.Context, cfg Config) []Result {
	var rs []Result
	rs = append(rs, checkContainerd(ctx, cfg)...)
	rs = append(rs, checkPolicy(ctx, cfg.PolicyDir)...)
	rs = append(rs, checkClock(ctx))
	return rs
}

// Passed reports whether no check failed.
func Passed(rs []Result) bool {
	return !slices.ContainsFunc(rs, func(r Result) bool { return r.Status == Fail })
}

// quote joins names for a message.
func quote(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
