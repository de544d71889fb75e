package verify_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

func TestStoredEvidenceWhenTheRegistryIsUnreachable(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "shop/api:1")
	for _, s := range []string{"ci", "scanner", "staging", "rogue"} {
		testsign.Sign(t, f.keys[s], d)
	}
	testsign.AttestVuln(t, f.keys["scanner"], d, report(t, "trivy-clean.json"), now.Add(-time.Hour))
	rule := f.sigRule(3)
	rule.Scan = f.scanRule(policy.SeverityHigh).Scan
	dir := t.TempDir()
	store, err := verify.OpenStore(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	subj, _ := verify.NewSubject(d.String(), d.DigestStr())
	verifyAt := func(at time.Time, r *policy.Rule, opts ...verify.Option) (verify.Verdict, error) {
		opts = append([]verify.Option{verify.WithStore(store), verify.WithClock(func() time.Time { return at })}, opts...)
		return verify.New(f.pol, opts...).Verify(context.Background(), subj, r)
	}
	vd, err := verifyAt(now, rule)
	if err != nil || !vd.Allowed || vd.Stored {
		t.Fatalf("online: verdict %+v err %v, want allowed from the registry", vd, err)
	}
	// A daemon restart: the cache is gone, the registry is down.
	f.reg.Close()

	t.Run("an image verified before is verified again from the store", func(t *testing.T) {
		vd, err := verifyAt(now, rule)
		if err != nil || !vd.Allowed || !vd.Stored || len(vd.Signers) != 3 {
			t.Errorf("verdict %+v err %v, want allowed from stored evidence", vd, err)
		}
	})
	t.Run("a policy change still applies", func(t *testing.T) {
		stricter := f.sigRule(3)
		stricter.Signatures.Signers = append(f.signers("ci", "scanner"), &policy.Signer{Name: "qa", Key: testsign.NewKey(t, "qa").Public})
		vd, err := verifyAt(now, stricter)
		if err != nil || vd.Allowed || !strings.Contains(vd.Reasons[0], "missing qa (no signature)") {
			t.Errorf("verdict %+v err %v, want a deny naming qa", vd, err)
		}
	})
	t.Run("a scan still grows old", func(t *testing.T) {
		vd, err := verifyAt(now.Add(8*24*time.Hour), rule)
		if err != nil || vd.Allowed || !strings.Contains(strings.Join(vd.Reasons, ";"), "rule allows 7d") {
			t.Errorf("verdict %+v err %v, want a stale-scan deny", vd, err)
		}
	})
	t.Run("offline mode reads only the store", func(t *testing.T) {
		vd, err := verifyAt(now, rule, verify.WithOffline())
		if err != nil || !vd.Allowed || !vd.Stored {
			t.Errorf("verdict %+v err %v, want allowed from the store", vd, err)
		}
		other, _ := verify.NewSubject(d.Repository.String(), "sha256:"+strings.Repeat("0", 64))
		_, err = verify.New(f.pol, verify.WithStore(store), verify.WithOffline()).Verify(context.Background(), other, rule)
		if err == nil || !strings.Contains(err.Error(), "no stored evidence for sha256:0000") {
			t.Errorf("err = %v, want no stored evidence", err)
		}
	})
	t.Run("only evidence that counted is kept", func(t *testing.T) {
		files, _ := filepath.Glob(filepath.Join(dir, "sha256-*.json"))
		if len(files) != 1 {
			t.Fatalf("stored files %q, want one", files)
		}
		data, _ := os.ReadFile(files[0])
		if n := strings.Count(string(data), `"signature":`); n != 3 {
			t.Errorf("%d signatures stored, want the 3 that counted (not rogue's)", n)
		}
	})
	t.Run("a corrupt record is ignored, never trusted", func(t *testing.T) {
		files, _ := filepath.Glob(filepath.Join(dir, "sha256-*.json"))
		data, _ := os.ReadFile(files[0])
		corrupt := strings.Replace(string(data), `"version":1`, `"version":1 `, 1)
		if err := os.WriteFile(files[0], []byte(corrupt), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := verifyAt(now, rule)
		if !errors.Is(err, verify.ErrUnreachable) {
			t.Errorf("err = %v, want the registry error: a corrupt record must not be used", err)
		}
		_, err = verifyAt(now, rule, verify.WithOffline())
		if err == nil || !strings.Contains(err.Error(), "the stored record is corrupt") {
			t.Errorf("offline err = %v, want corrupt", err)
		}
	})
}

func TestStoreKeepsAtMostItsBound(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	store, err := verify.OpenStore(dir, 3)
	if err != nil {
		t.Fatal(err)
	}
	v := verify.New(f.pol, verify.WithStore(store))
	for i := range 6 {
		d := f.reg.Push(t, "shop/api:"+string(rune('a'+i)))
		testsign.Sign(t, f.keys["ci"], d)
		subj, _ := verify.NewSubject(d.String(), d.DigestStr())
		if _, err := v.Verify(context.Background(), subj, f.sigRule(1)); err != nil {
			t.Fatal(err)
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "sha256-*.json"))
	if len(files) > 3 {
		t.Errorf("%d records stored, want at most 3", len(files))
	}
}
