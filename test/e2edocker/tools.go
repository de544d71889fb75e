// Package e2edocker runs imagegate on Docker Engine nodes: two dockerd
// engines, each with its own containerd, sockets and state, form a swarm on
// loopback (manager 127.0.0.1, worker 127.0.0.2); one imagegate serves each
// engine through dockerd's NRI, Docker's authorization plugin protocol and
// the imagegate-runc guard runtime; images built from a static busybox are
// signed by the real cosign CLI in a loopback registry.
//
// The test itself is behind the build tag e2edocker (`make e2e-docker`),
// which builds and caches every binary it needs and passes their paths in
// the environment (see Tools). Helpers shared with the containerd test are
// in test/e2eutil.
package e2edocker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Tools are the binaries the test runs.
type Tools struct {
	Imagegate string
	// ImagegateRunc is the guard runtime, the engines' default runtime.
	ImagegateRunc string
	// ContainerdDir holds containerd and containerd-shim-runc-v2.
	ContainerdDir string
	Dockerd       string
	Docker        string
	// Runc must be 1.4 or newer: dockerd 29 asks for a time namespace.
	Runc    string
	Busybox string
	Crane   string
	Cosign  string
}

// ToolsFromEnv reads the paths that make e2e-docker sets.
func ToolsFromEnv() (Tools, error) {
	t := Tools{
		Imagegate:     os.Getenv("E2E_IMAGEGATE"),
		ImagegateRunc: os.Getenv("E2E_IMAGEGATE_RUNC"),
		ContainerdDir: os.Getenv("E2E_CONTAINERD_DIR"),
		Dockerd:       os.Getenv("E2E_DOCKERD"),
		Docker:        os.Getenv("E2E_DOCKER"),
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
	check("E2E_IMAGEGATE_RUNC", t.ImagegateRunc)
	check("E2E_CONTAINERD_DIR", filepath.Join(t.ContainerdDir, "containerd"))
	check("E2E_CONTAINERD_DIR", filepath.Join(t.ContainerdDir, "containerd-shim-runc-v2"))
	check("E2E_DOCKERD", t.Dockerd)
	check("E2E_DOCKER", t.Docker)
	check("E2E_RUNC", t.Runc)
	check("E2E_BUSYBOX", t.Busybox)
	check("E2E_CRANE", t.Crane)
	check("E2E_COSIGN", t.Cosign)
	if len(problems) > 0 {
		return t, fmt.Errorf("missing tools (run the test through `make e2e-docker`, which builds them): %s", strings.Join(problems, "; "))
	}
	return t, nil
}
