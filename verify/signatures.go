package verify

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sigstore/sigstore/pkg/signature"
	sigpayload "github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/imagegate/imagegate/policy"
)

// signerResult is what the evidence showed about one signer of a rule.
type signerResult struct {
	signer *policy.Signer
	// mechanism that satisfied the signer; empty when none did.
	mechanism string
	// why the signer's signatures did not count, when none did.
	problem string
}

// loadVerifier turns a policy key into a signature verifier. Keys were
// checked when the policy loaded, so an error here is a policy bug.
func loadVerifier(s *policy.Signer) (signature.Verifier, error) {
	v, err := signature.LoadVerifier(s.Key, crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signer %q: %w", s.Name, err)
	}
	return v, nil
}

// checkSignatures verifies every cosign v2 candidate against every signer
// of the rule, locally, adds the verified bundles, and reports per signer
// whether an image signature over digest verified, in either format.
// unknown counts the signatures no signer of the rule made.
func checkSignatures(cands []sigCandidate, bundles []bundleResult, signers []*policy.Signer, digest v1.Hash) (results []signerResult, unknown int, unreadable []string) {
	results = make([]signerResult, len(signers))
	verifiers := make([]signature.Verifier, len(signers))
	for i, s := range signers {
		results[i].signer = s
		results[i].problem = "no signature"
		if s.Keyless != nil {
			// Keyless signatures are read from bundles only.
			continue
		}
		v, err := loadVerifier(s)
		if err != nil {
			results[i].problem = err.Error()
			continue
		}
		verifiers[i] = v
	}
	for ci := range cands {
		c := &cands[ci]
		if c.err != nil {
			unreadable = append(unreadable, c.err.Error())
			continue
		}
		sig, err := base64.StdEncoding.DecodeString(c.b64sig)
		if err != nil || len(sig) == 0 {
			unreadable = append(unreadable, "a signature that is not base64")
			continue
		}
		matched := false
		for i, v := range verifiers {
			if v == nil || v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(c.payload)) != nil {
				continue
			}
			matched = true
			if results[i].mechanism != "" {
				break
			}
			if err := checkSimpleSigning(c.payload, digest); err != nil {
				results[i].problem = err.Error()
				break
			}
			results[i].mechanism = c.mechanism
			results[i].problem = ""
			c.accepted = true
			break
		}
		if !matched {
			unknown++
		}
	}
	for _, b := range bundles {
		if b.err != nil {
			unreadable = append(unreadable, b.err.Error())
			continue
		}
		i := slices.Index(signers, b.signer)
		if i < 0 {
			for j, s := range signers {
				// A keyless image signature from the wrong identity
				// outranks "no signature"; another bundle from it only
				// tells where to look.
				p, ok := b.problems[s]
				if ok && results[j].mechanism == "" && (b.isImageSignature() || results[j].problem == "no signature") {
					results[j].problem = p
				}
			}
			if b.isImageSignature() && len(b.problems) == 0 {
				unknown++
			}
			continue
		}
		switch r := &results[i]; {
		case r.mechanism != "":
		case b.signs(digest):
			r.mechanism, r.problem = b.mechanism, ""
		case b.isImageSignature():
			r.problem = "bundle signature over another digest " + b.signedOver()
		case r.problem == "no signature":
			r.problem = "only an attestation bundle, which is not an image signature"
			if b.statement != nil {
				r.problem = fmt.Sprintf("only an attestation bundle (%s), which is not an image signature", b.statement.PredicateType)
			}
		}
	}
	return results, unknown, unreadable
}

// checkSimpleSigning checks that a verified simple-signing payload is a
// cosign image signature naming digest: a signature copied from another
// image verifies, but names that image.
func checkSimpleSigning(payload []byte, digest v1.Hash) error {
	var p sigpayload.SimpleContainerImage
	if err := json.Unmarshal(payload, &p); err != nil {
		return fmt.Errorf("signature payload is not simple signing: %w", err)
	}
	if p.Critical.Type != sigpayload.CosignSignatureType {
		return fmt.Errorf("signature payload has type %q, not %q", p.Critical.Type, sigpayload.CosignSignatureType)
	}
	if got := p.Critical.Image.DockerManifestDigest; got != digest.String() {
		return fmt.Errorf("signature over another digest %s", got)
	}
	return nil
}

// signatureReasons decides the signature part of a rule and says why it
// failed; empty when it passed.
func signatureReasons(rule *policy.Signatures, results []signerResult, unknown int, unreadable []string) (verified []string, reasons []string) {
	var missing []string
	for _, r := range results {
		if r.mechanism != "" {
			verified = append(verified, r.signer.Name)
			continue
		}
		missing = append(missing, fmt.Sprintf("%s (%s)", r.signer.Name, r.problem))
	}
	var failed []string
	if len(verified) < rule.Threshold {
		failed = append(failed, fmt.Sprintf("%s, rule needs %d of %s",
			countSigners(verified), rule.Threshold, strings.Join(signerNames(rule.Signers), ", ")))
	}
	for _, req := range rule.Required {
		if !slices.Contains(verified, req.Name) {
			failed = append(failed, fmt.Sprintf("required signer %s did not sign", req.Name))
		}
	}
	if len(failed) == 0 {
		return verified, nil
	}
	msg := "signatures: " + strings.Join(failed, "; ")
	if len(missing) > 0 {
		msg += "; missing " + strings.Join(missing, ", ")
	}
	if unknown > 0 {
		msg += fmt.Sprintf("; %d signature(s) by keys the rule does not trust", unknown)
	}
	if len(unreadable) > 0 {
		msg += "; unreadable: " + strings.Join(unreadable, ", ")
	}
	return verified, []string{msg}
}

func countSigners(names []string) string {
	switch len(names) {
	case 0:
		return "no signer verified"
	case 1:
		return fmt.Sprintf("1 distinct signer verified (%s)", names[0])
	}
	return fmt.Sprintf("%d distinct signers verified (%s)", len(names), strings.Join(names, ", "))
}

func signerNames(ss []*policy.Signer) []string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = s.Name
	}
	return names
}

// evidenceOf lists where each verified signer's signature was found.
func evidenceOf(results []signerResult) []Evidence {
	var ev []Evidence
	for _, r := range results {
		if r.mechanism != "" {
			ev = append(ev, Evidence{Signer: r.signer.Name, Mechanism: r.mechanism})
		}
	}
	return ev
}
