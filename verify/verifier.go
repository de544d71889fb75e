package verify

import (
	"context"
	"errors"
	"net/http"
	"time"

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
}

// Option configures a Verifier.
type Option func(*Verifier)

// WithTimeout bounds every registry request.
func WithTimeout(d time.Duration) Option { return func(v *Verifier) { v.timeout = d } }

// WithTransport sets the HTTP transport for registry requests.
func WithTransport(rt http.RoundTripper) Option { return func(v *Verifier) { v.transport = rt } }

// WithClock sets the clock that scan ages and ignore dates are judged by.
func WithClock(now func() time.Time) Option { return func(v *Verifier) { v.now = now } }

// New returns a Verifier for pol.
func New(pol *policy.Policy, opts ...Option) *Verifier {
	v := &Verifier{pol: pol, timeout: 1500 * time.Millisecond, transport: http.DefaultTransport, now: time.Now}
	for _, o := range opts {
		o(v)
	}
	return v
}

// Policy returns the policy the verifier decides under.
func (v *Verifier) Policy() *policy.Policy { return v.pol }

// NewSubject names the subject for image (any reference form; Docker Hub
// short names are normalized) at digest, as the runtime reports it. It
// asks no registry.
func NewSubject(image, digest string) (Subject, error) { panic("unimplemented") }

// Resolve parses image and, when it carries no digest, resolves its tag to
// the digest the registry serves now. Only the CLI does that; the plugin
// takes the digest from the runtime.
func (v *Verifier) Resolve(ctx context.Context, image string) (Subject, error) {
	panic("unimplemented")
}

// Decide finds the rule for subj and verifies it.
func (v *Verifier) Decide(ctx context.Context, subj Subject) (Verdict, error) {
	return v.Verify(ctx, subj, v.pol.RuleFor(subj.Repository))
}

// Verify decides subj under rule; a nil rule means no rule matched and the
// policy's unmatched default applies.
func (v *Verifier) Verify(ctx context.Context, subj Subject, rule *policy.Rule) (Verdict, error) {
	panic("unimplemented")
}
