// Package depcheck fences the dependencies of the core packages: they
// return values and errors, and stay usable without the runtime protocol,
// metrics or logging; and dependencies point one way, cmd -> plugin ->
// cache -> verify -> policy.
package depcheck

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/imagegate/imagegate/"

func TestCoreDependencies(t *testing.T) {
	banned := []string{"github.com/containerd/nri", "github.com/prometheus/", "go.uber.org/zap"}
	tests := []struct {
		pkg    string
		banned []string
	}{
		{"policy", append([]string{module + "verify", module + "cache", module + "plugin", "github.com/google/go-containerregistry/pkg/v1/remote"}, banned...)},
		{"verify", append([]string{module + "cache", module + "plugin"}, banned...)},
		{"cache", append([]string{module + "plugin"}, banned...)},
	}
	for _, tt := range tests {
		t.Run(tt.pkg, func(t *testing.T) {
			out, err := exec.Command("go", "list", "-deps", module+tt.pkg).Output()
			if err != nil {
				t.Fatalf("go list: %v", err)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, b := range tt.banned {
					if strings.HasPrefix(dep, b) {
						t.Errorf("%s depends on %s", tt.pkg, dep)
					}
				}
			}
		})
	}
}

// TestGuardStandardLibraryOnly keeps imagegate-runc small: it starts on
// every runc call of a Docker node, so whatever it links, every container
// operation pays for.
func TestGuardStandardLibraryOnly(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", module+"cmd/imagegate-runc").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if dep != module+"cmd/imagegate-runc" {
			t.Errorf("imagegate-runc depends on %s", dep)
		}
	}
}
