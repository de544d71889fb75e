// Package policy loads, validates and merges the drop-in policy files of a
// node and matches an image to the rule that governs it. It knows nothing
// about registries: it turns YAML into checked values.
package policy

import (
	"crypto"
	"regexp"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
)

// Mode says what a failing rule does to an image.
type Mode string

const (
	// ModeEnforce denies an image that fails its rule.
	ModeEnforce Mode = "enforce"
	// ModeWarn allows it and carries the reasons as a warning.
	ModeWarn Mode = "warn"
	// ModeAudit allows it and records the reasons in the audit log only.
	ModeAudit Mode = "audit"
)

// Policy is the merged, validated content of a policy directory.
type Policy struct {
	// Signers by name, pooled from every file.
	Signers map[string]*Signer
	// Registries by host, pooled from every file. Hosts are written as
	// RepositoryName writes them (lower case, Docker Hub as docker.io).
	Registries map[string]*Registry
	// Rules in file order; the first whose Images match wins.
	Rules []*Rule
	// Unmatched decides images that no rule matches: "deny" or "allow".
	Unmatched string
	// Generation identifies this content: it changes whenever any file,
	// key or rule changes, so verdicts reached under one generation are
	// never served under another.
	Generation string
}

// Signer is a trusted identity whose signatures count: a key, or a
// keyless identity.
type Signer struct {
	Name string
	// Key is the signer's public key (ECDSA, RSA or Ed25519); nil for a
	// keyless signer.
	Key crypto.PublicKey
	// Keyless is set for a signer known by the identity in its Fulcio
	// certificate rather than by a key.
	Keyless *Keyless
	// Source is where the signer was defined, as FILE:LINE.
	Source string
}

// Keyless is a CI or user identity as Fulcio certifies it, and the
// offline trust material its bundles are checked against.
type Keyless struct {
	// Issuer is the OIDC issuer the certificate must name, exactly.
	Issuer string
	// Subject is the exact certificate identity (its SAN), or empty
	// when SubjectRegExp matches it instead.
	Subject       string
	SubjectRegExp *regexp.Regexp
	// TrustedRoot holds the Fulcio CAs, CT logs and Rekor logs, read from
	// TrustedRootPath when the policy loaded; nothing is fetched later.
	TrustedRoot     *root.TrustedRoot
	TrustedRootPath string
	// TLog requires a Rekor inclusion proof in the bundle ("tlog:
	// require"); without it an RFC 3161 timestamp must date the
	// signature instead.
	TLog bool
}

// WantedSubject says which certificate identities the signer accepts.
func (k *Keyless) WantedSubject() string {
	if k.SubjectRegExp != nil {
		return k.SubjectRegExp.String()
	}
	return k.Subject
}

// Registry holds how to reach one registry host.
type Registry struct {
	Host string
	// Insecure allows plain HTTP; for labs and tests only.
	Insecure bool
	// Auth is the path of a docker config.json with credentials; empty
	// means anonymous.
	Auth string
}

// Rule decides the images its Images globs match.
type Rule struct {
	Name   string
	Images []string
	// Allow exempts matching images from every check.
	Allow bool
	Mode  Mode
	// Signatures is nil when the rule asks for none.
	Signatures *Signatures
	// Scan is nil when the rule asks for no scan attestation.
	Scan *Scan
	// Source is where the rule was defined, as FILE:LINE.
	Source string

	// globs are Images compiled at load, so that matching an image on
	// every container create parses nothing.
	globs []glob
}

// Signatures is a threshold of distinct signers.
type Signatures struct {
	Threshold int
	// Signers that may count toward Threshold, in policy order.
	Signers []*Signer
	// Required signers must be among those that signed.
	Required []*Signer
}

// Scan requires a signed, fresh vulnerability scan attestation.
type Scan struct {
	// Attestors whose signed scan attestation counts.
	Attestors []*Signer
	// MaxSeverity is the highest severity allowed.
	MaxSeverity Severity
	// MaxAge bounds how long ago the newest valid scan finished.
	MaxAge time.Duration
	Ignore []Ignore
}

// Ignore exempts one vulnerability from the scan gate.
type Ignore struct {
	CVE string
	// Until is when the exemption ends; zero means it does not.
	Until  time.Time
	Reason string
}

// Ignores reports whether the exemption covers id at time now.
func (i Ignore) Ignores(id string, now time.Time) bool {
	return i.CVE == id && (i.Until.IsZero() || now.Before(i.Until))
}
