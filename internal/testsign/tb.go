package testsign

import (
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// NewKey generates a key or fails the test.
func NewKey(t testing.TB, keyName string) *Key {
	t.Helper()
	k, err := GenerateKey(keyName)
	must(t, err)
	return k
}

// NewRegistry starts a registry that stops with the test.
func NewRegistry(t testing.TB) *Registry {
	t.Helper()
	r, err := StartRegistry()
	must(t, err)
	t.Cleanup(r.Close)
	return r
}

// WritePub writes the key's NAME.pub into dir and returns its path.
func (k *Key) WritePub(t testing.TB, dir string) string {
	t.Helper()
	p, err := k.SavePub(dir)
	must(t, err)
	return p
}

// Push pushes a small random image as REPO:TAG.
func (r *Registry) Push(t testing.TB, repoTag string) name.Digest {
	t.Helper()
	d, err := r.PushRandomImage(repoTag)
	must(t, err)
	return d
}

// PushIndex pushes a two-platform image index as REPO:TAG.
func (r *Registry) PushIndex(t testing.TB, repoTag string) name.Digest {
	t.Helper()
	d, err := r.PushRandomIndex(repoTag)
	must(t, err)
	return d
}

// Sign signs d with k as cosign v2 does.
func Sign(t testing.TB, k *Key, d name.Digest) {
	t.Helper()
	must(t, k.SignImage(d))
}

// SignAs stores on d k's signature of claimed.
func SignAs(t testing.TB, k *Key, d, claimed name.Digest) {
	t.Helper()
	must(t, k.SignImageAs(d, claimed))
}

// AttestVuln attests a scan of d with k as cosign v2 does.
func AttestVuln(t testing.TB, k *Key, d name.Digest, report []byte, finished time.Time) {
	t.Helper()
	must(t, k.AttestVuln(d, report, finished))
}

// AttestVulnAs stores on d k's scan attestation of claimed.
func AttestVulnAs(t testing.TB, k *Key, d, claimed name.Digest, report []byte, finished time.Time) {
	t.Helper()
	must(t, k.AttestVulnAs(d, claimed, report, finished))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// NewReferrersRegistry starts a registry with the referrers API that
// stops with the test.
func NewReferrersRegistry(t testing.TB) *Registry {
	t.Helper()
	r, err := StartReferrersRegistry()
	must(t, err)
	t.Cleanup(r.Close)
	return r
}

// SignV3 signs d with k as cosign v3 does: a bundle attached as a
// referrer.
func SignV3(t testing.TB, k *Key, d name.Digest) {
	t.Helper()
	must(t, k.SignImageV3(d))
}

// SignV3As attaches to d k's v3 signature of claimed.
func SignV3As(t testing.TB, k *Key, d, claimed name.Digest) {
	t.Helper()
	must(t, k.SignImageV3As(d, claimed))
}

// AttestVulnV3 attests a scan of d with k as cosign v3 does.
func AttestVulnV3(t testing.TB, k *Key, d name.Digest, report []byte, finished time.Time) {
	t.Helper()
	must(t, k.AttestVulnV3(d, report, finished))
}
