package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	const id = "4f6c2b9e0d1a"
	for _, tc := range []struct {
		name string
		args string
		want invocation
	}{
		{
			name: "containerd's runc shim creating a docker container",
			args: "--root /var/run/docker/runtime-runc/moby --log /run/containerd/io.containerd.runtime.v2.task/moby/" + id + "/log.json --log-format json create --bundle /run/containerd/io.containerd.runtime.v2.task/moby/" + id + " --pid-file /run/containerd/io.containerd.runtime.v2.task/moby/" + id + "/init.pid " + id,
			want: invocation{command: "create", id: id, log: "/run/containerd/io.containerd.runtime.v2.task/moby/" + id + "/log.json", logFormat: "json"},
		},
		{
			name: "with systemd cgroups, a console socket and no pivot",
			args: "--root /run/r --log /l.json --log-format json --systemd-cgroup create --bundle /b --pid-file /p --console-socket /tmp/pty.sock --no-pivot " + id,
			want: invocation{command: "create", id: id, log: "/l.json", logFormat: "json"},
		},
		{
			name: "flags with = and a single dash",
			args: "-root=/run/r --log=/l.json -log-format=json --debug create -b /b --pid-file=/p --preserve-fds 2 " + id,
			want: invocation{command: "create", id: id, log: "/l.json", logFormat: "json"},
		},
		{
			name: "the ID before its flags",
			args: "--log /l create " + id + " --bundle /b",
			want: invocation{command: "create", id: id, log: "/l"},
		},
		{
			name: "run",
			args: "--root /r run --detach --bundle /b " + id,
			want: invocation{command: "run", id: id},
		},
		{
			name: "restore from a checkpoint",
			args: "--root /r --log /l.json --log-format json restore --detach --pid-file /p --no-subreaper --bundle /b --image-path /cp --work-path /w " + id,
			want: invocation{command: "restore", id: id, log: "/l.json", logFormat: "json"},
		},
		{
			name: "an unknown global flag with a value",
			args: "--newflag value create --bundle /b " + id,
			want: invocation{command: "create", id: id},
		},
		{
			name: "an ID after --",
			args: "create --bundle /b -- -odd",
			want: invocation{command: "create", id: "-odd"},
		},
		{
			name: "create without an ID",
			args: "create --bundle /b",
			want: invocation{command: "create"},
		},
		{
			name: "a log path named like a command",
			args: "--log create --log-format json start " + id,
			want: invocation{command: "start", log: "create", logFormat: "json"},
		},
		{name: "start", args: "--root /r --log /l --log-format json start " + id, want: invocation{command: "start", log: "/l", logFormat: "json"}},
		{name: "exec", args: "--root /r exec --process /tmp/p.json --detach --pid-file /p " + id, want: invocation{command: "exec"}},
		{name: "delete", args: "--root /r delete --force " + id, want: invocation{command: "delete"}},
		{name: "state", args: "--root /r state " + id, want: invocation{command: "state"}},
		{name: "features", args: "features", want: invocation{command: "features"}},
		{name: "version", args: "--version"},
		{name: "nothing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := parseArgs(strings.Fields(tc.args))
			if got != tc.want {
				t.Errorf("parseArgs(%s)\n got %+v\nwant %+v", tc.args, got, tc.want)
			}
		})
	}
}

func TestReadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		content string // "" for no file
		want    config
		wantErr string
	}{
		{name: "no file", want: config{defaultSocket, defaultRunc}},
		{
			name: "as packaged: everything commented out",
			content: `# /etc/imagegate/imagegate.yaml
#policyDir: /etc/imagegate/policy.d
#guard:
#  socket: /run/imagegate/guard.sock
#  runc: runc
`,
			want: config{defaultSocket, defaultRunc},
		},
		{
			name: "both keys among others",
			content: `policyDir: /etc/imagegate/policy.d
docker:
  address: unix:///run/docker.sock
  socket: /not/this
guard:
  # the real one
  socket: "/run/ig/g.sock"   # quoted
  runc: '/usr/sbin/runc'
cache:
  size: 10
runc: /not/this/either
`,
			want: config{"/run/ig/g.sock", "/usr/sbin/runc"},
		},
		{
			name:    "one key, four spaces",
			content: "guard:\n    runc: /opt/runc # comment\nlog:\n  level: info\n",
			want:    config{defaultSocket, "/opt/runc"},
		},
		{
			name:    "a nested mapping is not ours",
			content: "guard:\n  other:\n    socket: /nested\n  socket: /top\n",
			want:    config{"/top", defaultRunc},
		},
		{name: "empty", content: "guard:\n  runc: \"\"\n", wantErr: `guard.runc must not be empty`},
		{name: "flow mapping", content: "guard: {runc: /x}\n", wantErr: `guard: write its keys on their own lines`},
		{name: "unterminated", content: "guard:\n  socket: \"/x\n", wantErr: `guard.socket: unterminated quote`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "_")+".yaml")
			if tc.content != "" {
				if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := readConfig(path)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case got != tc.want:
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// buildGuard builds imagegate-runc once per test binary, as it is
// shipped: static, which spares the dynamic loader on every runc call.
var buildGuard = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "igrunc")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "imagegate-runc")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := m.Run()
	if bin, err := buildGuard(); err == nil {
		os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// guardEnv is imagegate-runc with a config naming a fake runc, which
// records its arguments, and a fake imagegate on the guard socket.
type guardEnv struct {
	t      *testing.T
	bin    string
	dir    string
	sock   string
	record string
	env    []string
	// answers maps a container ID to the answer line; absent IDs are
	// denied as unknown.
	answers map[string]string
	mu      sync.Mutex
	asked   []string
}

func newGuardEnv(t *testing.T) *guardEnv {
	t.Helper()
	bin, err := buildGuard()
	if err != nil {
		t.Fatal(err)
	}
	// Unix socket paths must stay under 108 bytes; t.TempDir() is long.
	dir, err := os.MkdirTemp("", "ig")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	g := &guardEnv{t: t, bin: bin, dir: dir, sock: filepath.Join(dir, "guard.sock"),
		record: filepath.Join(dir, "argv"), answers: map[string]string{}}
	runc := filepath.Join(dir, "runc")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " + g.record + "\nexit 0\n"
	must(t, os.WriteFile(runc, []byte(script), 0o755))
	cfg := filepath.Join(dir, "imagegate.yaml")
	must(t, os.WriteFile(cfg, []byte("guard:\n  socket: "+g.sock+"\n  runc: "+runc+"\n"), 0o644))
	g.env = []string{"PATH=/usr/bin:/bin", "IMAGEGATE_CONFIG=" + cfg}
	return g
}

// serve starts the fake imagegate.
func (g *guardEnv) serve() {
	ln, err := net.Listen("unix", g.sock)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				id := strings.TrimSuffix(strings.TrimPrefix(line, "admit "), "\n")
				g.mu.Lock()
				g.asked = append(g.asked, id)
				answer, ok := g.answers[id]
				g.mu.Unlock()
				if !ok {
					answer = "deny imagegate has no record of this container"
				}
				fmt.Fprintf(c, "%s\n", answer)
			}()
		}
	}()
}

// run runs imagegate-runc with args; it returns the exit status, stderr,
// and the arguments the fake runc got (nil when it did not run).
func (g *guardEnv) run(args ...string) (int, string, []string) {
	g.t.Helper()
	os.Remove(g.record)
	cmd := exec.Command(g.bin, args...)
	cmd.Env = g.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		g.t.Fatal(err)
	}
	var got []string
	if b, err := os.ReadFile(g.record); err == nil {
		got = []string{}
		if s := strings.TrimSuffix(string(b), "\n"); s != "" {
			got = strings.Split(s, "\n")
		}
	}
	return code, stderr.String(), got
}

// runcLog reads the runc JSON log lines in path.
func runcLog(t *testing.T, path string) []map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]string
	for l := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		var m map[string]string
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		lines = append(lines, m)
	}
	return lines
}

