// Package plugin is imagegate's NRI plugin: it registers with the container
// runtime, turns every container create into an image identity (repository
// and digest, as the runtime holds them), asks the verdict cache, and allows
// or rejects the create. It logs every decision, serves metrics, warms the
// cache on image pulls and on resynchronization, and follows policy changes.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/containerd/nri/pkg/stub"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/imagegate/imagegate/cache"
	"github.com/imagegate/imagegate/verify"
)

// pluginName is how the runtime lists the plugin (required_plugins).
const pluginName = "imagegate"

const (
	// budgetMargin is kept between the plugin's own deadline and the
	// runtime's request timeout, for the answer's trip back: a plugin that
	// overruns the runtime's timeout gets its container created unchecked
	// (or, fail-closed, the create fails without a reason).
	budgetMargin = 250 * time.Millisecond
	// Reconnection backoff: the first retry is quick, since a runtime that
	// restarts is usually back within a second; the cap keeps a plugin of a
	// runtime that is down for long from spinning.
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
	// defaultPollInterval is how often the policy directory is checked for
	// changes: a stat of a few files.
	defaultPollInterval = 2 * time.Second
	// auditParallelism bounds the verifications of running containers
	// started by one Synchronize.
	auditParallelism = 4
	// warmParallelism bounds the verifications started by image pulls: a
	// burst of pulls must not starve each other (and the creates that
	// join them) past the registry timeout.
	warmParallelism = 4
)

// Plugin is the NRI plugin. Its decisions read the policy in force through
// one atomic load, so a reload never stalls a create.
type Plugin struct {
	cfg     Config
	log     *zap.Logger
	cache   *cache.Cache
	store   *verify.Store
	metrics *metrics
	// admissions is what imagegate-runc is answered from; nil without a
	// state directory.
	admissions *Admissions
	now        func() time.Time

	images       ImageStore
	pulls        ImagePulls
	closeImages  func() error
	pollInterval time.Duration

	state atomic.Pointer[state]
	// budget is the longest a create waits for a verification, derived
	// from the request timeout the runtime announced.
	budget atomic.Int64

	// reloadMu serializes reloads (SIGHUP and the directory watch).
	reloadMu  sync.Mutex
	lastPrint uint64

	// warmSlots holds one token per verification started by a pull.
	warmSlots chan struct{}

	// bg counts goroutines that Run waits for before it returns.
	bg sync.WaitGroup

	// docker is set while the runtime is Docker Engine (runtime: docker,
	// or auto and dockerd registered us).
	docker atomic.Bool
	// engine is dockerd's Engine API; nil under runtime: containerd or
	// without docker.address.
	engine *engine
	// authz serves Docker's authorization plugin.
	authz      authzServer
	dockerOnce sync.Once
	// nri is the handler of the NRI connection in use, so that a dockerd
	// reload can end it.
	nri atomic.Pointer[nriHandler]
}

// Option configures a Plugin.
type Option func(*Plugin)

// WithImageStore sets where digests the runtime does not report are looked
// up, instead of containerd at cfg.Containerd.Address.
func WithImageStore(s ImageStore) Option { return func(p *Plugin) { p.images = s } }

// WithImagePulls sets the source of image pull events, instead of
// containerd at cfg.Containerd.Address.
func WithImagePulls(s ImagePulls) Option { return func(p *Plugin) { p.pulls = s } }

// WithClock sets the clock that cache TTLs and scan ages are judged by.
func WithClock(now func() time.Time) Option { return func(p *Plugin) { p.now = now } }

// WithPolicyPollInterval sets how often the policy directory is checked.
func WithPolicyPollInterval(d time.Duration) Option {
	return func(p *Plugin) { p.pollInterval = d }
}

// New loads the policy of cfg and returns a plugin ready to Run. A policy
// that does not load is an error: the plugin never runs on none.
func New(cfg Config, log *zap.Logger, opts ...Option) (*Plugin, error) {
	p := &Plugin{cfg: cfg, log: log, now: time.Now, pollInterval: defaultPollInterval,
		warmSlots: make(chan struct{}, warmParallelism)}
	for _, o := range opts {
		o(p)
	}
	c, err := cache.New(cfg.Cache, cache.WithClock(p.now))
	if err != nil {
		return nil, err
	}
	p.cache = c
	if cfg.StateDir != "" {
		// Keep as many digests' evidence as verdicts: what the cache
		// could answer from, the store can verify again offline.
		p.store, err = verify.OpenStore(filepath.Join(cfg.StateDir, "evidence"), cfg.Cache.Size)
		if err != nil {
			return nil, err
		}
		p.admissions, err = OpenAdmissions(filepath.Join(cfg.StateDir, "admissions"))
		if err != nil {
			return nil, err
		}
	}
	p.metrics = newMetrics(c.Len)
	p.setBudget(stub.DefaultRequestTimeout)

	if cfg.Runtime != "containerd" && cfg.Docker.Address != "" {
		if p.engine, err = newEngine(cfg.Docker.Address); err != nil {
			return nil, err
		}
	}
	p.docker.Store(cfg.Runtime == "docker")

	p.lastPrint = fingerprint(cfg.PolicyDir)
	pol, err := loadPolicy(cfg.PolicyDir)
	if err != nil {
		return nil, err
	}
	p.swap(pol)

	if cfg.Containerd.Address != "" && (p.images == nil || p.pulls == nil) {
		ci, err := newContainerdImages(cfg.Containerd.Address)
		if err != nil {
			return nil, err
		}
		p.closeImages = ci.Close
		if p.images == nil {
			p.images = ci
		}
		if p.pulls == nil {
			p.pulls = ci
		}
	}
	return p, nil
}

