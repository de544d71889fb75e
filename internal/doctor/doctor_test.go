package doctor

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestConfigPath(t *testing.T) {
	for name, c := range map[string]struct {
		argv []string
		want string
	}{
		"no flag":         {[]string{"/usr/bin/containerd"}, "/etc/containerd/config.toml"},
		"--config FILE":   {[]string{"containerd", "--config", "/etc/k3s.toml"}, "/etc/k3s.toml"},
		"--config=FILE":   {[]string{"containerd", "--log-level", "debug", "--config=/a.toml"}, "/a.toml"},
		"-c FILE":         {[]string{"containerd", "-c", "/var/lib/rancher/rke2/agent/etc/containerd/config.toml"}, "/var/lib/rancher/rke2/agent/etc/containerd/config.toml"},
		"-c=FILE":         {[]string{"containerd", "-c=rel.toml"}, "rel.toml"},
		"-config FILE":    {[]string{"containerd", "-config", "/b.toml"}, "/b.toml"},
		"other flag only": {[]string{"containerd", "--address", "/run/k3s/containerd/containerd.sock"}, "/etc/containerd/config.toml"},
	} {
		t.Run(name, func(t *testing.T) {
			if got := ConfigPath(c.argv); got != c.want {
				t.Errorf("ConfigPath(%q) = %q, want %q", c.argv, got, c.want)
			}
		})
	}
}

func TestParseVersion(t *testing.T) {
	for v, want := range map[string][2]int{
		"v2.4.2": {2, 4}, "1.7.27-k3s1": {1, 7}, "2.1.0-rc.1": {2, 1}, "v1.6": {1, 6},
	} {
		major, minor, err := ParseVersion(v)
		if err != nil || major != want[0] || minor != want[1] {
			t.Errorf("ParseVersion(%q) = %d, %d, %v, want %d, %d", v, major, minor, err, want[0], want[1])
		}
	}
	for _, v := range []string{"", "v2", "dev", "2.x.1"} {
		if _, _, err := ParseVersion(v); err == nil {
			t.Errorf("ParseVersion(%q) took it", v)
		}
	}
}

// A containerd 1.7 config (version 2): NRI off by default and no validator.
const containerd17 = `version = 2
[plugins]
  [plugins."io.containerd.nri.v1.nri"]
    disable = true
    socket_path = "/var/run/nri/nri.sock"
`

