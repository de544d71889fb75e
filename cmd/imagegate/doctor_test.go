package main

import (
	"fmt"
	"os"
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

	// No containerd, no daemon to ask and an invalid policy: each shows
	// as a check, and the clock is still judged.
	c := newCLI(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "containerd.sock")
	cfg := filepath.Join(dir, "imagegate.yaml")
	writeFile(t, filepath.Join(c.dir, "zz-broken.yaml"), "rules: [{name: x}]\n")
	writeFile(t, cfg, fmt.Sprintf("policyDir: %s\nruntime: containerd\ncontainerd:\n  address: %s\nmetrics:\n  listen: \"\"\n", c.dir, sock))
	code, stdout, _ := runCLI("doctor", "--config", cfg)
	if code != exitDenied {
		t.Errorf("exit %d, want %d", code, exitDenied)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	for i, prefix := range []string{
		"FAIL containerd: no answer on " + sock,
		"WARN imagegate daemon: cannot tell whether imagegate runs and is connected: metrics.listen is empty in its config",
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

func TestDoctorDockerConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "imagegate.yaml")
	// No dockerd answers here: the operator's file is daemonJSON.
	writeFile(t, cfg, fmt.Sprintf("docker:\n  address: unix://%s\n  authzPlugin: gate\nnri:\n  socket: /run/nri.sock\n", filepath.Join(dir, "absent.sock")))
	old := daemonJSON
	t.Cleanup(func() { daemonJSON = old })
	daemonJSON = filepath.Join(dir, "daemon.json")

	code, stdout, stderr := runCLI("doctor", "--docker-config", "--config", cfg)
	want := `{
  "authorization-plugins": [
    "gate"
  ],
  "default-runtime": "imagegate",
  "nri-opts": {
    "enable": true,
    "socket-path": "/run/nri.sock"
  },
  "runtimes": {
    "imagegate": {
      "path": "/usr/bin/imagegate-runc"
    }
  }
}
`
	if code != exitOK || stdout != want || stderr != "" {
		t.Errorf("no daemon.json: exit %d, stdout\n%s\nstderr %q", code, stdout, stderr)
	}

	operator := `{"default-runtime": "nvidia", "log-driver": "journald"}`
	writeFile(t, daemonJSON, operator)
	code, stdout, stderr = runCLI("doctor", "--docker-config", "--config", cfg)
	wantErr := "imagegate doctor: " + daemonJSON + `: "default-runtime" was "nvidia"; imagegate needs "imagegate" (imagegate-runc hands every runc call over to guard.runc: set guard.runc in imagegate's config to that runtime's path to keep using it)` + "\n"
	if code != exitOK || !strings.Contains(stdout, `"log-driver": "journald"`) || !strings.Contains(stdout, `"default-runtime": "imagegate"`) || stderr != wantErr {
		t.Errorf("conflicting default-runtime: exit %d, stdout\n%s\nstderr %q, want %q", code, stdout, stderr, wantErr)
	}
	if data, err := os.ReadFile(daemonJSON); err != nil || string(data) != operator {
		t.Errorf("daemon.json changed: %q, %v", data, err)
	}

	writeFile(t, daemonJSON, "{")
	if code, _, stderr := runCLI("doctor", "--docker-config", "--config", cfg); code != exitError || !strings.Contains(stderr, "does not parse") {
		t.Errorf("broken daemon.json: exit %d, stderr %q", code, stderr)
	}
}
