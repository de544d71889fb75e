package plugin

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/nri/pkg/api"
	"go.uber.org/zap/zapcore"
	"gopkg.in/yaml.v3"

	"github.com/imagegate/imagegate/cache"
)

// Config is the daemon config of DESIGN.md "Daemon config".
type Config struct {
	PolicyDir string
	NRI       NRIConfig
	// Runtime is containerd, docker or auto (Docker mode when the runtime
	// registers the plugin as "docker").
	Runtime    string
	Containerd ContainerdConfig
	Docker     DockerConfig
	Guard      GuardConfig
	Cache      cache.Config
	// RegistryTimeout bounds the evidence fetch of one verification.
	RegistryTimeout time.Duration
	// StateDir holds the evidence store ("" disables it): what verified,
	// kept so an image verified before can be verified again while its
	// registry is unreachable, after a restart.
	StateDir string
	// LogLevel is a zap level name.
	LogLevel string
	// MetricsListen is the address of the Prometheus endpoint; "" disables it.
	MetricsListen string
}

// NRIConfig says where and as what the plugin registers.
type NRIConfig struct {
	Socket      string
	PluginIndex string
}

// ContainerdConfig reaches containerd for image look-ups and pull events.
type ContainerdConfig struct {
	// Address is containerd's gRPC socket; "" disables both uses.
	Address string
}

// DockerConfig reaches dockerd on Docker Engine nodes.
type DockerConfig struct {
	// Address is the Engine API's unix socket (unix:///run/docker.sock):
	// swarm tasks, container image IDs, reload events. "" leaves swarm
	// tasks and Engine API starts without an image, so denied.
	Address string
	// AuthzPlugin is the name dockerd knows imagegate's authorization
	// plugin by (/run/docker/plugins/NAME.sock); "" disables it, and with
	// it every container not created by a swarm service.
	AuthzPlugin string
}

// GuardConfig is read and kept for imagegate-runc to come.
type GuardConfig struct {
	Socket string
	Runc   string
}

// DefaultConfig returns the defaults of DESIGN.md: what an absent file or
// key means.
func DefaultConfig() Config {
	return Config{
		PolicyDir:       "/etc/imagegate/policy.d",
		NRI:             NRIConfig{Socket: api.DefaultSocketPath, PluginIndex: "10"},
		Runtime:         "auto",
		Containerd:      ContainerdConfig{Address: "/run/containerd/containerd.sock"},
		Docker:          DockerConfig{Address: "unix:///run/docker.sock", AuthzPlugin: "imagegate"},
		Guard:           GuardConfig{Socket: "/run/imagegate/guard.sock", Runc: "runc"},
		Cache:           cache.DefaultConfig(),
		RegistryTimeout: 1500 * time.Millisecond,
		StateDir:        "/var/lib/imagegate",
		LogLevel:        "info",
		MetricsListen:   "127.0.0.1:9847",
	}
}

// LoadConfig reads the daemon config at path over the defaults. Every
// problem is reported as FILE:LINE: message, all of them at once. A missing
// file is an error wrapping fs.ErrNotExist, so that the caller can tell the
// default path being absent (all defaults) from a named file being absent.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, err
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		if m := yamlErr.FindStringSubmatch(err.Error()); m != nil {
			return cfg, fmt.Errorf("%s:%s: invalid YAML: %s", path, m[1], m[2])
		}
		return cfg, fmt.Errorf("%s: invalid YAML: %s", path, strings.TrimPrefix(err.Error(), "yaml: "))
	}
	if len(doc.Content) == 0 {
		return cfg, nil
	}
	p := &configParser{path: path}
	root := doc.Content[0]
	p.mapping(root, "", map[string]func(*yaml.Node){
		"policyDir": p.nonEmpty(&cfg.PolicyDir),
		"nri": func(n *yaml.Node) {
			p.mapping(n, "nri.", map[string]func(*yaml.Node){
				"socket":      p.nonEmpty(&cfg.NRI.Socket),
				"pluginIndex": p.pluginIndex(&cfg.NRI.PluginIndex),
			})
		},
		"runtime": p.oneOf(&cfg.Runtime, "containerd", "docker", "auto"),
		"containerd": func(n *yaml.Node) {
			p.mapping(n, "containerd.", map[string]func(*yaml.Node){
				"address": p.str(&cfg.Containerd.Address),
			})
		},
		"docker": func(n *yaml.Node) {
			p.mapping(n, "docker.", map[string]func(*yaml.Node){
				"address":     p.str(&cfg.Docker.Address),
				"authzPlugin": p.str(&cfg.Docker.AuthzPlugin),
			})
		},
		"guard": func(n *yaml.Node) {
			p.mapping(n, "guard.", map[string]func(*yaml.Node){
				"socket": p.nonEmpty(&cfg.Guard.Socket),
				"runc":   p.nonEmpty(&cfg.Guard.Runc),
			})
		},
		"cache": func(n *yaml.Node) {
			p.mapping(n, "cache.", map[string]func(*yaml.Node){
				"size":        p.positiveInt(&cfg.Cache.Size),
				"ttl":         p.duration(&cfg.Cache.TTL, false),
				"negativeTTL": p.duration(&cfg.Cache.NegativeTTL, true),
				"staleGrace":  p.duration(&cfg.Cache.StaleGrace, true),
			})
		},
		"registryTimeout": p.duration(&cfg.RegistryTimeout, false),
		"stateDir":        p.str(&cfg.StateDir),
		"log": func(n *yaml.Node) {
			p.mapping(n, "log.", map[string]func(*yaml.Node){
				"level": p.logLevel(&cfg.LogLevel),
			})
		},
		"metrics": func(n *yaml.Node) {
			p.mapping(n, "metrics.", map[string]func(*yaml.Node){
				"listen": p.str(&cfg.MetricsListen),
			})
		},
	})
	if len(p.problems) > 0 {
		return cfg, errors.New(strings.Join(p.problems, "\n"))
	}
	return cfg, nil
}

