package doctor

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// shortDir returns a temporary directory whose paths fit a unix socket
// address (108 bytes), which t.TempDir's may not.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "igdoc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// listen serves nothing but accepts connections on a unix socket.
func listen(t *testing.T, path string) {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// fakeEngine serves GET /version and GET /info on a unix socket.
func fakeEngine(t *testing.T, socket, version string, info any) {
	t.Helper()
	l, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/version":
			json.NewEncoder(w).Encode(map[string]string{"Version": version, "ApiVersion": "1.53"})
		case "/info":
			json.NewEncoder(w).Encode(info)
		default:
			http.NotFound(w, r)
		}
	}))
	s.Listener.Close()
	s.Listener = l
	s.Start()
	t.Cleanup(s.Close)
}

// info is GET /info of a dockerd 29.8 set up for imagegate, as raw JSON.
func info(edit func(map[string]any)) map[string]any {
	m := map[string]any{
		"Driver":         "overlayfs",
		"DriverStatus":   [][2]string{{"driver-type", "io.containerd.snapshotter.v1"}},
		"Plugins":        map[string]any{"Authorization": []string{"imagegate"}, "Volume": []string{"local"}},
		"Runtimes":       map[string]any{"runc": map[string]any{"path": "runc"}, "imagegate": map[string]any{"path": "/usr/bin/imagegate-runc"}},
		"DefaultRuntime": "imagegate",
		"NRI":            map[string]any{"Info": [][2]string{{"plugin-path", "/opt/nri/plugins"}, {"plugin-config-path", "/etc/nri/conf.d"}, {"socket-path", "/var/run/nri/nri.sock"}}},
		"ServerVersion":  "29.8.0",
	}
	if edit != nil {
		edit(m)
	}
	return m
}

