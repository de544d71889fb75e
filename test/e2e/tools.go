// Package e2e runs imagegate against a real containerd, a real registry and
// real cosign signatures: the containers of its test are created through
// containerd's CRI, NRI calls imagegate, and runc runs what is allowed.
//
// The test itself is behind the build tag e2e (`make e2e`), which also
// builds and caches every binary it needs and passes their paths in the
// environment (see Tools). What it shares with the Docker Engine test
// (test/e2edocker) is in test/e2eutil.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Tools are the binaries the end-to-end test runs.
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

// ToolsFromEnv reads the paths that make e2e sets.
func ToolsFromEnv() (Tools, error) {
	t := Tools{
		Imagegate:     os.Getenv("E2E_IMAGEGATE"),
		ContainerdDir: os.Getenv("E2E_CONTAINERD_DIR"),
		Runc:          os.Getenv("E2E_RUNC"),
		Busybox:       os.Getenv("E2E_BUSYBOX"),
		Crane:         os.Getenv("E2E_CRANE"),
		Cosign:        os.Getenv("E2E_COSIGN"),
	}
	var problems []string
	check := func(env, path string) {
		if path == "" {
			problems = append(problems, env+" is not set")
		} else if _, err := os.Stat(path); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", env, err))
		}
	}
	check("E2E_IMAGEGATE", t.Imagegate)
	check("E2E_CONTAINERD_DIR", filepath.Join(t.ContainerdDir, "containerd"))
	check("E2E_CONTAINERD_DIR", filepath.Join(t.ContainerdDir, "containerd-shim-runc-v2"))
	check("E2E_RUNC", t.Runc)
	check("E2E_BUSYBOX", t.Busybox)
	check("E2E_CRANE", t.Crane)
	check("E2E_COSIGN", t.Cosign)
	if len(problems) > 0 {
		return t, fmt.Errorf("missing tools (run the test through `make e2e`, which builds them): %s", strings.Join(problems, "; "))
	}
	return t, nil
}
