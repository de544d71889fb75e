package cache_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/internal/testclock"
	"github.com/imagegate/imagegate/verify"
)

var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

func newCache(t *testing.T, cfg cache.Config) (*cache.Cache, *testclock.Clock) {
	t.Helper()
	clk := testclock.New(t0)
	c, err := cache.New(cfg, cache.WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	return c, clk
}

// verifier counts its calls and returns what it is set to.
type verifier struct {
	calls atomic.Int32
	mu    sync.Mutex
	v     verify.Verdict
	err   error
}

func (f *verifier) set(v verify.Verdict, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.v, f.err = v, err
}

func (f *verifier) verify(context.Context) (verify.Verdict, error) {
	f.calls.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.v, f.err
}

var (
	key      = cache.Key{Generation: "1", Rule: "prod", Digest: "sha256:aaaa"}
	passed   = verify.Verdict{Rule: "prod", Allowed: true, Signers: []string{"ci", "scanner", "staging"}}
	failed   = verify.Verdict{Rule: "prod", Reasons: []string{"signatures: 1 of 3 required signers"}}
	errFetch = fmt.Errorf("%w: dial tcp 127.0.0.1:5000: connect: connection refused", verify.ErrUnreachable)
)

func expiring(v verify.Verdict, at time.Time) verify.Verdict {
	v.Expires = at
	return v
}

func decide(t *testing.T, c *cache.Cache, k cache.Key, f *verifier) (verify.Verdict, cache.Outcome, error) {
	t.Helper()
	return c.Decide(context.Background(), k, f.verify)
}

// waitFor waits until cond holds, yielding instead of sleeping.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		runtime.Gosched()
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	for name, tc := range map[string]struct {
		mutate func(*cache.Config)
		want   string
	}{
		"zero size":            {func(c *cache.Config) { c.Size = 0 }, "cache size must be positive, got 0"},
		"zero ttl":             {func(c *cache.Config) { c.TTL = 0 }, "cache ttl must be positive, got 0s"},
		"negative negativeTTL": {func(c *cache.Config) { c.NegativeTTL = -time.Second }, "cache negativeTTL must not be negative, got -1s"},
		"negative staleGrace":  {func(c *cache.Config) { c.StaleGrace = -time.Second }, "cache staleGrace must not be negative, got -1s"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := cache.DefaultConfig()
			tc.mutate(&cfg)
			_, err := cache.New(cfg)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("New: got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestNewReportsEveryInvalidField(t *testing.T) {
	_, err := cache.New(cache.Config{NegativeTTL: -1})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 3 {
		t.Fatalf("got %d problems, want 3: %v", n, err)
	}
}

func TestHitAfterMiss(t *testing.T) {
	c, _ := newCache(t, cache.DefaultConfig())
	f := &verifier{v: passed}
	for i, want := range []cache.Outcome{cache.Miss, cache.Hit, cache.Hit} {
		v, got, err := decide(t, c, key, f)
		if err != nil || got != want || !v.Allowed {
			t.Fatalf("decide %d: got (%v, %v, %v), want allowed %v", i, v.Allowed, got, err, want)
		}
	}
	if n := f.calls.Load(); n != 1 {
		t.Fatalf("verify called %d times, want 1", n)
	}
}

func TestFreshness(t *testing.T) {
	cfg := cache.DefaultConfig() // TTL 10m, NegativeTTL 30s
	for name, tc := range map[string]struct {
		verdict verify.Verdict
		after   time.Duration
		want    cache.Outcome
	}{
		"passed within ttl":                 {passed, 10*time.Minute - time.Nanosecond, cache.Hit},
		"passed at ttl":                     {passed, 10 * time.Minute, cache.Miss},
		"expires shortens ttl: before":      {expiring(passed, t0.Add(time.Minute)), time.Minute - time.Nanosecond, cache.Hit},
		"expires shortens ttl: at":          {expiring(passed, t0.Add(time.Minute)), time.Minute, cache.Miss},
		"expires after ttl changes nothing": {expiring(passed, t0.Add(time.Hour)), 10 * time.Minute, cache.Miss},
		"failed within negative ttl":        {failed, 30*time.Second - time.Nanosecond, cache.Hit},
		"failed at negative ttl":            {failed, 30 * time.Second, cache.Miss},
		"failed: expires shortens too":      {expiring(failed, t0.Add(10*time.Second)), 10 * time.Second, cache.Miss},
	} {
		t.Run(name, func(t *testing.T) {
			c, clk := newCache(t, cfg)
			f := &verifier{v: tc.verdict}
			if _, o, err := decide(t, c, key, f); err != nil || o != cache.Miss {
				t.Fatalf("first decide: got (%v, %v), want miss", o, err)
			}
			clk.Advance(tc.after)
			if _, o, err := decide(t, c, key, f); err != nil || o != tc.want {
				t.Fatalf("decide after %s: got (%v, %v), want %v", tc.after, o, err, tc.want)
			}
		})
	}
}

func TestVerdictAlreadyExpiredIsNotCached(t *testing.T) {
	c, _ := newCache(t, cache.DefaultConfig())
	f := &verifier{v: expiring(passed, t0.Add(-time.Second))}
	decide(t, c, key, f)
	if _, o, _ := decide(t, c, key, f); o != cache.Miss || c.Len() != 0 {
		t.Fatalf("got %v with %d entries, want miss with none", o, c.Len())
	}
}

func TestZeroNegativeTTLCachesNoFailedVerdict(t *testing.T) {
	cfg := cache.DefaultConfig()
	cfg.NegativeTTL = 0
	c, _ := newCache(t, cfg)
	f := &verifier{v: failed}
	decide(t, c, key, f)
	decide(t, c, key, f)
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("verify called %d times, want 2", n)
	}
}

func TestErrorIsNotCached(t *testing.T) {
	c, _ := newCache(t, cache.DefaultConfig())
	f := &verifier{err: errFetch}
	for i := range 2 {
		_, o, err := decide(t, c, key, f)
		if !errors.Is(err, verify.ErrUnreachable) || o != cache.Miss {
			t.Fatalf("decide %d: got (%v, %v), want miss with the verify error", i, o, err)
		}
	}
	f.set(passed, nil)
	if v, o, err := decide(t, c, key, f); err != nil || o != cache.Miss || !v.Allowed {
		t.Fatalf("after recovery: got (%v, %v, %v), want allowed miss", v.Allowed, o, err)
	}
	if n := f.calls.Load(); n != 3 {
		t.Fatalf("verify called %d times, want 3", n)
	}
}

func TestStaleServedOnlyForPassedVerdictWithinGraceAndExpires(t *testing.T) {
	cfg := cache.DefaultConfig() // TTL 10m, NegativeTTL 30s, StaleGrace 1h
	noGrace := cfg
	noGrace.StaleGrace = 0
	for name, tc := range map[string]struct {
		cfg     cache.Config
		verdict verify.Verdict
		after   time.Duration
		stale   bool
	}{
		"passed, just past ttl":            {cfg, passed, 10 * time.Minute, true},
		"passed, end of grace":             {cfg, passed, 70*time.Minute - time.Nanosecond, true},
		"passed, after grace":              {cfg, passed, 70 * time.Minute, false},
		"passed, grace disabled":           {noGrace, passed, 10 * time.Minute, false},
		"failed, never stale":              {cfg, failed, 31 * time.Second, false},
		"passed, expires in grace: before": {cfg, expiring(passed, t0.Add(20*time.Minute)), 15 * time.Minute, true},
		"passed, expires in grace: after":  {cfg, expiring(passed, t0.Add(20*time.Minute)), 20 * time.Minute, false},
		"passed, expires before ttl":       {cfg, expiring(passed, t0.Add(5*time.Minute)), 6 * time.Minute, false},
	} {
		t.Run(name, func(t *testing.T) {
			c, clk := newCache(t, tc.cfg)
			f := &verifier{v: tc.verdict}
			decide(t, c, key, f)
			clk.Advance(tc.after)
			f.set(verify.Verdict{}, errFetch)

			v, o, err := decide(t, c, key, f)
			switch {
			case tc.stale && (err != nil || o != cache.Stale || v.Rule != "prod"):
				t.Fatalf("got (%+v, %v, %v), want the cached verdict, stale, no error", v, o, err)
			case !tc.stale && (!errors.Is(err, verify.ErrUnreachable) || o != cache.Miss):
				t.Fatalf("got (%v, %v), want miss with the verify error", o, err)
			}
			if n := f.calls.Load(); n != 2 {
				t.Fatalf("verify called %d times, want 2", n)
			}
		})
	}
}

func TestNewerFailedVerdictEndsGrace(t *testing.T) {
	cfg := cache.DefaultConfig()
	cfg.NegativeTTL = 0
	c, clk := newCache(t, cfg)
	f := &verifier{v: passed}
	decide(t, c, key, f)
	clk.Advance(15 * time.Minute)
	f.set(failed, nil)
	decide(t, c, key, f)
	f.set(verify.Verdict{}, errFetch)
	if _, o, err := decide(t, c, key, f); !errors.Is(err, verify.ErrUnreachable) {
		t.Fatalf("got (%v, %v), want the verify error, not the older passed verdict", o, err)
	}
}

func TestNewGenerationMisses(t *testing.T) {
	c, _ := newCache(t, cache.DefaultConfig())
	f := &verifier{v: passed}
	decide(t, c, key, f)
	next := key
	next.Generation = "2"
	if _, o, _ := decide(t, c, next, f); o != cache.Miss {
		t.Fatalf("new generation: got %v, want miss", o)
	}
	if n := f.calls.Load(); n != 2 {
		t.Fatalf("verify called %d times, want 2", n)
	}
}

// waitCountingCtx counts the callers that reached the point of waiting for a
// verification: Decide asks for Done only there.
type waitCountingCtx struct {
	context.Context
	waiting *atomic.Int32
	all     int32
	allIn   chan struct{}
}

func (c waitCountingCtx) Done() <-chan struct{} {
	if c.waiting.Add(1) == c.all {
		close(c.allIn)
	}
	return c.Context.Done()
}

func TestConcurrentMissesShareOneVerification(t *testing.T) {
	const n = 100
	c, _ := newCache(t, cache.DefaultConfig())
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func(context.Context) (verify.Verdict, error) {
		calls.Add(1)
		<-release
		return passed, nil
	}
	ctx := waitCountingCtx{Context: context.Background(), waiting: new(atomic.Int32), all: n, allIn: make(chan struct{})}

	var wg sync.WaitGroup
	outcomes := make([]cache.Outcome, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { _, outcomes[i], errs[i] = c.Decide(ctx, key, fn) })
	}
	<-ctx.allIn
	close(release)
	wg.Wait()

	count := map[cache.Outcome]int{}
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("caller %d: %v", i, errs[i])
		}
		count[outcomes[i]]++
	}
	if got := calls.Load(); got != 1 {
		t.Fatalf("verify called %d times, want 1", got)
	}
	if count[cache.Miss] != 1 || count[cache.Shared] != n-1 {
		t.Fatalf("outcomes %v, want 1 miss and %d shared", count, n-1)
	}
}

