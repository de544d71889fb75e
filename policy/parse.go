package policy

import (
	"cmp"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"gopkg.in/yaml.v3"
)

// maxKeyFile bounds a key file: a PEM public key is a few KiB at most.
const maxKeyFile = 64 << 10

func (f *file) signer(n *yaml.Node) {
	ctx := entity("signer", peek(n, "name"))
	m := f.fields(ctx, "", n, "name", "key", "keyData", "keyless", "trustedRoot", "tlog")
	nm, _ := f.str(ctx, "name", m["name"])
	switch at, dup := f.signerAt[nm]; {
	case nm == "":
		f.problem(n, "", "a signer has no name")
	case dup:
		f.problem(n, "", "signer %q is already defined at %s", nm, at)
		return
	default:
		f.signerAt[nm] = f.source(n)
	}
	if k := m["keyless"]; k != nil {
		f.keylessSigner(ctx, nm, n, m)
		return
	}
	for _, field := range []string{"trustedRoot", "tlog"} {
		if v := m[field]; v != nil {
			f.problem(v, ctx, "%s applies to keyless signers only", field)
		}
	}
	var pub crypto.PublicKey
	switch key, data := m["key"], m["keyData"]; {
	case key != nil && data != nil:
		f.problem(data, ctx, "give either key or keyData, not both")
	case key != nil:
		pub = f.keyFile(ctx, key)
	case data != nil:
		if pem, ok := f.str(ctx, "keyData", data); ok {
			pub = f.parseKey(ctx, data, "keyData", []byte(pem))
		}
	default:
		f.problem(n, ctx, "no key: give key (a PEM file) or keyData (inline PEM)")
	}
	if pub == nil || nm == "" {
		return
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		f.problem(n, ctx, "cannot encode its public key: %v", err)
		return
	}
	s := &Signer{Name: nm, Key: pub, Source: f.source(n)}
	if other := f.keyOwner[string(der)]; other != nil {
		f.problem(n, ctx, "same public key as signer %q at %s; one key must never count twice", other.Name, other.Source)
		return
	}
	f.keyOwner[string(der)] = s
	f.pol.Signers[nm] = s
}

func (f *file) keyFile(ctx string, n *yaml.Node) crypto.PublicKey {
	p, ok := f.str(ctx, "key", n)
	if !ok {
		return nil
	}
	if p == "" {
		f.problem(n, ctx, "key is empty")
		return nil
	}
	path := f.resolve(p)
	data, err := readRegular(path, maxKeyFile)
	if err != nil {
		f.problem(n, ctx, "cannot read key file: %s", pathErr(err))
		return nil
	}
	f.hashPart(path, data)
	return f.parseKey(ctx, n, "key file "+path, data)
}

func (f *file) parseKey(ctx string, n *yaml.Node, what string, pem []byte) crypto.PublicKey {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pem)
	if err != nil {
		f.problem(n, ctx, "%s is not a PEM public key: %v", what, err)
		return nil
	}
	switch pub.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		return pub
	}
	f.problem(n, ctx, "%s holds a %T, not an ECDSA, RSA or Ed25519 public key", what, pub)
	return nil
}

func (f *file) registry(n *yaml.Node) {
	ctx := entity("registry", peek(n, "host"))
	m := f.fields(ctx, "", n, "host", "insecure", "auth")
	host, _ := f.str(ctx, "host", m["host"])
	r := &Registry{}
	r.Insecure, _ = f.boolean(ctx, "insecure", m["insecure"])
	if a := m["auth"]; a != nil {
		switch p, ok := f.str(ctx, "auth", a); {
		case !ok:
		case p == "":
			f.problem(a, ctx, "auth is empty")
		default:
			r.Auth = f.resolve(p)
			if err := checkReadable(r.Auth); err != nil {
				f.problem(a, ctx, "cannot read auth file: %s", pathErr(err))
			}
		}
	}
	if host == "" {
		f.problem(n, "", "a registry has no host")
		return
	}
	if _, err := name.NewRegistry(host, name.StrictValidation); err != nil {
		f.problem(m["host"], ctx, "host must be a host name with an optional port, like registry.example.com:5000")
		return
	}
	// Keyed the way RepositoryName writes hosts, so that a name's host
	// finds its registry.
	r.Host = strings.ToLower(host)
	if r.Host == name.DefaultRegistry {
		r.Host = dockerHub
	}
	if at, dup := f.registryAt[r.Host]; dup {
		f.problem(n, "", "registry %q is already defined at %s", host, at)
		return
	}
	f.registryAt[r.Host] = f.source(n)
	f.pol.Registries[r.Host] = r
}

