//go:build e2edocker

package e2edocker

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/test/e2eutil"
)

// TestDockerLatency measures what imagegate adds to a container's create
// and start on a Docker Engine, cached verdicts only: `make bench-docker`
// (IMAGEGATE_DOCKER_BENCH=1) runs it, `make e2e-docker` skips it. Two
// engines, alternately in the same run, through the Engine API (create,
// start, wait, remove: what `docker run --rm` asks, without the CLI):
//
//   - plain: dockerd as shipped, NRI off, no authorization plugin, runc;
//   - imagegate: NRI on with imagegate registered, imagegate as the
//     authorization plugin, imagegate-runc the default runtime;
//   - imagegate, --runtime runc: the same engine, the container created
//     with HostConfig.Runtime "runc" (dockerd's built-in runtime, the runc
//     1.4 on its PATH): everything but the guard.
//
// IMAGEGATE_DOCKER_BENCH_BATCHES and _BATCH set the batches (default 20)
// and containers per side and batch (default 10).
func TestDockerLatency(t *testing.T) {
	if os.Getenv("IMAGEGATE_DOCKER_BENCH") == "" {
		t.Skip("a benchmark: run it with `make bench-docker` (IMAGEGATE_DOCKER_BENCH=1)")
	}
	batches, perBatch := envInt(t, "IMAGEGATE_DOCKER_BENCH_BATCHES", 20), envInt(t, "IMAGEGATE_DOCKER_BENCH_BATCH", 10)
	b := setUpBench(t)
	image := b.c.Registry + "/shop/good:1"

	type side struct {
		name    string
		engine  *Engine
		runtime string
		samples []runSample
	}
	sides := []*side{
		{name: "plain dockerd (no imagegate)", engine: b.plain},
		{name: "imagegate (NRI + authz + guard)", engine: b.gated},
		{name: "imagegate, --runtime runc (no guard)", engine: b.gated, runtime: "runc"},
	}
	// Warm up: the first start verifies and caches the verdict, the
	// engines load the image's layers.
	for _, s := range sides {
		for range 5 {
			if _, err := runOnce(s.engine, image, s.runtime); err != nil {
				t.Fatalf("%s: %v%s%s", s.name, err, s.engine.Tail(10), b.g.Tail(10))
			}
		}
	}
	misses := func() float64 {
		v, err := b.g.Metric(`imagegate_cache_lookups_total{outcome="miss"}`)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	missesBefore := misses()
	start := time.Now()
	for i := range batches {
		// Each batch in another order: no side always follows another.
		for j := range sides {
			s := sides[(i+j)%len(sides)]
			for range perBatch {
				r, err := runOnce(s.engine, image, s.runtime)
				if err != nil {
					t.Fatalf("%s: %v%s", s.name, err, s.engine.Tail(10))
				}
				s.samples = append(s.samples, r)
			}
		}
	}
	if m := misses() - missesBefore; m != 0 {
		t.Errorf("%v verdict cache misses while measuring, want every decision cached", m)
	}
	t.Logf("%d batches of %d containers per side in %s", batches, perBatch, time.Since(start).Round(time.Millisecond))

	stat := func(s *side, f func(runSample) time.Duration) dist {
		d := make([]time.Duration, len(s.samples))
		for i, r := range s.samples {
			d[i] = f(r)
		}
		return newDist(d)
	}
	legs := []struct {
		name string
		f    func(runSample) time.Duration
	}{
		{"create", func(r runSample) time.Duration { return r.create }},
		{"start", func(r runSample) time.Duration { return r.start }},
		{"create+start+wait+remove", func(r runSample) time.Duration { return r.total }},
	}
	var report strings.Builder
	fmt.Fprintf(&report, "\n%-26s %-38s %10s %10s %10s", "leg", "side", "p50", "p99", "mean")
	for _, l := range legs {
		for _, s := range sides {
			d := stat(s, l.f)
			fmt.Fprintf(&report, "\n%-26s %-38s %10s %10s %10s", l.name, s.name, ms(d.p50), ms(d.p99), ms(d.mean))
		}
	}
	plain, gated, noGuard := sides[0], sides[1], sides[2]
	for _, cmp := range []struct {
		what string
		a, b *side
		leg  int
	}{
		{"imagegate in all (run: create+start+wait+remove)", gated, plain, 2},
		{"on create (NRI CreateContainer + authz round trips)", gated, plain, 0},
		{"authz decision at start, cached (no guard)", noGuard, plain, 1},
		{"guard on create (start: imagegate-runc vs runc)", gated, noGuard, 1},
	} {
		a, bb := stat(cmp.a, legs[cmp.leg].f), stat(cmp.b, legs[cmp.leg].f)
		fmt.Fprintf(&report, "\nadded, %-52s p50 %9s  p99 %9s  (%s vs %s)", cmp.what,
			signed(a.p50-bb.p50), signed(a.p99-bb.p99), cmp.a.name, cmp.b.name)
	}
	t.Logf("Engine API, %d containers per side, cached verdicts:%s", batches*perBatch, report.String())
}

// runSample is one container: its create call, its start call, and from
// create to removed.
type runSample struct {
	create, start, total time.Duration
}

// runOnce creates, starts, waits for and removes a container of image on
// e that exits at once, with runtime ("" for the engine's default).
func runOnce(e *Engine, image, runtime string) (runSample, error) {
	host := map[string]any{"NetworkMode": "none"}
	if runtime != "" {
		host["Runtime"] = runtime
	}
	body := map[string]any{"Image": image, "Entrypoint": []string{"/bin/busybox", "true"}, "HostConfig": host}
	var r runSample
	t0 := time.Now()
	var created struct{ Id string }
	if err := e.Post("/containers/create", body, &created); err != nil {
		return r, err
	}
	t1 := time.Now()
	id := created.Id
	err := e.Post("/containers/"+id+"/start", nil, nil)
	t2 := time.Now()
	if err != nil {
		e.call(http.MethodDelete, "/containers/"+id+"?force=1", nil, nil)
		return r, err
	}
	var waited struct{ StatusCode int }
	if err := e.Post("/containers/"+id+"/wait", nil, &waited); err != nil {
		return r, err
	}
	if err := e.call(http.MethodDelete, "/containers/"+id, nil, nil); err != nil {
		return r, err
	}
	t3 := time.Now()
	if waited.StatusCode != 0 {
		return r, fmt.Errorf("container %.12s exited %d", id, waited.StatusCode)
	}
	return runSample{create: t1.Sub(t0), start: t2.Sub(t1), total: t3.Sub(t0)}, nil
}

type dist struct{ p50, p99, mean time.Duration }

func newDist(d []time.Duration) dist {
	slices.Sort(d)
	var sum time.Duration
	for _, x := range d {
		sum += x
	}
	// Nearest rank.
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.999999) - 1
		return d[max(0, min(i, len(d)-1))]
	}
	return dist{p50: rank(0.50), p99: rank(0.99), mean: sum / time.Duration(len(d))}
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) + "ms" }

