package verify

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/imagegate/imagegate/policy"
)

// ErrUnreachable marks a failure to get evidence from the registry. It is
// never a verdict: callers deny with it and do not cache it.
var ErrUnreachable = errors.New("registry unreachable")

// Verifier decides verdicts for subjects under the rules of one policy.
type Verifier struct {
	pol       *policy.Policy
	timeout   time.Duration
	transport http.RoundTripper
	now       func() time.Time
	store     *Store
	offline   bool
}

// Option configures a Verifier.
type Option func(*Verifier)

// WithTimeout bounds every registry request.
func WithTimeout(d time.Duration) Option { return func(v *Verifier) { v.timeout = d } }

// WithTransport sets the HTTP transport for registry requests.
func WithTransport(rt http.RoundTripper) Option { return func(v *Verifier) { v.transport = rt } }

// WithStore keeps the evidence that counted in s, and verifies from it
// when the registry is unreachable.
func WithStore(s *Store) Option { return func(v *Verifier) { v.store = s } }

// WithOffline verifies from the store only, asking no registry.
func WithOffline() Option { return func(v *Verifier) { v.offline = true } }

// WithClock sets the clock that scan ages and ignore dates are judged by.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// New returns a Verifier for pol.
func New(pol *policy.Policy, opts ...Option) *Verifier {
	v := &Verifier{pol: pol, timeout: 1500 * time.Millisecond, transport: http.DefaultTransport, now: time.Now}
	for _, o := range opts {
		o(v)
	}
	v.transport = boundedTransport{v.transport}
	return v
}

// NewSubject names the subject for image (any reference form; Docker Hub
// short names are normalized) at digest, as the runtime reports it. It
// asks no registry.
func NewSubject(image, digest string) (Subject, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return Subject{}, fmt.Errorf("image %q: %w", image, err)
	}
	h, err := v1.NewHash(digest)
	if err != nil {
		return Subject{}, fmt.Errorf("image %q: digest %q: %w", image, digest, err)
	}
	return Subject{Image: image, Repository: ref.Context(), Digest: h}, nil
}

// Resolve parses image and, when it carries no digest, resolves its tag to
// the digest the registry serves now. Only the CLI does that; the plugin
// takes the digest from the runtime. An image index is resolved to the
// index digest, the one the runtime reports for it.
func (v *Verifier) Resolve(ctx context.Context, image string) (Subject, error) {
	ref, err := name.ParseReference(image)
	if err != nil {
		return Subject{}, fmt.Errorf("image %q: %w", image, err)
	}
	if d, ok := ref.(name.Digest); ok {
		return NewSubject(image, d.DigestStr())
	}
	if v.offline {
		return Subject{}, fmt.Errorf("image %q: offline, name the image by digest (IMAGE@sha256:…): a tag cannot be resolved without the registry", image)
	}
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	repo, opts, err := v.remoteOptions(ctx, ref.Context())
	if err != nil {
		return Subject{}, err
	}
	desc, err := remote.Head(repo.Tag(ref.Identifier()), opts...)
	if isNotFound(err) {
		return Subject{}, fmt.Errorf("image %q: %w", image, ErrTagNotFound)
	}
	if err != nil {
		return Subject{}, fmt.Errorf("image %q: %w", image, unreachable(repo, err))
	}
	return Subject{Image: image, Repository: ref.Context(), Digest: desc.Digest}, nil
}

// ErrTagNotFound says a tag named on the command line does not exist.
var ErrTagNotFound = errors.New("no such tag in the registry")

// Decide finds the rule for subj and verifies it.
func (v *Verifier) Decide(ctx context.Context, subj Subject) (Verdict, error) {
	return v.Verify(ctx, subj, v.pol.RuleFor(subj.Repository))
}

// Verify decides subj under rule; a nil rule means no rule matched and the
// policy's unmatched default applies. It fetches the evidence once and
// checks it locally against every signer and attestor of the rule.
func (v *Verifier) Verify(ctx context.Context, subj Subject, rule *policy.Rule) (Verdict, error) {
	vd := Verdict{
		Image:    subj.Image,
		Digest:   subj.Digest.String(),
		Mode:     policy.ModeEnforce,
		Signers:  []string{},
		Evidence: []Evidence{},
		Reasons:  []string{},
	}
	if rule == nil {
		if v.pol.Unmatched == "allow" {
			vd.Allowed = true
			return vd, nil
		}
		vd.Reasons = append(vd.Reasons, fmt.Sprintf("no rule matches %s and the policy denies unmatched images",
			policy.RepositoryName(subj.Repository)))
		return vd, nil
	}
	vd.Rule, vd.Mode = rule.Name, rule.Mode
	if rule.Allow {
		vd.Allowed = true
		return vd, nil
	}
	ev, stored, err := v.evidence(ctx, subj, rule)
	if err != nil {
		return Verdict{}, err
	}
	vd.Stored = stored
	bundles, setupErrs := verifyBundles(ev.bundles, ruleSigners(rule))
	if rule.Signatures != nil {
		results, unknown, unreadable := checkSignatures(ev.sigs, bundles, rule.Signatures.Signers, subj.Digest)
		verified, reasons := signatureReasons(rule.Signatures, results, unknown, append(setupErrs, unreadable...))
		vd.Signers = append(vd.Signers, verified...)
		vd.Evidence = append(vd.Evidence, evidenceOf(results)...)
		vd.Reasons = append(vd.Reasons, reasons...)
	}
	if rule.Scan != nil {
		scans, rejected := collectScans(ctx, ev.atts, bundles, rule.Scan.Attestors, subj.Digest)
		d := decideScan(rule.Scan, scans, rejected, v.now())
		vd.Scan = d.status
		vd.Reasons = append(vd.Reasons, d.reasons...)
		vd.Expires = d.expires
	}
	vd.Allowed = rule.Mode != policy.ModeEnforce || len(vd.Reasons) == 0
	if v.store != nil && !stored {
		if acc := ev.accepted(bundles); !acc.empty() {
			// The store only adds resilience: failing to write it loses
			// an offline fallback, not a decision.
			_ = v.store.save(subj.Digest, acc, v.now())
		}
	}
	return vd, nil
}

// evidence fetches subj's evidence from its registry or, offline or when
// the registry is unreachable, reads what the store kept; stored says
// which.
func (v *Verifier) evidence(ctx context.Context, subj Subject, rule *policy.Rule) (ev evidence, stored bool, err error) {
	if v.offline {
		if v.store == nil {
			return evidence{}, false, errors.New("offline verification needs an evidence store")
		}
		ev, err := v.store.load(subj.Digest)
		return ev, err == nil, err
	}
	ev, err = v.fetch(ctx, subj, rule.Signatures != nil, rule.Scan != nil)
	if err == nil || v.store == nil || !errors.Is(err, ErrUnreachable) {
		return ev, false, err
	}
	ev, lerr := v.store.load(subj.Digest)
	if lerr != nil {
		return evidence{}, false, err
	}
	return ev, true, nil
}

// ruleSigners lists every signer and attestor of rule once: each bundle is
// verified against them all in one pass.
func ruleSigners(rule *policy.Rule) []*policy.Signer {
	var all []*policy.Signer
	if rule.Signatures != nil {
		all = append(all, rule.Signatures.Signers...)
	}
	if rule.Scan != nil {
		for _, a := range rule.Scan.Attestors {
			if !slices.Contains(all, a) {
				all = append(all, a)
			}
		}
	}
	return all
}
