package verify_test

import (
	"os"
	"regexp"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
)

// TestKeylessBundleIsCheckedOffline attaches a real keyless bundle (a
// GitHub Actions provenance attestation signed through the public
// sigstore instance, from sigstore-go's examples) to an image, and checks
// it against the public trusted root with nothing fetched: certificate
// chain, SCT, Rekor inclusion and identity. It is an attestation about an
// npm package, so at best it is found and refused as a signature.
func TestKeylessBundleIsCheckedOffline(t *testing.T) {
	data, err := os.ReadFile("testdata/keyless/bundle-provenance.json")
	if err != nil {
		t.Fatal(err)
	}
	trJSON, err := os.ReadFile("testdata/keyless/trusted-root-public-good.json")
	if err != nil {
		t.Fatal(err)
	}
	tr, err := root.NewTrustedRootFromJSON(trJSON)
	if err != nil {
		t.Fatal(err)
	}
	const (
		issuer   = "https://token.actions.githubusercontent.com"
		workflow = "https://github.com/sigstore/sigstore-js/.github/workflows/release.yml@refs/heads/main"
	)
	tests := []struct {
		name    string
		keyless policy.Keyless
		problem string
	}{
		{
			name:    "the right identity verifies, and an attestation is not a signature",
			keyless: policy.Keyless{Issuer: issuer, Subject: workflow, TLog: true},
			problem: "only an attestation bundle (https://slsa.dev/provenance/v0.2), which is not an image signature",
		},
		{
			name:    "another workflow ref says what was found and what the rule wants",
			keyless: policy.Keyless{Issuer: issuer, SubjectRegExp: regexp.MustCompile(`^https://github\.com/sigstore/sigstore-js/\.github/workflows/release\.yml@refs/tags/v.*$`), TLog: true},
			problem: `bundle from ` + workflow + `, rule wants ^https://github\.com/sigstore/sigstore-js/\.github/workflows/release\.yml@refs/tags/v.*$`,
		},
		{
			name:    "another issuer",
			keyless: policy.Keyless{Issuer: "https://gitlab.com", Subject: workflow, TLog: true},
			problem: "bundle from " + workflow + " issued by " + issuer + ", rule wants issuer https://gitlab.com",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			d := f.reg.Push(t, "shop/api:1")
			const v01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"
			if err := testsign.AttachReferrer(d, v01, v01, data, nil); err != nil {
				t.Fatal(err)
			}
			k := tt.keyless
			k.TrustedRoot = tr
			rel := &policy.Signer{Name: "release-ci", Keyless: &k}
			rule := &policy.Rule{Name: "prod", Mode: policy.ModeEnforce,
				Signatures: &policy.Signatures{Threshold: 1, Signers: []*policy.Signer{rel}}}
			vd := f.verify(t, d, rule)
			checkVerdict(t, vd.Allowed, vd.Reasons, false,
				"signatures: no signer verified, rule needs 1 of release-ci; missing release-ci ("+tt.problem+")")
		})
	}
}