func TestGuard(t *testing.T) {
	const admitted, refused = "a1b2c3", "d4e5f6"
	g := newGuardEnv(t)
	g.answers[admitted] = "allow"
	g.answers[refused] = `deny image 127.0.0.1:5000/shop/api:1 (sha256:9f) denied by rule "prod": signatures: no signer verified`
	g.serve()
	logFile := filepath.Join(g.dir, "log.json")
	create := func(id string) []string {
		return []string{"--root", "/run/r", "--log", logFile, "--log-format", "json", "create",
			"--bundle", "/run/b", "--pid-file", "/run/b/init.pid", id}
	}

	t.Run("everything but a create is passed through untouched", func(t *testing.T) {
		for _, args := range [][]string{
			{"--version"},
			{"features"},
			{"--root", "/run/r", "--log", logFile, "--log-format", "json", "start", refused},
			{"--root", "/run/r", "--log", logFile, "--log-format", "json", "delete", "--force", refused},
			{"--root", "/run/r", "exec", "--process", "/tmp/p.json", "--detach", refused},
			{"arg with spaces", "--weird=a b"},
		} {
			code, stderr, got := g.run(args...)
			if code != 0 || !reflect.DeepEqual(got, args) {
				t.Errorf("%q: exit %d, runc got %q, stderr %s", args, code, got, stderr)
			}
		}
		g.mu.Lock()
		defer g.mu.Unlock()
		if len(g.asked) != 0 {
			t.Errorf("imagegate was asked about %q", g.asked)
		}
	})

	t.Run("an admitted create runs runc", func(t *testing.T) {
		args := create(admitted)
		code, stderr, got := g.run(args...)
		if code != 0 || !reflect.DeepEqual(got, args) {
			t.Errorf("exit %d, runc got %q, stderr %s", code, got, stderr)
		}
	})

	t.Run("run and restore are creates too", func(t *testing.T) {
		for _, args := range [][]string{
			{"--root", "/run/r", "run", "--detach", "--bundle", "/b", refused},
			{"--root", "/run/r", "restore", "--detach", "--image-path", "/cp", "--bundle", "/b", refused},
		} {
			code, _, got := g.run(args...)
			if code != 1 || got != nil {
				t.Errorf("%q: exit %d, runc ran with %q", args, code, got)
			}
		}
	})

	t.Run("a refused create says why in runc's log", func(t *testing.T) {
		os.Remove(logFile)
		code, stderr, got := g.run(create(refused)...)
		if code != 1 || got != nil {
			t.Fatalf("exit %d, runc ran with %q", code, got)
		}
		want := `imagegate: container d4e5f6 was not admitted: image 127.0.0.1:5000/shop/api:1 (sha256:9f) denied by rule "prod": signatures: no signer verified`
		lines := runcLog(t, logFile)
		if len(lines) != 1 || lines[0]["level"] != "error" || lines[0]["msg"] != want {
			t.Errorf("log %q, want one error with msg %q", lines, want)
		}
		if _, err := time.Parse(time.RFC3339Nano, lines[0]["time"]); err != nil {
			t.Errorf("time: %v", err)
		}
		if strings.TrimSpace(stderr) != want {
			t.Errorf("stderr %q", stderr)
		}
	})

	t.Run("an unknown container is refused", func(t *testing.T) {
		os.Remove(logFile)
		code, _, got := g.run(create("never-seen")...)
		want := "imagegate: container never-seen was not admitted: imagegate has no record of this container"
		if lines := runcLog(t, logFile); code != 1 || got != nil || lines[0]["msg"] != want {
			t.Errorf("exit %d, runc ran with %q, log %q", code, got, lines)
		}
	})

	t.Run("text log format", func(t *testing.T) {
		textLog := filepath.Join(g.dir, "log.txt")
		code, _, _ := g.run("--log", textLog, "create", "--bundle", "/b", refused)
		b, _ := os.ReadFile(textLog)
		if code != 1 || !strings.Contains(string(b), `level=error msg="imagegate: container d4e5f6 was not admitted: `) {
			t.Errorf("exit %d, log %s", code, b)
		}
	})
}