func signed(d time.Duration) string {
	if d >= 0 {
		return "+" + ms(d)
	}
	return ms(d)
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// bench is the benchmark's machine: a registry with one signed image, an
// engine gated by imagegate and a plain one.
type bench struct {
	c     *cluster
	gated *Engine
	g     *Imagegate
	plain *Engine
}

func setUpBench(t *testing.T) *bench {
	tools, err := ToolsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := e2eutil.WorkDir("igb-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, tools: tools, dir: dir}
	b := &bench{c: c}
	t.Cleanup(b.tearDown)

	c.Site, err = e2eutil.NewSite(tools.Crane, tools.Busybox, tools.Cosign, dir, []e2eutil.SignedImage{
		{Ref: "shop/good:1", Signers: []string{"ci", "staging"}, Report: "trivy-clean.json"},
	})
	t.Cleanup(c.Site.Stop)
	if err != nil {
		t.Fatal(err)
	}
	addr := c.Registry

	c.pluginDirs()
	authz := fmt.Sprintf("imagegate-e2e%d-b", os.Getpid())
	if b.gated, err = NewEngine(tools, "b", filepath.Join(dir, "b"), "127.0.0.1", "", EngineOptions{
		Registry: addr, AuthzPlugin: authz, Guard: tools.ImagegateRunc,
	}); err != nil {
		t.Fatal(err)
	}
	if b.g, err = NewImagegate(tools, filepath.Join(dir, "b", "ig"), c.PolicyDir, authz, b.gated); err != nil {
		t.Fatal(err)
	}
	// Measured at the level a node runs at, not the e2e test's debug.
	cfg, err := os.ReadFile(b.g.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b.g.Config, []byte(strings.Replace(string(cfg), "level: debug", "level: info", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	b.gated.SetGuardConfig(b.g.Config)
	if b.plain, err = NewEngine(tools, "p", filepath.Join(dir, "p"), "127.0.0.1", "", EngineOptions{
		Registry: addr, NoNRI: true,
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.g.Start(); err != nil {
		t.Fatalf("%v%s", err, b.g.Tail(30))
	}
	if err := e2eutil.WaitFor(10*time.Second, b.g.Name+" serves its authorization plugin", b.g.AuthzServed); err != nil {
		t.Fatalf("%v%s", err, b.g.Tail(30))
	}
	for _, e := range []*Engine{b.gated, b.plain} {
		if err := e.StartContainerd(); err != nil {
			t.Fatal(err)
		}
		if err := e.StartDockerd(); err != nil {
			t.Fatalf("%v%s", err, e.Tail(30))
		}
		if _, err := e.Docker("pull", "-q", addr+"/shop/good:1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.g.WaitRegistered(0, 20*time.Second); err != nil {
		t.Fatalf("%v%s", err, b.g.Tail(30))
	}
	return b
}

func (b *bench) tearDown() {
	t := b.c.t
	if t.Failed() && b.g != nil {
		t.Logf("imagegate's log:%s", b.g.Tail(30))
	}
	for _, e := range []*Engine{b.plain, b.gated} {
		if e == nil {
			continue
		}
		if t.Failed() {
			t.Logf("dockerd %s's log:%s", e.Name, e.Tail(30))
		}
		for _, err := range e.Stop() {
			t.Error(err)
		}
	}
	if b.g != nil {
		b.g.Stop()
		b.g.RemovePluginSocket()
	}
	for _, d := range b.c.madeDirs {
		_ = os.Remove(d) // only when empty
	}
	e2eutil.RemoveWorkDir(t, b.c.dir)
}
