package verify

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
	"github.com/sigstore/sigstore-go/pkg/root"
	sgverify "github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/imagegate/imagegate/policy"
)

// predicateCosignSign is the predicate of cosign v3's image signature: a
// DSSE in-toto statement whose subject is the image digest.
const predicateCosignSign = "https://sigstore.dev/cosign/sign/v1"

// bundleResult is what one bundle candidate turned out to be.
type bundleResult struct {
	mechanism string
	// signer is the signer whose key or identity verified the bundle;
	// nil when none of the rule's did.
	signer *policy.Signer
	// envelope is set for a DSSE bundle: its payload type and payload,
	// read from what was verified (or, with no signer, unverified, only
	// to say what it claims to be).
	payloadType string
	payload     []byte
	statement   *statement
	// messageDigest is set for a message signature: the digest signed.
	messageDigest *v1.Hash
	// problems says, per keyless signer whose trust material the bundle
	// was checked against, why it did not count for that signer.
	problems map[*policy.Signer]string
	// err is set when the bundle could not be read at all.
	err error
}

// isImageSignature reports whether the bundle is an image signature (not
// an attestation), whatever digest it names.
func (b *bundleResult) isImageSignature() bool {
	return b.messageDigest != nil || (b.statement != nil && b.statement.PredicateType == predicateCosignSign)
}

// signs reports whether the bundle is an image signature over digest.
func (b *bundleResult) signs(digest v1.Hash) bool {
	if b.messageDigest != nil {
		return *b.messageDigest == digest
	}
	return b.statement != nil && b.statement.PredicateType == predicateCosignSign && aboutDigest(*b.statement, digest)
}

// signedOver names the digest an image signature bundle is about, for
// reasons.
func (b *bundleResult) signedOver() string {
	if b.messageDigest != nil {
		return b.messageDigest.String()
	}
	if b.statement != nil && len(b.statement.Subject) > 0 {
		for alg, h := range b.statement.Subject[0].Digest {
			return alg + ":" + h
		}
	}
	return "nothing"
}

// bundleVerifier checks bundles for one signer, offline.
type bundleVerifier struct {
	signer   *policy.Signer
	verifier *sgverify.Verifier
	identity sgverify.PolicyOption
}

// newBundleVerifier builds the sigstore-go verifier for s: its key as the
// only trusted material, or its keyless identity under its trusted root.
func newBundleVerifier(s *policy.Signer) (*bundleVerifier, error) {
	if k := s.Keyless; k != nil {
		opts := []sgverify.VerifierOption{
			sgverify.WithSignedCertificateTimestamps(1),
			// A Fulcio certificate lives minutes: a timestamp from the
			// log or a timestamp authority, not the clock, must show the
			// signature was made while it was valid.
			sgverify.WithObserverTimestamps(1),
			sgverify.WithoutStatementPredicate(),
		}
		if k.TLog {
			opts = append(opts, sgverify.WithTransparencyLog(1))
		}
		v, err := sgverify.NewVerifier(k.TrustedRoot, opts...)
		if err != nil {
			return nil, fmt.Errorf("signer %q: %w", s.Name, err)
		}
		id, err := sgverify.NewShortCertificateIdentity(k.Issuer, "", k.Subject, regexpString(k))
		if err != nil {
			return nil, fmt.Errorf("signer %q: %w", s.Name, err)
		}
		return &bundleVerifier{signer: s, verifier: v, identity: sgverify.WithCertificateIdentity(id)}, nil
	}
	sv, err := loadVerifier(s)
	if err != nil {
		return nil, err
	}
	// The bundle's key hint is unauthenticated: every bundle is checked
	// against the signer's key, whatever it names.
	key := root.NewExpiringKey(sv, time.Time{}, time.Time{})
	tm := root.NewTrustedPublicKeyMaterial(func(string) (root.TimeConstrainedVerifier, error) { return key, nil })
	v, err := sgverify.NewVerifier(tm, sgverify.WithNoObserverTimestamps(), sgverify.WithoutStatementPredicate())
	if err != nil {
		return nil, fmt.Errorf("signer %q: %w", s.Name, err)
	}
	return &bundleVerifier{signer: s, verifier: v, identity: sgverify.WithKey()}, nil
}

