package plugin

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

// Annotations the CRI runtimes set on a container.
const (
	// annImageName is the image the workload asked for (containerd CRI).
	annImageName = "io.kubernetes.cri.image-name"
	// annCRIOImageRef is the image CRI-O resolved for the container.
	annCRIOImageRef = "io.kubernetes.cri-o.ImageRef"
	annPodName      = "io.kubernetes.pod.name"
	annPodNamespace = "io.kubernetes.pod.namespace"
)

// namesPerPolicy bounds the parsed image names kept per policy generation.
const namesPerPolicy = 4096

// state is one policy in force with what is derived from it. It is swapped
// whole, so a decision never mixes two policies.
type state struct {
	pol      *policy.Policy
	verifier *verify.Verifier
	// counters holds the decision counters of every rule by name ("" for
	// no rule), resolved at load so a decision does no label look-up.
	counters map[string]*[numVerdicts]prometheus.Counter
	// names caches image reference → repository and rule: parsing a
	// reference costs more than the rest of a cached decision.
	names *lru.Cache[string, *named]
}

type named struct {
	repo name.Repository
	rule *policy.Rule
	// ruleName is "" when no rule matches.
	ruleName string
	counters *[numVerdicts]prometheus.Counter
}

func (p *Plugin) swap(pol *policy.Policy) {
	names, _ := lru.New[string, *named](namesPerPolicy)
	st := &state{
		pol:      pol,
		verifier: verify.New(pol, verify.WithTimeout(p.cfg.RegistryTimeout), verify.WithClock(p.now), verify.WithStore(p.store)),
		counters: map[string]*[numVerdicts]prometheus.Counter{"": p.metrics.ruleCounters("")},
		names:    names,
	}
	for _, r := range pol.Rules {
		st.counters[r.Name] = p.metrics.ruleCounters(r.Name)
	}
	p.state.Store(st)
	p.metrics.policyInfo.Reset()
	p.metrics.policyInfo.WithLabelValues(pol.Generation).Set(1)
}

// lookup parses image and finds its rule, once per image and policy.
func (st *state) lookup(image string) (*named, error) {
	if n, ok := st.names.Get(image); ok {
		return n, nil
	}
	ref, err := name.ParseReference(image)
	if err != nil {
		return nil, err
	}
	n := &named{repo: ref.Context(), rule: st.pol.RuleFor(ref.Context())}
	if n.rule != nil {
		n.ruleName = n.rule.Name
	}
	n.counters = st.counters[n.ruleName]
	st.names.Add(image, n)
	return n, nil
}

// mode is the mode a decision under n runs in; no rule is enforce, as the
// verifier says.
func (n *named) mode() policy.Mode {
	if n.rule == nil || n.rule.Mode == "" {
		return policy.ModeEnforce
	}
	return n.rule.Mode
}

