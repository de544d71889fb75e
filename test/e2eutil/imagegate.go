package e2eutil

import (
	"bufio"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Imagegate is `imagegate run` as a test runs it, with its metrics
// endpoint as the window on its NRI connection. The test writes its
// config.
type Imagegate struct {
	// Name names the daemon in messages and its process.
	Name    string
	Config  string
	Metrics string
	// NRI names, in messages, what the daemon registers with.
	NRI string

	bin  string
	dir  string
	proc *Process
}

// NewImagegate prepares an imagegate named name that runs bin with the
// config file dir/imagegate.yaml (which the caller writes), logs to
// dir/imagegate.log and serves its metrics on a free loopback port.
func NewImagegate(name, nri, bin, dir string) (*Imagegate, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	return &Imagegate{Name: name, Config: filepath.Join(dir, "imagegate.yaml"), Metrics: addr, NRI: nri, bin: bin, dir: dir}, nil
}

// Start starts the daemon and waits until its metrics endpoint answers.
func (g *Imagegate) Start() error {
	p, err := StartProcess(g.Name, filepath.Join(g.dir, "imagegate.log"), nil,
		g.bin, "run", "--config", g.Config)
	if err != nil {
		return err
	}
	g.proc = p
	return WaitFor(10*time.Second, g.Name+"'s metrics endpoint answers", func() error {
		if err := p.Exited(); err != nil {
			return err
		}
		_, err := g.Metric("imagegate_nri_connected")
		return err
	})
}

// Stop stops the daemon.
func (g *Imagegate) Stop() error {
	if g.proc == nil {
		return nil
	}
	return g.proc.Stop()
}

// Kill kills the daemon with SIGKILL, leaving its sockets behind as a
// crash does.
func (g *Imagegate) Kill() {
	if g.proc != nil {
		g.proc.Kill()
	}
}

// Exited returns an error once the daemon has exited.
func (g *Imagegate) Exited() error {
	if g.proc == nil {
		return fmt.Errorf("%s not started", g.Name)
	}
	return g.proc.Exited()
}

// Tail returns the end of the daemon's log, for failure messages.
func (g *Imagegate) Tail(n int) string {
	if g.proc == nil {
		return ""
	}
	return g.proc.Tail(n)
}

// Metric reads one unlabelled metric.
func (g *Imagegate) Metric(name string) (float64, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + g.Metrics + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("metric %s not served", name)
}

// Registrations returns how often the daemon registered with NRI.
func (g *Imagegate) Registrations() (float64, error) {
	return g.Metric("imagegate_nri_registrations_total")
}

// WaitRegistered waits until the daemon has registered with NRI more than
// after times and is connected now.
func (g *Imagegate) WaitRegistered(after float64, timeout time.Duration) error {
	return WaitFor(timeout, g.Name+" registered with "+g.NRI, func() error {
		if err := g.Exited(); err != nil {
			return err
		}
		n, err := g.Registrations()
		if err != nil {
			return err
		}
		up, err := g.Metric("imagegate_nri_connected")
		if err != nil {
			return err
		}
		if n <= after || up != 1 {
			return fmt.Errorf("registrations %v, connected %v", n, up)
		}
		return nil
	})
}
