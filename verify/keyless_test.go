package verify_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	prototrustroot "github.com/sigstore/protobuf-specs/gen/pb-go/trustroot/v1"
	"github.com/sigstore/sigstore-go/pkg/root"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
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

// Identities of a private test sigstore (internal/testsign): a GitHub
// Actions release workflow, signing from a tag or from main.
const (
	ghIssuer    = "https://token.actions.githubusercontent.com"
	releaseTag  = "https://github.com/acme/app/.github/workflows/release.yml@refs/tags/v1.4.0"
	releaseMain = "https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main"
)

var releaseTags = regexp.MustCompile(`^https://github\.com/acme/app/\.github/workflows/release\.yml@refs/tags/v.*$`)

// signedAt is when the test bundles are signed: an hour before the
// fixture's clock, as a CI run before the deploy.
var signedAt = now.Add(-time.Hour)

func trustedRoot(t testing.TB, s *testsign.Sigstore) *root.TrustedRoot {
	t.Helper()
	tr, err := s.TrustedRoot()
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// releaseCI is the keyless signer of the release workflow's tags under
// s's trusted root.
func releaseCI(t testing.TB, s *testsign.Sigstore, tlog bool) *policy.Signer {
	return &policy.Signer{Name: "release-ci", Keyless: &policy.Keyless{
		Issuer: ghIssuer, SubjectRegExp: releaseTags, TrustedRoot: trustedRoot(t, s), TLog: tlog,
	}}
}

func keylessRule(signers ...*policy.Signer) *policy.Rule {
	return &policy.Rule{Name: "prod", Mode: policy.ModeEnforce,
		Signatures: &policy.Signatures{Threshold: len(signers), Signers: signers}}
}

// TestKeylessBundles signs for real through a private sigstore (Fulcio
// certificate with an embedded SCT, Rekor entry with an inclusion proof
// and a signed checkpoint, RFC 3161 timestamps) and verifies offline
// against its trusted_root.json, with SCT and tlog checks on.
func TestKeylessBundles(t *testing.T) {
	ss := testsign.NewSigstore(t, now)
	otherCA, err := ss.WithOtherCA()
	if err != nil {
		t.Fatal(err)
	}
	const missing = "signatures: no signer verified, rule needs 1 of release-ci; missing release-ci "
	tests := []struct {
		name   string
		signer *testsign.Sigstore
		id     testsign.Identity
		opts   testsign.KeylessOptions
		tlog   bool
		reason string // "" for allowed
	}{
		{
			name: "the release workflow from a tag",
			id:   testsign.Identity{Issuer: ghIssuer, Subject: releaseTag},
			opts: testsign.KeylessOptions{At: signedAt},
			tlog: true,
		},
		{
			name:   "another ref of the workflow says what was found and what the rule wants",
			id:     testsign.Identity{Issuer: ghIssuer, Subject: releaseMain},
			opts:   testsign.KeylessOptions{At: signedAt},
			tlog:   true,
			reason: missing + "(bundle from " + releaseMain + ", rule wants " + releaseTags.String() + ")",
		},
		{
			name:   "another issuer",
			id:     testsign.Identity{Issuer: "https://gitlab.com", Subject: releaseTag},
			opts:   testsign.KeylessOptions{At: signedAt},
			tlog:   true,
			reason: missing + "(bundle from " + releaseTag + " issued by https://gitlab.com, rule wants issuer " + ghIssuer + ")",
		},
		{
			name:   "logged after the certificate expired",
			id:     testsign.Identity{Issuer: ghIssuer, Subject: releaseTag},
			opts:   testsign.KeylessOptions{At: signedAt, LogAt: signedAt.Add(testsign.CertLifetime + time.Minute)},
			tlog:   true,
			reason: missing + "(keyless bundle did not verify: failed to verify log inclusion: integrated time outside certificate validity)",
		},
		{
			name:   "a certificate from a CA the trusted root does not hold",
			signer: otherCA,
			id:     testsign.Identity{Issuer: ghIssuer, Subject: releaseTag},
			opts:   testsign.KeylessOptions{At: signedAt},
			tlog:   true,
			reason: missing + "(keyless bundle did not verify: failed to verify leaf certificate: leaf certificate verification failed)",
		},
		{
			name:   "no tlog entry under tlog: require",
			id:     testsign.Identity{Issuer: ghIssuer, Subject: releaseTag},
			opts:   testsign.KeylessOptions{At: signedAt, NoTLog: true, Timestamp: true},
			tlog:   true,
			reason: missing + "(keyless bundle did not verify: failed to verify log inclusion: not enough verified log entries from transparency log: 0 < 1)",
		},
		{
			name: "tlog entry and a timestamp under tlog: require",
			id:   testsign.Identity{Issuer: ghIssuer, Subject: releaseTag},
			opts: testsign.KeylessOptions{At: signedAt, Timestamp: true},
			tlog: true,
		},
		{
			name: "no tlog entry under tlog: ignore, dated by a timestamp authority",
			id:   testsign.Identity{Issuer: ghIssuer, Subject: releaseTag},
			opts: testsign.KeylessOptions{At: signedAt, NoTLog: true, Timestamp: true},
		},
		{
			name:   "no tlog entry under tlog: ignore, and nothing else to date the signature",
			id:     testsign.Identity{Issuer: ghIssuer, Subject: releaseTag},
			opts:   testsign.KeylessOptions{At: signedAt, NoTLog: true},
			reason: missing + "(keyless bundle did not verify: failed to verify timestamps: threshold not met for verified signed & log entry integrated timestamps: 0 < 1)",
		},
		{
			// What cosign writes with Rekor v1 and no timestamp authority:
			// without WithTransparencyLog sigstore-go reads no integrated
			// time, so under tlog: ignore such a bundle cannot be dated.
			name:   "under tlog: ignore the log's integrated time does not date the signature",
			id:     testsign.Identity{Issuer: ghIssuer, Subject: releaseTag},
			opts:   testsign.KeylessOptions{At: signedAt},
			reason: missing + "(keyless bundle did not verify: failed to verify timestamps: threshold not met for verified signed & log entry integrated timestamps: 0 < 1)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			registries(t, func(t *testing.T, f *fixture, mechanism string) {
				d := f.reg.Push(t, "shop/api:1")
				signer := tt.signer
				if signer == nil {
					signer = ss
				}
				testsign.SignKeylessV3(t, signer, d, tt.id, tt.opts)
				vd := f.verify(t, d, keylessRule(releaseCI(t, ss, tt.tlog)))
				checkVerdict(t, vd.Allowed, vd.Reasons, tt.reason == "", tt.reason)
				if tt.reason == "" {
					checkEvidence(t, vd, verify.Evidence{Signer: "release-ci", Mechanism: mechanism})
				}
			})
		})
	}
}