func TestDockerChecks(t *testing.T) {
	const where = "/etc/docker/custom.json"
	const restart = " to " + where + ", and restart docker"
	const failOpen = `FAIL fail-closed: fail-open: containers are created while imagegate is down (default runtime "runc"): set "runtimes": {"imagegate": {"path": "/usr/bin/imagegate-runc"}} and "default-runtime": "imagegate" in ` + where + ", and restart docker"
	dir := shortDir(t)
	guard := filepath.Join(dir, "guard.sock")
	plugins := filepath.Join(dir, "plugins")
	if err := os.Mkdir(plugins, 0o700); err != nil {
		t.Fatal(err)
	}
	authzOK := "OK  authorization plugin socket " + plugins + "/imagegate.sock answers"
	guardOK := "OK  guard socket " + guard + " answers"

	for i, c := range []struct {
		name    string
		version string
		info    map[string]any
		down    bool // no guard and no authorization plugin socket
		want    []string
	}{
		{
			name: "set up", version: "29.8.0", info: info(nil),
			want: []string{
				"OK  dockerd 29.8.0 answers on SOCKET",
				"OK  NRI enabled in dockerd, socket /var/run/nri/nri.sock",
				"OK  authorization plugin imagegate configured in dockerd: containers started through the Engine API are checked",
				"OK  fail-closed: dockerd's default runtime imagegate is /usr/bin/imagegate-runc",
				"OK  containerd image store in use (overlayfs)",
				guardOK, authzOK,
			},
		},
		{
			name: "stock dockerd, imagegate down", version: "29.8.0", down: true,
			info: info(func(m map[string]any) {
				delete(m, "NRI")
				m["Plugins"] = map[string]any{"Authorization": nil}
				m["DefaultRuntime"] = "runc"
				m["Driver"] = "overlay2"
				m["DriverStatus"] = [][2]string{{"Backing Filesystem", "extfs"}}
			}),
			want: []string{
				"OK  dockerd 29.8.0 answers on SOCKET",
				`FAIL NRI: NRI is disabled in dockerd: add "nri-opts": {"enable": true, "socket-path": "/var/run/nri/nri.sock"}` + restart,
				`FAIL authorization plugin: containers started with docker run are not checked: add "authorization-plugins": ["imagegate"]` + restart,
				failOpen,
				`WARN image store: dockerd uses the legacy image store (overlay2): the digest of a container started through the Engine API comes from the image's RepoDigests, the digest it was pulled at; switch to the containerd image store ("features": {"containerd-snapshotter": true} in ` + where + ")",
				"FAIL guard socket " + guard + ": no answer (dial unix " + guard + ": connect: no such file or directory): imagegate-runc refuses every container create while imagegate is down: start imagegate, or set guard.socket",
				"FAIL authorization plugin socket " + plugins + "/imagegate.sock: no answer (dial unix " + plugins + "/imagegate.sock: connect: no such file or directory): dockerd refuses every API request, and refuses to start, while its authorization plugin is missing: start imagegate",
			},
		},
		{
			name: "NRI without socket, other plugin, runtime elsewhere", version: "29.1.3",
			info: info(func(m map[string]any) {
				m["NRI"] = map[string]any{"Info": [][2]string{{"plugin-path", "/opt/nri/plugins"}, {"plugin-config-path", "/etc/nri/conf.d"}}}
				m["Plugins"] = map[string]any{"Authorization": []string{"opa"}}
				m["DefaultRuntime"] = "runc"
			}),
			want: []string{
				"OK  dockerd 29.1.3 answers on SOCKET",
				`FAIL NRI: dockerd's NRI accepts no external plugin without a socket: set "nri-opts": {"enable": true, "socket-path": "/var/run/nri/nri.sock"} in ` + where + ", and restart docker",
				`FAIL authorization plugin: containers started with docker run are not checked: add "authorization-plugins": ["opa", "imagegate"]` + restart,
				failOpen,
				"OK  containerd image store in use (overlayfs)",
				guardOK, authzOK,
			},
		},
		{
			name: "NRI socket differs", version: "29.8.0",
			info: info(func(m map[string]any) {
				m["NRI"] = map[string]any{"Info": [][2]string{{"socket-path", "/run/docker-nri.sock"}}}
			}),
			want: []string{
				"OK  dockerd 29.8.0 answers on SOCKET",
				"FAIL NRI socket: dockerd listens on /run/docker-nri.sock but imagegate connects to /var/run/nri/nri.sock: set nri.socket in imagegate's config to /run/docker-nri.sock",
				"OK  authorization plugin imagegate configured in dockerd: containers started through the Engine API are checked",
				"OK  fail-closed: dockerd's default runtime imagegate is /usr/bin/imagegate-runc",
				"OK  containerd image store in use (overlayfs)",
				guardOK, authzOK,
			},
		},
		{
			name: "Docker 28", version: "28.5.1", info: info(nil),
			want: []string{"FAIL dockerd 28.5.1: no NRI before Docker Engine 29: upgrade Docker Engine (29 or later)", guardOK, authzOK},
		},
		{
			name: "version unknown", version: "library-import", info: info(nil),
			want: []string{
				`WARN dockerd library-import: cannot tell whether this version has NRI: version "library-import" is not MAJOR.MINOR[.PATCH]`,
				"OK  NRI enabled in dockerd, socket /var/run/nri/nri.sock",
				"OK  authorization plugin imagegate configured in dockerd: containers started through the Engine API are checked",
				"OK  fail-closed: dockerd's default runtime imagegate is /usr/bin/imagegate-runc",
				"OK  containerd image store in use (overlayfs)",
				guardOK, authzOK,
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			socket := filepath.Join(dir, "docker"+string(rune('a'+i))+".sock")
			fakeEngine(t, socket, c.version, c.info)
			if !c.down {
				listen(t, guard)
				listen(t, filepath.Join(plugins, "imagegate.sock"))
			}
			rs := checkDocker(context.Background(), Config{
				Runtime: "docker", DockerAddress: "unix://" + socket, NRISocket: "/var/run/nri/nri.sock",
				AuthzPlugin: "imagegate", GuardSocket: guard, daemonJSON: where, dockerPluginDir: plugins,
			})
			var got []string
			for _, r := range rs {
				got = append(got, r.String())
			}
			want := slices.Clone(c.want)
			for j := range want {
				want[j] = strings.ReplaceAll(want[j], "SOCKET", socket)
			}
			if !slices.Equal(got, want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
			}
		})
	}
}

