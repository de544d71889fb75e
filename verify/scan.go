package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	"github.com/sigstore/cosign/v2/pkg/cosign/attestation"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"

	"github.com/imagegate/imagegate/policy"
)

// predicateInTotoVulns is the in-toto vulns predicate, read as well as
// cosign's own vuln predicate.
const predicateInTotoVulns = "https://in-toto.io/attestation/vulns/v0.1"

// statement is the part of an in-toto statement (v0.1 or v1) we read.
type statement struct {
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	Predicate json.RawMessage `json:"predicate"`
}

// scan is one valid scan attestation: signed by an attestor, about the
// subject's digest, of a vulnerability predicate.
type scan struct {
	attestor string
	finished time.Time
	report   report
	// err is set when the scan was signed and about this digest but its
	// report could not be read: it cannot be evaluated, and must not be
	// mistaken for a clean one.
	err error
}

// attested is a DSSE payload whose signature verified, by attestor,
// from either format.
type attested struct {
	attestor    string
	payloadType string
	payload     []byte
}

// collectScans verifies every cosign v2 attestation candidate against the
// attestors, adds the bundles they verified, and keeps the vulnerability
// scans about digest. rejected says, per candidate that did not count,
// why.
func collectScans(ctx context.Context, cands []attCandidate, bundles []bundleResult, attestors []*policy.Signer, digest v1.Hash) (scans []scan, rejected []string) {
	atts, rejected := verifyEnvelopes(ctx, cands, attestors)
	for _, b := range bundles {
		isScan := b.statement != nil && isScanPredicate(b.statement.PredicateType)
		switch {
		case b.err != nil:
			rejected = append(rejected, b.err.Error())
		case b.payload == nil:
			// A message signature is an image signature, not a scan.
		case slices.Contains(attestors, b.signer):
			atts = append(atts, attested{attestor: b.signer.Name, payloadType: b.payloadType, payload: b.payload})
		case !isScan:
		case len(b.problems) > 0:
			for _, a := range attestors {
				if p, ok := b.problems[a]; ok {
					rejected = append(rejected, fmt.Sprintf("a scan bundle that does not count for %s: %s", a.Name, p))
				}
			}
		default:
			rejected = append(rejected, "a scan bundle not signed by an attestor of the rule")
		}
	}
	for _, a := range atts {
		if sc, ok, why := scanOf(a, digest); ok {
			scans = append(scans, sc)
		} else if why != "" {
			rejected = append(rejected, why)
		}
	}
	return scans, rejected
}

// verifyEnvelopes verifies cosign v2 DSSE envelopes against the
// attestors' keys.
func verifyEnvelopes(ctx context.Context, cands []attCandidate, attestors []*policy.Signer) (atts []attested, rejected []string) {
	verifiers := make([]*dsse.EnvelopeVerifier, len(attestors))
	for i, a := range attestors {
		if a.Keyless != nil {
			// Keyless attestations are read from bundles only.
			continue
		}
		sv, err := loadVerifier(a)
		if err != nil {
			rejected = append(rejected, err.Error())
			continue
		}
		ev, err := dsse.NewEnvelopeVerifier(&sigdsse.VerifierAdapter{SignatureVerifier: sv, Pub: a.Key})
		if err != nil {
			rejected = append(rejected, fmt.Sprintf("attestor %q: %v", a.Name, err))
			continue
		}
		verifiers[i] = ev
	}
	for ci := range cands {
		c := &cands[ci]
		if c.err != nil {
			rejected = append(rejected, c.err.Error())
			continue
		}
		var env dsse.Envelope
		if err := json.Unmarshal(c.envelope, &env); err != nil {
			rejected = append(rejected, "an attestation that is not a DSSE envelope")
			continue
		}
		attestor := ""
		for i, ev := range verifiers {
			if ev == nil {
				continue
			}
			if _, err := ev.Verify(ctx, &env); err == nil {
				attestor = attestors[i].Name
				break
			}
		}
		if attestor == "" {
			rejected = append(rejected, "an attestation signed by a key that is not an attestor of the rule")
			continue
		}
		c.accepted = true
		payload, err := env.DecodeB64Payload()
		if err != nil {
			rejected = append(rejected, fmt.Sprintf("an attestation by %s with an undecodable payload", attestor))
			continue
		}
		atts = append(atts, attested{attestor: attestor, payloadType: env.PayloadType, payload: payload})
	}
	return atts, rejected
}

func isScanPredicate(t string) bool {
	return t == attestation.CosignVulnProvenanceV01 || t == predicateInTotoVulns
}

// scanOf reads a verified attestation as a scan of digest. It says why
// not when the attestation should have been one; attestations of other
// predicates (provenance, SBOMs) are neither counted nor reported.
func scanOf(a attested, digest v1.Hash) (sc scan, ok bool, why string) {
	if a.payloadType != ctypes.IntotoPayloadType {
		return scan{}, false, fmt.Sprintf("an attestation by %s with payload type %q", a.attestor, a.payloadType)
	}
	var st statement
	if err := json.Unmarshal(a.payload, &st); err != nil {
		return scan{}, false, fmt.Sprintf("an attestation by %s that is not an in-toto statement", a.attestor)
	}
	if !isScanPredicate(st.PredicateType) {
		return scan{}, false, ""
	}
	if !aboutDigest(st, digest) {
		return scan{}, false, fmt.Sprintf("a scan by %s about another image", a.attestor)
	}
	return readScan(a.attestor, st), true, ""
}

