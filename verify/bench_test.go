package verify_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

// BenchmarkVerifyCold is a cold verification, as on a cache miss: three
// signatures and one scan attestation fetched from a loopback registry
// and checked. It reports the median besides the mean, since DESIGN.md
// holds the median to 30 ms.
func BenchmarkVerifyCold(b *testing.B) {
	reg := testsign.NewRegistry(b)
	d := reg.Push(b, "shop/api:1.4")
	var signers []*policy.Signer
	keys := map[string]*testsign.Key{}
	for _, n := range []string{"ci", "scanner", "staging"} {
		k := testsign.NewKey(b, n)
		keys[n] = k
		s := &policy.Signer{Name: n, Key: k.Public}
		signers = append(signers, s)
		testsign.Sign(b, k, d)
	}
	testsign.AttestVuln(b, keys["scanner"], d, report(b, "trivy-high.json"), time.Now().Add(-time.Hour))
	benchVerify(b, reg.Host, d, signers, func(vd verify.Verdict) bool { return vd.Allowed })
}

// BenchmarkVerifyColdBundles is a cold verification of an image signed
// the cosign v3 way: bundles found through the referrers API of a
// loopback registry, one keyless (certificate chain, SCT, Rekor inclusion
// proof and checkpoint, identity) and two key signers, plus a vuln
// attestation bundle, all checked offline.
func BenchmarkVerifyColdBundles(b *testing.B) {
	reg := testsign.NewReferrersRegistry(b)
	d := reg.Push(b, "shop/api:1.4")
	signedAt := time.Now().Add(-time.Hour)
	ss := testsign.NewSigstore(b, signedAt)
	tr, err := ss.TrustedRoot()
	if err != nil {
		b.Fatal(err)
	}
	signers := []*policy.Signer{{Name: "release-ci", Keyless: &policy.Keyless{
		Issuer: ghIssuer, SubjectRegExp: releaseTags, TrustedRoot: tr, TLog: true,
	}}}
	testsign.SignKeylessV3(b, ss, d, testsign.Identity{Issuer: ghIssuer, Subject: releaseTag}, testsign.KeylessOptions{At: signedAt})
	keys := map[string]*testsign.Key{}
	for _, n := range []string{"scanner", "staging"} {
		k := testsign.NewKey(b, n)
		keys[n] = k
		signers = append(signers, &policy.Signer{Name: n, Key: k.Public})
		testsign.SignV3(b, k, d)
	}
	testsign.AttestVulnV3(b, keys["scanner"], d, report(b, "trivy-high.json"), time.Now().Add(-time.Hour))
	benchVerify(b, reg.Host, d, signers, func(vd verify.Verdict) bool { return vd.Allowed && vd.Scan != nil })
}

// benchVerify measures the verification of d, in the registry at host,
// under a rule that needs three signatures of signers and a scan attested
// by signers[1], each verdict passing ok. It reports the median besides
// the mean, since DESIGN.md holds the median to 30 ms.
func benchVerify(b *testing.B, host string, d name.Digest, signers []*policy.Signer, ok func(verify.Verdict) bool) {
	b.Helper()
	pol := &policy.Policy{Signers: map[string]*policy.Signer{}, Registries: map[string]*policy.Registry{
		host: {Host: host, Insecure: true},
	}}
	rule := &policy.Rule{
		Name: "prod", Mode: policy.ModeEnforce,
		Signatures: &policy.Signatures{Threshold: 3, Signers: signers},
		Scan:       &policy.Scan{Attestors: signers[1:2], MaxSeverity: policy.SeverityCritical, MaxAge: 168 * time.Hour},
	}
	v := verify.New(pol)
	subj, err := verify.NewSubject(d.String(), d.DigestStr())
	if err != nil {
		b.Fatal(err)
	}
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		start := time.Now()
		vd, err := v.Verify(context.Background(), subj, rule)
		durations = append(durations, time.Since(start))
		if err != nil || !ok(vd) {
			b.Fatalf("verdict %+v, err %v", vd, err)
		}
	}
	slices.Sort(durations)
	b.ReportMetric(float64(durations[len(durations)/2].Microseconds())/1000, "ms-median")
}
