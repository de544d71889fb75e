package e2edocker

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/imagegate/imagegate/test/e2eutil"
)

// Engine is a Docker Engine of the test: a dockerd with its own containerd,
// data-root, exec-root and sockets, so that it shares nothing with another
// engine or a Docker of the host but /run/docker/plugins, which dockerd
// uses whatever its exec-root.
type Engine struct {
	// Name is short ("m", "w"): it names the bridge link.
	Name string
	Dir  string
	// Addr is the swarm advertise and listen address (127.0.0.x).
	Addr       string
	Socket     string
	NRISocket  string
	Containerd string // containerd's socket
	DaemonJSON string
	// Bridge is the host link of the engine's docker_gwbridge.
	Bridge string
	// Subnet is the private subnet of its docker_gwbridge.
	Subnet string

	tools   Tools
	env     []string
	ctrd    *e2eutil.Process
	dockerd *e2eutil.Process
	api     *http.Client
}

// EngineOptions is what differs between the engines' daemon.json.
type EngineOptions struct {
	Registry string
	// AuthzPlugin is the authorization plugin dockerd must consult; "" for
	// none.
	AuthzPlugin string
	// Guard is the guard runtime made dockerd's default runtime; "" for
	// plain runc.
	Guard string
	// NoNRI leaves dockerd's NRI off, as Docker ships it: an engine
	// without imagegate.
	NoNRI bool
}

// NewEngine writes the configs of an engine under dir, which must be short:
// unix socket paths are limited to 108 bytes.
func NewEngine(tools Tools, name, dir, addr, subnet string, o EngineOptions) (*Engine, error) {
	e := &Engine{
		Name:       name,
		Dir:        dir,
		Addr:       addr,
		Socket:     filepath.Join(dir, "docker.sock"),
		NRISocket:  filepath.Join(dir, "nri.sock"),
		Containerd: filepath.Join(dir, "ctrd.sock"),
		DaemonJSON: filepath.Join(dir, "daemon.json"),
		Bridge:     fmt.Sprintf("igdgw%d-%s", os.Getpid()%100000, name),
		Subnet:     subnet,
		tools:      tools,
	}
	for _, d := range []string{"ctrd", "s", "docker", "exec", "nri-plugins", "nri-conf", "cli"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	ctrd := fmt.Sprintf(`version = 3
root = "%[1]s/ctrd/root"
state = "%[1]s/ctrd/state"
# Nothing of the host's /etc/containerd/conf.d is merged in.
imports = []
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"]

[grpc]
  address = "%[2]s"

[ttrpc]
  address = "%[2]s.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins.'io.containerd.shim.v1.manager']
  socket_dir = "%[1]s/s"
`, dir, e.Containerd)
	if err := os.WriteFile(filepath.Join(dir, "ctrd.toml"), []byte(ctrd), 0o644); err != nil {
		return nil, err
	}
	daemon := map[string]any{
		"nri-opts": map[string]any{
			"enable":             true,
			"socket-path":        e.NRISocket,
			"plugin-path":        filepath.Join(dir, "nri-plugins"),
			"plugin-config-path": filepath.Join(dir, "nri-conf"),
		},
		"insecure-registries": []string{o.Registry},
		"shutdown-timeout":    3,
	}
	if o.NoNRI {
		delete(daemon, "nri-opts")
	}
	if o.AuthzPlugin != "" {
		daemon["authorization-plugins"] = []string{o.AuthzPlugin}
	}
	if o.Guard != "" {
		daemon["runtimes"] = map[string]any{"imagegate": map[string]any{"path": o.Guard}}
		daemon["default-runtime"] = "imagegate"
	}
	b, err := json.MarshalIndent(daemon, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(e.DaemonJSON, b, 0o644); err != nil {
		return nil, err
	}
	// The runc 1.4 binary first on PATH (the shim runs `runc`), the shim
	// next; the guard finds its config through IMAGEGATE_CONFIG, which
	// containerd hands to the shim and the shim to the runtime.
	e.env = []string{"PATH=" + filepath.Dir(tools.Runc) + ":" + tools.ContainerdDir + ":" + os.Getenv("PATH")}
	e.api = &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", e.Socket)
		}},
	}
	return e, nil
}

// SetGuardConfig makes the engine's containerd (and so its shims and the
// guard runtime they run) find the imagegate config at path through
// IMAGEGATE_CONFIG. It takes effect at the next start.
func (e *Engine) SetGuardConfig(path string) {
	e.env = append(e.env, "IMAGEGATE_CONFIG="+path)
}