func TestDockerChecksWithoutDockerd(t *testing.T) {
	dir := shortDir(t)
	socket := filepath.Join(dir, "docker.sock")
	guard := filepath.Join(dir, "guard.sock")
	listen(t, guard)
	for _, c := range []struct {
		address string
		want    string
	}{
		{"unix://" + socket, "FAIL dockerd: no answer on " + socket + " (Get \"http://docker/version\": dial unix " + socket + ": connect: no such file or directory): " +
			"start docker, or set docker.address to dockerd's socket; dockerd answers no request while an authorization plugin it is configured with is down"},
		{"", "FAIL dockerd: docker.address is empty in imagegate's config: set it to dockerd's socket (unix:///run/docker.sock)"},
		{"tcp://127.0.0.1:2375", `FAIL dockerd: docker.address "tcp://127.0.0.1:2375": imagegate reaches the Docker Engine API only on its unix socket (unix:///run/docker.sock)`},
	} {
		rs := checkDocker(context.Background(), Config{Runtime: "docker", DockerAddress: c.address, GuardSocket: guard})
		var got []string
		for _, r := range rs {
			got = append(got, r.String())
		}
		want := []string{c.want, "OK  guard socket " + guard + " answers"}
		if !slices.Equal(got, want) {
			t.Errorf("docker.address %q: got\n\t%s\nwant\n\t%s", c.address, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
		}
	}
}

func TestDockerAuthzDisabled(t *testing.T) {
	rs := DockerInfo{}.Check("/s", "", "/etc/docker/daemon.json")
	want := "WARN authorization plugin: docker.authzPlugin is empty in imagegate's config: every container started with docker run, docker start or compose is denied"
	if len(rs) < 2 || rs[1].String() != want {
		t.Errorf("got %v, want %s second", rs, want)
	}
}

func TestRuntimes(t *testing.T) {
	dir := shortDir(t)
	dockerSock := filepath.Join(dir, "docker.sock")
	ctrdSock := filepath.Join(dir, "containerd.sock")
	absent := filepath.Join(dir, "absent.sock")
	listen(t, dockerSock)
	listen(t, ctrdSock)
	yes := func() bool { return true }
	no := func() bool { return false }
	for _, c := range []struct {
		name               string
		cfg                Config
		docker, containerd bool
	}{
		{"containerd", Config{Runtime: "containerd", DockerAddress: "unix://" + dockerSock, ContainerdAddress: ctrdSock, dockerdInstalled: yes}, false, true},
		{"docker", Config{Runtime: "docker", DockerAddress: "unix://" + absent, ContainerdAddress: ctrdSock, dockerdInstalled: no}, true, false},
		{"auto, both answer", Config{Runtime: "auto", DockerAddress: "unix://" + dockerSock, ContainerdAddress: ctrdSock, dockerdInstalled: no}, true, true},
		{"auto, Docker only", Config{Runtime: "auto", DockerAddress: "unix://" + dockerSock, ContainerdAddress: absent, dockerdInstalled: no}, true, false},
		{"auto, dockerd installed but down", Config{Runtime: "auto", DockerAddress: "unix://" + absent, ContainerdAddress: absent, dockerdInstalled: yes}, true, false},
		{"auto, containerd only", Config{Runtime: "auto", DockerAddress: "unix://" + absent, ContainerdAddress: ctrdSock, dockerdInstalled: no}, false, true},
		{"auto, nothing", Config{Runtime: "auto", DockerAddress: "unix://" + absent, ContainerdAddress: absent, dockerdInstalled: no}, false, true},
		{"auto, docker.address empty", Config{DockerAddress: "", ContainerdAddress: absent, dockerdInstalled: yes}, false, true},
	} {
		if docker, containerd := runtimes(c.cfg); docker != c.docker || containerd != c.containerd {
			t.Errorf("%s: docker %v, containerd %v; want %v, %v", c.name, docker, containerd, c.docker, c.containerd)
		}
	}
}

func TestCRIDisabled(t *testing.T) {
	for dump, want := range map[string]bool{
		"disabled_plugins = ['cri']\n":                       true,
		"disabled_plugins = ['io.containerd.grpc.v1.cri']\n": true,
		"disabled_plugins = []\n":                            false,
		"version = 3\n":                                      false,
	} {
		if got := CRIDisabled([]byte(dump)); got != want {
			t.Errorf("CRIDisabled(%q) = %v", dump, got)
		}
	}
}

func TestDockerConfigFile(t *testing.T) {
	for name, c := range map[string]struct {
		argv []string
		want string
	}{
		"no flag":            {[]string{"/usr/bin/dockerd", "-H", "fd://", "--containerd=/run/containerd/containerd.sock"}, "/etc/docker/daemon.json"},
		"--config-file FILE": {[]string{"dockerd", "--config-file", "/srv/d.json"}, "/srv/d.json"},
		"--config-file=FILE": {[]string{"dockerd", "--debug", "--config-file=rel.json"}, "rel.json"},
	} {
		if got := DockerConfigFile(c.argv); got != c.want {
			t.Errorf("%s: DockerConfigFile(%q) = %q, want %q", name, c.argv, got, c.want)
		}
	}
}

func TestMergeDaemonJSON(t *testing.T) {
	needs := DockerNeeds{NRISocket: "/var/run/nri/nri.sock", AuthzPlugin: "imagegate"}
	const minimal = `{
  "authorization-plugins": [
    "imagegate"
  ],
  "default-runtime": "imagegate",
  "nri-opts": {
    "enable": true,
    "socket-path": "/var/run/nri/nri.sock"
  },
  "runtimes": {
    "imagegate": {
      "path": "/usr/bin/imagegate-runc"
    }
  }
}
`
	for _, c := range []struct {
		name      string
		operator  string
		want      string
		wantNotes []string
	}{
		{name: "absent or empty", operator: "", want: minimal},
		{name: "empty object", operator: " {}\n", want: minimal},
		{name: "already merged", operator: minimal, want: minimal},
		{
			name: "operator's keys kept",
			operator: `{"log-driver": "journald", "max-concurrent-downloads": 12345678901234567890,
				"authorization-plugins": ["opa"], "runtimes": {"nvidia": {"path": "nvidia-container-runtime"}},
				"nri-opts": {"plugin-path": "/opt/nri"}, "insecure-registries": ["10.0.0.1:5000"]}`,
			want: `{
  "authorization-plugins": [
    "opa",
    "imagegate"
  ],
  "default-runtime": "imagegate",
  "insecure-registries": [
    "10.0.0.1:5000"
  ],
  "log-driver": "journald",
  "max-concurrent-downloads": 12345678901234567890,
  "nri-opts": {
    "enable": true,
    "plugin-path": "/opt/nri",
    "socket-path": "/var/run/nri/nri.sock"
  },
  "runtimes": {
    "imagegate": {
      "path": "/usr/bin/imagegate-runc"
    },
    "nvidia": {
      "path": "nvidia-container-runtime"
    }
  }
}
`,
		},
		{
			name:     "conflicts",
			operator: `{"default-runtime": "nvidia", "nri-opts": {"enable": false, "socket-path": "/run/x.sock"}, "runtimes": {"imagegate": {"path": "/opt/ig"}}}`,
			want:     minimal,
			wantNotes: []string{
				`"nri-opts"."enable" was false; imagegate needs true`,
				`"nri-opts"."socket-path" was "/run/x.sock"; imagegate needs "/var/run/nri/nri.sock"`,
				`"runtimes"."imagegate" was {"path":"/opt/ig"}; imagegate needs {"path":"/usr/bin/imagegate-runc"}`,
				`"default-runtime" was "nvidia"; imagegate needs "imagegate" (imagegate-runc hands every runc call over to guard.runc: set guard.runc in imagegate's config to that runtime's path to keep using it)`,
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, notes, err := MergeDaemonJSON([]byte(c.operator), needs)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Errorf("got\n%s\nwant\n%s", got, c.want)
			}
			if !slices.Equal(notes, c.wantNotes) {
				t.Errorf("notes\n\t%s\nwant\n\t%s", strings.Join(notes, "\n\t"), strings.Join(c.wantNotes, "\n\t"))
			}
		})
	}
	if _, _, err := MergeDaemonJSON([]byte(`["not", "an object"]`), needs); err == nil {
		t.Error("a JSON array merged")
	}
}

func TestReadDaemonJSONAbsent(t *testing.T) {
	data, err := ReadDaemonJSON(filepath.Join(t.TempDir(), "daemon.json"))
	if err != nil || data != nil {
		t.Errorf("absent file: %q, %v", data, err)
	}
}
