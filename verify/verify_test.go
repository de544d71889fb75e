package verify_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

// now is the clock every test judges scans by.
var now = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

type fixture struct {
	reg  *testsign.Registry
	keys map[string]*testsign.Key
	pol  *policy.Policy
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{
		reg:  testsign.NewRegistry(t),
		keys: map[string]*testsign.Key{},
		pol:  &policy.Policy{Signers: map[string]*policy.Signer{}, Registries: map[string]*policy.Registry{}, Unmatched: "deny"},
	}
	for _, n := range []string{"ci", "scanner", "staging", "rogue"} {
		k := testsign.NewKey(t, n)
		f.keys[n] = k
		if n != "rogue" {
			f.pol.Signers[n] = &policy.Signer{Name: n, Key: k.Public}
		}
	}
	f.pol.Registries[f.reg.Host] = &policy.Registry{Host: f.reg.Host, Insecure: true}
	return f
}

func (f *fixture) signers(names ...string) []*policy.Signer {
	var ss []*policy.Signer
	for _, n := range names {
		ss = append(ss, f.pol.Signers[n])
	}
	return ss
}

// sigRule is the rule of DESIGN.md: threshold of ci, scanner, staging.
func (f *fixture) sigRule(threshold int, required ...string) *policy.Rule {
	return &policy.Rule{
		Name: "prod",
		Mode: policy.ModeEnforce,
		Signatures: &policy.Signatures{
			Threshold: threshold,
			Signers:   f.signers("ci", "scanner", "staging"),
			Required:  f.signers(required...),
		},
	}
}

func (f *fixture) scanRule(max policy.Severity, ignore ...policy.Ignore) *policy.Rule {
	return &policy.Rule{
		Name: "prod",
		Mode: policy.ModeEnforce,
		Scan: &policy.Scan{
			Attestors:   f.signers("scanner"),
			MaxSeverity: max,
			MaxAge:      7 * 24 * time.Hour,
			Ignore:      ignore,
		},
	}
}

func (f *fixture) verifier(opts ...verify.Option) *verify.Verifier {
	return verify.New(f.pol, append([]verify.Option{verify.WithClock(func() time.Time { return now })}, opts...)...)
}

func (f *fixture) verify(t *testing.T, d name.Digest, rule *policy.Rule) verify.Verdict {
	t.Helper()
	subj, err := verify.NewSubject(d.Repository.String()+":1.0", d.DigestStr())
	if err != nil {
		t.Fatal(err)
	}
	vd, err := f.verifier().Verify(context.Background(), subj, rule)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return vd
}