func regexpString(k *policy.Keyless) string {
	if k.SubjectRegExp == nil {
		return ""
	}
	return k.SubjectRegExp.String()
}

// verifyBundles verifies every bundle candidate against every signer,
// locally, and says what each bundle is and who made it.
func verifyBundles(cands []bundleCandidate, signers []*policy.Signer) (results []bundleResult, setupErrs []string) {
	if len(cands) == 0 {
		return nil, nil
	}
	var verifiers []*bundleVerifier
	for _, s := range signers {
		bv, err := newBundleVerifier(s)
		if err != nil {
			setupErrs = append(setupErrs, err.Error())
			continue
		}
		verifiers = append(verifiers, bv)
	}
	for _, c := range cands {
		results = append(results, verifyBundle(c, verifiers))
	}
	return results, setupErrs
}

func verifyBundle(c bundleCandidate, verifiers []*bundleVerifier) bundleResult {
	r := bundleResult{mechanism: c.mechanism, err: c.err}
	if c.err != nil {
		return r
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(c.data); err != nil {
		r.err = fmt.Errorf("a bundle that is not a valid sigstore bundle: %w", err)
		return r
	}
	content, err := b.SignatureContent()
	if err != nil {
		r.err = fmt.Errorf("a bundle without a signature: %w", err)
		return r
	}
	artifact := sgverify.WithoutArtifactUnsafe()
	if msg := content.MessageSignatureContent(); msg != nil {
		// A message signature verifies only against the digest it
		// signed; which digest that is is judged afterwards, so that a
		// signature over another image says so.
		if msg.DigestAlgorithm() != "SHA2_256" || len(msg.Digest()) == 0 {
			r.err = fmt.Errorf("a message signature bundle over a %s digest, not sha256", msg.DigestAlgorithm())
			return r
		}
		r.messageDigest = &v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(msg.Digest())}
		artifact = sgverify.WithArtifactDigest("sha256", msg.Digest())
	} else if env := content.EnvelopeContent(); env != nil {
		raw := env.RawEnvelope()
		r.payloadType = raw.PayloadType
		if r.payload, err = raw.DecodeB64Payload(); err != nil {
			r.err = errors.New("a DSSE bundle with an undecodable payload")
			return r
		}
		var st statement
		if json.Unmarshal(r.payload, &st) == nil {
			r.statement = &st
		}
	}
	vc, err := b.VerificationContent()
	if err != nil {
		r.err = fmt.Errorf("a bundle without verification material: %w", err)
		return r
	}
	cert := vc.Certificate()
	for _, bv := range verifiers {
		// A key signer never matches a certificate, nor a keyless one a
		// bare key: only the matching kind is tried, so that the reasons
		// hold only what could have counted.
		if (bv.signer.Keyless != nil) != (cert != nil) {
			continue
		}
		_, err := bv.verifier.Verify(&b, sgverify.NewPolicy(artifact, bv.identity))
		if err == nil {
			r.signer = bv.signer
			r.problems = nil
			return r
		}
		if bv.signer.Keyless != nil {
			if r.problems == nil {
				r.problems = map[*policy.Signer]string{}
			}
			r.problems[bv.signer] = keylessProblem(err, cert, bv.signer.Keyless)
		}
	}
	return r
}

// keylessProblem says why a certificate bundle did not count for a
// keyless signer: who it is from and what the rule wants, or which
// offline check failed.
func keylessProblem(err error, cert *x509.Certificate, k *policy.Keyless) string {
	var mismatch *sgverify.ErrNoMatchingCertificateIdentity
	if !errors.As(err, &mismatch) {
		// sigstore-go formats a nil cause into its timestamp error.
		return "keyless bundle did not verify: " + strings.TrimSuffix(err.Error(), "; error: %!w(<nil>)")
	}
	sum, serr := certificate.SummarizeCertificate(cert)
	if serr != nil {
		return fmt.Sprintf("keyless bundle with an unreadable identity: %v", serr)
	}
	if sum.Issuer != k.Issuer {
		return fmt.Sprintf("bundle from %s issued by %s, rule wants issuer %s", sum.SubjectAlternativeName, sum.Issuer, k.Issuer)
	}
	return fmt.Sprintf("bundle from %s, rule wants %s", sum.SubjectAlternativeName, k.WantedSubject())
}
