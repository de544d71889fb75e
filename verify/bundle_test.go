package verify_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

// registries runs a test against a registry with the referrers API and
// one without it, where bundles are found through the referrers tag.
func registries(t *testing.T, test func(t *testing.T, f *fixture, mechanism string)) {
	for _, tc := range []struct {
		name, mechanism string
		start           func(testing.TB) *testsign.Registry
	}{
		{"referrers API", "bundle-referrer", testsign.NewReferrersRegistry},
		{"referrers tag schema", "bundle-referrer-tag", testsign.NewRegistry},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.reg = tc.start(t)
			f.pol.Registries = map[string]*policy.Registry{f.reg.Host: {Host: f.reg.Host, Insecure: true}}
			test(t, f, tc.mechanism)
		})
	}
}

func checkEvidence(t *testing.T, vd verify.Verdict, want ...verify.Evidence) {
	t.Helper()
	if want == nil {
		want = []verify.Evidence{}
	}
	if !slices.Equal(vd.Evidence, want) {
		t.Errorf("evidence = %+v, want %+v", vd.Evidence, want)
	}
}

func TestBundleSignatureAllows(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, mechanism string) {
		d := f.reg.Push(t, "shop/api:1")
		testsign.SignV3(t, f.keys["ci"], d)
		vd := f.verify(t, d, f.sigRule(1))
		checkVerdict(t, vd.Allowed, vd.Reasons, true, "")
		checkEvidence(t, vd, verify.Evidence{Signer: "ci", Mechanism: mechanism})
	})
}

func TestBundleMessageSignatureOverTheDigestAllows(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, mechanism string) {
		d := f.reg.Push(t, "shop/api:1")
		got, err := remote.Get(d)
		if err != nil {
			t.Fatal(err)
		}
		b, err := f.keys["ci"].MessageBundle(got.Manifest)
		if err != nil {
			t.Fatal(err)
		}
		if err := testsign.AttachBundle(d, b, ""); err != nil {
			t.Fatal(err)
		}
		vd := f.verify(t, d, f.sigRule(1))
		checkVerdict(t, vd.Allowed, vd.Reasons, true, "")
		checkEvidence(t, vd, verify.Evidence{Signer: "ci", Mechanism: mechanism})
	})
}

func TestBundleForAnotherDigestDenies(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, _ string) {
		signed := f.reg.Push(t, "shop/api:good")
		evil := f.reg.Push(t, "shop/api:evil")
		testsign.SignV3(t, f.keys["ci"], signed)
		testsign.SignV3As(t, f.keys["ci"], evil, signed)
		vd := f.verify(t, evil, f.sigRule(1))
		checkVerdict(t, vd.Allowed, vd.Reasons, false,
			"signatures: no signer verified, rule needs 1 of ci, scanner, staging; missing ci (bundle signature over another digest "+
				signed.DigestStr()+"), scanner (no signature), staging (no signature)")
		checkEvidence(t, vd)
	})
}

func TestBundleVulnAttestationIsNotASignatureButGatesTheScan(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, _ string) {
		rule := f.sigRule(1)
		rule.Scan = f.scanRule(policy.SeverityHigh).Scan

		critical := f.reg.Push(t, "shop/api:critical")
		testsign.AttestVulnV3(t, f.keys["scanner"], critical, report(t, "trivy-critical.json"), now.Add(-time.Hour))
		vd := f.verify(t, critical, rule)
		want := []string{
			"signatures: no signer verified, rule needs 1 of ci, scanner, staging; missing ci (no signature), " +
				"scanner (only an attestation bundle (https://cosign.sigstore.dev/attestation/vuln/v1), which is not an image signature), staging (no signature)",
			"scan: 1 vulnerability above high in the scan by scanner: CVE-2024-3094 (critical)",
		}
		if vd.Allowed || !slices.Equal(vd.Reasons, want) {
			t.Errorf("allowed %v reasons %q\nwant %q", vd.Allowed, vd.Reasons, want)
		}

		clean := f.reg.Push(t, "shop/api:clean")
		testsign.AttestVulnV3(t, f.keys["scanner"], clean, report(t, "trivy-clean.json"), now.Add(-time.Hour))
		testsign.SignV3(t, f.keys["ci"], clean)
		vd = f.verify(t, clean, rule)
		checkVerdict(t, vd.Allowed, vd.Reasons, true, "")
		if vd.Scan == nil || vd.Scan.Attestor != "scanner" {
			t.Errorf("scan = %+v, want the scanner's", vd.Scan)
		}
	})
}

func TestBundleVulnAttestationByANonAttestorDoesNotCount(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, _ string) {
		d := f.reg.Push(t, "shop/api:1")
		testsign.AttestVulnV3(t, f.keys["rogue"], d, report(t, "trivy-clean.json"), now.Add(-time.Hour))
		vd := f.verify(t, d, f.scanRule(policy.SeverityHigh))
		checkVerdict(t, vd.Allowed, vd.Reasons, false,
			"scan: no scan attestation from scanner; did not count: a scan bundle not signed by an attestor of the rule")
	})
}

func TestMixedFormatsMeetAThreshold(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, mechanism string) {
		d := f.reg.Push(t, "shop/api:1")
		testsign.Sign(t, f.keys["ci"], d)
		testsign.SignV3(t, f.keys["staging"], d)
		vd := f.verify(t, d, f.sigRule(2))
		checkVerdict(t, vd.Allowed, vd.Reasons, true, "")
		checkEvidence(t, vd,
			verify.Evidence{Signer: "ci", Mechanism: "cosign-v2-tag"},
			verify.Evidence{Signer: "staging", Mechanism: mechanism})
	})
}

