package doctor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// Where Docker keeps what imagegate needs of it.
const (
	defaultDaemonJSON = "/etc/docker/daemon.json"
	dockerPluginDir   = "/run/docker/plugins"
	// GuardRuntime is the name imagegate's guard runtime is registered
	// under in daemon.json, and GuardPath the binary the package installs.
	GuardRuntime = "imagegate"
	GuardPath    = "/usr/bin/imagegate-runc"
	// containerdStore is the DriverStatus driver-type of the containerd
	// image store.
	containerdStore = "io.containerd.snapshotter.v1"
)

// dockerdInstalled reports whether the node has dockerd on its PATH.
func dockerdInstalled() bool {
	_, err := exec.LookPath("dockerd")
	return err == nil
}

// DockerSocket returns the unix socket path of docker.address
// (unix:///run/docker.sock or a bare path).
func DockerSocket(address string) (string, error) {
	path, found := strings.CutPrefix(address, "unix://")
	if !found && strings.Contains(address, "://") || path == "" {
		return "", fmt.Errorf("docker.address %q: imagegate reaches the Docker Engine API only on its unix socket (unix:///run/docker.sock)", address)
	}
	return path, nil
}

// engine is a client of the Engine API on a unix socket.
type engine struct {
	socket string
	client *http.Client
}

func newEngine(socket string) *engine {
	dialer := &net.Dialer{Timeout: callTimeout}
	return &engine{socket: socket, client: &http.Client{
		Timeout: callTimeout,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, "unix", socket)
			},
		},
	}}
}

func (e *engine) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var msg struct{ Message string }
		if json.Unmarshal(body, &msg) == nil && msg.Message != "" {
			return fmt.Errorf("GET %s: %s: %s", path, resp.Status, msg.Message)
		}
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: %v", path, err)
	}
	return nil
}

// DockerInfo is what the checks read of the Engine API's GET /info: the
// settings of the dockerd that runs, whatever its files say now.
type DockerInfo struct {
	Driver       string
	DriverStatus [][2]string
	Plugins      struct{ Authorization []string }
	Runtimes     map[string]struct {
		Path string `json:"path"`
	}
	DefaultRuntime string
	// NRI is absent when NRI is disabled (and before API 1.53).
	NRI *struct{ Info [][2]string }
}

// dockerChecks is what checkDocker needs besides imagegate's config;
// tests set the paths the real node has fixed.
type dockerChecks struct {
	cfg Config
	// daemonJSON, when set, is the daemon.json named in fixes instead of
	// the one found from dockerd's command line.
	daemonJSON string
	pluginDir  string
}

func checkDocker(ctx context.Context, cfg Config) []Result {
	return dockerChecks{cfg: cfg, daemonJSON: cfg.daemonJSON, pluginDir: cfg.dockerPluginDir}.run(ctx)
}

func (d dockerChecks) run(ctx context.Context) []Result {
	var rs []Result
	socket, err := DockerSocket(d.cfg.DockerAddress)
	if d.cfg.DockerAddress == "" {
		rs = append(rs, fail("dockerd", "docker.address is empty in imagegate's config: set it to dockerd's socket (unix:///run/docker.sock)"))
	} else if err != nil {
		rs = append(rs, fail("dockerd", "%v", err))
	} else {
		rs = append(rs, d.engineChecks(ctx, socket)...)
	}
	rs = append(rs, checkGuardSocket(d.cfg.GuardSocket))
	if d.cfg.AuthzPlugin != "" {
		rs = append(rs, d.checkAuthzSocket())
	}
	return rs
}

