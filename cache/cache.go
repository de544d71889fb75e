// Package cache keeps verdicts between the NRI plugin and the verifier, so
// that the common create costs a map look-up instead of registry round trips.
//
// Errors from the verifier are never cached: a registry outage must not turn
// into a cached denial, nor an allow. What an outage may do is extend the life
// of an allow whose TTL ran out (StaleGrace), never of a denial and never past
// the verdict's own Expires.
package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/imagegate/imagegate/verify"
)

// ErrInProgress is returned, wrapping the caller's context error, when the
// caller's context ends before the verification does. The verification goes
// on and fills the cache, so a retry soon after is a hit.
var ErrInProgress = errors.New("verification in progress")

// Key names one verdict. The policy generation is part of it so that a new
// policy (new keys, new rules) never sees a verdict decided under an old one.
type Key struct {
	Generation string
	Rule       string
	Digest     string
}

// Config bounds the cache. Its field names are those of the daemon config's
// cache section.
type Config struct {
	// Size is the most verdicts kept; the least recently used goes first.
	Size int `yaml:"size"`
	// TTL is how long a verdict that passed its rule is reused.
	TTL time.Duration `yaml:"ttl"`
	// NegativeTTL is how long a verdict that failed its rule is reused;
	// zero re-verifies such images on every create.
	NegativeTTL time.Duration `yaml:"negativeTTL"`
	// StaleGrace is how long after its TTL a passed verdict may still be
	// served when verification fails; zero never serves one.
	StaleGrace time.Duration `yaml:"staleGrace"`
}

// DefaultConfig returns the defaults of the daemon config.
func DefaultConfig() Config {
	return Config{Size: 10000, TTL: 10 * time.Minute, NegativeTTL: 30 * time.Second, StaleGrace: time.Hour}
}

func (cfg Config) validate() error {
	var errs []error
	if cfg.Size <= 0 {
		errs = append(errs, fmt.Errorf("cache size must be positive, got %d", cfg.Size))
	}
	if cfg.TTL <= 0 {
		errs = append(errs, fmt.Errorf("cache ttl must be positive, got %s", cfg.TTL))
	}
	if cfg.NegativeTTL < 0 {
		errs = append(errs, fmt.Errorf("cache negativeTTL must not be negative, got %s", cfg.NegativeTTL))
	}
	if cfg.StaleGrace < 0 {
		errs = append(errs, fmt.Errorf("cache staleGrace must not be negative, got %s", cfg.StaleGrace))
	}
	return errors.Join(errs...)
}

// Outcome says how Decide came by its verdict, for logs and metrics.
type Outcome int

const (
	// Hit: a fresh cached verdict.
	Hit Outcome = iota
	// Miss: this caller started the verification.
	Miss
	// Shared: this caller joined a verification another caller started.
	Shared
	// Stale: a passed verdict past its TTL but within StaleGrace, served
	// because the verification failed or did not finish in time.
	Stale
)

