// Command demo shows imagegate's decisions on a fresh machine with nothing
// but Go: it starts a registry on loopback, generates signer keys, pushes
// and signs sample images for real, writes a policy directory from
// examples/policy.d, and runs `imagegate verify` on each image.
package main

import (
	"bytes"
	"embed"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/imagegate/imagegate/internal/testsign"
)

//go:embed reports
var reports embed.FS

// sample is one image of the demo and the verdict it must get.
type sample struct {
	repoTag string
	what    string
	signers []string
	report  string        // scan report attested by scanner; "" for none
	age     time.Duration // how long ago the scan finished
	// workflow, when set, signs the image keylessly (cosign v3) as the
	// release workflow at this git ref.
	workflow string
	want     string // ALLOW, DENY or WARN
}

// releaseWorkflow is the CI identity the example policy trusts, at a ref.
func releaseWorkflow(ref string) testsign.Identity {
	return testsign.Identity{
		Issuer:  "https://token.actions.githubusercontent.com",
		Subject: "https://github.com/acme/shop/.github/workflows/release.yml@" + ref,
	}
}

var samples = []sample{
	{"shop/api:1.4", "signed by ci, scanner and staging, scanned clean", []string{"ci", "scanner", "staging"}, "trivy-clean.json", 2 * time.Hour, "", "ALLOW"},
	{"shop/cart:2.0", "signed by ci and scanner only", []string{"ci", "scanner"}, "trivy-clean.json", 2 * time.Hour, "", "DENY"},
	{"shop/legacy:0.9", "unsigned", nil, "", 0, "", "DENY"},
	{"shop/mystery:1.0", "signed by a key the policy does not know", []string{"rogue"}, "", 0, "", "DENY"},
	{"shop/payments:3.1", "fully signed, scan found a critical CVE", []string{"ci", "scanner", "staging"}, "trivy-critical.json", 2 * time.Hour, "", "DENY"},
	{"shop/search:5.2", "fully signed, last scanned 30 days ago", []string{"ci", "scanner", "staging"}, "trivy-clean.json", 30 * 24 * time.Hour, "", "DENY"},
	{"sandbox/tool:0.1", "unsigned, under a warn-mode rule", nil, "", 0, "", "WARN"},
	{"other/thing:1", "matched by no rule", []string{"ci"}, "", 0, "", "DENY"},
	{"tools/cli:2.0", "signed keylessly (cosign v3) by the release workflow of tag v2.0", nil, "", 0, "refs/tags/v2.0", "ALLOW"},
	{"tools/cli:2.1-rc", "signed keylessly by the release workflow, but from a branch", nil, "", 0, "refs/heads/main", "DENY"},
}

func main() {
	imagegate := flag.String("imagegate", "bin/imagegate", "the imagegate binary")
	examples := flag.String("examples", "examples/policy.d", "the example policy directory")
	flag.Parse()
	if err := run(*imagegate, *examples); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(imagegate, examples string) error {
	reg, err := startRegistry()
	if err != nil {
		return err
	}
	defer reg.Close()
	work, err := os.MkdirTemp("", "imagegate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	dir := filepath.Join(work, "policy.d")
	keys, err := writePolicy(examples, dir, reg.Host)
	if err != nil {
		return err
	}
	// A private sigstore stands in for the public one: the demo cannot
	// reach Fulcio or Rekor, and its trusted root replaces the example's.
	sigstore, err := testsign.CreateSigstore(time.Now())
	if err != nil {
		return err
	}
	trustedRoot, err := sigstore.TrustedRootJSON()
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "trusted_root.json"), trustedRoot, 0o644); err != nil {
		return err
	}
	fmt.Printf("Registry on %s; policy in %s (from %s, keys generated now).\n\n", reg.Host, dir, examples)

	var images []string
	for _, s := range samples {
		img, err := push(reg, keys, sigstore, s)
		if err != nil {
			return fmt.Errorf("%s: %w", s.repoTag, err)
		}
		images = append(images, img)
	}

	failed := 0
	for i, s := range samples {
		fmt.Printf("# %s: %s\n$ imagegate verify --policy-dir %s %s\n", s.repoTag, s.what, dir, images[i])
		out, code := verify(imagegate, dir, "text", images[i])
		fmt.Printf("%s(exit %d)\n\n", out, code)
		if got := strings.Fields(out + " ?")[0]; got != s.want {
			fmt.Printf("!! expected %s, got %s\n\n", s.want, got)
			failed++
		}
	}
	fmt.Printf("# The same decision as JSON, as CI and scripts read it:\n$ imagegate verify --policy-dir %s --output json %s\n", dir, images[4])
	out, _ := verify(imagegate, dir, "json", images[4])
	fmt.Println(out)
	if failed > 0 {
		return fmt.Errorf("%d images did not get the expected verdict", failed)
	}
	return nil
}

// startRegistry serves the demo registry on 127.0.0.1:5000, the host of the
// example policy, or on a free port when that one is taken.
func startRegistry() (*testsign.Registry, error) {
	if reg, err := testsign.StartRegistryOn("127.0.0.1:5000"); err == nil {
		return reg, nil
	}
	return testsign.StartRegistry()
}

// writePolicy copies the example policy into dir for registry host, with
// freshly generated keys in place of the example ones.
func writePolicy(examples, dir, host string) (map[string]*testsign.Key, error) {
	if err := os.MkdirAll(filepath.Join(dir, "keys"), 0o755); err != nil {
		return nil, err
	}
	files, err := filepath.Glob(filepath.Join(examples, "*.yaml"))
	if err != nil || len(files) == 0 {
		return nil, fmt.Errorf("no example policy in %s (run the demo from the repository root)", examples)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		b = bytes.ReplaceAll(b, []byte("127.0.0.1:5000"), []byte(host))
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
			return nil, err
		}
	}
	keys := map[string]*testsign.Key{}
	for _, n := range []string{"ci", "scanner", "staging", "rogue"} {
		k, err := testsign.GenerateKey(n)
		if err != nil {
			return nil, err
		}
		keys[n] = k
		if n == "rogue" {
			continue
		}
		if _, err := k.SavePub(filepath.Join(dir, "keys")); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// push pushes a sample image, signs and attests it, and returns its
// reference by tag, as an operator would name it.
func push(reg *testsign.Registry, keys map[string]*testsign.Key, sigstore *testsign.Sigstore, s sample) (string, error) {
	d, err := reg.PushRandomImage(s.repoTag)
	if err != nil {
		return "", err
	}
	if s.workflow != "" {
		opts := testsign.KeylessOptions{At: time.Now().Add(-time.Minute)}
		if err := sigstore.SignImageV3(d, releaseWorkflow(s.workflow), opts); err != nil {
			return "", err
		}
	}
	for _, n := range s.signers {
		if err := keys[n].SignImage(d); err != nil {
			return "", err
		}
	}
	if s.report != "" {
		rep, err := reports.ReadFile("reports/" + s.report)
		if err != nil {
			return "", err
		}
		if err := keys["scanner"].AttestVuln(d, rep, time.Now().Add(-s.age)); err != nil {
			return "", err
		}
	}
	return reg.Host + "/" + s.repoTag, nil
}

func verify(imagegate, dir, output, image string) (string, int) {
	cmd := exec.Command(imagegate, "verify", "--policy-dir", dir, "--output", output, image)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		return err.Error() + "\n", -1
	}
	return string(out), 0
}