func report(t testing.TB, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "reports", file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSignatureThreshold(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name      string
		signedBy  []string
		threshold int
		required  []string
		allowed   bool
		signers   []string
		reason    string
	}{
		{
			name: "all three signers allow", signedBy: []string{"ci", "scanner", "staging"}, threshold: 3,
			allowed: true, signers: []string{"ci", "scanner", "staging"},
		},
		{
			name: "two of three under threshold 3 deny", signedBy: []string{"ci", "scanner"}, threshold: 3,
			signers: []string{"ci", "scanner"},
			reason:  "signatures: 2 distinct signers verified (ci, scanner), rule needs 3 of ci, scanner, staging; missing staging (no signature)",
		},
		{
			name: "two of three under threshold 2 allow", signedBy: []string{"ci", "staging"}, threshold: 2,
			allowed: true, signers: []string{"ci", "staging"},
		},
		{
			name: "required signer missing denies", signedBy: []string{"scanner", "staging"}, threshold: 2, required: []string{"ci"},
			signers: []string{"scanner", "staging"},
			reason:  "signatures: required signer ci did not sign; missing ci (no signature)",
		},
		{
			name: "unsigned denies", threshold: 1, signers: []string{},
			reason: "signatures: no signer verified, rule needs 1 of ci, scanner, staging; missing ci (no signature), scanner (no signature), staging (no signature)",
		},
		{
			name: "unknown key only denies", signedBy: []string{"rogue"}, threshold: 1, signers: []string{},
			reason: "signatures: no signer verified, rule needs 1 of ci, scanner, staging; missing ci (no signature), scanner (no signature), staging (no signature); 1 signature(s) by keys the rule does not trust",
		},
		{
			name: "one signer signing twice counts once", signedBy: []string{"ci", "ci"}, threshold: 2,
			signers: []string{"ci"},
			reason:  "signatures: 1 distinct signer verified (ci), rule needs 2 of ci, scanner, staging; missing scanner (no signature), staging (no signature)",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := f.reg.Push(t, "shop/api:"+string(rune('a'+i)))
			for _, s := range tt.signedBy {
				testsign.Sign(t, f.keys[s], d)
			}
			vd := f.verify(t, d, f.sigRule(tt.threshold, tt.required...))
			if vd.Allowed != tt.allowed {
				t.Errorf("allowed = %v, want %v (reasons %q)", vd.Allowed, tt.allowed, vd.Reasons)
			}
			if !slices.Equal(vd.Signers, tt.signers) {
				t.Errorf("signers = %q, want %q", vd.Signers, tt.signers)
			}
			var want []string
			if tt.reason != "" {
				want = []string{tt.reason}
			}
			if !slices.Equal(vd.Reasons, want) && !(len(vd.Reasons) == 0 && len(want) == 0) {
				t.Errorf("reasons = %q\nwant %q", vd.Reasons, want)
			}
			if vd.Rule != "prod" || vd.Digest != d.DigestStr() {
				t.Errorf("rule %q digest %q, want prod %s", vd.Rule, vd.Digest, d.DigestStr())
			}
		})
	}
}

func TestSignatureCopiedFromAnotherImageDenies(t *testing.T) {
	f := newFixture(t)
	signed := f.reg.Push(t, "shop/api:good")
	evil := f.reg.Push(t, "shop/api:evil")
	testsign.Sign(t, f.keys["ci"], signed)
	// The attacker copies ci's valid signature of another image onto theirs.
	testsign.SignAs(t, f.keys["ci"], evil, signed)

	vd := f.verify(t, evil, f.sigRule(1))
	if vd.Allowed {
		t.Fatal("a signature over another digest was accepted")
	}
	want := "signatures: no signer verified, rule needs 1 of ci, scanner, staging; missing ci (signature over another digest " +
		signed.DigestStr() + "), scanner (no signature), staging (no signature)"
	if len(vd.Reasons) != 1 || vd.Reasons[0] != want {
		t.Errorf("reasons = %q\nwant %q", vd.Reasons, want)
	}
}

func TestCorruptSignatureDoesNotCount(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "shop/api:1")
	if err := testsign.AttachSignature(d, []byte(`{"critical":{}}`), "bm90IGEgc2lnbmF0dXJl"); err != nil {
		t.Fatal(err)
	}
	if err := testsign.AttachSignature(d, []byte(`{}`), "%%%"); err != nil {
		t.Fatal(err)
	}
	vd := f.verify(t, d, f.sigRule(1))
	want := "signatures: no signer verified, rule needs 1 of ci, scanner, staging; missing ci (no signature), scanner (no signature), staging (no signature); 1 signature(s) by keys the rule does not trust; unreadable: a signature that is not base64"
	if vd.Allowed || len(vd.Reasons) != 1 || vd.Reasons[0] != want {
		t.Errorf("allowed %v reasons %q\nwant %q", vd.Allowed, vd.Reasons, want)
	}
}

func TestIndexSignedAtItsDigestAllows(t *testing.T) {
	f := newFixture(t)
	d := f.reg.PushIndex(t, "shop/multi:1")
	testsign.Sign(t, f.keys["ci"], d)
	if vd := f.verify(t, d, f.sigRule(1)); !vd.Allowed {
		t.Errorf("index signed at its digest denied: %q", vd.Reasons)
	}
}