// Close releases the connection to containerd.
func (p *Plugin) Close() error {
	if p.closeImages != nil {
		return p.closeImages()
	}
	return nil
}

// setBudget derives the plugin's own deadline from the runtime's request
// timeout: long enough for one bounded registry fetch, short enough to
// answer before the runtime gives up.
func (p *Plugin) setBudget(requestTimeout time.Duration) {
	b := min(p.cfg.RegistryTimeout+budgetMargin, requestTimeout-budgetMargin)
	if b <= 0 {
		b = requestTimeout / 2
	}
	p.budget.Store(int64(b))
}

// Run serves the runtime until ctx ends: the NRI connection, re-established
// whenever the runtime drops it, the metrics endpoint, the policy watch and
// the cache warming on pulls. It returns an error only when it cannot
// start, or when the runtime launched this process as a pre-installed
// plugin and closed its connection (that one cannot be re-dialled).
func (p *Plugin) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		cancel()
		p.bg.Wait()
	}()
	if p.cfg.MetricsListen != "" {
		ln, err := net.Listen("tcp", p.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("metrics.listen: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		p.goBackground(func() {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				p.log.Error("metrics endpoint stopped", zap.Error(err))
			}
		})
		p.goBackground(func() {
			<-ctx.Done()
			srv.Close()
		})
	}
	if p.cfg.Guard.Socket != "" {
		// Served whatever the runtime: imagegate-runc may be installed
		// before the node's runtime is known, and it refuses every create
		// while nothing answers here.
		ln, err := listenGuard(p.cfg.Guard.Socket)
		if err != nil {
			return fmt.Errorf("guard.socket: %w", err)
		}
		p.goBackground(func() { p.serveGuard(ctx, ln) })
	}
	if p.cfg.Docker.AuthzPlugin != "" && (p.cfg.Runtime == "docker" || p.cfg.Runtime == "auto" && dockerInstalled()) {
		// Up before dockerd, which refuses to start while a configured
		// authorization plugin is missing: under auto the runtime is not
		// known yet, so wherever dockerd is installed. A containerd node
		// gets no socket under /run/docker.
		if err := p.serveAuthz(ctx); err != nil {
			if p.cfg.Runtime == "docker" {
				return err
			}
			p.log.Warn("cannot serve Docker's authorization plugin (needed on Docker nodes only); "+
				"trying again if dockerd registers", zap.Error(err))
		}
	}
	if p.cfg.Runtime == "docker" {
		p.startDocker(ctx)
	}
	p.goBackground(func() { p.watchPolicy(ctx) })
	if p.pulls != nil {
		p.goBackground(func() { p.warmOnPulls(ctx) })
	}
	return p.serveNRI(ctx)
}

func (p *Plugin) goBackground(fn func()) {
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		fn()
	}()
}