// TestKeylessChecksAreNotSkipped tampers with what the log and the CT log
// vouch for, to show that the inclusion proof and the SCT are checked.
func TestKeylessChecksAreNotSkipped(t *testing.T) {
	ss := testsign.NewSigstore(t, now)
	id := testsign.Identity{Issuer: ghIssuer, Subject: releaseTag}
	const missing = "signatures: no signer verified, rule needs 1 of release-ci; missing release-ci "

	t.Run("an inclusion proof that does not lead to the signed checkpoint", func(t *testing.T) {
		f := newFixture(t)
		d := f.reg.Push(t, "shop/api:1")
		b, err := ss.DSSEBundle(id, cosignSignStatement(d.DigestStr()), testsign.KeylessOptions{At: signedAt})
		if err != nil {
			t.Fatal(err)
		}
		var pb protobundle.Bundle
		if err := protojson.Unmarshal(b, &pb); err != nil {
			t.Fatal(err)
		}
		proof := pb.GetVerificationMaterial().GetTlogEntries()[0].GetInclusionProof()
		if len(proof.Hashes) == 0 {
			t.Fatal("the test log gave an inclusion proof without a path")
		}
		proof.Hashes[0][0] ^= 1
		if b, err = protojson.Marshal(&pb); err != nil {
			t.Fatal(err)
		}
		if err := testsign.AttachBundle(d, b, "https://sigstore.dev/cosign/sign/v1"); err != nil {
			t.Fatal(err)
		}
		vd := f.verify(t, d, keylessRule(releaseCI(t, ss, true)))
		// The rest of the reason holds the two roots, which change with
		// every run.
		want := missing + "(keyless bundle did not verify: failed to verify log inclusion: calculated root:\n"
		if vd.Allowed || len(vd.Reasons) != 1 || !strings.HasPrefix(vd.Reasons[0], want) {
			t.Errorf("allowed %v reasons %q, want a deny starting %q", vd.Allowed, vd.Reasons, want)
		}
	})

	t.Run("a trusted root without the CT log", func(t *testing.T) {
		f := newFixture(t)
		d := f.reg.Push(t, "shop/api:1")
		testsign.SignKeylessV3(t, ss, d, id, testsign.KeylessOptions{At: signedAt})
		data, err := ss.TrustedRootJSON()
		if err != nil {
			t.Fatal(err)
		}
		var pb prototrustroot.TrustedRoot
		if err := protojson.Unmarshal(data, &pb); err != nil {
			t.Fatal(err)
		}
		pb.Ctlogs = nil
		if data, err = protojson.Marshal(&pb); err != nil {
			t.Fatal(err)
		}
		tr, err := root.NewTrustedRootFromJSON(data)
		if err != nil {
			t.Fatal(err)
		}
		s := releaseCI(t, ss, true)
		s.Keyless.TrustedRoot = tr
		vd := f.verify(t, d, keylessRule(s))
		checkVerdict(t, vd.Allowed, vd.Reasons, false, missing+
			"(keyless bundle did not verify: failed to verify signed certificate timestamp: only able to verify 0 SCT entries; unable to meet threshold of 1)")
	})
}

