// Command imagegate-runc is the guard runtime of Docker Engine nodes: set
// as dockerd's default-runtime, it is called for every runc operation.
// Before a container is created (runc create, run, restore) it asks
// imagegate over its guard socket whether that container ID is admitted
// under the current policy; when it is not, or imagegate does not answer,
// it writes the reason where dockerd looks for runc's error and exits 1.
// Every other call is handed to the real runc with execve, untouched.
//
// It runs on every runc call, so it is standard library only and reads
// just two keys of the daemon config (see readConfig).
//
// Guard protocol (one exchange per connection on the unix socket):
//
//	request:  "admit <container-id>\n"
//	answer:   "allow\n" | "deny <reason>\n"
//
// Anything else, a closed connection or no answer within guardTimeout is
// a refusal.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

const (
	defaultConfigPath = "/etc/imagegate/imagegate.yaml"
	defaultSocket     = "/run/imagegate/guard.sock"
	defaultRunc       = "runc"
	// guardTimeout bounds the whole exchange with imagegate. imagegate
	// answers within its own, shorter budget (a verification it cannot
	// finish by then is refused as "in progress, retry"), so running out
	// here means imagegate is stuck, not slow.
	guardTimeout = 3 * time.Second
	// maxAnswer bounds what is read from the socket.
	maxAnswer = 16 << 10
)

func main() {
	os.Exit(run(os.Args, os.Environ()))
}

// run returns only when it does not hand over to the real runc.
func run(argv, env []string) int {
	cfg, cfgErr := readConfig(configPath(env))
	inv := parseArgs(argv[1:])
	if cfgErr != nil && !inv.guarded() {
		// The real runc is still the default one: a broken config must
		// not stop containers from being stopped, deleted or inspected.
		cfg = config{socket: defaultSocket, runc: defaultRunc}
	}
	runc, runcErr := realRunc(cfg.runc)

	if inv.guarded() {
		var reason string
		switch {
		case cfgErr != nil:
			reason = fmt.Sprintf("imagegate: cannot read the guard config: %v", cfgErr)
		case inv.id == "":
			reason = fmt.Sprintf("imagegate: runc %s without a container ID; refusing", inv.command)
		default:
			reason = ask(cfg.socket, inv.id)
		}
		if reason != "" {
			refuse(inv, reason)
			return 1
		}
	}
	if runcErr != nil {
		refuse(inv, fmt.Sprintf("imagegate: %v", runcErr))
		return 1
	}
	// argv[0] names the real runc, as if the caller had run it.
	args := append([]string{runc}, argv[1:]...)
	err := syscall.Exec(runc, args, env)
	refuse(inv, fmt.Sprintf("imagegate: cannot execute %s: %v", runc, err))
	return 1
}

func configPath(env []string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "IMAGEGATE_CONFIG="); ok && v != "" {
			return v
		}
	}
	return defaultConfigPath
}

// realRunc resolves the runtime to hand over to, refusing this very
// binary: installed as "runc" on the PATH it would call itself forever.
func realRunc(name string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("the real runc (guard.runc %q) is not found: %w", name, err)
	}
	self, err := os.Executable()
	if err != nil {
		return path, nil
	}
	a, errA := os.Stat(path)
	b, errB := os.Stat(self)
	if errA == nil && errB == nil && os.SameFile(a, b) {
		return "", fmt.Errorf("guard.runc %q is imagegate-runc itself; set it to the real runc", name)
	}
	return path, nil
}

// ask returns "" when imagegate admits container id, else why not.
func ask(socket, id string) string {
	admitted, reason, err := query(socket, id, guardTimeout)
	switch {
	case err != nil:
		return fmt.Sprintf("imagegate: no answer from imagegate on %s (is imagegate running?): %v", socket, err)
	case !admitted:
		return fmt.Sprintf("imagegate: container %s was not admitted: %s", id, reason)
	}
	return ""
}

func query(socket, id string, timeout time.Duration) (admitted bool, reason string, err error) {
	deadline := time.Now().Add(timeout)
	c, err := net.DialTimeout("unix", socket, timeout)
	if err != nil {
		return false, "", err
	}
	defer c.Close()
	if err := c.SetDeadline(deadline); err != nil {
		return false, "", err
	}
	if _, err := c.Write([]byte("admit " + id + "\n")); err != nil {
		return false, "", err
	}
	line, err := bufio.NewReaderSize(&limited{c, maxAnswer}, 4096).ReadString('\n')
	if err != nil {
		return false, "", fmt.Errorf("reading the answer: %w", err)
	}
	line = strings.TrimSuffix(line, "\n")
	switch {
	case line == "allow":
		return true, "", nil
	case strings.HasPrefix(line, "deny "):
		return false, strings.TrimPrefix(line, "deny "), nil
	}
	return false, "", fmt.Errorf("unexpected answer %q", line)
}

// limited reads at most n bytes in all from c.
type limited struct {
	c net.Conn
	n int
}

func (l *limited) Read(b []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("answer too long")
	}
	if len(b) > l.n {
		b = b[:l.n]
	}
	n, err := l.c.Read(b)
	l.n -= n
	return n, err
}

// refuse tells dockerd why: the runc shim reports the last error line of
// runc's --log file (JSON with --log-format json), and without one the user
// sees only "unable to retrieve OCI runtime error". stderr gets it too, for
// a human running the guard by hand.
func refuse(inv invocation, reason string) {
	fmt.Fprintln(os.Stderr, reason)
	if inv.log == "" {
		return
	}
	f, err := os.OpenFile(inv.log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagegate: cannot write the runc log %s: %v\n", inv.log, err)
		return
	}
	defer f.Close()
	now := time.Now().Format(time.RFC3339Nano)
	var line []byte
	if inv.logFormat == "json" {
		line, _ = json.Marshal(struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Time  string `json:"time"`
		}{"error", reason, now})
	} else {
		// runc's text format is logrus's.
		line = fmt.Appendf(nil, "time=%q level=error msg=%q", now, reason)
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		fmt.Fprintf(os.Stderr, "imagegate: cannot write the runc log %s: %v\n", inv.log, err)
	}
}