func aboutDigest(st statement, digest v1.Hash) bool {
	for _, s := range st.Subject {
		if s.Digest[digest.Algorithm] == digest.Hex {
			return true
		}
	}
	return false
}

// readScan reads the time and the report of a vulnerability predicate.
func readScan(attestor string, st statement) scan {
	sc := scan{attestor: attestor}
	if st.PredicateType == predicateInTotoVulns {
		var p struct {
			Metadata struct {
				ScanFinishedOn time.Time `json:"scanFinishedOn"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(st.Predicate, &p); err != nil {
			sc.err = fmt.Errorf("unreadable vulns predicate: %w", err)
			return sc
		}
		sc.finished = p.Metadata.ScanFinishedOn
		sc.report, sc.err = parseInTotoVulns(st.Predicate)
		return sc
	}
	var p struct {
		Scanner struct {
			Result json.RawMessage `json:"result"`
		} `json:"scanner"`
		Metadata attestation.Metadata `json:"metadata"`
	}
	if err := json.Unmarshal(st.Predicate, &p); err != nil {
		sc.err = fmt.Errorf("unreadable vuln predicate: %w", err)
		return sc
	}
	sc.finished = p.Metadata.ScanFinishedOn
	sc.report, sc.err = parseScannerResult(p.Scanner.Result)
	return sc
}

// scanDecision is the scan part of a verdict.
type scanDecision struct {
	status  *ScanStatus
	reasons []string
	// expires is when the decision stops holding by itself: the scan
	// grows too old, or an ignore entry it relied on runs out.
	expires time.Time
}

// decideScan judges the newest valid scan under rule at time now.
func decideScan(rule *policy.Scan, scans []scan, rejected []string, now time.Time) scanDecision {
	if len(scans) == 0 {
		msg := "scan: no scan attestation from " + strings.Join(signerNames(rule.Attestors), " or ")
		if len(rejected) > 0 {
			msg += "; did not count: " + strings.Join(rejected, ", ")
		}
		return scanDecision{reasons: []string{msg}}
	}
	// Attestations are stored in the order they were made, which is not
	// the order the scans ran: the scan time decides which is newest.
	sort.SliceStable(scans, func(i, j int) bool { return scans[i].finished.After(scans[j].finished) })
	newest := scans[0]
	d := scanDecision{status: &ScanStatus{Attestor: newest.attestor, Finished: newest.finished, Blocking: []string{}}}
	if newest.err != nil {
		d.reasons = append(d.reasons, fmt.Sprintf("scan: newest scan by %s (%s) cannot be read: %v",
			newest.attestor, formatTime(newest.finished), newest.err))
		return d
	}
	if newest.finished.IsZero() || newest.finished.Year() <= 1 {
		d.reasons = append(d.reasons, fmt.Sprintf("scan: newest scan by %s has no finish time, rule allows %s",
			newest.attestor, formatAge(rule.MaxAge)))
	} else if age := now.Sub(newest.finished); age > rule.MaxAge {
		d.reasons = append(d.reasons, fmt.Sprintf("scan: newest scan by %s finished %s, %s old, rule allows %s",
			newest.attestor, formatTime(newest.finished), formatAge(age), formatAge(rule.MaxAge)))
	} else {
		d.expires = newest.finished.Add(rule.MaxAge)
	}
	var blocking []string
	for _, f := range newest.report.Findings {
		if f.Severity > d.status.MaxSeverity {
			d.status.MaxSeverity = f.Severity
		}
		if f.Severity <= rule.MaxSeverity {
			continue
		}
		if ig, ok := ignored(rule.Ignore, f.ID, now); ok {
			if !ig.Until.IsZero() && (d.expires.IsZero() || ig.Until.Before(d.expires)) {
				d.expires = ig.Until
			}
			continue
		}
		d.status.Blocking = append(d.status.Blocking, f.ID)
		blocking = append(blocking, fmt.Sprintf("%s (%s)", f.ID, f.Severity))
	}
	if len(blocking) > 0 {
		d.reasons = append(d.reasons, fmt.Sprintf("scan: %d vulnerabilit%s above %s in the scan by %s: %s",
			len(blocking), plural(len(blocking), "y", "ies"), rule.MaxSeverity, newest.attestor, strings.Join(blocking, ", ")))
	}
	if len(d.reasons) > 0 {
		d.expires = time.Time{}
	}
	return d
}

func ignored(ignores []policy.Ignore, id string, now time.Time) (policy.Ignore, bool) {
	for _, ig := range ignores {
		if ig.Ignores(id, now) {
			return ig, true
		}
	}
	return policy.Ignore{}, false
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// formatAge writes a duration the way operators write maxAge: whole days
// when it is at least two days, else Go's form.
func formatAge(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	}
	return d.Round(time.Second).String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