// StartContainerd starts the engine's containerd and waits for its socket.
func (e *Engine) StartContainerd() error {
	p, err := e2eutil.StartProcess("containerd-"+e.Name, filepath.Join(e.Dir, "containerd.log"), e.env,
		filepath.Join(e.tools.ContainerdDir, "containerd"), "--config", filepath.Join(e.Dir, "ctrd.toml"))
	if err != nil {
		return err
	}
	e.ctrd = p
	return e2eutil.WaitFor(30*time.Second, "containerd "+e.Name+" listens", func() error {
		if err := p.Exited(); err != nil {
			return err
		}
		c, err := net.Dial("unix", e.Containerd)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

// StartDockerd starts dockerd and waits until its API answers.
func (e *Engine) StartDockerd() error {
	p, err := e2eutil.StartProcess("dockerd-"+e.Name, filepath.Join(e.Dir, "dockerd.log"), e.env,
		e.tools.Dockerd, "--config-file", e.DaemonJSON,
		"--data-root", filepath.Join(e.Dir, "docker"), "--exec-root", filepath.Join(e.Dir, "exec"),
		"--pidfile", filepath.Join(e.Dir, "dockerd.pid"), "-H", "unix://"+e.Socket,
		"--containerd", e.Containerd,
		"--iptables=false", "--ip6tables=false", "--userland-proxy=false", "--bridge=none")
	if err != nil {
		return err
	}
	e.dockerd = p
	return e2eutil.WaitFor(90*time.Second, "dockerd "+e.Name+" answers", func() error {
		if err := p.Exited(); err != nil {
			return err
		}
		return e.Get("/_ping", nil)
	})
}

// Dockerd is the engine's dockerd process.
func (e *Engine) Dockerd() *e2eutil.Process { return e.dockerd }

// Stop stops dockerd, then containerd and the shims they leave behind.
func (e *Engine) Stop() []error {
	var errs []error
	if e.dockerd != nil {
		if err := e.dockerd.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if e.ctrd != nil {
		if err := e.ctrd.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	e2eutil.KillShims(e.Containerd)
	return errs
}

// RemoveBridge deletes the host link of the engine's docker_gwbridge,
// which dockerd leaves behind.
func (e *Engine) RemoveBridge() {
	_ = exec.Command("ip", "link", "delete", e.Bridge).Run()
}

// Tail returns the end of dockerd's log.
func (e *Engine) Tail(n int) string {
	if e.dockerd == nil {
		return ""
	}
	return e.dockerd.Tail(n)
}

// LogSize returns the current length of dockerd's log, to read only what
// it logs from now on (LogSince).
func (e *Engine) LogSize() int64 {
	fi, err := os.Stat(filepath.Join(e.Dir, "dockerd.log"))
	if err != nil {
		return 0
	}
	return fi.Size()
}

// LogSince returns the lines dockerd logged after offset.
func (e *Engine) LogSince(offset int64) []string {
	b, err := os.ReadFile(filepath.Join(e.Dir, "dockerd.log"))
	if err != nil || int64(len(b)) < offset {
		return nil
	}
	return strings.Split(strings.TrimRight(string(b[offset:]), "\n"), "\n")
}

// Docker runs the docker CLI against the engine and returns its standard
// output; a failure carries what it printed.
func (e *Engine) Docker(args ...string) (string, error) {
	return e2eutil.Run([]string{"DOCKER_HOST=unix://" + e.Socket, "DOCKER_CONFIG=" + filepath.Join(e.Dir, "cli")},
		append([]string{e.tools.Docker}, args...)...)
}

// DockerCombined runs the docker CLI against the engine and returns what
// it printed on both outputs (warnings go to standard error).
func (e *Engine) DockerCombined(args ...string) (string, error) {
	cmd := exec.Command(e.tools.Docker, args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+e.Socket, "DOCKER_CONFIG="+filepath.Join(e.Dir, "cli"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// Get calls the Engine API and decodes its JSON answer into v (nil: none).
func (e *Engine) Get(path string, v any) error {
	return e.call(http.MethodGet, path, nil, v)
}

// Post calls the Engine API with a JSON body.
func (e *Engine) Post(path string, body, v any) error {
	return e.call(http.MethodPost, path, body, v)
}

func (e *Engine) call(method, path string, body, v any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://docker"+path, r)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.api.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if v == nil {
		return nil
	}
	return json.Unmarshal(b, v)
}

// Events returns the engine's events since then up to now, as the API
// streams them (one JSON object a line), filtered by filters (JSON).
func (e *Engine) Events(since time.Time, filters string) (string, error) {
	q := url.Values{
		"since":   {strconv.FormatInt(since.Unix(), 10)},
		"until":   {strconv.FormatInt(time.Now().Unix(), 10)},
		"filters": {filters},
	}
	resp, err := e.api.Get("http://docker/events?" + q.Encode())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /events: %s: %s", resp.Status, b)
	}
	return string(b), nil
}

// Task is what the test reads of a swarm task.
type Task struct {
	ID           string
	ServiceID    string
	NodeID       string
	CreatedAt    time.Time
	DesiredState string
	Status       struct {
		Timestamp time.Time
		State     string
		Message   string
		Err       string
	}
	Spec struct {
		ContainerSpec struct {
			Image string
		}
	}
}

func (t Task) String() string {
	s := fmt.Sprintf("task %.12s on node %.12s: %s (desired %s) %s", t.ID, t.NodeID, t.Status.State, t.DesiredState, t.Spec.ContainerSpec.Image)
	if t.Status.Err != "" {
		s += ": " + t.Status.Err
	}
	return s
}

// Tasks lists the tasks of a service (by name), on a manager.
func (e *Engine) Tasks(service string) ([]Task, error) {
	f, _ := json.Marshal(map[string][]string{"service": {service}})
	var ts []Task
	err := e.Get("/tasks?filters="+url.QueryEscape(string(f)), &ts)
	return ts, err
}

// Service is what the test reads of a swarm service.
type Service struct {
	ID           string
	UpdateStatus *struct {
		State   string
		Message string
	}
}

// NodeID returns the engine's swarm node ID.
func (e *Engine) NodeID() (string, error) {
	var info struct {
		Swarm struct {
			NodeID           string
			LocalNodeState   string
			ControlAvailable bool
		}
	}
	if err := e.Get("/info", &info); err != nil {
		return "", err
	}
	if info.Swarm.LocalNodeState != "active" {
		return "", fmt.Errorf("engine %s: swarm state %q", e.Name, info.Swarm.LocalNodeState)
	}
	return info.Swarm.NodeID, nil
}
