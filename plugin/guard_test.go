package plugin

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// askGuard asks the guard socket about container id as imagegate-runc
// does and returns the answer line.
func askGuard(t *testing.T, sock, id string) string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	must(t, c.SetDeadline(time.Now().Add(5*time.Second)))
	if _, err := fmt.Fprintf(c, "admit %s\n", id); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSuffix(line, "\n")
}

func TestGuardAnswers(t *testing.T) {
	e := newEnv(t)
	sock := e.cfg.Guard.Socket
	signed := e.push("shop/api:1.4", "ci", "staging")
	unsigned := e.push("shop/unsigned:1")
	const admitted, refused, exempt = "c0ffee01", "c0ffee02", "c0ffee03"
	must(t, e.p.admissions.Admit(admitted, e.image("shop/api:1.4"), signed.DigestStr()))
	// Admitted while a looser policy was in force, say.
	must(t, e.p.admissions.Admit(refused, e.image("shop/unsigned:1"), unsigned.DigestStr()))
	// An exempt image needs no digest, so none may have been recorded.
	must(t, e.p.admissions.Admit(exempt, e.image("pause:3.10"), ""))

	for _, tc := range []struct {
		name, id, want string
	}{
		{name: "admitted, signed", id: admitted, want: "allow"},
		{name: "exempt without a digest", id: exempt, want: "allow"},
		{
			name: "admitted, but fails the policy in force",
			id:   refused,
			want: fmt.Sprintf(`deny image %s (%s) denied by rule "prod": signatures: no signer verified, rule needs 2 of ci, scanner, staging; `+
				`required signer ci did not sign; missing ci (no signature), scanner (no signature), staging (no signature)`,
				e.image("shop/unsigned:1"), unsigned.DigestStr()),
		},
		{
			name: "never admitted",
			id:   "deadbeef",
			want: "deny imagegate has no record of this container (it was not created through NRI or the Engine API while imagegate was running)",
		},
		{name: "not a container ID", id: "../../etc/passwd", want: `deny invalid container ID "../../etc/passwd"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := askGuard(t, sock, tc.id); got != tc.want {
				t.Errorf("answer\n got %s\nwant %s", got, tc.want)
			}
		})
	}

	// Every answer is a decision in the audit trail.
	logged := e.logs.FilterMessage("decision").FilterField(zap.String("event", "runc create")).All()
	if len(logged) != 5 {
		t.Fatalf("%d runc create decisions logged, want 5", len(logged))
	}
	f := logged[0].ContextMap()
	if f["container"] != admitted || f["digest"] != signed.DigestStr() || f["rule"] != "prod" || f["verdict"] != "allow" {
		t.Errorf("logged %v", f)
	}

	t.Run("a stricter policy applies to a restart", func(t *testing.T) {
		e.writePolicy("50-rules.yaml", strings.Replace(rulesPolicy, "threshold: 2", "threshold: 3", 1))
		must(t, e.p.Reload())
		want := fmt.Sprintf(`deny image %s (%s) denied by rule "prod": signatures: 2 distinct signers verified (ci, staging), `+
			`rule needs 3 of ci, scanner, staging; missing scanner (no signature)`, e.image("shop/api:1.4"), signed.DigestStr())
		if got := askGuard(t, sock, admitted); got != want {
			t.Errorf("answer\n got %s\nwant %s", got, want)
		}
	})

	t.Run("an exempt image without a digest once its rule needs evidence", func(t *testing.T) {
		e.writePolicy("50-rules.yaml", strings.Replace(rulesPolicy, `images: ["HOST/pause"]
    allow: true`, `images: ["HOST/pause"]
    signatures:
      threshold: 1
      signers: [ci]`, 1))
		must(t, e.p.Reload())
		want := "deny cannot establish the image digest of container c0ffee03: none was recorded when it was admitted"
		if got := askGuard(t, sock, exempt); got != want {
			t.Errorf("answer\n got %s\nwant %s", got, want)
		}
	})

	t.Run("a corrupt record is refused", func(t *testing.T) {
		dir := filepath.Join(e.cfg.StateDir, "admissions")
		for id, content := range map[string]string{
			"corrupt1": "{not json",
			"corrupt2": fmt.Sprintf(`{"id":"someone-else","image":%q,"digest":%q}`, e.image("shop/api:1.4"), signed.DigestStr()),
			"corrupt3": fmt.Sprintf(`{"id":"corrupt3","image":%q,"digest":"sha256:abc"}`, e.image("shop/api:1.4")),
			"corrupt4": "",
		} {
			must(t, os.WriteFile(filepath.Join(dir, id), []byte(content), 0o600))
			got := askGuard(t, sock, id)
			if !strings.HasPrefix(got, "deny imagegate's record of this container is corrupt") {
				t.Errorf("%s: answer %s", id, got)
			}
			if _, _, ok := e.p.admissions.Lookup(id); ok {
				t.Errorf("%s: Lookup found it", id)
			}
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		c, err := net.Dial("unix", sock)
		must(t, err)
		defer c.Close()
		fmt.Fprint(c, "hello\n")
		line, _ := bufio.NewReader(c).ReadString('\n')
		if line != "deny bad request \"hello\\n\"\n" {
			t.Errorf("answer %q", line)
		}
	})
}

func TestGuardSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "ig")
	must(t, err)
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "run", "guard.sock")

	// A socket left by a killed imagegate is replaced.
	must(t, os.MkdirAll(filepath.Dir(sock), 0o700))
	old, err := net.Listen("unix", sock)
	must(t, err)
	old.(*net.UnixListener).SetUnlinkOnClose(false)
	old.Close()

	e := newEnv(t)
	cfg := e.cfg
	cfg.Guard.Socket = sock
	cfg.NRI.Socket = filepath.Join(dir, "no-runtime.sock")
	p, err := New(cfg, zap.NewNop())
	must(t, err)
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, "the guard socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	fi, err := os.Stat(sock)
	must(t, err)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", fi.Mode().Perm())
	}
	if got := askGuard(t, sock, "abc"); !strings.HasPrefix(got, "deny imagegate has no record") {
		t.Errorf("answer %s", got)
	}
	cancel()
	must(t, <-done)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the socket outlives imagegate: %v", err)
	}

	// Any other file is not ours to remove.
	must(t, os.WriteFile(sock, []byte("x"), 0o600))
	if err := p.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "exists and is not a socket") {
		t.Errorf("Run: %v", err)
	}
}

func TestAdmissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "admissions")
	a, err := OpenAdmissions(dir)
	must(t, err)
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	must(t, a.Admit("one", "registry.example/app:1", digest))

	t.Run("persisted across opens", func(t *testing.T) {
		b, err := OpenAdmissions(dir)
		must(t, err)
		image, d, ok := b.Lookup("one")
		if !ok || image != "registry.example/app:1" || d != digest {
			t.Errorf("Lookup = %q, %q, %v", image, d, ok)
		}
		if _, _, ok := b.Lookup("two"); ok {
			t.Error("found a container never admitted")
		}
	})

	t.Run("refused input", func(t *testing.T) {
		for _, tc := range []struct{ id, image, digest string }{
			{"../escape", "x/y:1", digest},
			{".hidden", "x/y:1", digest},
			{"a/b", "x/y:1", digest},
			{"", "x/y:1", digest},
			{"ok", "", digest},
			{"ok", "x/y:1", "sha256:short"},
			{"ok", "x/y:1", "md5:0123"},
		} {
			if err := a.Admit(tc.id, tc.image, tc.digest); err == nil {
				t.Errorf("Admit(%q, %q, %q) accepted", tc.id, tc.image, tc.digest)
			}
		}
		entries, _ := os.ReadDir(filepath.Dir(dir))
		if len(entries) != 1 {
			t.Errorf("files beside the directory: %v", entries)
		}
	})

	t.Run("admitting again renews the age", func(t *testing.T) {
		path := filepath.Join(dir, "one")
		old := time.Now().Add(-admissionMaxAge + time.Hour)
		must(t, os.Chtimes(path, old, old))
		must(t, a.Admit("one", "registry.example/app:1", digest))
		fi, err := os.Stat(path)
		must(t, err)
		if time.Since(fi.ModTime()) > time.Minute {
			t.Errorf("mtime %v not renewed", fi.ModTime())
		}
	})

	t.Run("expired records are not found, and dropped on open", func(t *testing.T) {
		must(t, a.Admit("stale", "registry.example/app:1", digest))
		old := time.Now().Add(-admissionMaxAge - time.Hour)
		must(t, os.Chtimes(filepath.Join(dir, "stale"), old, old))
		if _, _, ok := a.Lookup("stale"); ok {
			t.Error("an expired record was found")
		}
		tmp := filepath.Join(dir, tmpPrefix+"leftover")
		must(t, os.WriteFile(tmp, []byte("{"), 0o600))
		must(t, os.Chtimes(tmp, old, old))
		if _, err := OpenAdmissions(dir); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"stale", tmpPrefix + "leftover"} {
			if _, err := os.Stat(filepath.Join(dir, f)); !os.IsNotExist(err) {
				t.Errorf("%s not dropped: %v", f, err)
			}
		}
	})

	t.Run("bounded: the least recently admitted go first", func(t *testing.T) {
		dir := t.TempDir()
		a, err := OpenAdmissions(dir)
		must(t, err)
		a.max = 20
		base := time.Now().Add(-time.Hour)
		for i := range 20 {
			id := fmt.Sprintf("c%02d", i)
			must(t, a.Admit(id, "registry.example/app:1", digest))
			at := base.Add(time.Duration(i) * time.Second)
			must(t, os.Chtimes(filepath.Join(dir, id), at, at))
		}
		must(t, a.Admit("c20", "registry.example/app:1", digest))
		a.pruneWG.Wait()
		entries, _ := os.ReadDir(dir)
		if len(entries) != 18 {
			t.Errorf("%d records kept, want 18", len(entries))
		}
		for _, id := range []string{"c00", "c01", "c02"} {
			if _, _, ok := a.Lookup(id); ok {
				t.Errorf("%s kept", id)
			}
		}
		for _, id := range []string{"c03", "c19", "c20"} {
			if _, _, ok := a.Lookup(id); !ok {
				t.Errorf("%s dropped", id)
			}
		}
	})

	t.Run("forget", func(t *testing.T) {
		must(t, a.Forget("one"))
		must(t, a.Forget("one"))
		if _, _, ok := a.Lookup("one"); ok {
			t.Error("found after Forget")
		}
	})

	t.Run("nil keeps nothing", func(t *testing.T) {
		var none *Admissions
		must(t, none.Admit("x", "y/z:1", digest))
		if _, _, ok := none.Lookup("x"); ok {
			t.Error("nil found something")
		}
	})
}

// TestGuardWithImagegateRunc runs the real imagegate-runc against the
// guard, so that the two ends of the protocol cannot drift apart.
func TestGuardWithImagegateRunc(t *testing.T) {
	if testing.Short() {
		t.Skip("builds imagegate-runc")
	}
	e := newEnv(t)
	bin := filepath.Join(e.dir, "imagegate-runc")
	build := exec.Command("go", "build", "-o", bin, "../cmd/imagegate-runc")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	runc := filepath.Join(e.dir, "runc")
	ran := filepath.Join(e.dir, "ran")
	must(t, os.WriteFile(runc, []byte("#!/bin/sh\necho \"$@\" > "+ran+"\n"), 0o755))
	cfg := filepath.Join(e.dir, "imagegate.yaml")
	must(t, os.WriteFile(cfg, []byte("guard:\n  socket: "+e.cfg.Guard.Socket+"\n  runc: "+runc+"\n"), 0o644))

	signed := e.push("shop/api:1.4", "ci", "staging")
	unsigned := e.push("shop/unsigned:1")
	must(t, e.p.admissions.Admit("signed", e.image("shop/api:1.4"), signed.DigestStr()))
	must(t, e.p.admissions.Admit("unsigned", e.image("shop/unsigned:1"), unsigned.DigestStr()))

	logFile := filepath.Join(e.dir, "log.json")
	create := func(id string) (int, string) {
		t.Helper()
		os.Remove(ran)
		os.Remove(logFile)
		cmd := exec.Command(bin, "--root", "/run/r", "--log", logFile, "--log-format", "json", "create", "--bundle", "/b", id)
		cmd.Env = []string{"PATH=/usr/bin:/bin", "IMAGEGATE_CONFIG=" + cfg}
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		var msg struct{ Level, Msg string }
		if b, err := os.ReadFile(logFile); err == nil {
			must(t, json.Unmarshal(b, &msg))
		}
		if _, err := os.Stat(ran); (err == nil) != (code == 0) {
			t.Errorf("%s: exit %d, but runc ran: %v", id, code, err == nil)
		}
		return code, msg.Msg
	}

	if code, msg := create("signed"); code != 0 {
		t.Errorf("signed: exit %d: %s", code, msg)
	}
	want := fmt.Sprintf(`imagegate: container unsigned was not admitted: image %s (%s) denied by rule "prod": `+
		`signatures: no signer verified, rule needs 2 of ci, scanner, staging; required signer ci did not sign; `+
		`missing ci (no signature), scanner (no signature), staging (no signature)`, e.image("shop/unsigned:1"), unsigned.DigestStr())
	if code, msg := create("unsigned"); code != 1 || msg != want {
		t.Errorf("unsigned: exit %d\n got %s\nwant %s", code, msg, want)
	}
	want = "imagegate: container stranger was not admitted: imagegate has no record of this container " +
		"(it was not created through NRI or the Engine API while imagegate was running)"
	if code, msg := create("stranger"); code != 1 || msg != want {
		t.Errorf("stranger: exit %d\n got %s\nwant %s", code, msg, want)
	}
}
