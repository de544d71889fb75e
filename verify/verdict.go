package verify

import (
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/policy"
)

// Subject is the exact image to decide: the repository where rules match and
// evidence lives, and the digest the runtime is about to run.
type Subject struct {
	// Image is the reference as the workload or operator gave it, for reports.
	Image      string
	Repository name.Repository
	Digest     v1.Hash
}

// Verdict is the judgement on one subject under one rule. A verdict is a
// value that may be cached; failures to evaluate (registry unreachable,
// timeouts) are errors, never verdicts.
type Verdict struct {
	Image  string      `json:"image"`
	Digest string      `json:"digest"`
	Rule   string      `json:"rule"`
	Mode   policy.Mode `json:"mode"`
	// Allowed is the answer: false only under enforce (or an unmatched
	// image under "unmatched: deny").
	Allowed bool `json:"allowed"`
	// Signers lists the distinct signer names whose signature verified.
	Signers []string `json:"signers"`
	// Evidence says, per signer in Signers, where the signature that
	// satisfied it was found.
	Evidence []Evidence `json:"evidence"`
	// Reasons says why the image failed its rule; empty when it passed.
	// Under warn and audit an image that failed is allowed and Reasons
	// holds what would have denied it.
	Reasons []string `json:"reasons"`
	// Stored is set when the evidence came from the evidence store, not
	// the registry (offline, or the registry was unreachable).
	Stored bool `json:"stored,omitempty"`
	// Scan is the status of the newest valid scan, nil when the rule asks
	// for none or none was found.
	Scan *ScanStatus `json:"scan,omitempty"`
	// Expires, when set, is the moment this verdict stops being true on
	// its own: the newest scan exceeds the rule's maxAge, or an ignore
	// entry runs out.
	Expires time.Time `json:"-"`
}

// Passed reports whether the image met its rule (as opposed to being
// allowed in spite of failing it under warn or audit).
func (v Verdict) Passed() bool { return len(v.Reasons) == 0 }

// ScanStatus summarizes the newest valid scan attestation.
type ScanStatus struct {
	Attestor    string          `json:"attestor"`
	Finished    time.Time       `json:"finished"`
	MaxSeverity policy.Severity `json:"max_severity"`
	// Blocking lists the vulnerabilities that block: above the rule's
	// maxSeverity and not ignored.
	Blocking []string `json:"blocking"`
}

// Evidence is the signature that satisfied one signer.
type Evidence struct {
	Signer string `json:"signer"`
	// Mechanism is where the signature was found and in which format:
	// "cosign-v2-tag" (simple signing under the sha256-<hex>.sig tag),
	// "bundle-referrer" (a sigstore bundle found through the referrers
	// API) or "bundle-referrer-tag" (the same through the referrers tag
	// schema).
	Mechanism string `json:"mechanism"`
}
