package plugin

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/adaptation"
	"github.com/containerd/nri/pkg/api"
	nrilog "github.com/containerd/nri/pkg/log"
	"github.com/google/go-containerregistry/pkg/name"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/imagegate/imagegate/internal/testclock"
	"github.com/imagegate/imagegate/internal/testsign"
)

// The runtime the tests play: containerd 2.4, which fills Container.Image.
const (
	runtimeName    = "containerd"
	runtimeVersion = "v2.4.2"
	// rpcPrefix is how a plugin's error reaches the runtime over ttrpc.
	rpcPrefix = "rpc error: code = Unknown desc = "
)

// basePolicy pools the signers and the test registry; rulesPolicy is
// the rules file that tests rewrite. HOST stands for the registry.
const basePolicy = `signers:
  - name: ci
    key: keys/ci.pub
  - name: scanner
    key: keys/scanner.pub
  - name: staging
    key: keys/staging.pub
registries:
  - host: HOST
    insecure: true
  - host: SLOW
    insecure: true
defaults:
  unmatched: deny
`

const rulesPolicy = `rules:
  - name: pause
    images: ["HOST/pause"]
    allow: true
  - name: lab
    images: ["HOST/lab/*"]
    mode: warn
    signatures:
      threshold: 1
      signers: [ci]
  - name: scanned
    images: ["HOST/scanned/*"]
    scan:
      attestors: [scanner]
      maxSeverity: high
      maxAge: 168h
  - name: prod
    images: ["HOST/shop/*", "SLOW/shop/*"]
    mode: enforce
    signatures:
      threshold: 2
      signers: [ci, scanner, staging]
      required: [ci]
`

func TestMain(m *testing.M) {
	// The runtime side logs every connection at info level.
	nrilog.Set(quietLog{})
	os.Exit(m.Run())
}

// quietLog keeps the runtime side's warnings and errors only.
type quietLog struct{}

func (quietLog) Debugf(context.Context, string, ...any) {}
func (quietLog) Infof(context.Context, string, ...any)  {}
func (quietLog) Warnf(_ context.Context, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nri: "+format+"\n", args...)
}
func (quietLog) Errorf(_ context.Context, format string, args ...any) {
	fmt.Fprintf(os.Stderr, "nri: "+format+"\n", args...)
}

// env is a registry with signed images, a policy directory, a runtime
// side of NRI on a socket and the plugin registered with it.
type env struct {
	t         testing.TB
	reg       *testsign.Registry
	keys      map[string]*testsign.Key
	dir       string
	policyDir string
	sock      string
	clock     *testclock.Clock
	logs      *observer.ObservedLogs
	cfg       Config
	p         *Plugin
	rt        *testRuntime
	// slow is a registry host that accepts connections and never answers.
	slow string
	// running is what the runtime runs when the plugin registers.
	running []*api.Container
	// log replaces the observed log.
	log *zap.Logger
	// proxied puts the runtime behind a proxy, so that stopping it drops
	// the plugin's connection as a dying runtime process would.
	proxied bool
	// runtime is the name the runtime side registers the plugin as.
	runtime string
}

type envOption func(*env, *[]Option)

// withoutStore runs the plugin without an evidence store.
func withoutStore() envOption {
	return func(e *env, _ *[]Option) { e.cfg.StateDir = "" }
}

func withPluginOption(o Option) envOption {
	return func(_ *env, opts *[]Option) { *opts = append(*opts, o) }
}

func newEnv(t testing.TB, eopts ...envOption) *env {
	t.Helper()
	// Unix socket paths must stay under 108 bytes; t.TempDir() is long.
	dir, err := os.MkdirTemp("", "ig")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := &env{
		t:         t,
		reg:       testsign.NewRegistry(t),
		keys:      map[string]*testsign.Key{},
		dir:       dir,
		policyDir: filepath.Join(dir, "policy.d"),
		sock:      filepath.Join(dir, "nri.sock"),
		clock:     testclock.New(time.Now()),
		slow:      blackhole(t),
	}
	must(t, os.MkdirAll(filepath.Join(e.policyDir, "keys"), 0o755))
	for _, n := range []string{"ci", "scanner", "staging"} {
		e.keys[n] = testsign.NewKey(t, n)
		e.keys[n].WritePub(t, filepath.Join(e.policyDir, "keys"))
	}
	e.writePolicy("10-base.yaml", basePolicy)
	e.writePolicy("50-rules.yaml", rulesPolicy)

	e.cfg = DefaultConfig()
	e.cfg.PolicyDir = e.policyDir
	e.cfg.NRI.Socket = e.sock
	e.cfg.Containerd.Address = ""
	e.cfg.MetricsListen = ""
	e.cfg.StateDir = filepath.Join(dir, "state")
	e.cfg.Guard.Socket = filepath.Join(dir, "guard.sock")
	// Docker's tests serve these in the test's directory (withDocker).
	e.cfg.Docker.Address = ""
	e.cfg.Docker.AuthzPlugin = ""
	e.runtime = runtimeName
	core, logs := observer.New(zapcore.DebugLevel)
	e.logs, e.log = logs, zap.New(core)
	opts := []Option{WithClock(e.clock.Now)}
	for _, o := range eopts {
		o(e, &opts)
	}
	e.p, err = New(e.cfg, e.log, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.p.Close() })

	e.rt = startRuntimeAs(t, e.runtime, e.sock, e.proxied, e.running...)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.p.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	e.rt.waitPlugins(t, 1)
	return e
}

