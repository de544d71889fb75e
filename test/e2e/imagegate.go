package e2e

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/test/e2eutil"
)

// Imagegate is `imagegate run` as the test runs it, with its metrics
// endpoint as the window on its NRI connection.
type Imagegate struct {
	Config  string
	Metrics string

	bin  string
	dir  string
	proc *e2eutil.Process
}

// NewImagegate writes the daemon config of an imagegate under dir that
// serves containerd c with the policy in policyDir.
func NewImagegate(bin, dir, policyDir string, c *Containerd) (*Imagegate, error) {
	addr, err := e2eutil.FreeAddr()
	if err != nil {
		return nil, err
	}
	g := &Imagegate{Config: filepath.Join(dir, "imagegate.yaml"), Metrics: addr, bin: bin, dir: dir}
	cfg := fmt.Sprintf(`policyDir: %s
runtime: containerd
nri:
  socket: %s
containerd:
  address: %s
metrics:
  listen: %s
log:
  level: debug
`, policyDir, c.NRISocket, c.Socket, addr)
	return g, os.WriteFile(g.Config, []byte(cfg), 0o644)
}

// Start starts the daemon and waits until its metrics endpoint answers.
func (g *Imagegate) Start() error {
	p, err := e2eutil.StartProcess("imagegate", filepath.Join(g.dir, "imagegate.log"), nil,
		g.bin, "run", "--config", g.Config)
	if err != nil {
		return err
	}
	g.proc = p
	return e2eutil.WaitFor(10*time.Second, "imagegate's metrics endpoint answers", func() error {
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
	return e2eutil.WaitFor(timeout, "imagegate registered with NRI", func() error {
		if err := g.proc.Exited(); err != nil {
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
