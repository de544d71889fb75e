package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
)

func TestDoctorExitStatus(t *testing.T) {
	if code, _, stderr := runCLI("doctor", "--config", filepath.Join(t.TempDir(), "absent.yaml")); code != exitError {
		t.Errorf("a named config that does not exist: exit %d, want %d (%s)", code, exitError, stderr)
	}
	if code, _, _ := runCLI("doctor", "extra"); code != exitError {
		t.Errorf("an extra argument: exit %d, want %d", code, exitError)
	}

	// No containerd and an invalid policy: each shows as a failed check,
	// and the clock is still judged.
	c := newCLI(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	cfg := filepath.Join(dir, "imagegate.yaml")
	writeFile(t, filepath.Join(c.dir, "zz-broken.yaml"), "rules: [{name: x}]\n")
	writeFile(t, cfg, fmt.Sprintf("policyDir: %s\ncontainerd:\n  address: %s\n", c.dir, sock))
	code, stdout, _ := runCLI("doctor", "--config", cfg)
	if code != exitDenied {
		t.Errorf("exit %d, want %d", code, exitDenied)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	for i, prefix := range []string{
		"FAIL containerd: no answer on " + sock,
		"FAIL policy " + c.dir + ": does not load (",
	} {
		if i >= len(lines) || !strings.HasPrefix(lines[i], prefix) {
			t.Errorf("line %d: want it to start with %q; doctor said\n%s", i+1, prefix, stdout)
		}
	}
	if last := strings.Fields(lines[len(lines)-1]); len(last) < 2 || !strings.HasPrefix(last[1], "clock") {
		t.Errorf("last line %q does not judge the clock", last)
	}
}