// checkReadable opens path and closes it: credentials are read when a
// registry is contacted, but a typo in their path shows at load.
func checkReadable(path string) error {
	fh, err := openRegular(path)
	if err != nil {
		return err
	}
	return fh.Close()
}

func (f *file) defaults(n *yaml.Node) {
	m := f.fields("", "defaults", n, "unmatched")
	v := m["unmatched"]
	u, ok := f.str("", "defaults.unmatched", v)
	if !ok {
		return
	}
	switch {
	case u != "deny" && u != "allow":
		f.problem(v, "", "defaults.unmatched must be deny or allow, not %q", u)
	case f.unmatchedAt == "":
		f.pol.Unmatched = u
		f.unmatchedAt = f.source(v)
	case u != f.pol.Unmatched:
		f.problem(v, "", "defaults.unmatched is %q here but %q at %s", u, f.pol.Unmatched, f.unmatchedAt)
	}
}

func (f *file) rule(n *yaml.Node) {
	ctx := entity("rule", peek(n, "name"))
	m := f.fields(ctx, "", n, "name", "images", "allow", "mode", "signatures", "scan")
	nm, _ := f.str(ctx, "name", m["name"])
	r := &Rule{Name: nm, Mode: ModeEnforce, Source: f.source(n)}
	switch at, dup := f.ruleAt[nm]; {
	case nm == "":
		f.problem(n, "", "a rule has no name")
	case dup:
		f.problem(n, "", "rule %q is already defined at %s", nm, at)
	default:
		f.ruleAt[nm] = r.Source
	}

	images := f.list(ctx, "images", m["images"])
	if len(images) == 0 && (m["images"] == nil || m["images"].Kind == yaml.SequenceNode) {
		f.problem(orNode(m["images"], n), ctx, "no images: list the repository globs the rule governs")
	}
	for _, img := range images {
		pattern, ok := f.str(ctx, "an image glob", img)
		if !ok {
			continue
		}
		g, err := compileGlob(pattern)
		if err != nil {
			f.problem(img, ctx, "%v", err)
			continue
		}
		r.Images = append(r.Images, pattern)
		r.globs = append(r.globs, g)
	}

	var allowOK bool
	r.Allow, allowOK = f.boolean(ctx, "allow", m["allow"])
	if v := m["mode"]; v != nil {
		if mode, ok := f.str(ctx, "mode", v); ok {
			switch Mode(mode) {
			case ModeEnforce, ModeWarn, ModeAudit:
				r.Mode = Mode(mode)
			default:
				f.problem(v, ctx, "unknown mode %q (want enforce, warn or audit)", mode)
			}
		}
	}
	sigs, scan := m["signatures"], m["scan"]
	switch {
	case r.Allow && (sigs != nil || scan != nil):
		f.problem(m["allow"], ctx, "allow: true exempts images from every check, so it cannot go with signatures or scan")
	case allowOK && !r.Allow && sigs == nil && scan == nil:
		f.problem(n, ctx, "checks nothing: with neither signatures nor scan it would allow every image it matches; write allow: true to exempt images on purpose")
	}
	if sigs != nil {
		r.Signatures = f.signatures(ctx, sigs)
	}
	if scan != nil {
		r.Scan = f.scan(ctx, scan)
	}
	f.pol.Rules = append(f.pol.Rules, r)
}

func (f *file) signatures(ctx string, n *yaml.Node) *Signatures {
	m := f.fields(ctx, "signatures", n, "threshold", "signers", "required")
	if m == nil {
		return nil
	}
	s := &Signatures{}
	var listed, required []ref
	s.Signers, listed = f.signerRefs(ctx, "signatures.signers", m["signers"])
	if len(listed) == 0 {
		f.problem(orNode(m["signers"], n), ctx, "signatures lists no signers")
	}
	if t := m["threshold"]; t == nil {
		f.problem(n, ctx, "signatures needs a threshold: how many distinct signers must have signed")
	} else if th, ok := f.integer(ctx, "threshold", t); ok {
		s.Threshold = th
		switch {
		case th < 1:
			f.problem(t, ctx, "threshold %d must be at least 1", th)
		case len(listed) > 0 && th > len(listed):
			f.problem(t, ctx, "threshold %d is larger than its %s", th, count(len(listed), "signer"))
		}
	}
	s.Required, required = f.signerRefs(ctx, "signatures.required", m["required"])
	for _, r := range required {
		if _, known := f.signerAt[r.name]; known && !hasRef(listed, r.name) {
			f.problem(r.node, ctx, "required signer %q is not among its signers", r.name)
		}
	}
	return s
}

// ref is a signer name as a rule lists it.
type ref struct {
	name string
	node *yaml.Node
}

func hasRef(refs []ref, name string) bool {
	return slices.ContainsFunc(refs, func(r ref) bool { return r.name == name })
}

