package policy

import (
	"regexp"
	"strings"

	"github.com/sigstore/sigstore-go/pkg/root"
	"gopkg.in/yaml.v3"
)

// maxTrustedRoot bounds a trusted_root.json: the public sigstore one is
// tens of KiB.
const maxTrustedRoot = 4 << 20

// keylessSigner reads a signer known by its certificate identity: the
// keyless mapping and the trustedRoot and tlog fields beside it.
func (f *file) keylessSigner(ctx, nm string, n *yaml.Node, m map[string]*yaml.Node) {
	if m["key"] != nil || m["keyData"] != nil {
		f.problem(n, ctx, "give either keyless or key/keyData, not both")
	}
	kn := m["keyless"]
	km := f.fields(ctx, "keyless", kn, "issuer", "subject", "subjectRegExp")
	if km == nil {
		return
	}
	k := &Keyless{TLog: true}
	ok := true
	if v := km["issuer"]; v == nil {
		f.problem(kn, ctx, "keyless needs an issuer: the OIDC issuer URL the certificate names, like https://token.actions.githubusercontent.com")
		ok = false
	} else if k.Issuer, _ = f.str(ctx, "issuer", v); k.Issuer == "" {
		f.problem(v, ctx, "issuer is empty")
		ok = false
	}
	switch subj, re := km["subject"], km["subjectRegExp"]; {
	case subj != nil && re != nil:
		f.problem(re, ctx, "give either subject or subjectRegExp, not both")
		ok = false
	case subj != nil:
		if k.Subject, _ = f.str(ctx, "subject", subj); k.Subject == "" {
			f.problem(subj, ctx, "subject is empty")
			ok = false
		}
	case re != nil:
		pattern, _ := f.str(ctx, "subjectRegExp", re)
		var err error
		switch k.SubjectRegExp, err = regexp.Compile(pattern); {
		case pattern == "":
			f.problem(re, ctx, "subjectRegExp is empty: it would match every identity")
			ok = false
		case err != nil:
			f.problem(re, ctx, "subjectRegExp is not a regular expression: %v", err)
			ok = false
		}
	default:
		f.problem(kn, ctx, "keyless needs a subject (the exact identity) or a subjectRegExp")
		ok = false
	}
	if v := m["tlog"]; v != nil {
		switch t, _ := f.str(ctx, "tlog", v); t {
		case "require":
		case "ignore":
			k.TLog = false
		default:
			f.problem(v, ctx, "tlog must be require or ignore, not %q", t)
			ok = false
		}
	}
	if v := m["trustedRoot"]; v == nil {
		f.problem(n, ctx, "a keyless signer needs trustedRoot: a sigstore trusted_root.json shipped with the policy, since nothing is fetched when a container starts")
		ok = false
	} else if k.TrustedRoot, k.TrustedRootPath = f.trustedRoot(ctx, v); k.TrustedRoot == nil {
		ok = false
	}
	if !ok || nm == "" {
		return
	}
	s := &Signer{Name: nm, Keyless: k, Source: f.source(n)}
	for _, other := range f.keyless {
		if mayOverlap(k, other.Keyless) {
			f.problem(n, ctx, "its identity could match the same certificate as signer %q at %s (same issuer, subjects not clearly disjoint); one certificate must never count twice", other.Name, other.Source)
			return
		}
	}
	f.keyless = append(f.keyless, s)
	f.pol.Signers[nm] = s
}

func (f *file) trustedRoot(ctx string, n *yaml.Node) (*root.TrustedRoot, string) {
	p, ok := f.str(ctx, "trustedRoot", n)
	if !ok {
		return nil, ""
	}
	if p == "" {
		f.problem(n, ctx, "trustedRoot is empty")
		return nil, ""
	}
	path := f.resolve(p)
	data, err := readRegular(path, maxTrustedRoot)
	if err != nil {
		f.problem(n, ctx, "cannot read trusted root: %s", pathErr(err))
		return nil, ""
	}
	f.hashPart(path, data)
	tr, err := root.NewTrustedRootFromJSON(data)
	if err != nil {
		f.problem(n, ctx, "trusted root %s is not a sigstore trusted_root.json: %v", path, err)
		return nil, ""
	}
	if len(tr.FulcioCertificateAuthorities()) == 0 {
		f.problem(n, ctx, "trusted root %s holds no certificate authority, so no keyless certificate could verify", path)
		return nil, ""
	}
	return tr, path
}

// mayOverlap reports whether one certificate could satisfy both a and b.
// Exact subjects overlap when equal; an exact subject and a pattern when
// the pattern matches it. Two patterns are judged disjoint only when both
// are anchored at the start and their literal prefixes differ before
// either ends; anything less certain counts as an overlap.
func mayOverlap(a, b *Keyless) bool {
	if a.Issuer != b.Issuer {
		return false
	}
	switch {
	case a.SubjectRegExp == nil && b.SubjectRegExp == nil:
		return a.Subject == b.Subject
	case a.SubjectRegExp == nil:
		return b.SubjectRegExp.MatchString(a.Subject)
	case b.SubjectRegExp == nil:
		return a.SubjectRegExp.MatchString(b.Subject)
	}
	if !strings.HasPrefix(a.SubjectRegExp.String(), "^") || !strings.HasPrefix(b.SubjectRegExp.String(), "^") {
		return true
	}
	pa, _ := a.SubjectRegExp.LiteralPrefix()
	pb, _ := b.SubjectRegExp.LiteralPrefix()
	return strings.HasPrefix(pa, pb) || strings.HasPrefix(pb, pa)
}
