package packaging_test

import (
	"bytes"
	"errors"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/plugin"
	"github.com/imagegate/imagegate/policy"
)

// The default config and policy are plain file checks, cheap enough for
// `make test`: they catch the packaged files drifting from the code.

// TestDefaultConfigIsTheDefaults uncomments every key of the packaged
// config and expects exactly plugin.DefaultConfig: the file documents the
// defaults, so a key shown with another value would mislead the operator.
func TestDefaultConfigIsTheDefaults(t *testing.T) {
	data, err := os.ReadFile("imagegate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	commented, err := plugin.LoadConfig("imagegate.yaml")
	if err != nil {
		t.Fatalf("as shipped: %v", err)
	}
	if !reflect.DeepEqual(commented, plugin.DefaultConfig()) {
		t.Errorf("as shipped, the config is not all defaults:\n got %+v\nwant %+v", commented, plugin.DefaultConfig())
	}
	// "#key:" and "#  key:" are settings; "# text" is prose.
	setting := regexp.MustCompile(`(?m)^#([A-Za-z]|  )`)
	uncommented := setting.ReplaceAll(data, []byte("$1"))
	path := filepath.Join(t.TempDir(), "imagegate.yaml")
	if err := os.WriteFile(path, uncommented, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := plugin.LoadConfig(path)
	if err != nil {
		t.Fatalf("uncommented: %v\n%s", err, uncommented)
	}
	if !reflect.DeepEqual(got, plugin.DefaultConfig()) {
		t.Errorf("uncommented, the config differs from plugin.DefaultConfig:\n got %+v\nwant %+v", got, plugin.DefaultConfig())
	}
	if bytes.Equal(uncommented, data) {
		t.Errorf("no commented-out setting found")
	}
}

// TestShippedPolicyIsInert: installing the package must change nothing on
// a running node until the operator writes a policy, so the shipped policy
// has no rule and allows what no rule matches.
func TestShippedPolicyIsInert(t *testing.T) {
	pol, err := policy.Load("policy.d")
	if err != nil {
		t.Fatal(err)
	}
	if len(pol.Rules) != 0 || len(pol.Signers) != 0 || pol.Unmatched != "allow" {
		t.Errorf("shipped policy: %d rules, %d signers, unmatched %q; want 0, 0, allow",
			len(pol.Rules), len(pol.Signers), pol.Unmatched)
	}
}

// The rest installs the .deb on this machine: it runs only from
// `make package-test`, as root, on a machine that may be changed.

func needPackageTest(t *testing.T) {
	t.Helper()
	if os.Getenv("IMAGEGATE_PACKAGE_TEST") == "" {
		t.Skip("installs packages on this machine: run with make package-test")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to install packages")
	}
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := run(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// shipped is what the packages hold besides the examples, with modes.
var shipped = map[string]fs.FileMode{
	"/usr/bin/imagegate":                       0o755,
	"/usr/bin/imagegate-runc":                  0o755,
	"/etc/imagegate":                           fs.ModeDir | 0o755,
	"/etc/imagegate/policy.d":                  fs.ModeDir | 0o755,
	"/etc/imagegate/keys":                      fs.ModeDir | 0o755,
	"/etc/imagegate/imagegate.yaml":            0o644,
	"/etc/imagegate/policy.d/90-defaults.yaml": 0o644,
	"/etc/imagegate/containerd-imagegate.toml": 0o644,
}

var conffiles = []string{
	"/etc/imagegate/containerd-imagegate.toml",
	"/etc/imagegate/imagegate.yaml",
	"/etc/imagegate/policy.d/90-defaults.yaml",
}

const debUnit = "/lib/systemd/system/imagegate.service"

func TestDeb(t *testing.T) {
	needPackageTest(t)
	deb := os.Getenv("IMAGEGATE_DEB")
	if deb == "" {
		t.Fatal("IMAGEGATE_DEB names no package")
	}
	// A run that died half-way left it installed.
	_, _ = run(t, "dpkg", "--purge", "imagegate")
	t.Cleanup(func() { _, _ = run(t, "dpkg", "--purge", "imagegate") })

	out := mustRun(t, "dpkg", "-i", deb)
	if _, err := os.Stat("/run/systemd/system"); err != nil && !strings.Contains(out, "systemd is not running") {
		t.Errorf("without systemd as PID 1, postinst should say it skipped the service:\n%s", out)
	}

	t.Run("files", func(t *testing.T) {
		want := with(shipped, debUnit, 0o644)
		for path, mode := range want {
			fi, err := os.Lstat(path)
			if err != nil {
				t.Error(err)
				continue
			}
			if got := fi.Mode() & (fs.ModeType | fs.ModePerm); got != mode {
				t.Errorf("%s: mode %v, want %v", path, got, mode)
			}
		}
		for _, f := range []string{"policy.d/keys/ci.pub", "systemd/k3s.conf", "systemd/crio.conf"} {
			if _, err := os.Stat("/usr/share/doc/imagegate/examples/" + f); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("conffiles", func(t *testing.T) {
		out := mustRun(t, "dpkg-query", "-W", "-f=${Conffiles}", "imagegate")
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				got = append(got, f[0])
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, conffiles) {
			t.Errorf("conffiles %q, want %q", got, conffiles)
		}
	})

	t.Run("version", func(t *testing.T) {
		out := mustRun(t, "/usr/bin/imagegate", "version")
		if !strings.HasPrefix(out, "imagegate ") || strings.HasPrefix(out, "imagegate dev ") {
			t.Errorf("imagegate version: %q, want the build's version", out)
		}
	})

	t.Run("policy check", func(t *testing.T) {
		out := mustRun(t, "/usr/bin/imagegate", "policy", "check")
		if !strings.Contains(out, "0 rules") {
			t.Errorf("the installed policy should be the inert one: %s", out)
		}
	})

	t.Run("systemd-analyze", func(t *testing.T) {
		verifyUnit(t, debUnit)
	})

	t.Run("reinstall keeps edits", func(t *testing.T) {
		const conf = "/etc/imagegate/imagegate.yaml"
		edited := []byte("log:\n  level: debug\n")
		if err := os.WriteFile(conf, edited, 0o644); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "dpkg", "-i", deb)
		if got, _ := os.ReadFile(conf); !bytes.Equal(got, edited) {
			t.Errorf("reinstalling replaced the operator's %s:\n%s", conf, got)
		}
	})

	t.Run("refuses removal while containerd requires it", func(t *testing.T) {
		const dropin = "/etc/containerd/conf.d/imagegate.toml"
		if _, err := os.Stat(dropin); err == nil {
			t.Skip(dropin + " exists on this machine; not touching it")
		}
		if _, err := os.Stat("/etc/containerd"); err == nil {
			t.Skip("/etc/containerd exists on this machine; not touching it")
		}
		if err := os.MkdirAll(filepath.Dir(dropin), 0o755); err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll("/etc/containerd")
		data, err := os.ReadFile("/etc/imagegate/containerd-imagegate.toml")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dropin, data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := run(t, "dpkg", "-r", "imagegate")
		if err == nil || !strings.Contains(out, "containerd requires the imagegate NRI plugin") {
			t.Fatalf("dpkg -r with %s in place: err %v, want a refusal:\n%s", dropin, err, out)
		}
		if _, err := os.Stat("/usr/bin/imagegate"); err != nil {
			t.Errorf("a refused removal removed files: %v", err)
		}
		// dpkg leaves the package half-installed after a failed prerm;
		// configuring it again is what an operator would do.
		mustRun(t, "dpkg", "--configure", "-a")
	})

	t.Run("purge", func(t *testing.T) {
		// The unit's StateDirectory would have made this.
		if err := os.MkdirAll("/var/lib/imagegate/x", 0o700); err != nil {
			t.Fatal(err)
		}
		mustRun(t, "dpkg", "--purge", "imagegate")
		left := []string{debUnit, "/usr/share/doc/imagegate", "/var/lib/imagegate"}
		for path := range shipped {
			left = append(left, path)
		}
		for _, path := range left {
			if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s is left after purge (%v)", path, err)
			}
		}
		if out, err := run(t, "dpkg-query", "-W", "-f=${Status}", "imagegate"); err == nil && strings.Contains(out, "installed") {
			t.Errorf("dpkg still knows imagegate: %s", out)
		}
	})
}

// verifyUnit runs systemd-analyze verify on the unit alone and with each
// drop-in example, then checks the hardening score. verify exits 0 on
// unknown keys, so anything it prints is a failure.
func verifyUnit(t *testing.T, unit string) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed (apt-get install systemd)")
	}
	dropins, err := filepath.Glob("../systemd/dropins/*.conf")
	if err != nil || len(dropins) == 0 {
		t.Fatalf("no drop-in examples: %v", err)
	}
	for _, dropin := range append([]string{""}, dropins...) {
		dir := t.TempDir()
		data, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "imagegate.service"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if dropin != "" {
			d := filepath.Join(dir, "imagegate.service.d")
			data, err := os.ReadFile(dropin)
			if err == nil {
				err = os.Mkdir(d, 0o755)
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(d, filepath.Base(dropin)), data, 0o644)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command("systemd-analyze", "verify", filepath.Join(dir, "imagegate.service"))
		// The trailing ':' keeps the standard unit paths after ours.
		cmd.Env = append(os.Environ(), "SYSTEMD_UNIT_PATH="+dir+":")
		out, err := cmd.CombinedOutput()
		if err != nil || len(bytes.TrimSpace(out)) > 0 {
			t.Errorf("systemd-analyze verify (drop-in %q): %v\n%s", filepath.Base(dropin), err, out)
		}
	}

	out := mustRun(t, "systemd-analyze", "security", "--offline=true", unit)
	m := regexp.MustCompile(`Overall exposure level for imagegate.service: ([0-9.]+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	// 1.6 when written; the rest is running as root (the sockets are
	// root's) and reaching registries.
	if level, _ := strconv.ParseFloat(m[1], 64); level > 2.0 {
		t.Errorf("exposure level %s, want at most 2.0:\n%s", m[1], out)
	}
}

func TestRPM(t *testing.T) {
	needPackageTest(t)
	rpmFile := os.Getenv("IMAGEGATE_RPM")
	if rpmFile == "" {
		t.Fatal("IMAGEGATE_RPM names no package")
	}
	if _, err := exec.LookPath("rpm"); err != nil {
		t.Skip("rpm is not installed (apt-get install rpm)")
	}
	want := with(shipped, "/usr/lib/systemd/system/imagegate.service", 0o644)

	out := mustRun(t, "rpm", "-qp", "--queryformat", "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]", rpmFile)
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 { // no flags
			f = []string{f[0], "", f[1]}
		}
		got[f[2]] = f[0] + " " + f[1]
	}
	for path, mode := range want {
		perms, ok := got[path]
		if !ok {
			t.Errorf("%s is not in the rpm", path)
			continue
		}
		if p, _, _ := strings.Cut(perms, " "); p != mode.String() && !(mode.IsDir() && p == "d"+mode.Perm().String()[1:]) {
			t.Errorf("%s: %s, want %v", path, p, mode)
		}
	}
	if _, ok := got[debUnit]; ok {
		t.Errorf("the rpm holds the unit under /lib as well")
	}

	cfg := strings.Fields(mustRun(t, "rpm", "-qp", "--configfiles", rpmFile))
	slices.Sort(cfg)
	if !slices.Equal(cfg, conffiles) {
		t.Errorf("rpm config files %q, want %q", cfg, conffiles)
	}
	for _, path := range conffiles {
		if _, flags, _ := strings.Cut(got[path], " "); !strings.Contains(flags, "c") || !strings.Contains(flags, "n") {
			t.Errorf("%s: flags %q, want config (c) and noreplace (n)", path, flags)
		}
	}

	scripts := mustRun(t, "rpm", "-qp", "--scripts", rpmFile)
	for _, s := range []string{"postinstall scriptlet", "preuninstall scriptlet", "postuninstall scriptlet"} {
		if !strings.Contains(scripts, s) {
			t.Errorf("the rpm has no %s", s)
		}
	}
}

// with returns m plus one entry.
func with(m map[string]fs.FileMode, path string, mode fs.FileMode) map[string]fs.FileMode {
	out := maps.Clone(m)
	out[path] = mode
	return out
}