func TestNRICheck(t *testing.T) {
	const where = "pid 1, /usr/bin/containerd --config /etc/containerd/config.toml"
	const failOpen = "FAIL fail-closed: fail-open: containers will be created while imagegate is down; set "
	for name, c := range map[string]struct {
		dump   string // a file of testdata, or the dump itself
		socket string
		want   []string
	}{
		"fail-closed, real 2.4.2 dump": {
			dump: "containerd-2.4.2-fail-closed.toml", socket: "/var/run/nri/nri.sock",
			want: []string{
				"OK  NRI enabled in containerd",
				`OK  fail-closed: containerd requires NRI plugin imagegate (default_validator enabled, required_plugins ["imagegate"])`,
			},
		},
		"2.4.2 defaults: fail-open": {
			dump: "containerd-2.4.2-default.toml", socket: "/var/run/nri/nri.sock",
			want: []string{
				"OK  NRI enabled in containerd",
				failOpen + `enable = true and required_plugins = ["imagegate"] under [plugins.'io.containerd.nri.v1.nri'.default_validator] in the config of ` + where + ", and restart containerd",
			},
		},
		"required but validator off": {
			dump:   "[plugins.'io.containerd.nri.v1.nri']\nsocket_path = '/s'\n[plugins.'io.containerd.nri.v1.nri'.default_validator]\nrequired_plugins = ['other', 'imagegate']\n",
			socket: "/s",
			want: []string{
				"OK  NRI enabled in containerd",
				failOpen + "enable = true under [plugins.'io.containerd.nri.v1.nri'.default_validator] in the config of " + where + ", and restart containerd",
			},
		},
		"validator on, imagegate not required": {
			dump:   "[plugins.'io.containerd.nri.v1.nri']\nsocket_path = '/s'\n[plugins.'io.containerd.nri.v1.nri'.default_validator]\nenable = true\nrequired_plugins = ['other']\n",
			socket: "/s",
			want: []string{
				"OK  NRI enabled in containerd",
				failOpen + `required_plugins = ["other", "imagegate"] under [plugins.'io.containerd.nri.v1.nri'.default_validator] in the config of ` + where + ", and restart containerd",
			},
		},
		"socket differs": {
			dump: "containerd-2.4.2-fail-closed.toml", socket: "/run/nri.sock",
			want: []string{
				"OK  NRI enabled in containerd",
				"FAIL NRI socket: containerd listens on /var/run/nri/nri.sock but imagegate connects to /run/nri.sock: set nri.socket in imagegate's config to /var/run/nri/nri.sock",
				`OK  fail-closed: containerd requires NRI plugin imagegate (default_validator enabled, required_plugins ["imagegate"])`,
			},
		},
		"containerd 1.7, NRI disabled": {
			dump: containerd17, socket: "/var/run/nri/nri.sock",
			want: []string{"FAIL NRI: NRI is disabled: set disable = false under [plugins.'io.containerd.nri.v1.nri'] in the config of " + where + ", and restart containerd"},
		},
		"no NRI plugin": {
			dump: "version = 2\n[plugins]\n", socket: "/var/run/nri/nri.sock",
			want: []string{"FAIL NRI: this containerd has no NRI plugin: upgrade to containerd 2.4 or later"},
		},
	} {
		t.Run(name, func(t *testing.T) {
			dump := []byte(c.dump)
			if strings.HasSuffix(c.dump, ".toml") {
				var err error
				if dump, err = os.ReadFile(filepath.Join("testdata", c.dump)); err != nil {
					t.Fatal(err)
				}
			}
			nri, err := ParseNRI(dump)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range nri.Check(c.socket, where) {
				got = append(got, r.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("got\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(c.want, "\n\t"))
			}
		})
	}
}

func TestParseNRIRejectsGarbage(t *testing.T) {
	if _, err := ParseNRI([]byte("plugins = [")); err == nil {
		t.Error("a dump that is no TOML parsed")
	}
}

func TestKeyFiles(t *testing.T) {
	policy := `signers:
  - name: ci
    key: keys/ci.pub
  - name: scanner
    keyData: "inline"
  - name: release
    keyless: {issuer: https://issuer}
    trustedRoot: /etc/imagegate/trusted_root.json
---
signers:
  - name: other
    key: /etc/keys/other.pub
`
	got := KeyFiles("/etc/imagegate/policy.d", []byte(policy))
	want := []string{"/etc/imagegate/policy.d/keys/ci.pub", "/etc/imagegate/trusted_root.json", "/etc/keys/other.pub"}
	if !slices.Equal(got, want) {
		t.Errorf("KeyFiles = %q, want %q", got, want)
	}
}

func TestPermissions(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "ci.pub")
	if err := os.WriteFile(filepath.Join(dir, "10.yaml"), []byte("signers:\n  - name: ci\n    key: ci.pub\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("pem"), 0o644); err != nil {
		t.Fatal(err)
	}
	if rs := checkPermissions(dir); len(rs) != 1 || rs[0].String() != "OK  policy directory, files and keys writable by their owner only (3 checked)" {
		t.Errorf("safe files: %v", rs)
	}
	if err := os.Chmod(key, 0o664); err != nil {
		t.Fatal(err)
	}
	want := "FAIL file " + key + ": writable by group or others (-rw-rw-r--): chmod go-w " + key
	if rs := checkPermissions(dir); len(rs) != 1 || rs[0].String() != want {
		t.Errorf("group-writable key: got %v, want %s", rs, want)
	}
}

func TestNTPSynchronized(t *testing.T) {
	for out, want := range map[string][2]bool{
		"NTPSynchronized=yes\n": {true, true},
		"NTPSynchronized=no\n":  {false, true},
		"":                      {false, false},
	} {
		synced, known := NTPSynchronized([]byte(out))
		if synced != want[0] || known != want[1] {
			t.Errorf("NTPSynchronized(%q) = %v, %v, want %v", out, synced, known, want)
		}
	}
}
