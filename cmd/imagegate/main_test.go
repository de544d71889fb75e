package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

// cli is a registry with one signed and one unsigned image, and a policy
// directory that needs ci's signature.
type cli struct {
	reg              *testsign.Registry
	dir              string
	signed, unsigned string
}

func newCLI(t *testing.T) *cli {
	t.Helper()
	c := &cli{reg: testsign.NewRegistry(t), dir: t.TempDir()}
	ci := testsign.NewKey(t, "ci")
	ci.WritePub(t, c.dir)
	writeFile(t, filepath.Join(c.dir, "policy.yaml"), fmt.Sprintf(`
signers:
  - name: ci
    key: ci.pub
registries:
  - host: %[1]s
    insecure: true
rules:
  - name: prod
    images: ["%[1]s/shop/*"]
    signatures: {threshold: 1, signers: [ci]}
`, c.reg.Host))
	d := c.reg.Push(t, "shop/api:1.4")
	testsign.Sign(t, ci, d)
	c.reg.Push(t, "shop/legacy:0.9")
	c.signed = c.reg.Host + "/shop/api:1.4"
	c.unsigned = c.reg.Host + "/shop/legacy:0.9"
	return c
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestVerifyExitStatus(t *testing.T) {
	c := newCLI(t)
	brokenDir := t.TempDir()
	writeFile(t, filepath.Join(brokenDir, "10-bad.yaml"), "rules:\n  - name: x\n    images: [\"a/b\"]\n    mode: strict\n")
	tests := []struct {
		name   string
		args   []string
		code   int
		stdout string // a prefix of stdout
		stderr string // a substring of stderr
	}{
		{"signed image allowed", []string{"verify", "--policy-dir", c.dir, c.signed}, 0, "ALLOW " + c.signed + "@sha256:", ""},
		{"unsigned image denied", []string{"verify", "--policy-dir", c.dir, c.unsigned}, 1, "DENY  " + c.unsigned + "@sha256:", ""},
		{"one denied image fails the run", []string{"verify", "--policy-dir", c.dir, c.signed, c.unsigned}, 1, "ALLOW ", ""},
		{"missing tag denied", []string{"verify", "--policy-dir", c.dir, c.reg.Host + "/shop/api:nope"}, 1,
			"DENY  " + c.reg.Host + "/shop/api:nope: image \"" + c.reg.Host + "/shop/api:nope\": no such tag in the registry", ""},
		{"invalid policy is an error", []string{"verify", "--policy-dir", brokenDir, c.signed}, 2, "", "10-bad.yaml:4: "},
		{"malformed reference is an error", []string{"verify", "--policy-dir", c.dir, "Not A Ref"}, 2, "", "Not A Ref"},
		{"no image is an error", []string{"verify", "--policy-dir", c.dir}, 2, "", "name at least one IMAGE"},
		{"bad output format is an error", []string{"verify", "--output", "yaml", c.signed}, 2, "", "--output must be text or json"},
		{"unknown command is an error", []string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(tt.args...)
			if code != tt.code || !strings.HasPrefix(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
		})
	}
}

func TestVerifyRegistryUnreachableDenies(t *testing.T) {
	c := newCLI(t)
	c.reg.Close()
	code, stdout, _ := runCLI("verify", "--policy-dir", c.dir, "--output", "json", c.signed)
	var vd verify.Verdict
	if err := json.Unmarshal([]byte(stdout), &vd); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	if code != 1 || vd.Allowed || len(vd.Reasons) != 1 || !strings.Contains(vd.Reasons[0], "registry unreachable: "+c.reg.Host) {
		t.Errorf("exit %d verdict %+v, want a deny saying registry unreachable", code, vd)
	}
}

func TestVerifyJSON(t *testing.T) {
	c := newCLI(t)
	code, stdout, stderr := runCLI("verify", "--policy-dir", c.dir, "--output", "json", c.signed, c.unsigned)
	if code != 1 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one JSON object per image, got:\n%s", stdout)
	}
	var got []map[string]any
	for _, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if got[0]["allowed"] != true || got[0]["rule"] != "prod" || got[0]["mode"] != "enforce" ||
		fmt.Sprint(got[0]["signers"]) != "[ci]" || fmt.Sprint(got[0]["reasons"]) != "[]" {
		t.Errorf("allowed image: %s", lines[0])
	}
	want := "[signatures: no signer verified, rule needs 1 of ci; missing ci (no signature)]"
	if got[1]["allowed"] != false || fmt.Sprint(got[1]["reasons"]) != want || fmt.Sprint(got[1]["signers"]) != "[]" {
		t.Errorf("denied image: %s\nwant reasons %s", lines[1], want)
	}
	if _, ok := got[1]["scan"]; ok {
		t.Errorf("a rule without scan reports a scan: %s", lines[1])
	}
}

func TestPolicyCheck(t *testing.T) {
	c := newCLI(t)
	code, stdout, _ := runCLI("policy", "check", "--policy-dir", c.dir)
	if code != 0 || !strings.Contains(stdout, "OK (1 signers, 1 rules") {
		t.Errorf("valid policy: exit %d: %s", code, stdout)
	}
	bad := t.TempDir()
	writeFile(t, filepath.Join(bad, "10-a.yaml"), "signers:\n  - name: ci\n    key: missing.pub\n")
	writeFile(t, filepath.Join(bad, "20-b.yaml"), "rules:\n  - name: r\n    images: [\"x/y\"]\n    signatures: {threshold: 2, signers: [ci]}\n")
	code, stdout, _ = runCLI("policy", "check", "--policy-dir", bad)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != 1 || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], filepath.Join(bad, "10-a.yaml")+":3: ") ||
		!strings.HasPrefix(lines[1], filepath.Join(bad, "20-b.yaml")+":4: ") {
		t.Errorf("invalid policy: exit %d, want 1 and one FILE:LINE per problem:\n%s", code, stdout)
	}
}

func TestVerifyOffline(t *testing.T) {
	c := newCLI(t)
	state := t.TempDir()
	pol, err := policy.Load(c.dir)
	if err != nil {
		t.Fatal(err)
	}
	store, err := verify.OpenStore(filepath.Join(state, "evidence"), 10)
	if err != nil {
		t.Fatal(err)
	}
	// What the daemon keeps when it verifies the image from its registry.
	subj, err := verify.New(pol).Resolve(context.Background(), c.signed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify.New(pol, verify.WithStore(store)).Verify(context.Background(), subj, pol.RuleFor(subj.Repository)); err != nil {
		t.Fatal(err)
	}
	c.reg.Close()
	byDigest := subj.Repository.String() + "@" + subj.Digest.String()
	unknown := subj.Repository.String() + "@sha256:" + strings.Repeat("0", 64)
	tests := []struct {
		name   string
		image  string
		code   int
		stdout string
		stderr string
	}{
		{"stored evidence allows", byDigest, 0, "evidence=stored", ""},
		{"no stored evidence denies", unknown, 1, "no stored evidence for sha256:0000", ""},
		{"a tag cannot be resolved offline", c.signed, 2, "", "name the image by digest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI("verify", "--policy-dir", c.dir, "--offline", "--state-dir", state, tt.image)
			if code != tt.code || !strings.Contains(stdout, tt.stdout) || !strings.Contains(stderr, tt.stderr) {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, stdout, stderr)
			}
		})
	}
}