// signerRefs resolves a list of signer names. It returns the signers
// defined without problems, and every distinct name as listed, so that
// counts and subsets are judged on what the operator wrote.
func (f *file) signerRefs(ctx, field string, n *yaml.Node) (signers []*Signer, refs []ref) {
	for _, item := range f.list(ctx, field, n) {
		nm, ok := f.str(ctx, "a signer name", item)
		if !ok {
			continue
		}
		if hasRef(refs, nm) {
			f.problem(item, ctx, "signer %q is listed twice in %s", nm, field)
			continue
		}
		refs = append(refs, ref{nm, item})
		if _, known := f.signerAt[nm]; !known {
			f.problem(item, ctx, "unknown signer %q in %s", nm, field)
			continue
		}
		// A signer whose definition had a problem was reported there,
		// and is not reported again here.
		if s := f.pol.Signers[nm]; s != nil {
			signers = append(signers, s)
		}
	}
	return signers, refs
}

func (f *file) scan(ctx string, n *yaml.Node) *Scan {
	m := f.fields(ctx, "scan", n, "attestors", "maxSeverity", "maxAge", "ignore")
	if m == nil {
		return nil
	}
	s := &Scan{}
	var attestors []ref
	s.Attestors, attestors = f.signerRefs(ctx, "scan.attestors", m["attestors"])
	if len(attestors) == 0 {
		f.problem(orNode(m["attestors"], n), ctx, "scan lists no attestors: name the signers whose scan attestations count")
	}
	if v := m["maxSeverity"]; v == nil {
		f.problem(n, ctx, "scan needs a maxSeverity: none, low, medium, high or critical")
	} else if sev, ok := f.str(ctx, "maxSeverity", v); ok {
		var err error
		if s.MaxSeverity, err = ParsePolicySeverity(sev); err != nil {
			f.problem(v, ctx, "maxSeverity: %v", err)
		}
	}
	if v := m["maxAge"]; v == nil {
		f.problem(n, ctx, "scan needs a maxAge, like 168h or 7d")
	} else if age, ok := f.str(ctx, "maxAge", v); ok {
		d, err := parseAge(age)
		switch {
		case err != nil:
			f.problem(v, ctx, "maxAge %q is not a duration like 168h or 7d", age)
		case d <= 0:
			f.problem(v, ctx, "maxAge %q must be positive", age)
		default:
			s.MaxAge = d
		}
	}
	for _, item := range f.list(ctx, "scan.ignore", m["ignore"]) {
		if ig, ok := f.ignore(ctx, item); ok {
			s.Ignore = append(s.Ignore, ig)
		}
	}
	return s
}

func (f *file) ignore(ctx string, n *yaml.Node) (Ignore, bool) {
	m := f.fields(ctx, "an ignore entry", n, "cve", "until", "reason")
	if m == nil {
		return Ignore{}, false
	}
	var ig Ignore
	ig.CVE, _ = f.str(ctx, "cve", m["cve"])
	ig.Reason, _ = f.str(ctx, "reason", m["reason"])
	ok := ig.CVE != ""
	if !ok {
		f.problem(n, ctx, "an ignore entry has no cve")
	}
	if v := m["until"]; v != nil {
		if until, isStr := f.str(ctx, "until", v); isStr {
			var err error
			if ig.Until, err = parseUntil(until); err != nil {
				f.problem(v, ctx, "ignore %s: until %q is neither a date (2027-01-31) nor an RFC 3339 time (2027-01-31T12:00:00Z)", cmp.Or(ig.CVE, "entry"), until)
				ok = false
			}
		}
	}
	return ig, ok
}

// parseAge takes a Go duration or whole days ("7d"), the unit scan
// freshness is usually thought in.
func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if limit := int64(math.MaxInt64 / (24 * time.Hour)); err != nil || n > limit || n < -limit {
			return 0, fmt.Errorf("bad number of days %q", days)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}

// parseUntil takes a date or an RFC 3339 time. A date names a whole day:
// the exemption holds through it and ends when it ends (UTC), since the
// policy reads "until 2027-01-31; after it the CVE blocks again".
func parseUntil(s string) (time.Time, error) {
	if d, err := time.Parse(time.DateOnly, s); err == nil {
		return d.AddDate(0, 0, 1), nil
	}
	return time.Parse(time.RFC3339, s)
}

// entity names what a message is about: `rule "prod"`, or "unnamed rule".
func entity(kind, name string) string {
	if name == "" {
		return "unnamed " + kind
	}
	return fmt.Sprintf("%s %q", kind, name)
}

func orNode(n, fallback *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return fallback
}

// count words n things: "1 signer", "3 signers".
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
