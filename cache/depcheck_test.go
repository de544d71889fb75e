package cache_test

import (
	"go/build"
	"strings"
	"testing"
)

// The plugin logs and counts; the cache only returns values, so it must not
// reach for the runtime protocol, metrics or logging.
func TestImportsNoNRIPrometheusOrZap(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range pkg.Imports {
		for _, banned := range []string{"github.com/containerd/nri", "github.com/prometheus/", "go.uber.org/zap"} {
			if strings.HasPrefix(imp, banned) {
				t.Errorf("cache imports %s", imp)
			}
		}
	}
}