func TestOneKeyInBothFormatsCountsOnce(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, _ string) {
		d := f.reg.Push(t, "shop/api:1")
		testsign.Sign(t, f.keys["ci"], d)
		testsign.SignV3(t, f.keys["ci"], d)
		vd := f.verify(t, d, f.sigRule(2))
		checkVerdict(t, vd.Allowed, vd.Reasons, false,
			"signatures: 1 distinct signer verified (ci), rule needs 2 of ci, scanner, staging; missing scanner (no signature), staging (no signature)")
		checkEvidence(t, vd, verify.Evidence{Signer: "ci", Mechanism: "cosign-v2-tag"})
	})
}

func TestUntrustedBundleSignatureIsCountedAsUnknown(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, _ string) {
		d := f.reg.Push(t, "shop/api:1")
		testsign.SignV3(t, f.keys["rogue"], d)
		vd := f.verify(t, d, f.sigRule(1))
		checkVerdict(t, vd.Allowed, vd.Reasons, false,
			"signatures: no signer verified, rule needs 1 of ci, scanner, staging; missing ci (no signature), scanner (no signature), staging (no signature); 1 signature(s) by keys the rule does not trust")
	})
}

func TestGarbageReferrersAreDeniedClearly(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, _ string) {
		d := f.reg.Push(t, "shop/api:1")
		// Not a bundle: ignored without a word.
		if err := testsign.AttachReferrer(d, "application/spdx+json", "application/spdx+json", []byte(`{}`), nil); err != nil {
			t.Fatal(err)
		}
		// Claims to be a bundle, is not one.
		if err := testsign.AttachBundle(d, []byte(`{"mediaType":"nonsense"}`), ""); err != nil {
			t.Fatal(err)
		}
		vd := f.verify(t, d, f.sigRule(1))
		if vd.Allowed || len(vd.Reasons) != 1 ||
			!strings.Contains(vd.Reasons[0], "unreadable: a bundle that is not a valid sigstore bundle: ") {
			t.Errorf("allowed %v reasons %q, want a deny naming the unreadable bundle", vd.Allowed, vd.Reasons)
		}
	})
}

func TestThousandsOfReferrersAreRefusedUnread(t *testing.T) {
	registries(t, func(t *testing.T, f *fixture, mechanism string) {
		d := f.reg.Push(t, "shop/api:1")
		testsign.SignV3(t, f.keys["ci"], d)
		n := 5000
		if mechanism == "bundle-referrer" {
			// Real referrers, pushed one by one: enough to pass the bound.
			n = 260
			if err := testsign.AttachManyReferrers(d, n-1); err != nil {
				t.Fatal(err)
			}
		} else if err := testsign.WriteReferrersTag(d, n); err != nil {
			t.Fatal(err)
		}
		f.reg.ResetRequests()
		vd := f.verify(t, d, f.sigRule(1))
		want := fmt.Sprintf("; unreadable: %s lists %d referrers, more than the 256 read", d.DigestStr(), n)
		if vd.Allowed || len(vd.Reasons) != 1 || !strings.HasSuffix(vd.Reasons[0], want) {
			t.Errorf("allowed %v reasons %q, want a deny ending %q", vd.Allowed, vd.Reasons, want)
		}
		// Nothing of the referrers themselves is read.
		if n := f.reg.Requests("/blobs/"); n != 0 {
			t.Errorf("%d blob requests, want none", n)
		}
	})
}

func TestBundlesAreFetchedOnceForAllSigners(t *testing.T) {
	f := newFixture(t)
	f.reg = testsign.NewReferrersRegistry(t)
	f.pol.Registries = map[string]*policy.Registry{f.reg.Host: {Host: f.reg.Host, Insecure: true}}
	d := f.reg.Push(t, "shop/api:1")
	for _, s := range []string{"ci", "scanner", "staging"} {
		testsign.SignV3(t, f.keys[s], d)
	}
	testsign.AttestVulnV3(t, f.keys["scanner"], d, report(t, "trivy-clean.json"), now.Add(-time.Hour))
	f.reg.ResetRequests()
	rule := f.sigRule(3)
	rule.Scan = f.scanRule(policy.SeverityHigh).Scan
	vd := f.verify(t, d, rule)
	checkVerdict(t, vd.Allowed, vd.Reasons, true, "")
	// One referrers list, 4 referrer manifests and their 4 bundles, besides
	// the (absent) .sig and .att tags.
	if got := f.reg.Requests("/referrers/"); got != 1 {
		t.Errorf("referrers requests = %d, want 1", got)
	}
	if got := f.reg.Requests("/manifests/"); got != 2+4 {
		t.Errorf("manifest requests = %d, want 6", got)
	}
	if got := f.reg.Requests("/blobs/"); got != 4 {
		t.Errorf("blob requests = %d, want 4", got)
	}
	out, err := json.Marshal(vd.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"signer":"ci","mechanism":"bundle-referrer"},{"signer":"scanner","mechanism":"bundle-referrer"},{"signer":"staging","mechanism":"bundle-referrer"}]`
	if string(out) != want {
		t.Errorf("evidence JSON = %s\nwant %s", out, want)
	}
}