func TestCancelledCallerReturnsAndVerificationFillsCache(t *testing.T) {
	c, _ := newCache(t, cache.DefaultConfig())
	started, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	var verifyCtxErr error
	fn := func(ctx context.Context) (verify.Verdict, error) {
		calls.Add(1)
		close(started)
		<-release
		verifyCtxErr = ctx.Err()
		return passed, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	// verify is still blocked when Decide returns: it did not wait for it.
	_, o, err := c.Decide(ctx, key, fn)
	if !errors.Is(err, cache.ErrInProgress) || !errors.Is(err, context.Canceled) || o != cache.Miss {
		t.Fatalf("got (%v, %v), want miss with ErrInProgress wrapping context.Canceled", o, err)
	}
	if want := "verification in progress: context canceled"; err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}

	close(release)
	waitFor(t, func() bool { return c.Len() == 1 })
	if verifyCtxErr != nil {
		t.Fatalf("verification saw its caller's cancellation: %v", verifyCtxErr)
	}
	if v, o, err := c.Decide(context.Background(), key, fn); err != nil || o != cache.Hit || !v.Allowed {
		t.Fatalf("retry: got (%v, %v, %v), want allowed hit", v.Allowed, o, err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("verify called %d times, want 1", n)
	}
}

func TestCancelledCallerGetsStaleVerdictWithinGrace(t *testing.T) {
	c, clk := newCache(t, cache.DefaultConfig())
	decide(t, c, key, &verifier{v: passed})
	clk.Advance(15 * time.Minute)

	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	fn := func(context.Context) (verify.Verdict, error) {
		cancel()
		<-release
		return verify.Verdict{}, errFetch
	}
	if v, o, err := c.Decide(ctx, key, fn); err != nil || o != cache.Stale || !v.Allowed {
		t.Fatalf("got (%v, %v, %v), want allowed stale verdict", v.Allowed, o, err)
	}
}

func TestLRUBound(t *testing.T) {
	cfg := cache.DefaultConfig()
	cfg.Size = 2
	c, _ := newCache(t, cfg)
	f := &verifier{v: passed}
	keys := make([]cache.Key, 3)
	for i := range keys {
		keys[i] = cache.Key{Generation: "1", Rule: "prod", Digest: fmt.Sprintf("sha256:%d", i)}
		decide(t, c, keys[i], f)
	}
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
	for i, want := range []cache.Outcome{cache.Hit, cache.Hit, cache.Miss} {
		k := keys[(i+1)%3] // newest first, then the evicted oldest
		if _, o, _ := decide(t, c, k, f); o != want {
			t.Fatalf("%s: got %v, want %v", k.Digest, o, want)
		}
	}
}

func TestWarmFillsCache(t *testing.T) {
	c, _ := newCache(t, cache.DefaultConfig())
	var calls atomic.Int32
	started, release := make(chan struct{}), make(chan struct{})
	fn := func(context.Context) (verify.Verdict, error) {
		calls.Add(1)
		close(started)
		<-release
		return passed, nil
	}
	c.Warm(key, fn)
	<-started
	c.Warm(key, fn) // in flight: no second verification
	close(release)
	waitFor(t, func() bool { return c.Len() == 1 })
	c.Warm(key, fn) // fresh: no verification

	if v, o, err := c.Decide(context.Background(), key, fn); err != nil || o != cache.Hit || !v.Allowed {
		t.Fatalf("got (%v, %v, %v), want allowed hit", v.Allowed, o, err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("verify called %d times, want 1", n)
	}
}

func TestPurgeDropsVerdictsAndInFlightResults(t *testing.T) {
	c, _ := newCache(t, cache.DefaultConfig())
	decide(t, c, key, &verifier{v: passed})

	other := cache.Key{Generation: "1", Rule: "prod", Digest: "sha256:bbbb"}
	started, release := make(chan struct{}), make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Decide(context.Background(), other, func(context.Context) (verify.Verdict, error) {
			close(started)
			<-release
			return passed, nil
		})
	}()
	<-started
	c.Purge()
	close(release)
	<-done
	if c.Len() != 0 {
		t.Fatalf("Len = %d after Purge, want 0", c.Len())
	}
}

func TestOutcomeString(t *testing.T) {
	for o, want := range map[cache.Outcome]string{cache.Hit: "hit", cache.Miss: "miss", cache.Shared: "shared", cache.Stale: "stale", 9: "Outcome(9)"} {
		if got := o.String(); got != want {
			t.Errorf("%d: got %q, want %q", int(o), got, want)
		}
	}
}