// serveNRI keeps the plugin registered: when the runtime closes the
// connection (containerd restarting), it dials again with capped
// exponential backoff, since exiting would leave the node either
// unprotected or unable to create containers until someone intervenes.
func (p *Plugin) serveNRI(ctx context.Context) error {
	launched := os.Getenv(api.PluginSocketEnvVar) != ""
	delay := minBackoff
	for {
		h := &nriHandler{p: p, ctx: ctx}
		err := p.connect(ctx, h)
		if ctx.Err() != nil {
			return nil
		}
		if launched {
			return fmt.Errorf("the runtime closed the connection of pre-installed plugin %s: %w", pluginName, err)
		}
		if h.restart.Load() {
			// A dockerd reload: its new NRI instance waits for us now.
			delay = minBackoff
			continue
		}
		if h.registered.Load() {
			delay = minBackoff
		}
		p.log.Warn("NRI connection ended; reconnecting",
			zap.String("socket", p.cfg.NRI.Socket), zap.Error(err), zap.Duration("retryIn", delay))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// connect runs one NRI connection to its end.
func (p *Plugin) connect(ctx context.Context, h *nriHandler) error {
	opts := []stub.Option{
		stub.WithSocketPath(p.cfg.NRI.Socket),
		// Fail closed: a create the plugin cannot answer in time fails
		// instead of going ahead unchecked, and a slow answer does not
		// cost the registration.
		stub.WithFailurePolicy(&api.FailurePolicy{FailRequest: true, KeepConnected: true}),
		stub.WithLogger(nriLogger{p.log.Sugar().Named("nri")}),
	}
	// The runtime passes these to a pre-installed plugin it launches; the
	// stub reads them itself unless told otherwise.
	if os.Getenv(api.PluginNameEnvVar) == "" {
		opts = append(opts, stub.WithPluginName(pluginName))
	}
	if os.Getenv(api.PluginIdxEnvVar) == "" {
		opts = append(opts, stub.WithPluginIdx(p.cfg.NRI.PluginIndex))
	}
	s, err := stub.New(h, opts...)
	if err != nil {
		return err
	}
	h.stub = s
	ctx, h.cancel = context.WithCancel(ctx)
	defer h.cancel()
	p.nri.Store(h)
	defer p.metrics.nriConnected.Set(0)
	return s.Run(ctx)
}

// nriHandler serves one NRI connection. The stub derives the events it
// subscribes to from the methods below: only what a decision needs, since
// every event is a round trip while the runtime holds its node-wide lock.
type nriHandler struct {
	p    *Plugin
	ctx  context.Context
	stub stub.Stub
	// registered is set once the runtime configured this connection.
	registered atomic.Bool
	// cancel ends the connection; restart says it was ended to register
	// again at once.
	cancel  context.CancelFunc
	restart atomic.Bool
}

// reconnectNRI ends the NRI connection in use so that serveNRI registers
// again: a dockerd reload leaves it attached to a discarded NRI instance
// that is never called again. A plugin the runtime launched cannot dial
// again; dockerd relaunches those itself.
func (p *Plugin) reconnectNRI() {
	if os.Getenv(api.PluginSocketEnvVar) != "" {
		return
	}
	if h := p.nri.Load(); h != nil {
		h.restart.Store(true)
		h.cancel()
	}
}

func (h *nriHandler) Configure(_ context.Context, _, runtime, version string) (api.EventMask, error) {
	if h.p.cfg.Runtime == "auto" {
		h.p.docker.Store(runtime == "docker")
	}
	if h.p.docker.Load() {
		h.p.dockerRegistered(h.ctx)
	}
	timeout := h.stub.RequestTimeout()
	h.p.setBudget(timeout)
	h.registered.Store(true)
	h.p.metrics.nriConnected.Set(1)
	h.p.metrics.nriConnectCount.Inc()
	h.p.log.Info("registered with the runtime",
		zap.String("runtime", runtime), zap.String("runtimeVersion", version), zap.Bool("dockerMode", h.p.docker.Load()),
		zap.String("nriVersion", h.stub.RuntimeNRIVersion()),
		zap.Duration("requestTimeout", timeout), zap.Duration("decisionBudget", time.Duration(h.p.budget.Load())))
	return 0, nil
}

// Synchronize answers at once and audits the running containers in the
// background: the runtime holds its lock until the answer, and the audit
// may need the registry.
func (h *nriHandler) Synchronize(_ context.Context, pods []*api.PodSandbox, ctrs []*api.Container) ([]*api.ContainerUpdate, error) {
	h.p.goBackground(func() { h.p.audit(h.ctx, pods, ctrs) })
	return nil, nil
}

func (h *nriHandler) CreateContainer(ctx context.Context, pod *api.PodSandbox, ctr *api.Container) (*api.ContainerAdjustment, []*api.ContainerUpdate, error) {
	return nil, nil, h.p.admit(ctx, "CreateContainer", pod, ctr)
}

// ValidateContainerAdjustment decides again. With NRI 0.12 a plugin that
// dies lets the next create through if it only handles CreateContainer; a
// validator that dies makes that create fail.
func (h *nriHandler) ValidateContainerAdjustment(ctx context.Context, req *api.ValidateContainerAdjustmentRequest) error {
	return h.p.admit(ctx, "ValidateContainerAdjustment", req.GetPod(), req.GetContainer())
}

// nriLogger sends the stub's log lines to the daemon's JSON log. Its info
// lines repeat on every reconnection attempt and say less than the
// plugin's own, so they go to debug.
type nriLogger struct{ s *zap.SugaredLogger }

func (l nriLogger) Debugf(_ context.Context, format string, args ...any) { l.s.Debugf(format, args...) }
func (l nriLogger) Infof(_ context.Context, format string, args ...any)  { l.s.Debugf(format, args...) }
func (l nriLogger) Warnf(_ context.Context, format string, args ...any)  { l.s.Warnf(format, args...) }
func (l nriLogger) Errorf(_ context.Context, format string, args ...any) { l.s.Errorf(format, args...) }

// dockerInstalled tells a node where dockerd may start (and so wants its
// authorization plugin up first) from one where it cannot.
func dockerInstalled() bool {
	_, err := exec.LookPath("dockerd")
	return err == nil
}
