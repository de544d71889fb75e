// Package testsign signs and attests images for real, the way the cosign v2
// CLI stores them, in a real in-process registry. Tests of every package
// and `make demo` use it, so that what they verify is what cosign writes.
//
// The error-returning functions serve the demo; the ones taking a
// testing.TB are the same, failing the test on error.
package testsign

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/cosign/attestation"
	cmutate "github.com/sigstore/cosign/v2/pkg/oci/mutate"
	ociremote "github.com/sigstore/cosign/v2/pkg/oci/remote"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"
)

// Key is a signing key pair, like one from `cosign generate-key-pair`.
type Key struct {
	Name   string
	PubPEM []byte
	Public crypto.PublicKey
	sv     signature.SignerVerifier
}

// GenerateKey generates an ECDSA P-256 key, cosign's default.
func GenerateKey(keyName string) (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sv, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	pem, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return nil, err
	}
	return &Key{Name: keyName, PubPEM: pem, Public: priv.Public(), sv: sv}, nil
}

// SavePub writes the public key as NAME.pub into dir and returns its path.
func (k *Key) SavePub(dir string) (string, error) {
	p := filepath.Join(dir, k.Name+".pub")
	return p, os.WriteFile(p, k.PubPEM, 0o644)
}

// SignImage signs d as `cosign sign --key` (v2, no transparency log)
// does: a simple-signing payload naming d, stored under the .sig tag.
func (k *Key) SignImage(d name.Digest) error { return k.SignImageAs(d, d) }

// SignImageAs signs the payload that names claimed but stores the
// signature on the image d: a signature copied from another image.
func (k *Key) SignImageAs(d, claimed name.Digest) error {
	payload, err := (sigpayload.Cosign{Image: claimed}).MarshalJSON()
	if err != nil {
		return err
	}
	sig, err := k.sv.SignMessage(bytes.NewReader(payload))
	if err != nil {
		return err
	}
	return AttachSignature(d, payload, base64.StdEncoding.EncodeToString(sig))
}

// AttachSignature stores payload with the base64 signature sig under d's
// .sig tag, as cosign does, without checking either.
func AttachSignature(d name.Digest, payload []byte, sig string) error {
	s, err := static.NewSignature(payload, sig)
	if err != nil {
		return err
	}
	se, err := cmutate.AttachSignatureToEntity(ociremote.SignedUnknown(d), s)
	if err != nil {
		return err
	}
	return ociremote.WriteSignatures(d.Repository, se)
}

// AttestVuln attests a vulnerability scan of d as `cosign attest --type
// vuln` (v2) does. report is the scanner's JSON report
// (predicate.scanner.result); finished is predicate.metadata.scanFinishedOn.
func (k *Key) AttestVuln(d name.Digest, report []byte, finished time.Time) error {
	return k.AttestVulnAs(d, d, report, finished)
}

// AttestVulnAs makes the scan attestation about claimed but stores it on d.
func (k *Key) AttestVulnAs(d, claimed name.Digest, report []byte, finished time.Time) error {
	stmt, err := vulnStatement(claimed, report, finished)
	if err != nil {
		return err
	}
	return k.Attest(d, attestation.CosignVulnProvenanceV01, stmt)
}

// vulnPredicate is the predicate `cosign attest --type vuln` writes for a
// scanner's JSON report.
func vulnPredicate(report []byte, finished time.Time) ([]byte, error) {
	pred := map[string]any{
		"invocation": map[string]any{"uri": "", "event_id": "", "builder.id": ""},
		"scanner": map[string]any{
			"uri":     "pkg:github/aquasecurity/trivy@0.58.1",
			"version": "0.58.1",
			"db":      map[string]any{"uri": "", "version": ""},
			"result":  json.RawMessage(report),
		},
		"metadata": map[string]any{
			"scanStartedOn":  finished.Add(-time.Minute).UTC().Format(time.RFC3339),
			"scanFinishedOn": finished.UTC().Format(time.RFC3339),
		},
	}
	return json.Marshal(pred)
}

// Attest signs the in-toto statement stmt in a DSSE envelope and stores it
// under d's .att tag, as `cosign attest` (v2) does.
func (k *Key) Attest(d name.Digest, predicateType string, stmt any) error {
	payload, err := json.Marshal(stmt)
	if err != nil {
		return err
	}
	env, err := dsse.WrapSigner(k.sv, ctypes.IntotoPayloadType).SignMessage(bytes.NewReader(payload))
	if err != nil {
		return err
	}
	return AttachAttestation(d, env, predicateType)
}

// AttachAttestation stores envelope under d's .att tag without checking it.
func AttachAttestation(d name.Digest, envelope []byte, predicateType string) error {
	att, err := static.NewAttestation(envelope,
		static.WithLayerMediaType(ctypes.DssePayloadType),
		static.WithAnnotations(map[string]string{"predicateType": predicateType}))
	if err != nil {
		return err
	}
	se, err := cmutate.AttachAttestationToEntity(ociremote.SignedUnknown(d), att)
	if err != nil {
		return err
	}
	if err := ociremote.WriteAttestations(d.Repository, se); err != nil {
		return fmt.Errorf("writing attestation: %w", err)
	}
	return nil
}

// vulnStatement is the in-toto statement `cosign attest --type vuln`
// makes of a scan of d: v0.1, naming the repository, in v2 and v3 alike.
func vulnStatement(d name.Digest, report []byte, finished time.Time) (any, error) {
	pred, err := vulnPredicate(report, finished)
	if err != nil {
		return nil, err
	}
	return attestation.GenerateStatement(attestation.GenerateOpts{
		Predicate: bytes.NewReader(pred),
		Type:      "vuln",
		Digest:    strings.TrimPrefix(d.DigestStr(), "sha256:"),
		Repo:      d.Repository.String(),
	})
}
