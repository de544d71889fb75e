package e2edocker

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/test/e2eutil"
)

// PluginDir is where dockerd looks for authorization plugins, whatever its
// exec-root: the engines of the test share it, so each imagegate serves
// its own plugin name.
const PluginDir = "/run/docker/plugins"

// Imagegate is `imagegate run` serving one engine in docker mode.
type Imagegate struct {
	Name        string
	Config      string
	Metrics     string
	AuthzPlugin string
	GuardSocket string

	bin  string
	dir  string
	proc *e2eutil.Process
}

// NewImagegate writes the config of the imagegate of engine e under dir,
// with the policy in policyDir.
func NewImagegate(tools Tools, dir, policyDir, authzPlugin string, e *Engine) (*Imagegate, error) {
	addr, err := e2eutil.FreeAddr()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	g := &Imagegate{
		Name:        "imagegate-" + e.Name,
		Config:      filepath.Join(dir, "imagegate.yaml"),
		Metrics:     addr,
		AuthzPlugin: authzPlugin,
		GuardSocket: filepath.Join(dir, "guard.sock"),
		bin:         tools.Imagegate,
		dir:         dir,
	}
	cfg := fmt.Sprintf(`policyDir: %s
runtime: docker
nri:
  socket: %s
containerd:
  address: %s
docker:
  address: unix://%s
  authzPlugin: %q
guard:
  socket: %s
  runc: %s
stateDir: %s
metrics:
  listen: %s
log:
  level: debug
`, policyDir, e.NRISocket, e.Containerd, e.Socket, authzPlugin, g.GuardSocket, tools.Runc,
		filepath.Join(dir, "state"), addr)
	return g, os.WriteFile(g.Config, []byte(cfg), 0o644)
}

// Start starts the daemon and waits until its metrics endpoint answers.
func (g *Imagegate) Start() error {
	p, err := e2eutil.StartProcess(g.Name, filepath.Join(g.dir, "imagegate.log"), nil,
		g.bin, "run", "--config", g.Config)
	if err != nil {
		return err
	}
	g.proc = p
	return e2eutil.WaitFor(10*time.Second, g.Name+"'s metrics endpoint answers", func() error {
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

// Tail returns the end of the daemon's log.
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

// WaitConnected waits until the daemon has registered with the engine's
// NRI more than after times and is connected now.
func (g *Imagegate) WaitConnected(after float64, timeout time.Duration) error {
	return e2eutil.WaitFor(timeout, g.Name+" registered with dockerd's NRI", func() error {
		if err := g.Exited(); err != nil {
			return err
		}
		n, err := g.Metric("imagegate_nri_registrations_total")
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

// AuthzServed says whether the daemon answers Docker's plugin activation
// on its authorization plugin socket as an authz plugin.
func (g *Imagegate) AuthzServed() error {
	if g.AuthzPlugin == "" {
		return fmt.Errorf("no authorization plugin configured")
	}
	sock := filepath.Join(PluginDir, g.AuthzPlugin+".sock")
	c := http.Client{
		Timeout: time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	resp, err := c.Post("http://plugin/Plugin.Activate", "application/vnd.docker.plugins.v1.2+json", strings.NewReader("{}"))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"authz"`) {
		return fmt.Errorf("%s: Plugin.Activate answered %s: %s", sock, resp.Status, b)
	}
	return nil
}

// RemovePluginSocket removes what a killed daemon left in PluginDir.
func (g *Imagegate) RemovePluginSocket() {
	if g.AuthzPlugin != "" {
		_ = os.Remove(filepath.Join(PluginDir, g.AuthzPlugin+".sock"))
	}
}