func TestResolveTagToDigest(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "shop/api:1.4")
	f.reg.Push(t, "shop/api:1.5")
	subj, err := f.verifier().Resolve(context.Background(), f.reg.Host+"/shop/api:1.4")
	if err != nil {
		t.Fatal(err)
	}
	if subj.Digest.String() != d.DigestStr() {
		t.Errorf("resolved to %s, want %s", subj.Digest, d.DigestStr())
	}
	if _, err := f.verifier().Resolve(context.Background(), f.reg.Host+"/shop/api:nope"); err == nil {
		t.Error("a missing tag resolved")
	}
}

func TestModes(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "shop/api:1")
	for _, mode := range []policy.Mode{policy.ModeWarn, policy.ModeAudit} {
		t.Run(string(mode)+" allows a failing image and keeps the reasons", func(t *testing.T) {
			rule := f.sigRule(1)
			rule.Mode = mode
			vd := f.verify(t, d, rule)
			if !vd.Allowed || vd.Passed() || vd.Mode != mode {
				t.Errorf("allowed %v passed %v mode %q, want allowed, failed, %q", vd.Allowed, vd.Passed(), vd.Mode, mode)
			}
		})
	}
}

func TestUnmatchedAndExempt(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "other/thing:1")
	f.reg.ResetRequests()

	f.pol.Unmatched = "deny"
	vd := f.verify(t, d, nil)
	want := "no rule matches " + f.reg.Host + "/other/thing and the policy denies unmatched images"
	if vd.Allowed || len(vd.Reasons) != 1 || vd.Reasons[0] != want {
		t.Errorf("unmatched deny: allowed %v reasons %q, want %q", vd.Allowed, vd.Reasons, want)
	}
	f.pol.Unmatched = "allow"
	if vd := f.verify(t, d, nil); !vd.Allowed || !vd.Passed() {
		t.Errorf("unmatched allow: %+v", vd)
	}
	exempt := &policy.Rule{Name: "pause", Allow: true, Mode: policy.ModeEnforce}
	if vd := f.verify(t, d, exempt); !vd.Allowed || vd.Rule != "pause" {
		t.Errorf("exemption: %+v", vd)
	}
	if n := f.reg.Requests(""); n != 0 {
		t.Errorf("unmatched and exempt images made %d registry requests, want 0", n)
	}
}

func TestRegistryDownIsAnErrorNotAVerdict(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(*testsign.Registry)
	}{
		{"registry answers 503", func(r *testsign.Registry) { r.SetDown(true) }},
		{"registry refuses connections", func(r *testsign.Registry) { r.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			d := f.reg.Push(t, "shop/api:1")
			testsign.Sign(t, f.keys["ci"], d)
			tc.down(f.reg)
			f.reg.ResetRequests()
			subj, _ := verify.NewSubject(d.String(), d.DigestStr())
			_, err := f.verifier().Verify(context.Background(), subj, f.sigRule(1))
			if !errors.Is(err, verify.ErrUnreachable) {
				t.Errorf("err = %v, want ErrUnreachable", err)
			}
			// No retries: they would outlast the create's budget.
			if n := f.reg.Requests("/manifests/"); n > 1 {
				t.Errorf("%d manifest requests, want at most 1", n)
			}
		})
	}
}

func TestOneSetOfFetchesForAllSigners(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "shop/api:1")
	for _, s := range []string{"ci", "scanner", "staging"} {
		testsign.Sign(t, f.keys[s], d)
	}
	testsign.AttestVuln(t, f.keys["scanner"], d, report(t, "trivy-clean.json"), now.Add(-time.Hour))
	f.reg.ResetRequests()
	rule := f.sigRule(3)
	rule.Scan = f.scanRule(policy.SeverityHigh).Scan
	if vd := f.verify(t, d, rule); !vd.Allowed {
		t.Fatalf("denied: %q", vd.Reasons)
	}
	// Three manifests (.sig, .att and the referrers tag of a registry
	// without the referrers API) and the blobs of 3 signatures + 1
	// attestation. Anything more means a signer or format fetched again.
	if got := f.reg.Requests("/manifests/"); got != 3 {
		t.Errorf("manifest requests = %d, want 3", got)
	}
	if got := f.reg.Requests("/blobs/"); got != 4 {
		t.Errorf("blob requests = %d, want 4", got)
	}
}