func (o Outcome) String() string {
	switch o {
	case Hit:
		return "hit"
	case Miss:
		return "miss"
	case Shared:
		return "shared"
	case Stale:
		return "stale"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}

// VerifyFunc decides a verdict. It must bound its own duration (registry
// timeouts): it runs detached from the callers' contexts.
type VerifyFunc func(context.Context) (verify.Verdict, error)

// Option configures a Cache.
type Option func(*Cache)

// WithClock sets the clock that TTLs are measured by.
func WithClock(now func() time.Time) Option { return func(c *Cache) { c.now = now } }

// Cache is a bounded LRU of verdicts with per-entry expiry and a single
// verification in flight per key. It is safe for concurrent use.
type Cache struct {
	cfg Config
	now func() time.Time
	lru *lru.Cache[Key, entry]

	// mu orders the in-flight map with the stores into lru, so that a
	// caller that finds no call in flight also finds its result.
	mu       sync.Mutex
	inflight map[Key]*call
}

// entry is a cached verdict with its expiry. Per-entry expiry rather than an
// expirable LRU because passed and failed verdicts live for different TTLs
// and Expires may cut either short.
type entry struct {
	v          verify.Verdict
	freshUntil time.Time
	// staleUntil is the end of the grace period; zero for a failed verdict.
	staleUntil time.Time
}

type call struct {
	done chan struct{}
	// v and err are written before done is closed and only read after.
	v   verify.Verdict
	err error
}

// New returns an empty cache, or an error naming every invalid field of cfg.
func New(cfg Config, opts ...Option) (*Cache, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	l, err := lru.New[Key, entry](cfg.Size)
	if err != nil {
		return nil, err
	}
	c := &Cache{cfg: cfg, now: time.Now, lru: l, inflight: make(map[Key]*call)}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// Decide returns the verdict for k: a fresh cached one, or the result of
// fn, which runs at most once at a time per key however many callers ask.
//
// When the verification fails, or ctx ends before it finishes, and k holds a
// passed verdict within its stale grace, Decide returns that verdict with
// Stale and a nil error. Otherwise a failed verification returns its error,
// and an ended ctx returns ErrInProgress wrapping ctx.Err() while the
// verification continues in the background.
//
// The returned verdict shares its slices with the cache: do not modify them.
func (c *Cache) Decide(ctx context.Context, k Key, fn VerifyFunc) (verify.Verdict, Outcome, error) {
	if e, ok := c.lru.Get(k); ok && c.now().Before(e.freshUntil) {
		return e.v, Hit, nil
	}

	c.mu.Lock()
	cl, shared := c.inflight[k]
	if !shared {
		// A verification may have stored its verdict since the look-up above.
		if v, ok := c.freshLocked(k); ok {
			c.mu.Unlock()
			return v, Hit, nil
		}
		cl = c.startLocked(context.WithoutCancel(ctx), k, fn)
	}
	c.mu.Unlock()

	outcome := Miss
	if shared {
		outcome = Shared
	}
	var err error
	select {
	case <-cl.done:
		if cl.err == nil {
			return cl.v, outcome, nil
		}
		err = cl.err
	case <-ctx.Done():
		err = fmt.Errorf("%w: %w", ErrInProgress, ctx.Err())
	}
	if v, ok := c.stale(k); ok {
		return v, Stale, nil
	}
	return verify.Verdict{}, outcome, err
}

// Warm starts verifying k in the background unless k is fresh or already
// being verified, so that a later Decide is a hit.
func (c *Cache) Warm(k Key, fn VerifyFunc) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.inflight[k]; ok {
		return
	}
	if _, ok := c.freshLocked(k); ok {
		return
	}
	c.startLocked(context.Background(), k, fn)
}

// Len returns the number of verdicts held, expired ones included until
// they are evicted or replaced.
func (c *Cache) Len() int { return c.lru.Len() }

// Purge drops every verdict. Verifications in flight still answer their
// callers but no longer fill the cache.
func (c *Cache) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.inflight)
	c.lru.Purge()
}

func (c *Cache) freshLocked(k Key) (verify.Verdict, bool) {
	e, ok := c.lru.Peek(k)
	if !ok || !c.now().Before(e.freshUntil) {
		return verify.Verdict{}, false
	}
	return e.v, true
}

func (c *Cache) stale(k Key) (verify.Verdict, bool) {
	e, ok := c.lru.Peek(k)
	if !ok || !c.now().Before(e.staleUntil) {
		return verify.Verdict{}, false
	}
	return e.v, true
}

func (c *Cache) startLocked(ctx context.Context, k Key, fn VerifyFunc) *call {
	cl := &call{done: make(chan struct{})}
	c.inflight[k] = cl
	go c.run(ctx, k, cl, fn)
	return cl
}

func (c *Cache) run(ctx context.Context, k Key, cl *call, fn VerifyFunc) {
	cl.v, cl.err = fn(ctx)
	c.mu.Lock()
	// A call that Purge dropped must not bring back what it purged.
	if c.inflight[k] == cl {
		delete(c.inflight, k)
		if cl.err == nil {
			c.storeLocked(k, cl.v)
		}
	}
	c.mu.Unlock()
	close(cl.done)
}

func (c *Cache) storeLocked(k Key, v verify.Verdict) {
	now := c.now()
	e := entry{v: v}
	if v.Passed() {
		e.freshUntil = earliest(now.Add(c.cfg.TTL), v.Expires)
		// Grace covers the TTL only: evidence past Expires is not true any
		// more, whether or not the registry can be reached.
		e.staleUntil = earliest(now.Add(c.cfg.TTL+c.cfg.StaleGrace), v.Expires)
	} else {
		e.freshUntil = earliest(now.Add(c.cfg.NegativeTTL), v.Expires)
	}
	if !now.Before(e.freshUntil) {
		// Dropping the old entry matters: a passed verdict within its grace
		// must not outlive a newer verdict that failed.
		c.lru.Remove(k)
		return
	}
	c.lru.Add(k, e)
}

// earliest returns t, or expires when that is set and sooner.
func earliest(t, expires time.Time) time.Time {
	if !expires.IsZero() && expires.Before(t) {
		return expires
	}
	return t
}
