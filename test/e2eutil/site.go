package e2eutil

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// WorkDir makes a directory for a test's daemons (named by prefix: short,
// since their sockets live below it) and checks that containers can run on
// this machine.
func WorkDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		return "", err
	}
	if err := Preflight(dir); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("containers cannot run on this machine: %v", err)
	}
	return dir, nil
}

// RemoveWorkDir detaches what is still mounted below dir and removes it,
// unless E2E_KEEP is set.
func RemoveWorkDir(t testing.TB, dir string) {
	UnmountUnder(dir)
	if os.Getenv("E2E_KEEP") != "" {
		t.Logf("kept %s (E2E_KEEP)", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		t.Errorf("removing %s: %v", dir, err)
	}
}

// SignedImage is an image of a test: pushed as Ref (relative to the
// registry), signed by Signers and, with a Report (a Trivy report in
// verify/testdata/reports), attested as scanned by the signer "scanner".
type SignedImage struct {
	Ref     string
	Signers []string
	Report  string
}

// Site is what a test's nodes pull from and judge by: a loopback registry
// with signed images, the cosign keys that signed them and a policy that
// names those keys.
type Site struct {
	Registry  string
	Images    *Images
	Cosign    Cosign
	PolicyDir string
	// Digests are the manifest digests of the images pushed, by Ref.
	Digests map[string]string

	reg *Process
}

// NewSite starts a registry under dir, writes the policy and pushes and
// signs images. Stop stops the registry, also after an error.
func NewSite(crane, busybox, cosign, dir string, images []SignedImage) (*Site, error) {
	s := &Site{
		Cosign:    Cosign{Bin: cosign, Dir: filepath.Join(dir, "keys")},
		PolicyDir: filepath.Join(dir, "policy.d"),
		Digests:   map[string]string{},
	}
	reg, addr, err := StartRegistry(crane, dir)
	if err != nil {
		return s, err
	}
	s.reg, s.Registry = reg, addr
	if s.Images, err = NewImages(crane, busybox, filepath.Join(dir, "images")); err != nil {
		return s, err
	}
	if err := s.writePolicy(); err != nil {
		return s, err
	}
	return s, s.push(images)
}

// Stop stops the registry.
func (s *Site) Stop() {
	if s.reg != nil {
		s.reg.Stop()
	}
}

// writePolicy makes the keys ci, staging and scanner and the policy that
// holds images of the registry's shop/ to two signatures and a clean scan.
func (s *Site) writePolicy() error {
	if err := os.MkdirAll(s.Cosign.Dir, 0o700); err != nil {
		return err
	}
	if err := os.MkdirAll(s.PolicyDir, 0o755); err != nil {
		return err
	}
	pubs := map[string]string{}
	for _, name := range []string{"ci", "staging", "scanner"} {
		pub, err := s.Cosign.GenerateKey(name)
		if err != nil {
			return err
		}
		pubs[name] = pub
	}
	policy := fmt.Sprintf(`signers:
  - name: ci
    key: %s
  - name: staging
    key: %s
  - name: scanner
    key: %s
registries:
  - host: %s
    insecure: true
rules:
  - name: shop
    images: ["%[4]s/shop/**"]
    mode: enforce
    signatures:
      threshold: 2
      signers: [ci, staging]
      required: [ci]
    scan:
      attestors: [scanner]
      maxSeverity: high
      maxAge: 24h
defaults:
  unmatched: deny
`, pubs["ci"], pubs["staging"], pubs["scanner"], s.Registry)
	return os.WriteFile(filepath.Join(s.PolicyDir, "50-e2e.yaml"), []byte(policy), 0o644)
}

// push pushes and signs images.
func (s *Site) push(images []SignedImage) error {
	reports := filepath.Join("..", "..", "verify", "testdata", "reports")
	for _, img := range images {
		d, err := s.Images.Push(s.Registry + "/" + img.Ref)
		if err != nil {
			return err
		}
		s.Digests[img.Ref] = d
		repo, _, _ := strings.Cut(img.Ref, ":")
		pinned := s.Registry + "/" + repo + "@" + d
		for _, signer := range img.Signers {
			if err := s.Cosign.Sign(signer, pinned); err != nil {
				return err
			}
		}
		if img.Report != "" {
			if err := s.Cosign.AttestVuln("scanner", pinned, filepath.Join(reports, img.Report), time.Now()); err != nil {
				return err
			}
		}
	}
	return nil
}