// verifyFunc verifies image at digest under n's rule. It runs detached from
// the create that started it and bounds itself through the verifier's
// registry timeout.
func (p *Plugin) verifyFunc(st *state, image, digest string, n *named) cache.VerifyFunc {
	return func(ctx context.Context) (vd verify.Verdict, err error) {
		// This runs on the cache's goroutine, where a panic would take the
		// node's admission down with it.
		defer func() {
			if r := recover(); r != nil {
				p.metrics.internalErrors.Inc()
				p.log.Error("verification panicked", zap.String("image", image), zap.String("digest", digest),
					zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
				err = fmt.Errorf("internal error: %v", r)
			}
		}()
		h, err := v1.NewHash(digest)
		if err != nil {
			return verify.Verdict{}, err
		}
		start := time.Now()
		vd, err = st.verifier.Verify(ctx, verify.Subject{Image: image, Repository: n.repo, Digest: h}, n.rule)
		p.metrics.verifyDuration.Observe(time.Since(start).Seconds())
		if errors.Is(err, verify.ErrUnreachable) {
			p.metrics.registryErrors.Inc()
		}
		return vd, err
	}
}

// record is one decision as the audit log and the metrics see it.
type record struct {
	event     string
	container string
	pod       string
	namespace string
	image     string
	digest    string
	rule      string
	mode      policy.Mode
	verdict   verdict
	reasons   []string
	outcome   string
	counters  *[numVerdicts]prometheus.Counter
	// digestErr says why the digest is unknown, when the caller
	// established the image itself (Docker) and could not pin it.
	digestErr error
}

// admit decides whether ctr may be created and logs the decision. A nil
// error allows the create; the error's text is what the kubelet shows.
func (p *Plugin) admit(ctx context.Context, event string, pod *api.PodSandbox, ctr *api.Container) (err error) {
	start := time.Now()
	rec := record{
		event:     event,
		container: ctr.GetName(),
		pod:       pod.GetName(),
		namespace: pod.GetNamespace(),
		mode:      policy.ModeEnforce,
		outcome:   "none",
	}
	defer p.settle(&rec, start, &err)
	if rec.pod == "" {
		rec.pod = ctr.GetAnnotations()[annPodName]
		rec.namespace = ctr.GetAnnotations()[annPodNamespace]
	}
	return p.decide(ctx, &rec, ctr, time.Duration(p.budget.Load()))
}

// settle logs the decision rec once it is made. As the deferred call of a
// decision, it also turns a panic into a denial that says so: a panic
// must not take the node's admission down.
func (p *Plugin) settle(rec *record, start time.Time, err *error) {
	if r := recover(); r != nil {
		p.metrics.internalErrors.Inc()
		p.log.Error("decision panicked", zap.String("container", rec.container),
			zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		*err = fmt.Errorf("imagegate: internal error deciding container %s: %v", rec.container, r)
		rec.verdict, rec.reasons = deny, []string{(*err).Error()}
		if rec.counters == nil {
			rec.counters = p.state.Load().counters[""]
		}
	}
	p.logDecision(rec, time.Since(start))
}

// decide fills rec with the decision on ctr, waiting at most budget for a
// verification.
func (p *Plugin) decide(ctx context.Context, rec *record, ctr *api.Container, budget time.Duration) error {
	if p.docker.Load() {
		return p.decideDocker(ctx, rec, ctr, budget)
	}
	rec.image = ctr.GetAnnotations()[annImageName]
	if rec.image == "" {
		rec.image = ctr.GetImage().GetName()
	}
	return p.judge(ctx, rec, ctr, "", budget)
}

// decideAdmitted decides whether container id may be created again
// without a create event (imagegate-runc on a Docker node: restarts reach
// runc without NRI), under the policy in force: by the image and digest
// imagegate admitted it with, never by what a tag points to now. Allowed,
// the admission is renewed.
func (p *Plugin) decideAdmitted(ctx context.Context, id string) (err error) {
	start := time.Now()
	rec := record{event: "runc create", container: id, mode: policy.ModeEnforce, outcome: "none"}
	defer p.settle(&rec, start, &err)
	adm, err := p.admissions.lookup(id)
	if err != nil {
		rec.counters = p.state.Load().counters[""]
		return rec.deny(err.Error())
	}
	rec.image = adm.Image
	// No NRI deadline here; imagegate-runc waits guardTimeout, longer.
	if err := p.judge(ctx, &rec, nil, adm.Digest, min(p.cfg.RegistryTimeout+budgetMargin, guardBudget)); err != nil {
		return err
	}
	if err := p.admissions.Admit(id, adm.Image, adm.Digest); err != nil {
		p.log.Warn("cannot renew an admission", zap.String("container", id), zap.Error(err))
	}
	return nil
}

// judge fills rec with the decision on rec.image at the digest of ctr as
// the runtime reports it, or, with ctr nil, at digest as recorded at
// admission ("" when its rule needed none).
func (p *Plugin) judge(ctx context.Context, rec *record, ctr *api.Container, digest string, budget time.Duration) error {
	st := p.state.Load()
	rec.counters = st.counters[""]
	if rec.image == "" {
		return rec.deny(fmt.Sprintf("imagegate: cannot establish the image of container %s: the runtime names none", rec.container))
	}
	n, err := st.lookup(rec.image)
	if err != nil {
		return rec.deny(fmt.Sprintf("imagegate: cannot establish the image of container %s: %v", rec.container, err))
	}
	rec.rule, rec.mode, rec.counters = n.ruleName, n.mode(), n.counters

	// One deadline covers the image store and the verification.
	lctx := newLazyDeadline(ctx, time.Now().Add(budget))
	defer lctx.stop()
	ctx = lctx
	switch {
	case ctr != nil:
		digest, err = p.digest(ctx, rec.image, ctr)
	case digest == "" && rec.digestErr != nil:
		err = rec.digestErr
	case digest == "":
		err = errors.New("none was recorded when it was admitted")
	}
	if err != nil {
		if n.rule == nil && st.pol.Unmatched == "allow" || n.rule != nil && n.rule.Allow {
			// Neither needs evidence, so neither needs the digest.
			rec.verdict = allow
			return nil
		}
		return rec.fail(fmt.Sprintf("imagegate: cannot establish the image digest of container %s: %v", rec.container, err))
	}
	rec.digest = digest

	vd, outcome, err := p.cache.Decide(ctx, cache.Key{Generation: st.pol.Generation, Rule: n.ruleName, Digest: digest},
		p.verifyFunc(st, rec.image, digest, n))
	rec.outcome = outcome.String()
	p.metrics.cacheLookups[outcome].Inc()

	switch {
	case errors.Is(err, cache.ErrInProgress):
		// The verification goes on and fills the cache: the kubelet's
		// retry finds the verdict.
		return rec.fail(fmt.Sprintf("imagegate: verification of %s (%s) in progress, retry", rec.image, digest))
	case err != nil:
		return rec.fail(rec.denial(err.Error()))
	}
	rec.reasons = vd.Reasons
	if vd.Stored {
		// Rare, and worth telling apart in the audit trail: decided from
		// evidence kept on the node while the registry was unreachable.
		rec.outcome += ", from stored evidence"
	}
	switch {
	case !vd.Allowed:
		return rec.deny(rec.denial(strings.Join(vd.Reasons, "; ")))
	case vd.Passed():
		rec.verdict = allow
	case vd.Mode == policy.ModeWarn:
		rec.verdict = warn
	default:
		rec.verdict = audit
	}
	return nil
}

// denial says which image, digest and rule failed and why.
func (rec *record) denial(why string) string {
	if rec.rule == "" {
		return fmt.Sprintf("imagegate: image %s (%s) denied: %s", rec.image, rec.digest, why)
	}
	return fmt.Sprintf("imagegate: image %s (%s) denied by rule %q: %s", rec.image, rec.digest, rec.rule, why)
}

func (rec *record) deny(msg string) error {
	rec.verdict = deny
	rec.reasons = []string{msg}
	return errors.New(msg)
}

// fail denies for reason under enforce. Under warn or audit it allows,
// keeping why it would have denied: what could not be evaluated weighs no
// more there than a failed rule does.
func (rec *record) fail(reason string) error {
	switch rec.mode {
	case policy.ModeWarn:
		rec.verdict = warn
	case policy.ModeAudit:
		rec.verdict = audit
	default:
		return rec.deny(reason)
	}
	rec.reasons = []string{reason}
	return nil
}

// digest returns the digest of the image the runtime is about to run: the
// one it reports, else the one its image store holds under the reference
// the workload asked for. Never the registry's: a tag may point elsewhere
// by now.
func (p *Plugin) digest(ctx context.Context, image string, ctr *api.Container) (string, error) {
	if d := ctr.GetImage().GetDigest(); d != "" {
		return d, checkDigest(d)
	}
	for _, ref := range []string{image, ctr.GetAnnotations()[annCRIOImageRef]} {
		if _, d, ok := strings.Cut(ref, "@"); ok {
			return d, checkDigest(d)
		}
	}
	if p.images == nil {
		return "", errors.New("the runtime reports none and no image store is configured (containerd.address)")
	}
	d, err := p.images.Digest(ctx, image)
	if err != nil {
		return "", err
	}
	return d, checkDigest(d)
}

// checkDigest accepts only a sha256 digest, the one algorithm the evidence
// is stored under.
func checkDigest(d string) error {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 || strings.Trim(hex, "0123456789abcdef") != "" {
		return fmt.Errorf("malformed digest %q", d)
	}
	return nil
}

// noReasons is logged for a passed decision, boxed once so that logging it
// allocates nothing.
var noReasons = zap.Strings("reasons", []string{})

// decisionFields recycles the fields of audit lines: a fresh slice per
// decision would be most of what a cached decision allocates. Cores encode
// or copy the fields they are given before Write returns.
var decisionFields = sync.Pool{New: func() any { return new([12]zap.Field) }}

// logDecision writes the audit line of one decision and counts it.
func (p *Plugin) logDecision(rec *record, took time.Duration) {
	rec.counters[rec.verdict].Inc()
	level := zapcore.InfoLevel
	if rec.verdict == deny || rec.verdict == warn {
		level = zapcore.WarnLevel
	}
	ce := p.log.Check(level, "decision")
	if ce == nil {
		return
	}
	reasons := noReasons
	if len(rec.reasons) > 0 {
		reasons = zap.Strings("reasons", rec.reasons)
	}
	fs := decisionFields.Get().(*[12]zap.Field)
	*fs = [12]zap.Field{
		zap.String("event", rec.event),
		zap.String("container", rec.container),
		zap.String("pod", rec.pod),
		zap.String("namespace", rec.namespace),
		zap.String("image", rec.image),
		zap.String("digest", rec.digest),
		zap.String("rule", rec.rule),
		zap.String("mode", string(rec.mode)),
		zap.String("verdict", rec.verdict.String()),
		reasons,
		zap.String("cache", rec.outcome),
		zap.Duration("duration", took),
	}
	ce.Write(fs[:]...)
	*fs = [12]zap.Field{}
	decisionFields.Put(fs)
}

// audit checks the containers already running, as a reconnect reports
// them, against the policy in force: it logs those it would deny and
// leaves their verdicts in the cache for the next create of the same image.
func (p *Plugin) audit(ctx context.Context, pods []*api.PodSandbox, ctrs []*api.Container) {
	podByID := make(map[string]*api.PodSandbox, len(pods))
	for _, pod := range pods {
		podByID[pod.GetId()] = pod
	}
	sem := make(chan struct{}, auditParallelism)
	var wg sync.WaitGroup
	for _, ctr := range ctrs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			p.auditOne(ctx, podByID[ctr.GetPodSandboxId()], ctr)
		}()
	}
	wg.Wait()
}