func (e *env) writePolicy(file, content string) {
	e.t.Helper()
	content = strings.ReplaceAll(content, "HOST", e.reg.Host)
	content = strings.ReplaceAll(content, "SLOW", e.slow)
	must(e.t, os.WriteFile(filepath.Join(e.policyDir, file), []byte(content), 0o644))
}

// push pushes a random image as REPO:TAG and signs it with each of signers.
func (e *env) push(repoTag string, signers ...string) name.Digest {
	e.t.Helper()
	d := e.reg.Push(e.t, repoTag)
	for _, s := range signers {
		testsign.Sign(e.t, e.keys[s], d)
	}
	return d
}

func (e *env) image(repoTag string) string { return e.reg.Host + "/" + repoTag }

// wantCreate creates ctr through the runtime and checks that it is
// allowed when want is "", and else denied with exactly the error want.
func (e *env) wantCreate(t *testing.T, ctr *api.Container, want string) {
	t.Helper()
	err := e.rt.create(ctr)
	if want == "" {
		if err != nil {
			t.Fatalf("denied: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("allowed, want %q", want)
	}
	if got, want := err.Error(), rpcPrefix+want; got != want {
		t.Errorf("error:\n got %s\nwant %s", got, want)
	}
}

// metric returns the value of the counter or gauge name with labels.
func (e *env) metric(metricName string, labels ...string) float64 {
	e.t.Helper()
	return metricValue(e.t, e.p, metricName, labels...)
}

func metricValue(t testing.TB, p *Plugin, metricName string, labels ...string) float64 {
	t.Helper()
	mfs, err := p.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metricName {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels) {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func hasLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// container is a container as containerd 2.4 reports it: the annotation
// holds what the workload asked for, Image what the runtime resolved.
func container(ctrName, image, digest string) *api.Container {
	return &api.Container{
		Id:           ctrName + "-id",
		PodSandboxId: testPod.Id,
		Name:         ctrName,
		Annotations:  map[string]string{annImageName: image},
		Image:        &api.Image{Name: image, Digest: digest},
	}
}

var testPod = &api.PodSandbox{Id: "pod-id", Name: "shop-0", Namespace: "shop", Uid: "pod-uid"}

// testRuntime is the runtime side of NRI, as containerd embeds it.
type testRuntime struct {
	nri     *adaptation.Adaptation
	plugins atomic.Int64
	// running is what the runtime reports to a plugin that connects.
	running []*api.Container
	proxy   *proxy
}

func startRuntime(t testing.TB, sock string, proxied bool, running ...*api.Container) *testRuntime {
	t.Helper()
	return startRuntimeAs(t, runtimeName, sock, proxied, running...)
}

// startRuntimeAs starts the runtime side registering plugins as runtime
// (dockerd: "docker").
func startRuntimeAs(t testing.TB, runtime, sock string, proxied bool, running ...*api.Container) *testRuntime {
	t.Helper()
	rt := &testRuntime{running: running}
	dir := filepath.Dir(sock)
	listen := sock
	if proxied {
		listen = sock + ".rt"
		rt.proxy = startProxy(t, sock, listen)
	}
	nri, err := adaptation.New(runtime, runtimeVersion, rt.synchronize, rt.update,
		adaptation.WithSocketPath(listen),
		adaptation.WithPluginPath(filepath.Join(dir, "plugins")),
		adaptation.WithPluginConfigPath(filepath.Join(dir, "conf.d")),
		adaptation.WithMetrics(rt))
	if err != nil {
		t.Fatal(err)
	}
	if err := nri.Start(); err != nil {
		t.Fatal(err)
	}
	rt.nri = nri
	t.Cleanup(rt.stop)
	return rt
}

// stop stops the runtime side. The adaptation keeps the connections of
// external plugins open on Stop; only a runtime behind a proxy drops them.
func (rt *testRuntime) stop() {
	if rt.proxy != nil {
		rt.proxy.close()
	}
	rt.nri.Stop()
}

// proxy relays the plugin's connections to the runtime's socket.
type proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startProxy(t testing.TB, from, to string) *proxy {
	t.Helper()
	ln, err := net.Listen("unix", from)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("unix", to)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *proxy) close() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
}

func (rt *testRuntime) synchronize(ctx context.Context, cb adaptation.SyncCB) error {
	_, err := cb(ctx, []*api.PodSandbox{testPod}, rt.running)
	return err
}

func (rt *testRuntime) update(context.Context, []*api.ContainerUpdate) ([]*api.ContainerUpdate, error) {
	return nil, nil
}

// create asks the plugins about ctr as containerd does before creating it.
func (rt *testRuntime) create(ctr *api.Container) error {
	b := rt.nri.BlockPluginSync()
	defer b.Unblock()
	_, err := rt.nri.CreateContainer(context.Background(), &api.CreateContainerRequest{Pod: testPod, Container: ctr})
	return err
}

// waitPlugins waits until n plugins are connected and synchronized.
func (rt *testRuntime) waitPlugins(t testing.TB, n int64) {
	t.Helper()
	waitFor(t, "plugins to register", func() bool { return rt.plugins.Load() == n })
}

func (rt *testRuntime) UpdatePluginCount(n int)                           { rt.plugins.Store(int64(n)) }
func (rt *testRuntime) RecordPluginInvocation(string, string, error)      {}
func (rt *testRuntime) RecordPluginLatency(string, string, time.Duration) {}
func (rt *testRuntime) RecordPluginAdjustments(string, string, *adaptation.ContainerAdjustment, int, int) {
}

// waitFor polls cond until it holds or a deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// blackhole returns the address of a listener that accepts connections and
// never answers: a registry that hangs.
func blackhole(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
