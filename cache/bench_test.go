package cache_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

func unexpectedVerify(context.Context) (verify.Verdict, error) {
	panic("verify called on the hit path")
}

func benchCache(b *testing.B) *cache.Cache {
	b.Helper()
	c, err := cache.New(cache.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	if _, _, err := c.Decide(context.Background(), key, func(context.Context) (verify.Verdict, error) { return passed, nil }); err != nil {
		b.Fatal(err)
	}
	return c
}

func BenchmarkDecideHit(b *testing.B) {
	c := benchCache(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, o, _ := c.Decide(ctx, key, unexpectedVerify); o != cache.Hit {
			b.Fatalf("got %v, want hit", o)
		}
	}
}

func BenchmarkDecideHitParallel(b *testing.B) {
	c := benchCache(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, o, _ := c.Decide(ctx, key, unexpectedVerify); o != cache.Hit {
				b.Errorf("got %v, want hit", o)
				return
			}
		}
	})
}

// realisticVerdict has the size of a verdict under a rule with three signers
// and a scan: each string is its own allocation, as when decoded from a
// registry.
func realisticVerdict(i int) (cache.Key, verify.Verdict) {
	digest := fmt.Sprintf("sha256:%064x", i)
	k := cache.Key{Generation: "42", Rule: "prod", Digest: digest}
	return k, verify.Verdict{
		Image:   fmt.Sprintf("registry.example.com/prod/service-%d:1.4.%d", i, i),
		Digest:  fmt.Sprintf("sha256:%064x", i),
		Rule:    "prod",
		Mode:    policy.ModeEnforce,
		Signers: []string{fmt.Sprintf("ci-%d", i%3), fmt.Sprintf("scanner-%d", i%3), fmt.Sprintf("staging-%d", i%3)},
		Reasons: []string{fmt.Sprintf("scan: 2 vulnerabilities above high (CVE-2024-%d, CVE-2025-%d)", i, i)},
		Scan: &verify.ScanStatus{
			Attestor:    "scanner",
			Finished:    time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC),
			MaxSeverity: policy.SeverityCritical,
			Blocking:    []string{fmt.Sprintf("CVE-2024-%d", i), fmt.Sprintf("CVE-2025-%d", i)},
		},
	}
}

// heapOf10k returns the heap bytes that 10 000 cached verdicts keep live.
func heapOf10k(tb testing.TB) uint64 {
	tb.Helper()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	c, err := cache.New(cache.DefaultConfig())
	if err != nil {
		tb.Fatal(err)
	}
	for i := range 10000 {
		k, v := realisticVerdict(i)
		if _, _, err := c.Decide(context.Background(), k, func(context.Context) (verify.Verdict, error) { return v, nil }); err != nil {
			tb.Fatal(err)
		}
	}
	if c.Len() != 10000 {
		tb.Fatalf("Len = %d, want 10000", c.Len())
	}

	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(c)
	return after.HeapAlloc - before.HeapAlloc
}

func BenchmarkMemory10k(b *testing.B) {
	var total uint64
	for b.Loop() {
		total += heapOf10k(b)
	}
	b.ReportMetric(float64(total)/float64(b.N)/(1<<20), "MiB/10k")
}

func TestMemoryOf10kVerdictsUnder64MiB(t *testing.T) {
	if got := heapOf10k(t); got >= 64<<20 {
		t.Fatalf("10 000 verdicts keep %.1f MiB live, want under 64 MiB", float64(got)/(1<<20))
	}
}
