package e2eutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Tools are the binaries both end-to-end tests run.
type Tools struct {
	Imagegate string
	// ContainerdDir holds containerd and containerd-shim-runc-v2:
	// containerd finds its shim on PATH.
	ContainerdDir string
	Runc          string
	// Busybox must be statically linked: it is the whole of the images.
	Busybox string
	Crane   string
	Cosign  string
}

// ToolPaths reads the paths of a test's binaries from the environment and
// gathers what is wrong with them.
type ToolPaths struct {
	problems []string
}

// File returns the path in env, noting a problem when it is unset or names
// nothing.
func (tp *ToolPaths) File(env string) string {
	path := os.Getenv(env)
	tp.check(env, path)
	return path
}

// Dir returns the directory in env, noting a problem when it is unset or
// lacks one of files.
func (tp *ToolPaths) Dir(env string, files ...string) string {
	dir := os.Getenv(env)
	for _, f := range files {
		tp.check(env, filepath.Join(dir, f))
	}
	return dir
}

// Tools reads the paths of the binaries both tests run.
func (tp *ToolPaths) Tools() Tools {
	return Tools{
		Imagegate:     tp.File("E2E_IMAGEGATE"),
		ContainerdDir: tp.Dir("E2E_CONTAINERD_DIR", "containerd", "containerd-shim-runc-v2"),
		Runc:          tp.File("E2E_RUNC"),
		Busybox:       tp.File("E2E_BUSYBOX"),
		Crane:         tp.File("E2E_CRANE"),
		Cosign:        tp.File("E2E_COSIGN"),
	}
}

func (tp *ToolPaths) check(env, path string) {
	if path == "" {
		tp.problems = append(tp.problems, env+" is not set")
	} else if _, err := os.Stat(path); err != nil {
		tp.problems = append(tp.problems, fmt.Sprintf("%s: %v", env, err))
	}
}

// Err returns the problems noted, if any, naming the make target that
// builds the tools and sets their paths.
func (tp *ToolPaths) Err(target string) error {
	if len(tp.problems) == 0 {
		return nil
	}
	return errors.New("missing tools (run the test through `make " + target + "`, which builds them): " + strings.Join(tp.problems, "; "))
}