// yamlErr splits the parser's "yaml: line N: msg" so the line is a line.
var yamlErr = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// configParser walks the YAML tree so that every problem carries its line.
type configParser struct {
	path     string
	problems []string
	// key is the dotted name of the field being read, for messages.
	key string
}

func (p *configParser) problem(n *yaml.Node, format string, args ...any) {
	p.problems = append(p.problems, fmt.Sprintf("%s:%d: %s", p.path, n.Line, fmt.Sprintf(format, args...)))
}

// mapping reads a mapping whose keys must be among fields; a null value
// keeps every default.
func (p *configParser) mapping(n *yaml.Node, prefix string, fields map[string]func(*yaml.Node)) {
	n = deref(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.MappingNode {
		what := "the config"
		if prefix != "" {
			what = strings.TrimSuffix(prefix, ".")
		}
		p.problem(n, "%s must be a mapping", what)
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if line, dup := seen[k.Value]; dup {
			p.problem(k, "%s%s given twice (first at line %d)", prefix, k.Value, line)
			continue
		}
		seen[k.Value] = k.Line
		read, ok := fields[k.Value]
		if !ok {
			p.problem(k, "unknown field %s%s", prefix, k.Value)
			continue
		}
		p.key = prefix + k.Value
		read(deref(v))
	}
}

func (p *configParser) scalar(n *yaml.Node) (string, bool) {
	if n.Kind != yaml.ScalarNode {
		p.problem(n, "%s must be a scalar", p.key)
		return "", false
	}
	if n.Tag == "!!null" {
		return "", true
	}
	return n.Value, true
}

// str reads a string where "" has a meaning (usually: disabled).
func (p *configParser) str(dst *string) func(*yaml.Node) {
	return func(n *yaml.Node) {
		if s, ok := p.scalar(n); ok {
			*dst = s
		}
	}
}

func (p *configParser) nonEmpty(dst *string) func(*yaml.Node) {
	return func(n *yaml.Node) {
		s, ok := p.scalar(n)
		if !ok {
			return
		}
		if s == "" {
			p.problem(n, "%s must not be empty", p.key)
			return
		}
		*dst = s
	}
}

func (p *configParser) oneOf(dst *string, choices ...string) func(*yaml.Node) {
	return func(n *yaml.Node) {
		s, ok := p.scalar(n)
		if !ok {
			return
		}
		for _, c := range choices {
			if s == c {
				*dst = s
				return
			}
		}
		p.problem(n, "%s must be one of %s, not %q", p.key, strings.Join(choices, ", "), s)
	}
}

func (p *configParser) pluginIndex(dst *string) func(*yaml.Node) {
	return func(n *yaml.Node) {
		s, ok := p.scalar(n)
		if !ok {
			return
		}
		if err := api.CheckPluginIndex(s); err != nil {
			p.problem(n, "%s: %v", p.key, err)
			return
		}
		*dst = s
	}
}

func (p *configParser) positiveInt(dst *int) func(*yaml.Node) {
	return func(n *yaml.Node) {
		s, ok := p.scalar(n)
		if !ok {
			return
		}
		i, err := strconv.Atoi(s)
		if err != nil || i <= 0 {
			p.problem(n, "%s must be a positive integer, not %q", p.key, s)
			return
		}
		*dst = i
	}
}

// duration reads a Go duration ("1500ms", "10m"); zero is accepted only
// where it means something (no negative caching, no grace).
func (p *configParser) duration(dst *time.Duration, zeroOK bool) func(*yaml.Node) {
	return func(n *yaml.Node) {
		s, ok := p.scalar(n)
		if !ok {
			return
		}
		d, err := time.ParseDuration(s)
		switch {
		case err != nil:
			p.problem(n, "%s: bad duration %q (write it like 1500ms, 30s or 10m)", p.key, s)
		case d < 0 || (d == 0 && !zeroOK):
			p.problem(n, "%s must be positive, not %s", p.key, s)
		default:
			*dst = d
		}
	}
}

func (p *configParser) logLevel(dst *string) func(*yaml.Node) {
	return func(n *yaml.Node) {
		s, ok := p.scalar(n)
		if !ok {
			return
		}
		if _, err := zapcore.ParseLevel(s); err != nil || s == "" {
			p.problem(n, "%s must be one of debug, info, warn, error, not %q", p.key, s)
			return
		}
		*dst = s
	}
}

// deref follows a YAML alias to what it names.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}
