package testsign

import (
	"bytes"
	"crypto"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// CosignV3 runs the cosign v3 CLI with a key pair of its own, offline: an
// empty signing config (no Fulcio, Rekor or TSA to call) and a trusted
// root given on the command line, so that nothing asks the sigstore TUF
// service (notes/sigstore-bundles.md).
type CosignV3 struct {
	Path   string
	Public crypto.PublicKey
	dir    string
}

// NewCosignV3 generates a key pair with the cosign at path and writes its
// signing config, or fails the test. trustedRoot is any trusted_root.json:
// key signing reads nothing from it.
func NewCosignV3(t testing.TB, path string, trustedRoot []byte) *CosignV3 {
	t.Helper()
	c := &CosignV3{Path: path, dir: t.TempDir()}
	must(t, os.WriteFile(filepath.Join(c.dir, "trusted_root.json"), trustedRoot, 0o644))
	c.run(t, "generate-key-pair", "--output-key-prefix", filepath.Join(c.dir, "k"))
	sc := c.run(t, "signing-config", "create")
	must(t, os.WriteFile(filepath.Join(c.dir, "signing_config.json"), sc, 0o644))
	pem, err := os.ReadFile(filepath.Join(c.dir, "k.pub"))
	must(t, err)
	c.Public, err = cryptoutils.UnmarshalPEMToPublicKey(pem)
	must(t, err)
	return c
}

func (c *CosignV3) run(t testing.TB, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(c.Path, args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "COSIGN_PASSWORD=", "COSIGN_YES=true", "TUF_ROOT="+filepath.Join(c.dir, "tuf"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cosign %v: %v\n%s", args, err, stderr.Bytes())
	}
	return out
}

func (c *CosignV3) offline() []string {
	return []string{
		"--key", filepath.Join(c.dir, "k.key"),
		"--signing-config", filepath.Join(c.dir, "signing_config.json"),
		"--trusted-root", filepath.Join(c.dir, "trusted_root.json"),
		"--allow-http-registry", "--yes",
	}
}

// Sign signs d with `cosign sign --key` (v3 defaults: a bundle referrer).
func (c *CosignV3) Sign(t testing.TB, d name.Digest) {
	t.Helper()
	c.run(t, append(append([]string{"sign"}, c.offline()...), d.String())...)
}

// AttestVuln attests a scan of d with `cosign attest --type vuln` (v3).
func (c *CosignV3) AttestVuln(t testing.TB, d name.Digest, report []byte, finished time.Time) {
	t.Helper()
	pred, err := vulnPredicate(report, finished)
	must(t, err)
	p := filepath.Join(c.dir, fmt.Sprintf("vuln-%d.json", time.Now().UnixNano()))
	must(t, os.WriteFile(p, pred, 0o644))
	c.run(t, append(append([]string{"attest", "--type", "vuln", "--predicate", p}, c.offline()...), d.String())...)
}
