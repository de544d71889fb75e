package plugin

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func writeConfig(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "imagegate.yaml")
	must(t, os.WriteFile(p, []byte(content), 0o644))
	return p
}

func TestLoadConfigDefaults(t *testing.T) {
	for _, content := range []string{"", "# nothing set\n", "nri:\ncache:\n"} {
		cfg, err := LoadConfig(writeConfig(t, content))
		if err != nil {
			t.Fatalf("%q: %v", content, err)
		}
		if !reflect.DeepEqual(cfg, DefaultConfig()) {
			t.Errorf("%q: got %+v, want the defaults", content, cfg)
		}
	}
	want := Config{
		PolicyDir:       "/etc/imagegate/policy.d",
		NRI:             NRIConfig{Socket: "/var/run/nri/nri.sock", PluginIndex: "10"},
		Runtime:         "auto",
		Containerd:      ContainerdConfig{Address: "/run/containerd/containerd.sock"},
		Docker:          DockerConfig{Address: "unix:///run/docker.sock", AuthzPlugin: "imagegate"},
		Guard:           GuardConfig{Socket: "/run/imagegate/guard.sock", Runc: "runc"},
		RegistryTimeout: 1500 * time.Millisecond,
		StateDir:        "/var/lib/imagegate",
		LogLevel:        "info",
		MetricsListen:   "127.0.0.1:9847",
	}
	want.Cache.Size, want.Cache.TTL, want.Cache.NegativeTTL, want.Cache.StaleGrace = 10000, 10*time.Minute, 30*time.Second, time.Hour
	if got := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("defaults differ from DESIGN.md:\n got %+v\nwant %+v", got, want)
	}
}

func TestLoadConfigEveryKey(t *testing.T) {
	cfg, err := LoadConfig(writeConfig(t, `
policyDir: /srv/policy
nri:
  socket: /run/nri.sock
  pluginIndex: "05"
runtime: containerd
containerd:
  address: ""
docker:
  address: unix:///var/run/docker.sock
  authzPlugin: ""
guard:
  socket: /run/g.sock
  runc: /usr/sbin/runc
cache:
  size: 50
  ttl: 1m
  negativeTTL: 0s
  staleGrace: 2h
registryTimeout: 800ms
stateDir: ""
log:
  level: debug
metrics:
  listen: ""
`))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		PolicyDir:       "/srv/policy",
		NRI:             NRIConfig{Socket: "/run/nri.sock", PluginIndex: "05"},
		Runtime:         "containerd",
		Docker:          DockerConfig{Address: "unix:///var/run/docker.sock"},
		Guard:           GuardConfig{Socket: "/run/g.sock", Runc: "/usr/sbin/runc"},
		RegistryTimeout: 800 * time.Millisecond,
		LogLevel:        "debug",
	}
	want.Cache.Size, want.Cache.TTL, want.Cache.StaleGrace = 50, time.Minute, 2*time.Hour
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got  %+v\nwant %+v", cfg, want)
	}
}

func TestLoadConfigProblems(t *testing.T) {
	path := writeConfig(t, `policyDir: ""
nri:
  socket: /run/nri.sock
  pluginIndex: 100
  name: other
runtime: cri-o
cache:
  size: -1
  ttl: 10 minutes
  staleGrace: -1h
registryTimeout: 0s
log:
  level: loud
metrics: [a]
colour: red
`)
	_, err := LoadConfig(path)
	want := path + `:1: policyDir must not be empty
` + path + `:4: nri.pluginIndex: invalid plugin index "100", must be 2 digits
` + path + `:5: unknown field nri.name
` + path + `:6: runtime must be one of containerd, docker, auto, not "cri-o"
` + path + `:8: cache.size must be a positive integer, not "-1"
` + path + `:9: cache.ttl: bad duration "10 minutes" (write it like 1500ms, 30s or 10m)
` + path + `:10: cache.staleGrace must be positive, not -1h
` + path + `:11: registryTimeout must be positive, not 0s
` + path + `:13: log.level must be one of debug, info, warn, error, not "loud"
` + path + `:14: metrics must be a mapping
` + path + `:15: unknown field colour`
	if err == nil || err.Error() != want {
		t.Errorf("error:\n%v\nwant:\n%s", err, want)
	}
}

func TestLoadConfigMissingFile(t *testing.T) {
	_, err := LoadConfig(filepath.Join(t.TempDir(), "absent.yaml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want one wrapping fs.ErrNotExist", err)
	}
}

func TestLoadConfigSyntaxError(t *testing.T) {
	path := writeConfig(t, "nri:\n  socket: [\n")
	_, err := LoadConfig(path)
	want := path + ":2: invalid YAML: did not find expected node content"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v, want %s", err, want)
	}
}
