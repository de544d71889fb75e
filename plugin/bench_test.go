package plugin

import (
	"context"
	"io"
	"runtime"
	"runtime/debug"
	"slices"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// discardLog logs every decision as the daemon does, JSON at info, into
// io.Discard: the cost of the audit line is part of the decision.
func discardLog(e *env, _ *[]Option) {
	enc := zap.NewProductionEncoderConfig()
	e.log = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
}

func BenchmarkDecisionCacheHit(b *testing.B) {
	e := newEnv(b, discardLog)
	d := e.push("shop/api:1", "ci", "staging")
	ctr := container("api", e.image("shop/api:1"), d.DigestStr())
	ctx := context.Background()
	if err := e.p.admit(ctx, "CreateContainer", testPod, ctr); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := e.p.admit(ctx, "CreateContainer", testPod, ctr); err != nil {
			b.Fatal(err)
		}
	}
}

// noop is a plugin that answers every request imagegate handles without
// doing anything: the baseline cost of NRI itself.
type noop struct{}

func (noop) CreateContainer(context.Context, *api.PodSandbox, *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	return nil, nil, nil
}

func (noop) ValidateContainerAdjustment(context.Context, *api.ValidateContainerAdjustmentRequest) error {
	return nil
}

// BenchmarkCreateLatency measures what imagegate adds to a create through
// real NRI: creates through a runtime with a no-op plugin and through one
// with imagegate (verdict cached), in alternating batches within the same
// run, so that both see the same machine noise. The Go GC runs between
// batches, not inside them.
func BenchmarkCreateLatency(b *testing.B) {
	const batch = 100
	e := newEnv(b, discardLog)
	d := e.push("shop/api:1", "ci", "staging")
	newCtr := func() *api.Container { return container("api", e.image("shop/api:1"), d.DigestStr()) }
	if err := e.rt.create(newCtr()); err != nil {
		b.Fatal(err)
	}

	sock := e.sock + "0"
	base := startRuntime(b, sock, false)
	s, err := stub.New(noop{}, stub.WithPluginName("noop"), stub.WithPluginIdx("10"), stub.WithSocketPath(sock),
		stub.WithLogger(nriLogger{zap.NewNop().Sugar()}))
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(s.Stop)
	base.waitPlugins(b, 1)

	gc := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(gc)
	var noopTimes, igTimes []time.Duration
	run := func(rt *testRuntime, into *[]time.Duration) {
		ctrs := make([]*api.Container, batch)
		for i := range ctrs {
			ctrs[i] = newCtr()
		}
		runtime.GC()
		for _, c := range ctrs {
			start := time.Now()
			if err := rt.create(c); err != nil {
				b.Fatal(err)
			}
			*into = append(*into, time.Since(start))
		}
	}
	b.ResetTimer()
	for n := 0; n < b.N; n += batch {
		run(base, &noopTimes)
		run(e.rt, &igTimes)
	}
	b.StopTimer()
	noopP50, noopP99 := percentiles(noopTimes)
	igP50, igP99 := percentiles(igTimes)
	b.ReportMetric(us(noopP50), "noop-p50-µs")
	b.ReportMetric(us(noopP99), "noop-p99-µs")
	b.ReportMetric(us(igP50), "imagegate-p50-µs")
	b.ReportMetric(us(igP99), "imagegate-p99-µs")
	b.ReportMetric(us(igP50-noopP50), "added-p50-µs")
	b.ReportMetric(us(igP99-noopP99), "added-p99-µs")
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)*50/100], s[len(s)*99/100]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
