package doctor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"github.com/pelletier/go-toml/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// pluginName is how imagegate registers with NRI, and so how
// required_plugins must name it.
const pluginName = "imagegate"

// defaultContainerdConfig is where containerd reads its config when it is
// started without --config.
const defaultContainerdConfig = "/etc/containerd/config.toml"

// Where containerd's NRI settings live, in a config dump of 1.7 and 2.x
// alike.
const (
	nriSection       = "[plugins.'io.containerd.nri.v1.nri']"
	validatorSection = "[plugins.'io.containerd.nri.v1.nri'.default_validator]"
)

const callTimeout = 5 * time.Second

// checkContainerd checks the containerd on containerd.address. withDocker
// says that the Docker checks run too: a containerd whose CRI is disabled
// then only serves dockerd, whose containers its NRI never sees.
func checkContainerd(ctx context.Context, cfg Config, withDocker bool) []Result {
	addr := cfg.ContainerdAddress
	if addr == "" {
		return []Result{fail("containerd", "containerd.address is empty in imagegate's config: set it to the socket of the node's containerd")}
	}
	version, err := containerdVersion(ctx, addr)
	if err != nil {
		return []Result{fail("containerd", "no answer on %s (%v): start containerd, or set containerd.address to its grpc.address", addr, err)}
	}
	var rs []Result
	major, minor, err := ParseVersion(version)
	switch {
	case err != nil:
		rs = append(rs, warn("containerd "+version, "cannot tell whether this version has NRI: %v", err))
	case major < 1 || major == 1 && minor < 7:
		return append(rs, fail("containerd "+version, "no NRI before containerd 1.7: upgrade containerd (2.4 or later)"))
	case major < 2 || major == 2 && minor < 4:
		rs = append(rs, warn("containerd "+version,
			"NRI reports the image digest only from containerd 2.4 on: imagegate looks it up in the image store instead; upgrade to 2.4 or later"))
	default:
		rs = append(rs, ok("containerd %s answers on %s", version, addr))
	}

	dump, where, err := effectiveConfig(ctx, addr)
	if err != nil {
		return append(rs, fail("containerd config", "%v", err))
	}
	rs = append(rs, ok("containerd config read from the process: %s", where))
	if withDocker && CRIDisabled(dump) {
		return append(rs, ok("containerd's CRI is disabled: it creates only dockerd's containers, checked above"))
	}
	nri, err := ParseNRI(dump)
	if err != nil {
		return append(rs, fail("containerd config", "%v", err))
	}
	rs = append(rs, nri.Check(cfg.NRISocket, where)...)
	return append(rs, checkNRISocket(cfg.NRISocket))
}

func containerdVersion(ctx context.Context, addr string) (string, error) {
	conn, err := grpc.NewClient("unix://"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := versionapi.NewVersionClient(conn).Version(ctx, &emptypb.Empty{})
	if err != nil {
		return "", err
	}
	return resp.GetVersion(), nil
}

// ParseVersion reads the major and minor number of a containerd version
// such as v2.4.2, 1.7.27-k3s1 or 2.1.0-rc.1.
func ParseVersion(v string) (major, minor int, err error) {
	parts := strings.SplitN(strings.TrimPrefix(v, "v"), ".", 3)
	if len(parts) < 2 {
		return 0, 0, fmt.Errorf("version %q is not MAJOR.MINOR[.PATCH]", v)
	}
	if major, err = strconv.Atoi(parts[0]); err == nil {
		minor, err = strconv.Atoi(parts[1])
	}
	if err != nil {
		return 0, 0, fmt.Errorf("version %q is not MAJOR.MINOR[.PATCH]", v)
	}
	return major, minor, nil
}

// effectiveConfig asks the containerd that answers on addr for the config
// it runs with: its own binary dumps the config file it was started with,
// merged with every drop-in that file imports. A fixed path would be the
// wrong file on k3s, rke2 or any node that starts containerd with --config.
func effectiveConfig(ctx context.Context, addr string) (dump []byte, where string, err error) {
	pid, path, err := processConfig(addr, ConfigPath)
	if err != nil {
		return nil, "", err
	}
	proc := fmt.Sprintf("/proc/%d", pid)
	exe, err := os.Readlink(proc + "/exe")
	if err != nil {
		return nil, "", fmt.Errorf("pid %d: %v", pid, err)
	}
	where = fmt.Sprintf("pid %d, %s --config %s", pid, exe, path)
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	// /proc/PID/exe is the very binary that runs, even when the file at
	// its path has been replaced by an upgrade since.
	cmd := exec.CommandContext(ctx, proc+"/exe", "--config", path, "config", "dump")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, where, fmt.Errorf("%s config dump: %v: %s", where, err, lastLine(stderr.String()))
	}
	return out, where, nil
}

// peerPID returns the PID of the process that listens on a unix socket.
func peerPID(socket string) (int, error) {
	c, err := net.DialTimeout("unix", socket, callTimeout)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var credErr error
	err = raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	})
	if err = errors.Join(err, credErr); err != nil {
		return 0, err
	}
	return int(cred.Pid), nil
}

