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

import "github.com/imagegate/imagegate/test/e2eutil"

// Tools are the binaries the test runs. Its Runc must be 1.4 or newer:
// dockerd 29 asks for a time namespace.
type Tools struct {
	e2eutil.Tools
	// ImagegateRunc is the guard runtime, the engines' default runtime.
	ImagegateRunc string
	Dockerd       string
	Docker        string
}

// ToolsFromEnv reads the paths that make e2e-docker sets.
func ToolsFromEnv() (Tools, error) {
	var env e2eutil.ToolPaths
	t := Tools{
		Tools:         env.Tools(),
		ImagegateRunc: env.File("E2E_IMAGEGATE_RUNC"),
		Dockerd:       env.File("E2E_DOCKERD"),
		Docker:        env.File("E2E_DOCKER"),
	}
	return t, env.Err("e2e-docker")
}
