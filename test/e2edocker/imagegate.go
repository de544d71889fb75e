package e2edocker

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
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
	*e2eutil.Imagegate
	AuthzPlugin string
	GuardSocket string
	// StateDir holds the admission records the guard answers from.
	StateDir string
}

// NewImagegate writes the config of the imagegate of engine e under dir,
// with the policy in policyDir.
func NewImagegate(tools Tools, dir, policyDir, authzPlugin string, e *Engine) (*Imagegate, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	base, err := e2eutil.NewImagegate("imagegate-"+e.Name, "dockerd's NRI", tools.Imagegate, dir)
	if err != nil {
		return nil, err
	}
	g := &Imagegate{
		Imagegate:   base,
		AuthzPlugin: authzPlugin,
		GuardSocket: filepath.Join(dir, "guard.sock"),
		StateDir:    filepath.Join(dir, "state"),
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
		g.StateDir, g.Metrics)
	return g, os.WriteFile(g.Config, []byte(cfg), 0o644)
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