func TestGuardWithoutImagegate(t *testing.T) {
	g := newGuardEnv(t) // nothing serves the socket
	logFile := filepath.Join(g.dir, "log.json")
	args := []string{"--root", "/run/r", "--log", logFile, "--log-format", "json", "create", "--bundle", "/b", "abc"}

	check := func(t *testing.T, wantErr string) {
		t.Helper()
		os.Remove(logFile)
		code, _, got := g.run(args...)
		if code != 1 || got != nil {
			t.Fatalf("exit %d, runc ran with %q", code, got)
		}
		want := "imagegate: no answer from imagegate on " + g.sock + " (is imagegate running?): "
		if lines := runcLog(t, logFile); !strings.HasPrefix(lines[0]["msg"], want) || !strings.Contains(lines[0]["msg"], wantErr) {
			t.Errorf("log %q, want a msg starting %q, with %q", lines, want, wantErr)
		}
	}
	t.Run("no socket", func(t *testing.T) { check(t, "no such file or directory") })

	t.Run("a socket nobody listens on", func(t *testing.T) {
		ln, err := net.Listen("unix", g.sock)
		must(t, err)
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
		defer os.Remove(g.sock)
		check(t, "connection refused")
	})

	t.Run("a socket that never answers", func(t *testing.T) {
		ln, err := net.Listen("unix", g.sock)
		must(t, err)
		defer ln.Close()
		var conns []net.Conn
		var mu sync.Mutex
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range conns {
				c.Close()
			}
		}()
		start := time.Now()
		check(t, "i/o timeout")
		if took := time.Since(start); took > guardTimeout+2*time.Second {
			t.Errorf("took %v", took)
		}
	})

	t.Run("still passes everything else through", func(t *testing.T) {
		code, _, got := g.run("--root", "/run/r", "delete", "abc")
		if code != 0 || len(got) != 4 {
			t.Errorf("exit %d, runc got %q", code, got)
		}
	})
}

func TestGuardRefusesItselfAsRunc(t *testing.T) {
	g := newGuardEnv(t)
	cfg := filepath.Join(g.dir, "self.yaml")
	must(t, os.WriteFile(cfg, []byte("guard:\n  runc: "+g.bin+"\n"), 0o644))
	g.env = []string{"PATH=/usr/bin:/bin", "IMAGEGATE_CONFIG=" + cfg}
	code, stderr, _ := g.run("--version")
	if code != 1 || !strings.Contains(stderr, "is imagegate-runc itself") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

// BenchmarkGuardPassThrough is what imagegate-runc adds to a runc call it
// passes through (every call but a create): `imagegate-runc --version`
// handing over to /bin/true, against running /bin/true directly, in
// alternating batches so both see the same machine noise. The ratio is
// guard/direct.
func BenchmarkGuardPassThrough(b *testing.B) {
	bin, err := buildGuard()
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	cfg := filepath.Join(dir, "imagegate.yaml")
	if err := os.WriteFile(cfg, []byte("guard:\n  runc: /bin/true\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	env := []string{"IMAGEGATE_CONFIG=" + cfg}
	runOnce := func(path string) time.Duration {
		cmd := exec.Command(path, "--version")
		cmd.Env = env
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
		return time.Since(start)
	}
	const batch = 10
	var guard, direct time.Duration
	var n int
	for b.Loop() {
		for range batch {
			guard += runOnce(bin)
		}
		for range batch {
			direct += runOnce("/bin/true")
		}
		n += batch
	}
	b.ReportMetric(float64(guard.Nanoseconds())/float64(n), "ns/guarded")
	b.ReportMetric(float64(direct.Nanoseconds())/float64(n), "ns/direct")
	b.ReportMetric(float64(guard-direct)/float64(n)/1e3, "µs-added")
	b.ReportMetric(float64(guard)/float64(direct), "ratio")
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
