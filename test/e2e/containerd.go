package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imagegate/imagegate/test/e2eutil"
)

// Containerd is a containerd of the test: its own root, state, sockets and
// NRI socket, so that it shares nothing with a containerd of the host.
type Containerd struct {
	Dir       string
	Config    string
	Socket    string
	NRISocket string

	tools Tools
	proc  *e2eutil.Process
}

// ContainerdOptions is what differs between the containerds of the test.
type ContainerdOptions struct {
	// Registry is the host:port of the plain-HTTP registry to pull from.
	Registry string
	// PauseImage is the pod sandbox image, in Registry.
	PauseImage string
	// FailOpen lists imagegate in required_plugins but leaves the default
	// validator off, as a drop-in that sets only required_plugins does:
	// the configuration `imagegate doctor` must catch.
	FailOpen bool
}

// NewContainerd writes the config of a containerd under dir. dir must be
// short: unix socket paths are limited to 108 bytes.
func NewContainerd(tools Tools, dir string, o ContainerdOptions) (*Containerd, error) {
	c := &Containerd{
		Dir:       dir,
		Config:    filepath.Join(dir, "config.toml"),
		Socket:    filepath.Join(dir, "run", "containerd.sock"),
		NRISocket: filepath.Join(dir, "run", "nri.sock"),
		tools:     tools,
	}
	certs := filepath.Join(dir, "certs.d", o.Registry)
	for _, d := range []string{filepath.Join(dir, "run"), certs,
		filepath.Join(dir, "nri", "plugins"), filepath.Join(dir, "nri", "conf.d")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n",
		"http://"+o.Registry, "http://"+o.Registry)
	if err := os.WriteFile(filepath.Join(certs, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		return nil, err
	}
	r := strings.NewReplacer(
		"@DIR@", dir,
		"@RUN@", filepath.Join(dir, "run"),
		"@PAUSE@", o.PauseImage,
		"@RUNC@", tools.Runc,
		"@VALIDATOR@", fmt.Sprint(!o.FailOpen),
	)
	return c, os.WriteFile(c.Config, []byte(r.Replace(containerdConfig)), 0o644)
}

// containerdConfig is the config of DESIGN.md's tested notes: restricted
// OOM score adjustment and cgroupfs are what this kind of VM needs.
const containerdConfig = `version = 3
root = "@DIR@/root"
state = "@RUN@/state"
# Nothing of the host's /etc/containerd/conf.d is merged in.
imports = []

[grpc]
  address = "@RUN@/containerd.sock"

[ttrpc]
  address = "@RUN@/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "@RUN@/s"

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "@PAUSE@"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "@DIR@/certs.d"

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "@RUNC@"
      Root = "@RUN@/runc"
      SystemdCgroup = false

[plugins.'io.containerd.nri.v1.nri']
  disable = false
  socket_path = "@RUN@/nri.sock"
  plugin_path = "@DIR@/nri/plugins"
  plugin_config_path = "@DIR@/nri/conf.d"
  plugin_registration_timeout = "5s"
  plugin_request_timeout = "2s"
  [plugins.'io.containerd.nri.v1.nri'.default_validator]
    enable = @VALIDATOR@
    required_plugins = ["imagegate"]
`

// Start starts containerd and waits until its CRI reports the runtime
// ready.
func (c *Containerd) Start() error {
	// containerd finds its shim on PATH.
	path := "PATH=" + c.tools.ContainerdDir + ":" + os.Getenv("PATH")
	p, err := e2eutil.StartProcess("containerd", filepath.Join(c.Dir, "containerd.log"), []string{path},
		filepath.Join(c.tools.ContainerdDir, "containerd"), "--config", c.Config)
	if err != nil {
		return err
	}
	c.proc = p
	cri, err := DialCRI(c.Socket)
	if err != nil {
		return err
	}
	defer cri.Close()
	return e2eutil.WaitFor(30*time.Second, "containerd's CRI ready", func() error {
		if err := p.Exited(); err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return cri.Ready(ctx)
	})
}

// Stop stops containerd, leaving its shims and containers running, as a
// restart by systemd does.
func (c *Containerd) Stop() error {
	if c.proc == nil {
		return nil
	}
	return c.proc.Stop()
}

// Tail returns the end of containerd's log, for failure messages.
func (c *Containerd) Tail(n int) string {
	if c.proc == nil {
		return ""
	}
	return c.proc.Tail(n)
}