func (p *Plugin) auditOne(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) {
	rec := record{container: ctr.GetName(), pod: pod.GetName(), namespace: pod.GetNamespace(), mode: policy.ModeEnforce}
	defer func() {
		if r := recover(); r != nil {
			p.metrics.internalErrors.Inc()
			p.log.Error("audit of a running container panicked", zap.String("container", rec.container),
				zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	// A running container has no create to hold up: its verification may
	// take the full registry timeout.
	if err := p.decide(ctx, &rec, ctr, p.cfg.RegistryTimeout+budgetMargin); err == nil && rec.verdict == allow {
		return
	}
	fields := []zap.Field{
		zap.String("container", rec.container), zap.String("pod", rec.pod), zap.String("namespace", rec.namespace),
		zap.String("image", rec.image), zap.String("digest", rec.digest), zap.String("rule", rec.rule),
		zap.String("mode", string(rec.mode)), zap.String("verdict", rec.verdict.String()), zap.Strings("reasons", rec.reasons),
	}
	if rec.verdict == deny {
		p.log.Warn("running container would be denied under the current policy", fields...)
		return
	}
	p.log.Info("running container fails its rule", fields...)
}

// warm starts verifying image at digest, unless its verdict is cached or
// being decided, so that the first create of a freshly pulled image is a hit.
func (p *Plugin) warm(image, digest string) {
	if checkDigest(digest) != nil {
		return
	}
	st := p.state.Load()
	n, err := st.lookup(image)
	if err != nil {
		return
	}
	fn := p.verifyFunc(st, image, digest, n)
	p.cache.Warm(cache.Key{Generation: st.pol.Generation, Rule: n.ruleName, Digest: digest},
		func(ctx context.Context) (verify.Verdict, error) {
			// The registry timeout starts once a slot is free, so queued
			// warms do not time out waiting for each other.
			p.warmSlots <- struct{}{}
			defer func() { <-p.warmSlots }()
			return fn(ctx)
		})
}