// processConfig finds the process that listens on socket and the config
// file its command line names (configPath reads it from argv), made
// absolute: the file that daemon really runs with, whatever the defaults.
func processConfig(socket string, configPath func(argv []string) string) (pid int, path string, err error) {
	pid, err = peerPID(socket)
	if err != nil {
		return 0, "", fmt.Errorf("cannot find the process behind %s: %v", socket, err)
	}
	if pid == 0 {
		return 0, "", fmt.Errorf("the process behind %s is in another PID namespace: run imagegate doctor in the host's", socket)
	}
	proc := fmt.Sprintf("/proc/%d", pid)
	raw, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return 0, "", fmt.Errorf("pid %d behind %s: %v", pid, socket, err)
	}
	path = configPath(strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00"))
	if !filepath.IsAbs(path) {
		cwd, err := os.Readlink(proc + "/cwd")
		if err != nil {
			return 0, "", fmt.Errorf("pid %d: config %s is relative and its working directory unknown: %v", pid, path, err)
		}
		path = filepath.Join(cwd, path)
	}
	return pid, path, nil
}

// flagValue returns the value of the first flag in argv (after argv[0],
// before "--") that isFlag accepts, written "FLAG VALUE" or "FLAG=VALUE";
// def when there is none.
func flagValue(argv []string, isFlag func(flag string) bool, def string) string {
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if a == "--" {
			break
		}
		flag, value, hasValue := strings.Cut(a, "=")
		if !isFlag(flag) {
			continue
		}
		if hasValue {
			return value
		}
		if i+1 < len(argv) {
			return argv[i+1]
		}
	}
	return def
}

// ConfigPath returns the config file named on containerd's command line,
// argv as in /proc/PID/cmdline. containerd's flag parser takes -c, -config
// and --config, with the value after a space or an equals sign.
func ConfigPath(argv []string) string {
	return flagValue(argv, func(flag string) bool {
		name := strings.TrimLeft(flag, "-")
		return strings.HasPrefix(flag, "-") && (name == "c" || name == "config")
	}, defaultContainerdConfig)
}

// CRIDisabled reports whether a containerd config dump disables the CRI
// plugin, as Docker's containerd.io package does: such a containerd runs no
// Kubernetes containers.
func CRIDisabled(dump []byte) bool {
	var doc struct {
		DisabledPlugins []string `toml:"disabled_plugins"`
	}
	if toml.Unmarshal(dump, &doc) != nil {
		return false
	}
	return slices.ContainsFunc(doc.DisabledPlugins, func(p string) bool {
		return p == "cri" || p == "io.containerd.grpc.v1.cri"
	})
}

// NRI is containerd's NRI configuration, as its config dump shows it.
type NRI struct {
	// Present is false when containerd has no NRI plugin at all.
	Present  bool
	Disabled bool
	Socket   string
	// Validator is the default validator's enable; RequiredPlugins does
	// nothing without it.
	Validator       bool
	RequiredPlugins []string
}

// ParseNRI reads the NRI settings from the output of `containerd config
// dump`.
func ParseNRI(dump []byte) (NRI, error) {
	var doc struct {
		Plugins map[string]struct {
			Disable          bool   `toml:"disable"`
			SocketPath       string `toml:"socket_path"`
			DefaultValidator *struct {
				Enable          bool     `toml:"enable"`
				RequiredPlugins []string `toml:"required_plugins"`
			} `toml:"default_validator"`
		} `toml:"plugins"`
	}
	if err := toml.Unmarshal(dump, &doc); err != nil {
		return NRI{}, fmt.Errorf("containerd config dump does not parse: %v", err)
	}
	p, found := doc.Plugins["io.containerd.nri.v1.nri"]
	if !found {
		return NRI{}, nil
	}
	n := NRI{Present: true, Disabled: p.Disable, Socket: p.SocketPath}
	if v := p.DefaultValidator; v != nil {
		n.Validator, n.RequiredPlugins = v.Enable, v.RequiredPlugins
	}
	return n, nil
}

// Check judges the NRI settings of the containerd described by where, for
// an imagegate that connects to socket.
func (n NRI) Check(socket, where string) []Result {
	if !n.Present {
		return []Result{fail("NRI", "this containerd has no NRI plugin: upgrade to containerd 2.4 or later")}
	}
	if n.Disabled {
		return []Result{fail("NRI", "NRI is disabled: set disable = false under %s in the config of %s, and restart containerd", nriSection, where)}
	}
	rs := []Result{ok("NRI enabled in containerd")}
	if n.Socket != socket {
		rs = append(rs, fail("NRI socket", "containerd listens on %s but imagegate connects to %s: set nri.socket in imagegate's config to %[1]s", n.Socket, socket))
	}
	required := slices.Contains(n.RequiredPlugins, pluginName)
	if required && n.Validator {
		return append(rs, ok("fail-closed: containerd requires NRI plugin %s (default_validator enabled, required_plugins %s)", pluginName, quote(n.RequiredPlugins)))
	}
	var missing []string
	if !n.Validator {
		missing = append(missing, "enable = true")
	}
	if !required {
		missing = append(missing, fmt.Sprintf("required_plugins = %s", quote(append(slices.Clone(n.RequiredPlugins), pluginName))))
	}
	return append(rs, fail("fail-closed", "fail-open: containers will be created while imagegate is down; set %s under %s"+
		" in the config of %s, and restart containerd", strings.Join(missing, " and "), validatorSection, where))
}

func checkNRISocket(socket string) Result {
	c, err := net.DialTimeout("unix", socket, callTimeout)
	if err != nil {
		return fail("NRI socket "+socket, "not reachable (%v): NRI disabled, or containerd's socket_path differs", err)
	}
	c.Close()
	return ok("NRI socket %s reachable", socket)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}