// cosignSignStatement is cosign v3's image signature statement about
// digest.
func cosignSignStatement(digest string) map[string]any {
	alg, hex, _ := strings.Cut(digest, ":")
	return map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"digest": map[string]string{alg: hex}}},
		"predicateType": "https://sigstore.dev/cosign/sign/v1",
		"predicate":     map[string]any{},
	}
}

// TestKeylessAndKeySignersMeetAThreshold: one cosign v2 key signature
// and one keyless v3 bundle make two distinct signers.
func TestKeylessAndKeySignersMeetAThreshold(t *testing.T) {
	ss := testsign.NewSigstore(t, now)
	registries(t, func(t *testing.T, f *fixture, mechanism string) {
		d := f.reg.Push(t, "shop/api:1")
		testsign.Sign(t, f.keys["ci"], d)
		testsign.SignKeylessV3(t, ss, d, testsign.Identity{Issuer: ghIssuer, Subject: releaseTag}, testsign.KeylessOptions{At: signedAt})
		rule := keylessRule(f.pol.Signers["ci"], releaseCI(t, ss, true))
		vd := f.verify(t, d, rule)
		checkVerdict(t, vd.Allowed, vd.Reasons, true, "")
		checkEvidence(t, vd,
			verify.Evidence{Signer: "ci", Mechanism: "cosign-v2-tag"},
			verify.Evidence{Signer: "release-ci", Mechanism: mechanism})

		bare := f.reg.Push(t, "shop/api:2")
		testsign.Sign(t, f.keys["ci"], bare)
		vd = f.verify(t, bare, rule)
		checkVerdict(t, vd.Allowed, vd.Reasons, false,
			"signatures: 1 distinct signer verified (ci), rule needs 2 of ci, release-ci; missing release-ci (no signature)")
	})
}

// TestKeylessAttestorGatesTheScan: a vuln attestation bundle signed
// keylessly by the scan workflow is read for scan.attestors.
func TestKeylessAttestorGatesTheScan(t *testing.T) {
	ss := testsign.NewSigstore(t, now)
	const scanWorkflow = "https://github.com/acme/app/.github/workflows/scan.yml@refs/heads/main"
	scanID := testsign.Identity{Issuer: ghIssuer, Subject: scanWorkflow}
	registries(t, func(t *testing.T, f *fixture, _ string) {
		scanner := &policy.Signer{Name: "scan-ci", Keyless: &policy.Keyless{
			Issuer: ghIssuer, Subject: scanWorkflow, TrustedRoot: trustedRoot(t, ss), TLog: true,
		}}
		rule := &policy.Rule{Name: "prod", Mode: policy.ModeEnforce, Scan: &policy.Scan{
			Attestors: []*policy.Signer{scanner}, MaxSeverity: policy.SeverityHigh, MaxAge: 7 * 24 * time.Hour,
		}}

		clean := f.reg.Push(t, "shop/api:clean")
		testsign.AttestVulnKeylessV3(t, ss, clean, scanID, report(t, "trivy-clean.json"), now.Add(-time.Hour), testsign.KeylessOptions{At: signedAt})
		vd := f.verify(t, clean, rule)
		checkVerdict(t, vd.Allowed, vd.Reasons, true, "")
		if vd.Scan == nil || vd.Scan.Attestor != "scan-ci" {
			t.Errorf("scan = %+v, want scan-ci's", vd.Scan)
		}

		critical := f.reg.Push(t, "shop/api:critical")
		testsign.AttestVulnKeylessV3(t, ss, critical, scanID, report(t, "trivy-critical.json"), now.Add(-time.Hour), testsign.KeylessOptions{At: signedAt})
		vd = f.verify(t, critical, rule)
		checkVerdict(t, vd.Allowed, vd.Reasons, false,
			"scan: 1 vulnerability above high in the scan by scan-ci: CVE-2024-3094 (critical)")

		other := f.reg.Push(t, "shop/api:other")
		testsign.AttestVulnKeylessV3(t, ss, other, testsign.Identity{Issuer: ghIssuer, Subject: releaseTag},
			report(t, "trivy-clean.json"), now.Add(-time.Hour), testsign.KeylessOptions{At: signedAt})
		vd = f.verify(t, other, rule)
		checkVerdict(t, vd.Allowed, vd.Reasons, false, "scan: no scan attestation from scan-ci; did not count: a scan bundle that does not count for scan-ci: bundle from "+
			releaseTag+", rule wants "+scanWorkflow)
	})
}

