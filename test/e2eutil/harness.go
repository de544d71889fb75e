// Package e2eutil holds what the end-to-end tests of test/e2e (containerd)
// and test/e2edocker (Docker Engine) share: daemons logging to files,
// waiting on conditions, a loopback registry, images built from a static
// busybox and signed with the real cosign CLI, and clean-up of what
// containers leave behind.
package e2eutil

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Preflight says why containers cannot run on this machine, or nil: the
// test needs root, user namespaces and an overlayfs that mounts in dir.
func Preflight(dir string) error {
	if os.Geteuid() != 0 {
		return errors.New("not root: containerd and runc need root")
	}
	if out, err := exec.Command("unshare", "--user", "true").CombinedOutput(); err != nil {
		return fmt.Errorf("user namespaces unusable (`unshare --user true`: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	base, err := os.MkdirTemp(dir, "overlay-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	var opts []string
	for _, d := range []string{"lower", "upper", "work", "merged"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			return err
		}
		if d != "merged" {
			opts = append(opts, d+"dir="+filepath.Join(base, d))
		}
	}
	merged := filepath.Join(base, "merged")
	if err := syscall.Mount("overlay", merged, "overlay", 0, strings.Join(opts, ",")); err != nil {
		return fmt.Errorf("overlayfs does not mount under %s: %v (containerd's overlayfs snapshotter needs it)", dir, err)
	}
	return syscall.Unmount(merged, 0)
}

// WaitFor calls cond until it returns nil, and returns its last error when
// timeout passes first. The interval is short: conditions are cheap here.
func WaitFor(timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s: %w", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// FreeAddr returns a loopback address with a port free now.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Process is a daemon of the test, logging to a file.
type Process struct {
	Name string
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartProcess starts argv with its output in logFile (appended, so that a
// restart keeps the earlier run's lines).
func StartProcess(name, logFile string, env []string, argv ...string) (*Process, error) {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	// The daemons must not outlive a test binary that is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, Log: logFile, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Exited returns an error once the process has exited: a daemon that dies
// while the test waits on it ends the wait at once.
func (p *Process) Exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v; its log: %s", p.Name, p.err, p.Tail(20))
	default:
		return nil
	}
}

// Stop sends SIGTERM and waits for the exit, then SIGKILL.
func (p *Process) Stop() error {
	if p.Exited() != nil {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within 15s of SIGTERM", p.Name)
	}
}

// Kill kills the process with SIGKILL, as a crash would end it, and waits
// for the exit.
func (p *Process) Kill() {
	if p.Exited() != nil {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Signal sends sig to the process (SIGHUP: a daemon's config reload).
func (p *Process) Signal(sig syscall.Signal) error {
	if err := p.Exited(); err != nil {
		return err
	}
	return p.cmd.Process.Signal(sig)
}

// Tail returns the last n lines of the process's log.
func (p *Process) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "\n\t" + strings.Join(lines, "\n\t")
}

// StartRegistry runs `crane registry serve` on a free loopback port and
// waits until it answers.
func StartRegistry(crane, dir string) (*Process, string, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := StartProcess("registry", filepath.Join(dir, "registry.log"), nil,
		crane, "registry", "serve", "--address", addr)
	if err != nil {
		return nil, "", err
	}
	err = WaitFor(10*time.Second, "registry answers", func() error {
		if err := p.Exited(); err != nil {
			return err
		}
		resp, err := http.Get("http://" + addr + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	if err != nil {
		p.Stop()
		return nil, "", err
	}
	return p, addr, nil
}

// Run runs a command of the test and returns its standard output; a
// failure carries what it printed.
func Run(env []string, argv ...string) (string, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s: %v: %s%s", strings.Join(argv, " "), err, out, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// KillShims kills the shims that a containerd on socket started and that
// outlived it: a shim daemonizes, so it is no child of the test.
func KillShims(socket string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if !strings.HasSuffix(args[0], "containerd-shim-runc-v2") {
			continue
		}
		for i, a := range args {
			if a == "-address" && i+1 < len(args) && args[i+1] == socket {
				pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// UnmountUnder detaches every mount below dir, deepest first, so that dir
// can be removed after a run that did not clean up after itself.
func UnmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var mounts []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			mounts = append(mounts, fields[4])
		}
	}
	sort.Sort(sort.Reverse(sort.StringSlice(mounts)))
	for _, m := range mounts {
		_ = syscall.Unmount(m, syscall.MNT_DETACH)
	}
}
