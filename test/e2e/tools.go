// Package e2e runs imagegate against a real containerd, a real registry and
// real cosign signatures: the containers of its test are created through
// containerd's CRI, NRI calls imagegate, and runc runs what is allowed.
//
// The test itself is behind the build tag e2e (`make e2e`), which also
// builds and caches every binary it needs and passes their paths in the
// environment (see Tools). What it shares with the Docker Engine test
// (test/e2edocker) is in test/e2eutil.
package e2e

import "github.com/imagegate/imagegate/test/e2eutil"

// Tools are the binaries the end-to-end test runs.
type Tools = e2eutil.Tools

// ToolsFromEnv reads the paths that make e2e sets.
func ToolsFromEnv() (Tools, error) {
	var env e2eutil.ToolPaths
	t := env.Tools()
	return t, env.Err("e2e")
}