// TestKeylessSignerFromAPolicyFile loads the keyless signer the way a
// node does, from a policy file naming the trusted_root.json beside it.
func TestKeylessSignerFromAPolicyFile(t *testing.T) {
	ss := testsign.NewSigstore(t, now)
	reg := testsign.NewReferrersRegistry(t)
	d := reg.Push(t, "shop/api:1")
	testsign.SignKeylessV3(t, ss, d, testsign.Identity{Issuer: ghIssuer, Subject: releaseTag}, testsign.KeylessOptions{At: signedAt})

	dir := t.TempDir()
	tr, err := ss.TrustedRootJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "trusted_root.json"), tr, 0o644); err != nil {
		t.Fatal(err)
	}
	yaml := `signers:
  - name: release-ci
    keyless:
      issuer: ` + ghIssuer + `
      subjectRegExp: '` + releaseTags.String() + `'
    trustedRoot: trusted_root.json
    tlog: require
registries:
  - host: ` + reg.Host + `
    insecure: true
rules:
  - name: prod
    images: ["` + reg.Host + `/shop/*"]
    mode: enforce
    signatures:
      threshold: 1
      signers: [release-ci]
`
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	subj, err := verify.NewSubject(d.Repository.String()+":1", d.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	v := verify.New(pol, verify.WithClock(func() time.Time { return now }))
	vd, err := v.Verify(context.Background(), subj, pol.RuleFor(d.Repository))
	if err != nil {
		t.Fatal(err)
	}
	checkVerdict(t, vd.Allowed, vd.Reasons, true, "")
	checkEvidence(t, vd, verify.Evidence{Signer: "release-ci", Mechanism: "bundle-referrer"})
}

// TestCosignV3Interop signs and attests with the real cosign v3 CLI, with
// a key and offline, and verifies with imagegate. It runs when
// IMAGEGATE_COSIGN3 names a cosign v3 binary (make cosign3-test).
func TestCosignV3Interop(t *testing.T) {
	path := os.Getenv("IMAGEGATE_COSIGN3")
	if path == "" {
		t.Skip("IMAGEGATE_COSIGN3 is not set (make cosign3-test)")
	}
	tr, err := os.ReadFile("testdata/keyless/trusted-root-public-good.json")
	if err != nil {
		t.Fatal(err)
	}
	cosign := testsign.NewCosignV3(t, path, tr)
	registries(t, func(t *testing.T, f *fixture, mechanism string) {
		d := f.reg.Push(t, "shop/api:1")
		cosign.Sign(t, d)
		cosign.AttestVuln(t, d, report(t, "trivy-clean.json"), now.Add(-time.Hour))
		signer := &policy.Signer{Name: "cosign3", Key: cosign.Public}
		rule := &policy.Rule{Name: "prod", Mode: policy.ModeEnforce,
			Signatures: &policy.Signatures{Threshold: 1, Signers: []*policy.Signer{signer}},
			Scan: &policy.Scan{Attestors: []*policy.Signer{signer}, MaxSeverity: policy.SeverityHigh,
				MaxAge: 7 * 24 * time.Hour},
		}
		vd := f.verify(t, d, rule)
		checkVerdict(t, vd.Allowed, vd.Reasons, true, "")
		checkEvidence(t, vd, verify.Evidence{Signer: "cosign3", Mechanism: mechanism})
		if vd.Scan == nil || vd.Scan.Attestor != "cosign3" {
			t.Errorf("scan = %+v, want cosign3's", vd.Scan)
		}
	})
}
