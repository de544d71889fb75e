package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/imagegate/imagegate/internal/testsign"
)

func report(t *testing.T, file string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "verify", "testdata", "reports", file))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fakeStore is the runtime's image store: reference → digest.
type fakeStore map[string]string

func (s fakeStore) Digest(_ context.Context, ref string) (string, error) {
	if d, ok := s[ref]; ok {
		return d, nil
	}
	return "", fmt.Errorf("image %q: not found", ref)
}

func TestCreateContainer(t *testing.T) {
	store := fakeStore{}
	e := newEnv(t, withPluginOption(WithImageStore(store)))
	host := e.reg.Host

	signed := e.push("shop/api:1.4", "ci", "staging")
	unsigned := e.push("shop/unsigned:1")
	underThreshold := e.push("shop/lonely:1", "ci")
	critical := e.reg.Push(t, "scanned/app:1")
	testsign.AttestVuln(t, e.keys["scanner"], critical, report(t, "trivy-critical.json"), e.clock.Now().Add(-time.Hour))
	clean := e.reg.Push(t, "scanned/app:2")
	testsign.AttestVuln(t, e.keys["scanner"], clean, report(t, "trivy-clean.json"), e.clock.Now().Add(-time.Hour))
	other := e.push("other/app:1", "ci", "staging")
	store[e.image("shop/api:1.4")] = signed.DigestStr()
	store[e.image("shop/unsigned:1")] = unsigned.DigestStr()

	// annotated is a container whose runtime did not fill Container.Image
	// (containerd before 2.4): only the CRI annotation names the image.
	annotated := func(ctrName, image string) *api.Container {
		c := container(ctrName, image, "")
		c.Image = nil
		return c
	}

	for _, tc := range []struct {
		name string
		ctr  *api.Container
		want string // "" allows
	}{
		{
			name: "signed by enough signers",
			ctr:  container("api", e.image("shop/api:1.4"), signed.DigestStr()),
		},
		{
			name: "unsigned",
			ctr:  container("unsigned", e.image("shop/unsigned:1"), unsigned.DigestStr()),
			want: fmt.Sprintf(`imagegate: image %s/shop/unsigned:1 (%s) denied by rule "prod": `+
				`signatures: no signer verified, rule needs 2 of ci, scanner, staging; required signer ci did not sign; `+
				`missing ci (no signature), scanner (no signature), staging (no signature)`, host, unsigned.DigestStr()),
		},
		{
			name: "under threshold",
			ctr:  container("lonely", e.image("shop/lonely:1"), underThreshold.DigestStr()),
			want: fmt.Sprintf(`imagegate: image %s/shop/lonely:1 (%s) denied by rule "prod": `+
				`signatures: 1 distinct signer verified (ci), rule needs 2 of ci, scanner, staging; `+
				`missing scanner (no signature), staging (no signature)`, host, underThreshold.DigestStr()),
		},
		{
			name: "critical vulnerability",
			ctr:  container("app", e.image("scanned/app:1"), critical.DigestStr()),
			want: fmt.Sprintf(`imagegate: image %s/scanned/app:1 (%s) denied by rule "scanned": `+
				`scan: 1 vulnerability above high in the scan by scanner: CVE-2024-3094 (critical)`, host, critical.DigestStr()),
		},
		{
			name: "clean scan",
			ctr:  container("app", e.image("scanned/app:2"), clean.DigestStr()),
		},
		{
			name: "no rule matches",
			ctr:  container("other", e.image("other/app:1"), other.DigestStr()),
			want: fmt.Sprintf(`imagegate: image %s/other/app:1 (%s) denied: `+
				`no rule matches %s/other/app and the policy denies unmatched images`, host, other.DigestStr(), host),
		},
		{
			name: "exempt image needs no evidence",
			ctr:  container("pause", e.image("pause:3.10"), unsigned.DigestStr()),
		},
		{
			name: "digest from the image store when the runtime reports none",
			ctr:  annotated("api", e.image("shop/api:1.4")),
		},
		{
			name: "the image store's digest is the one decided",
			ctr:  annotated("unsigned", e.image("shop/unsigned:1")),
			want: fmt.Sprintf(`imagegate: image %s/shop/unsigned:1 (%s) denied by rule "prod": `+
				`signatures: no signer verified, rule needs 2 of ci, scanner, staging; required signer ci did not sign; `+
				`missing ci (no signature), scanner (no signature), staging (no signature)`, host, unsigned.DigestStr()),
		},
		{
			name: "digest from a reference by digest",
			ctr:  annotated("api", e.image("shop/api@"+signed.DigestStr())),
		},
		{
			name: "unknown digest",
			ctr:  annotated("gone", e.image("shop/gone:1")),
			want: fmt.Sprintf(`imagegate: cannot establish the image digest of container gone: `+
				`image "%s/shop/gone:1": not found`, host),
		},
		{
			name: "no image at all",
			ctr:  &api.Container{Id: "x", PodSandboxId: testPod.Id, Name: "ghost"},
			want: `imagegate: cannot establish the image of container ghost: the runtime names none`,
		},
		{
			name: "malformed digest from the runtime",
			ctr:  container("bad", e.image("shop/api:1.4"), "sha256:1234"),
			want: `imagegate: cannot establish the image digest of container bad: malformed digest "sha256:1234"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.wantCreate(t, tc.ctr, tc.want)
		})
	}
}

func TestWarnModeAllowsAndLogs(t *testing.T) {
	e := newEnv(t)
	d := e.push("lab/tool:1")
	if err := e.rt.create(container("tool", e.image("lab/tool:1"), d.DigestStr())); err != nil {
		t.Fatalf("warn mode denied: %v", err)
	}
	entries := e.logs.FilterMessage("decision").FilterFieldKey("verdict").All()
	if len(entries) != 2 {
		t.Fatalf("%d decisions logged, want 2 (CreateContainer and ValidateContainerAdjustment)", len(entries))
	}
	for _, ent := range entries {
		f := ent.ContextMap()
		if ent.Level != zapcore.WarnLevel || f["verdict"] != "warn" || f["rule"] != "lab" || f["mode"] != "warn" ||
			f["container"] != "tool" || f["pod"] != "shop-0" || f["namespace"] != "shop" || f["digest"] != d.DigestStr() {
			t.Errorf("logged %s %v", ent.Level, f)
		}
		want := "signatures: no signer verified, rule needs 1 of ci; missing ci (no signature)"
		if r, _ := f["reasons"].([]any); len(r) != 1 || r[0] != want {
			t.Errorf("reasons = %v, want [%s]", f["reasons"], want)
		}
	}
	if got := e.metric("imagegate_decisions_total", "verdict", "warn", "rule", "lab"); got != 2 {
		t.Errorf("warn decisions = %v, want 2", got)
	}
}

func TestSecondCreateIsACacheHit(t *testing.T) {
	e := newEnv(t)
	d := e.push("shop/api:1", "ci", "staging")
	ctr := func() *api.Container { return container("api", e.image("shop/api:1"), d.DigestStr()) }
	must(t, e.rt.create(ctr()))
	if e.reg.Requests("/manifests/") == 0 {
		t.Fatal("first create did not ask the registry")
	}
	e.reg.ResetRequests()
	hits := e.metric("imagegate_cache_lookups_total", "outcome", "hit")
	must(t, e.rt.create(ctr()))
	if n := e.reg.Requests(""); n != 0 {
		t.Errorf("second create made %d registry requests, want 0", n)
	}
	// CreateContainer and ValidateContainerAdjustment both decide.
	if got := e.metric("imagegate_cache_lookups_total", "outcome", "hit") - hits; got != 2 {
		t.Errorf("cache hits = %v, want 2", got)
	}
}

func TestConcurrentDecisionsShareOneVerification(t *testing.T) {
	e := newEnv(t)
	// The fetches one verification makes, to compare with.
	first := e.push("shop/api:1", "ci", "staging")
	e.reg.ResetRequests()
	must(t, e.rt.create(container("api", e.image("shop/api:1"), first.DigestStr())))
	one := e.reg.Requests("")
	oneManifests := e.reg.Requests("/manifests/")

	d := e.push("shop/api:2", "ci", "staging")
	e.reg.ResetRequests()
	var wg sync.WaitGroup
	errs := make([]error, 100)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = e.p.admit(context.Background(), "CreateContainer", testPod,
				container(fmt.Sprintf("api-%d", i), e.image("shop/api:2"), d.DigestStr()))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("decision %d: %v", i, err)
		}
	}
	if got := e.reg.Requests("/manifests/"); got != oneManifests {
		t.Errorf("100 concurrent decisions fetched %d manifests, one verification fetches %d", got, oneManifests)
	}
	if got := e.reg.Requests(""); got != one {
		t.Errorf("100 concurrent decisions made %d registry requests, one verification makes %d", got, one)
	}
}

func TestRegistryDown(t *testing.T) {
	// Without a store, an expired allow is what remains while the
	// registry is down: it is served within the grace, then denied.
	e := newEnv(t, withoutStore())
	d := e.push("shop/api:1", "ci", "staging")
	never := e.push("shop/never:1", "ci", "staging")
	ctr := container("api", e.image("shop/api:1"), d.DigestStr())
	must(t, e.rt.create(ctr))

	// Refused connections rather than SetDown(true): go-containerregistry
	// retries a 503 with sleeps past the verifier's timeout, which would
	// turn every answer below into "in progress".
	e.reg.Close()
	e.clock.Advance(e.cfg.Cache.TTL + time.Minute)
	if err := e.rt.create(ctr); err != nil {
		t.Fatalf("cached allow within grace not served: %v", err)
	}
	if got := e.metric("imagegate_cache_lookups_total", "outcome", "stale"); got != 2 {
		t.Errorf("stale lookups = %v, want 2", got)
	}

	wantPrefix := fmt.Sprintf(`%simagegate: image %s/shop/never:1 (%s) denied by rule "prod": registry unreachable: %s: `,
		rpcPrefix, e.reg.Host, never.DigestStr(), e.reg.Host)
	err := e.rt.create(container("never", e.image("shop/never:1"), never.DigestStr()))
	if err == nil || !strings.HasPrefix(err.Error(), wantPrefix) || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("never-seen digest with the registry down:\n got %v\nwant %s…connection refused", err, wantPrefix)
	}

	e.clock.Advance(e.cfg.Cache.StaleGrace)
	wantPrefix = fmt.Sprintf(`%simagegate: image %s/shop/api:1 (%s) denied by rule "prod": registry unreachable: `,
		rpcPrefix, e.reg.Host, d.DigestStr())
	if err := e.rt.create(ctr); err == nil || !strings.HasPrefix(err.Error(), wantPrefix) {
		t.Errorf("past the grace:\n got %v\nwant %s…", err, wantPrefix)
	}
	if e.metric("imagegate_registry_errors_total") == 0 {
		t.Error("registry errors not counted")
	}
}

func TestRegistryDownAfterRestart(t *testing.T) {
	e := newEnv(t)
	d := e.push("shop/api:1", "ci", "staging")
	never := e.push("shop/never:1", "ci", "staging")
	ctr := container("api", e.image("shop/api:1"), d.DigestStr())
	must(t, e.rt.create(ctr))

	// A restart forgets every verdict; the registry is gone with it.
	e.p.cache.Purge()
	e.reg.Close()
	if err := e.rt.create(ctr); err != nil {
		t.Fatalf("an image verified before was not verified again from stored evidence: %v", err)
	}
	stored := e.logs.Filter(func(le observer.LoggedEntry) bool {
		c, _ := le.ContextMap()["cache"].(string)
		return strings.HasSuffix(c, ", from stored evidence")
	})
	if n := stored.Len(); n != 2 {
		t.Errorf("%d decisions logged as made from stored evidence, want 2 (create and validate)", n)
	}
	err := e.rt.create(container("never", e.image("shop/never:1"), never.DigestStr()))
	if err == nil || !strings.Contains(err.Error(), "registry unreachable") {
		t.Errorf("never-verified digest with the registry down: %v, want registry unreachable", err)
	}
}

func TestVerificationInProgress(t *testing.T) {
	// A runtime with a short request timeout leaves a budget shorter than
	// a registry that hangs: the create is denied at once, and the
	// verification goes on without it.
	adaptation.SetPluginRequestTimeout(600 * time.Millisecond)
	t.Cleanup(func() { adaptation.SetPluginRequestTimeout(stub.DefaultRequestTimeout) })
	e := newEnv(t)
	digest := "sha256:" + strings.Repeat("ab", 32)
	image := e.slow + "/shop/api:1"
	start := time.Now()
	err := e.rt.create(container("api", image, digest))
	want := fmt.Sprintf("%simagegate: verification of %s (%s) in progress, retry", rpcPrefix, image, digest)
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
	if took := time.Since(start); took > 600*time.Millisecond {
		t.Errorf("create took %s, longer than the runtime's timeout", took)
	}
}

func TestPolicyReload(t *testing.T) {
	e := newEnv(t)
	d := e.push("shop/api:1", "ci")
	ctr := container("api", e.image("shop/api:1"), d.DigestStr())
	if err := e.rt.create(ctr); err == nil {
		t.Fatal("one signer allowed under threshold 2")
	}
	gen := e.p.state.Load().pol.Generation
	if e.metric("imagegate_policy_info", "generation", gen) != 1 {
		t.Errorf("policy generation %s not exported", gen)
	}

	// A valid policy with threshold 1, loaded as on SIGHUP.
	e.writePolicy("50-rules.yaml", strings.Replace(rulesPolicy, "threshold: 2", "threshold: 1", 1))
	must(t, e.p.Reload())
	if err := e.rt.create(ctr); err != nil {
		t.Fatalf("reloaded policy not in force: %v", err)
	}
	newGen := e.p.state.Load().pol.Generation
	if newGen == gen || e.metric("imagegate_policy_info", "generation", newGen) != 1 ||
		e.metric("imagegate_policy_info", "generation", gen) != 0 {
		t.Errorf("generation metric not swapped from %s to %s", gen, newGen)
	}

	// An invalid one: refused with every problem, the last good stays.
	bad := filepath.Join(e.policyDir, "60-bad.yaml")
	must(t, os.WriteFile(bad, []byte("rules:\n  - name: x\n    images: [\"a/b\"]\n    signatures:\n      threshold: 1\n      signers: [nobody]\n    colour: red\n"), 0o644))
	if err := e.p.Reload(); err == nil {
		t.Fatal("invalid policy accepted")
	}
	if err := e.rt.create(ctr); err != nil {
		t.Fatalf("last good policy not kept: %v", err)
	}
	if e.metric("imagegate_policy_reload_failures_total") != 1 {
		t.Error("reload failure not counted")
	}
	refused := e.logs.FilterMessage("policy reload refused; the last good policy stays in force").All()
	if len(refused) != 1 {
		t.Fatalf("%d refusals logged, want 1", len(refused))
	}
	problems, _ := refused[0].ContextMap()["problems"].([]any)
	if len(problems) != 2 || !strings.HasPrefix(problems[0].(string), bad+":6: ") || !strings.HasPrefix(problems[1].(string), bad+":7: ") {
		t.Errorf("problems = %q, want FILE:LINE of the unknown signer and the unknown field", problems)
	}
}

func TestPolicyDirectoryWatch(t *testing.T) {
	e := newEnv(t, withPluginOption(WithPolicyPollInterval(10*time.Millisecond)))
	d := e.push("shop/api:1", "ci")
	ctr := container("api", e.image("shop/api:1"), d.DigestStr())
	if err := e.rt.create(ctr); err == nil {
		t.Fatal("one signer allowed under threshold 2")
	}
	gen := e.p.state.Load().pol.Generation
	e.writePolicy("50-rules.yaml", strings.Replace(rulesPolicy, "threshold: 2", "threshold: 1", 1))
	waitFor(t, "the changed policy to load", func() bool { return e.p.state.Load().pol.Generation != gen })
	if err := e.rt.create(ctr); err != nil {
		t.Fatalf("changed policy not in force: %v", err)
	}
}

func TestReconnectAfterRuntimeRestart(t *testing.T) {
	e := newEnv(t, func(e *env, _ *[]Option) { e.proxied = true })
	d := e.push("shop/api:1", "ci", "staging")
	u := e.push("shop/unsigned:1")
	must(t, e.rt.create(container("api", e.image("shop/api:1"), d.DigestStr())))

	e.rt.stop()
	waitFor(t, "the plugin to notice", func() bool { return e.metric("imagegate_nri_connected") == 0 })
	e.rt = startRuntime(t, e.sock, true)
	e.rt.waitPlugins(t, 1)

	must(t, e.rt.create(container("api", e.image("shop/api:1"), d.DigestStr())))
	if err := e.rt.create(container("unsigned", e.image("shop/unsigned:1"), u.DigestStr())); err == nil {
		t.Error("unsigned image allowed after the reconnect")
	}
	if got := e.metric("imagegate_nri_registrations_total"); got != 2 {
		t.Errorf("registrations = %v, want 2", got)
	}
}

// swapper is a plugin after imagegate that puts a stricter policy in force
// while the create is under way, between imagegate's CreateContainer and
// the validation.
type swapper struct {
	e *env
}

func (s *swapper) CreateContainer(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	s.e.writePolicy("50-rules.yaml", strings.Replace(rulesPolicy, "threshold: 2", "threshold: 3", 1))
	return nil, nil, s.e.p.Reload()
}

func TestValidateContainerAdjustmentDenies(t *testing.T) {
	e := newEnv(t)
	d := e.push("shop/api:1", "ci", "staging")
	s, err := stub.New(&swapper{e: e}, stub.WithPluginName("swapper"), stub.WithPluginIdx("20"), stub.WithSocketPath(e.sock))
	must(t, err)
	must(t, s.Start(context.Background()))
	t.Cleanup(s.Stop)
	e.rt.waitPlugins(t, 2)

	err = e.rt.create(container("api", e.image("shop/api:1"), d.DigestStr()))
	want := fmt.Sprintf(`validator "10-imagegate" rejected container adjustment, reason: `+
		`imagegate: image %s/shop/api:1 (%s) denied by rule "prod": `+
		`signatures: 2 distinct signers verified (ci, staging), rule needs 3 of ci, scanner, staging; `+
		`missing scanner (no signature)`, e.reg.Host, d.DigestStr())
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
	var verdicts []string
	for _, ent := range e.logs.FilterMessage("decision").All() {
		f := ent.ContextMap()
		verdicts = append(verdicts, fmt.Sprint(f["event"], "=", f["verdict"]))
	}
	if got := strings.Join(verdicts, " "); got != "CreateContainer=allow ValidateContainerAdjustment=deny" {
		t.Errorf("decisions logged: %s", got)
	}
}

func TestSynchronizeAuditsRunningContainers(t *testing.T) {
	var signed, unsigned string
	e := newEnv(t, func(e *env, _ *[]Option) {
		signed = e.push("shop/api:1", "ci", "staging").DigestStr()
		unsigned = e.push("shop/unsigned:1").DigestStr()
		e.running = []*api.Container{
			container("api", e.image("shop/api:1"), signed),
			container("old", e.image("shop/unsigned:1"), unsigned),
		}
	})
	const msg = "running container would be denied under the current policy"
	waitFor(t, "the audit", func() bool { return e.logs.FilterMessage(msg).Len() == 1 })
	f := e.logs.FilterMessage(msg).All()[0].ContextMap()
	if f["container"] != "old" || f["image"] != e.image("shop/unsigned:1") || f["digest"] != unsigned || f["pod"] != "shop-0" {
		t.Errorf("logged %v", f)
	}
	waitFor(t, "both verdicts cached", func() bool { return e.p.cache.Len() == 2 })
	e.reg.ResetRequests()
	must(t, e.rt.create(container("api", e.image("shop/api:1"), signed)))
	if n := e.reg.Requests(""); n != 0 {
		t.Errorf("create after the audit made %d registry requests, want 0", n)
	}
}

// pulls is the runtime's image event stream.
type pulls chan [2]string

func (p pulls) WatchPulls(ctx context.Context, pulled func(ref, digest string)) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev := <-p:
			pulled(ev[0], ev[1])
		}
	}
}

func TestPullWarmsTheCache(t *testing.T) {
	events := make(pulls)
	e := newEnv(t, withPluginOption(WithImagePulls(events)))
	d := e.push("shop/api:1", "ci", "staging")
	e.reg.ResetRequests()
	events <- [2]string{e.image("shop/api:1"), d.DigestStr()}
	waitFor(t, "the pulled image's verdict", func() bool { return e.p.cache.Len() == 1 })
	if e.reg.Requests("/manifests/") == 0 {
		t.Fatal("the pull did not start a verification")
	}
	e.reg.ResetRequests()
	must(t, e.rt.create(container("api", e.image("shop/api:1"), d.DigestStr())))
	if n := e.reg.Requests(""); n != 0 {
		t.Errorf("create after the pull made %d registry requests, want 0", n)
	}
}

// panicStore fails the way a bug would.
type panicStore struct{}

func (panicStore) Digest(context.Context, string) (string, error) { panic("boom") }

func TestPanicDenies(t *testing.T) {
	e := newEnv(t, withPluginOption(WithImageStore(panicStore{})))
	ctr := container("api", e.image("shop/api:1"), "")
	err := e.rt.create(ctr)
	want := rpcPrefix + "imagegate: internal error deciding container api: boom"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
	if e.metric("imagegate_internal_errors_total") != 1 {
		t.Error("internal error not counted")
	}
	// Still serving: a create whose digest the runtime reports needs no store.
	d := e.push("shop/api:1", "ci", "staging")
	if err := e.rt.create(container("api", e.image("shop/api:1"), d.DigestStr())); err != nil {
		t.Errorf("after the panic: %v", err)
	}
}