// engineChecks asks the dockerd on socket for its version and settings.
func (d dockerChecks) engineChecks(ctx context.Context, socket string) []Result {
	e := newEngine(socket)
	var version struct{ Version string }
	if err := e.get(ctx, "/version", &version); err != nil {
		return []Result{fail("dockerd", "no answer on %s (%v): start docker, or set docker.address to dockerd's socket; "+
			"dockerd answers no request while an authorization plugin it is configured with is down", socket, err)}
	}
	var rs []Result
	major, _, err := ParseVersion(version.Version)
	switch {
	case err != nil:
		rs = append(rs, warn("dockerd "+version.Version, "cannot tell whether this version has NRI: %v", err))
	case major < 29:
		return append(rs, fail("dockerd "+version.Version, "no NRI before Docker Engine 29: upgrade Docker Engine (29 or later)"))
	default:
		rs = append(rs, ok("dockerd %s answers on %s", version.Version, socket))
	}
	var info DockerInfo
	if err := e.get(ctx, "/info", &info); err != nil {
		return append(rs, fail("dockerd", "%v", err))
	}
	where := d.daemonJSON
	if where == "" {
		if where, err = DaemonJSONPath(socket); err != nil {
			where = defaultDaemonJSON
		}
	}
	return append(rs, info.Check(d.cfg.NRISocket, d.cfg.AuthzPlugin, where)...)
}

// Check judges the settings of a running dockerd for an imagegate that
// connects to the NRI socket nriSocket and serves the authorization plugin
// authz; where is the daemon.json that fixes go to.
func (info DockerInfo) Check(nriSocket, authz, where string) []Result {
	restart := fmt.Sprintf(" to %s, and restart docker", where)
	var rs []Result

	if info.NRI == nil {
		rs = append(rs, fail("NRI", `NRI is disabled in dockerd: add "nri-opts": {"enable": true, "socket-path": %q}`+restart, nriSocket))
	} else {
		socket := ""
		for _, kv := range info.NRI.Info {
			if kv[0] == "socket-path" {
				socket = kv[1]
			}
		}
		switch socket {
		case "":
			rs = append(rs, fail("NRI", `dockerd's NRI accepts no external plugin without a socket: set "nri-opts": {"enable": true, "socket-path": %q} in %s, and restart docker`, nriSocket, where))
		case nriSocket:
			rs = append(rs, ok("NRI enabled in dockerd, socket %s", socket))
		default:
			rs = append(rs, fail("NRI socket", "dockerd listens on %s but imagegate connects to %s: set nri.socket in imagegate's config to %[1]s", socket, nriSocket))
		}
	}

	plugins := info.Plugins.Authorization
	switch {
	case authz == "":
		rs = append(rs, warn("authorization plugin", "docker.authzPlugin is empty in imagegate's config: every container started with docker run, docker start or compose is denied"))
	case slices.Contains(plugins, authz):
		rs = append(rs, ok("authorization plugin %s configured in dockerd: containers started through the Engine API are checked", authz))
	default:
		rs = append(rs, fail("authorization plugin", `containers started with docker run are not checked: add "authorization-plugins": %s`+restart,
			quote(append(slices.Clone(plugins), authz))))
	}

	if rt, found := info.Runtimes[info.DefaultRuntime]; found && filepath.Base(rt.Path) == "imagegate-runc" {
		rs = append(rs, ok("fail-closed: dockerd's default runtime %s is %s", info.DefaultRuntime, rt.Path))
	} else {
		rs = append(rs, fail("fail-closed", `fail-open: containers are created while imagegate is down (default runtime %q): set "runtimes": {%[2]q: {"path": %[3]q}} and "default-runtime": %[2]q in %[4]s, and restart docker`,
			info.DefaultRuntime, GuardRuntime, GuardPath, where))
	}

	if slices.Contains(info.DriverStatus, [2]string{"driver-type", containerdStore}) {
		rs = append(rs, ok("containerd image store in use (%s)", info.Driver))
	} else {
		rs = append(rs, warn("image store", `dockerd uses the legacy image store (%s): the digest of a container started through the Engine API comes from the image's RepoDigests, the digest it was pulled at; `+
			`switch to the containerd image store ("features": {"containerd-snapshotter": true} in %s)`, info.Driver, where))
	}
	return rs
}

func checkGuardSocket(socket string) Result {
	c, err := net.DialTimeout("unix", socket, callTimeout)
	if err != nil {
		return fail("guard socket "+socket, "no answer (%v): imagegate-runc refuses every container create while imagegate is down: start imagegate, or set guard.socket", err)
	}
	c.Close()
	return ok("guard socket %s answers", socket)
}

