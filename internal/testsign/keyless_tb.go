package testsign

import (
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// NewSigstore makes a private sigstore deployment valid around start, or
// fails the test.
func NewSigstore(t testing.TB, start time.Time) *Sigstore {
	t.Helper()
	s, err := CreateSigstore(start)
	must(t, err)
	return s
}

// SignKeylessV3 signs d keylessly as id with s, as cosign v3 does.
func SignKeylessV3(t testing.TB, s *Sigstore, d name.Digest, id Identity, o KeylessOptions) {
	t.Helper()
	must(t, s.SignImageV3(d, id, o))
}

// AttestVulnKeylessV3 attests a scan of d keylessly as id with s, as
// cosign v3 does.
func AttestVulnKeylessV3(t testing.TB, s *Sigstore, d name.Digest, id Identity, report []byte, finished time.Time, o KeylessOptions) {
	t.Helper()
	must(t, s.AttestVulnV3(d, id, report, finished, o))
}