func (d dockerChecks) checkAuthzSocket() Result {
	dir := d.pluginDir
	if dir == "" {
		dir = dockerPluginDir
	}
	socket := filepath.Join(dir, d.cfg.AuthzPlugin+".sock")
	c, err := net.DialTimeout("unix", socket, callTimeout)
	if err != nil {
		return fail("authorization plugin socket "+socket, "no answer (%v): dockerd refuses every API request, and refuses to start, while its authorization plugin is missing: start imagegate", err)
	}
	c.Close()
	return ok("authorization plugin socket %s answers", socket)
}

// DaemonJSONPath returns the daemon.json of the dockerd that listens on
// socket: its --config-file, made absolute, or Docker's default.
func DaemonJSONPath(socket string) (string, error) {
	_, path, err := processConfig(socket, DockerConfigFile)
	return path, err
}

// DockerConfigFile returns the config file named on dockerd's command
// line (argv as in /proc/PID/cmdline): --config-file FILE or
// --config-file=FILE, else /etc/docker/daemon.json.
func DockerConfigFile(argv []string) string {
	return flagValue(argv, func(flag string) bool { return flag == "--config-file" }, defaultDaemonJSON)
}

// DockerNeeds is what imagegate needs in daemon.json.
type DockerNeeds struct {
	NRISocket   string
	AuthzPlugin string
}

// MergeDaemonJSON returns the operator's daemon.json (empty or absent:
// {}) with the keys imagegate needs merged in, indented; every key the
// operator set is kept unless imagegate needs another value there, and
// each such conflict is described in notes.
func MergeDaemonJSON(data []byte, needs DockerNeeds) (merged []byte, notes []string, err error) {
	doc := map[string]any{}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.UseNumber()
		if err := dec.Decode(&doc); err != nil {
			return nil, nil, fmt.Errorf("does not parse as a JSON object: %v", err)
		}
		if doc == nil {
			doc = map[string]any{}
		}
	}
	conflict := func(key string, had, want any) {
		h, _ := json.Marshal(had)
		w, _ := json.Marshal(want)
		notes = append(notes, fmt.Sprintf("%s was %s; imagegate needs %s", key, h, w))
	}
	object := func(key string) map[string]any {
		if m, isMap := doc[key].(map[string]any); isMap {
			return m
		}
		if v, set := doc[key]; set {
			conflict(fmt.Sprintf("%q", key), v, map[string]any{})
		}
		m := map[string]any{}
		doc[key] = m
		return m
	}
	set := func(m map[string]any, path, key string, want any) {
		if had, set := m[key]; set && !equalJSON(had, want) {
			conflict(path, had, want)
		}
		m[key] = want
	}

	nri := object("nri-opts")
	set(nri, `"nri-opts"."enable"`, "enable", true)
	set(nri, `"nri-opts"."socket-path"`, "socket-path", needs.NRISocket)

	if needs.AuthzPlugin != "" {
		var plugins []any
		switch v := doc["authorization-plugins"].(type) {
		case []any:
			plugins = v
		case nil:
		default:
			conflict(`"authorization-plugins"`, v, []string{needs.AuthzPlugin})
		}
		if !slices.Contains(plugins, any(needs.AuthzPlugin)) {
			plugins = append(plugins, needs.AuthzPlugin)
		}
		doc["authorization-plugins"] = plugins
	}

	runtimes := object("runtimes")
	set(runtimes, fmt.Sprintf(`"runtimes".%q`, GuardRuntime), GuardRuntime, map[string]any{"path": GuardPath})
	if had, found := doc["default-runtime"]; found && had != GuardRuntime {
		h, _ := json.Marshal(had)
		notes = append(notes, fmt.Sprintf(`"default-runtime" was %s; imagegate needs %q (imagegate-runc hands every runc call over to guard.runc: set guard.runc in imagegate's config to that runtime's path to keep using it)`, h, GuardRuntime))
	}
	doc["default-runtime"] = GuardRuntime

	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	return append(out, '\n'), notes, nil
}

func equalJSON(a, b any) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && bytes.Equal(ja, jb)
}

// ReadDaemonJSON reads the daemon.json at path; an absent file reads as
// empty.
func ReadDaemonJSON(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return data, err
}
