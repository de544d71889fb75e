package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/nri/pkg/api"
	"github.com/google/go-containerregistry/pkg/name"
	"go.uber.org/zap"
)

// Docker Engine nodes (DESIGN.md "Docker Engine and Swarm nodes"). dockerd's
// NRI sends CreateContainer without an image, so the image comes from the
// Engine API or from the worker's task store, never from the labels: they
// merge in the image's own labels, chosen by the image's author.

// labelTaskID marks the container of a swarm task.
const labelTaskID = "com.docker.swarm.task.id"

const (
	// maxAPIBody caps what is read of one Engine API answer: a task or a
	// container inspect is a few KiB.
	maxAPIBody = 4 << 20
	// driverContainerd is the driver type dockerd reports when images live
	// in containerd's image store (/info DriverStatus).
	driverContainerd = "io.containerd.snapshotter.v1"
)

// engine is a client of the few read-only Engine API endpoints imagegate
// needs: not worth the Docker SDK's weight. Every call passes through
// dockerd's authorization plugins, imagegate's own included, which answers
// such requests at once.
type engine struct {
	socket string
	client *http.Client
	// info is what /info said last; nil until it answered.
	info atomic.Pointer[engineInfo]
	// refreshing is set while refreshEngineInfo retries, so that
	// reconnections do not pile up retry loops.
	refreshing atomic.Bool
}

// engineInfo is what imagegate needs from /info.
type engineInfo struct {
	rootDir string
	// containerdStore: a container's .Image is the manifest or index
	// digest. Otherwise (the legacy store) it is the config's ID, which no
	// signature names.
	containerdStore bool
}

func newEngine(address string) (*engine, error) {
	path, ok := strings.CutPrefix(address, "unix://")
	if !ok && strings.HasPrefix(address, "/") {
		path, ok = address, true
	}
	if !ok || path == "" {
		return nil, fmt.Errorf("docker.address %q: imagegate reaches the Docker Engine API only on its unix socket (unix:///run/docker.sock)", address)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	return &engine{socket: path, client: &http.Client{Transport: tr,
		// dockerd never redirects; an answer that does is not dockerd's.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}, nil
}

// apiError is an Engine API answer other than 200.
type apiError struct {
	status int
	msg    string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("the Docker Engine API answered %d: %s", e.status, e.msg)
}

func isStatus(err error, status int) bool {
	var ae *apiError
	return errors.As(err, &ae) && ae.status == status
}

// do sends GET path and returns the answer of a 200; anything else is an
// *apiError.
func (e *engine) do(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("the Docker Engine API at %s: %w", e.socket, errors.Unwrap(err))
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var m struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &m) != nil || m.Message == "" {
		m.Message = strings.TrimSpace(string(b))
	}
	return nil, &apiError{status: resp.StatusCode, msg: m.Message}
}

func (e *engine) get(ctx context.Context, path string, v any) error {
	resp, err := e.do(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAPIBody)).Decode(v); err != nil {
		return fmt.Errorf("the Docker Engine API's answer to %s: %w", path, err)
	}
	return nil
}

// loadInfo asks /info for dockerd's data root and image store.
func (e *engine) loadInfo(ctx context.Context) (*engineInfo, error) {
	var v struct {
		DockerRootDir string
		DriverStatus  [][2]string
	}
	if err := e.get(ctx, "/info", &v); err != nil {
		return nil, err
	}
	in := &engineInfo{rootDir: v.DockerRootDir}
	for _, kv := range v.DriverStatus {
		if kv[0] == "driver-type" && kv[1] == driverContainerd {
			in.containerdStore = true
		}
	}
	e.info.Store(in)
	return in, nil
}

// engineInfo returns what /info said, asking it when it has not answered yet.
func (e *engine) engineInfo(ctx context.Context) (*engineInfo, error) {
	if in := e.info.Load(); in != nil {
		return in, nil
	}
	in, err := e.loadInfo(ctx)
	if err != nil {
		return nil, fmt.Errorf("cannot learn dockerd's data root and image store (/info): %w", err)
	}
	return in, nil
}

// taskImage returns the image of swarm task id as the swarm pinned it
// (repo:tag@sha256:…): from the managers' store through the Engine API, or
// on a worker, which the API does not answer, from its task store.
func (e *engine) taskImage(ctx context.Context, id string) (string, error) {
	var t struct {
		Spec struct {
			ContainerSpec *struct {
				Image string
			}
		}
	}
	err := e.get(ctx, "/tasks/"+url.PathEscape(id), &t)
	switch {
	case isStatus(err, http.StatusServiceUnavailable):
		// "This node is not a swarm manager."
		in, err := e.engineInfo(ctx)
		if err != nil {
			return "", err
		}
		return workerTaskImage(ctx, in.rootDir, id)
	case isStatus(err, http.StatusNotFound):
		return "", fmt.Errorf("the swarm managers know no task %s", id)
	case err != nil:
		return "", err
	case t.Spec.ContainerSpec == nil || t.Spec.ContainerSpec.Image == "":
		return "", fmt.Errorf("swarm task %s names no container image", id)
	}
	return t.Spec.ContainerSpec.Image, nil
}

// dockerContainer is what a container inspect says about its image.
type dockerContainer struct {
	ID   string `json:"Id"`
	Name string
	// Image is the image's ID: with the containerd image store the
	// manifest or index digest the container runs.
	Image  string
	Config struct {
		// Image is the name the user typed.
		Image string
	}
}

func (e *engine) container(ctx context.Context, ref string) (*dockerContainer, error) {
	var c dockerContainer
	if err := e.get(ctx, "/containers/"+url.PathEscape(ref)+"/json", &c); err != nil {
		return nil, err
	}
	return &c, nil
}

// imageDigest returns the registry digest of image ID id, which a container
// created as typed runs: the ID itself with the containerd image store;
// with the legacy store, the digest the image was pulled at from typed's
// repository. Never what the tag points to now.
func (e *engine) imageDigest(ctx context.Context, id, typed string) (string, error) {
	in, err := e.engineInfo(ctx)
	if err != nil {
		return "", err
	}
	if in.containerdStore {
		return id, checkDigest(id)
	}
	ref, err := name.ParseReference(typed)
	if err != nil {
		return "", err
	}
	var img struct{ RepoDigests []string }
	if err := e.get(ctx, "/images/"+url.PathEscape(id)+"/json", &img); err != nil {
		return "", err
	}
	repo := ref.Context().Name()
	for _, rd := range img.RepoDigests {
		r, d, ok := strings.Cut(rd, "@")
		if !ok {
			continue
		}
		if rr, err := name.NewRepository(r); err == nil && rr.Name() == repo {
			return d, checkDigest(d)
		}
	}
	return "", fmt.Errorf("image %s holds no registry digest for %s (built or loaded on this node, or pulled under another name)", id, repo)
}

// watchReloads reports every dockerd reload until ctx ends, subscribing
// again when the stream ends (dockerd restarting).
func (e *engine) watchReloads(ctx context.Context, log *zap.Logger, reloaded func()) {
	delay := minBackoff
	for {
		subscribed, err := e.reloads(ctx, reloaded)
		if ctx.Err() != nil {
			return
		}
		if subscribed {
			delay = minBackoff
		}
		log.Warn("the Docker Engine event stream ended; subscribing again",
			zap.String("socket", e.socket), zap.Error(err), zap.Duration("retryIn", delay))
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// reloads follows the stream of daemon reload events; subscribed says
// whether the stream was open at all.
func (e *engine) reloads(ctx context.Context, reloaded func()) (subscribed bool, err error) {
	q := url.Values{"filters": {`{"type":["daemon"],"event":["reload"]}`}}
	resp, err := e.do(ctx, "/events?"+q.Encode())
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type   string
			Action string
		}
		if err := dec.Decode(&ev); err != nil {
			return true, err
		}
		if ev.Type == "daemon" && ev.Action == "reload" {
			reloaded()
		}
	}
}

// dockerRegistered readies Docker mode when dockerd registers imagegate.
func (p *Plugin) dockerRegistered(ctx context.Context) {
	p.startDocker(ctx)
	// dockerd may not answer its API yet while it registers plugins.
	p.refreshEngineInfo(ctx)
	if p.cfg.Docker.AuthzPlugin != "" {
		if err := p.serveAuthz(ctx); err != nil {
			p.log.Error("cannot serve Docker's authorization plugin: containers started through the Engine API "+
				"(docker run, compose) are refused by the guard", zap.Error(err))
		}
	}
}

// startDocker starts what Docker mode needs besides the authorization
// plugin, once: following dockerd reloads, which otherwise silently
// disconnect imagegate from dockerd's new NRI instance.
func (p *Plugin) startDocker(ctx context.Context) {
	if p.engine == nil {
		return
	}
	p.dockerOnce.Do(func() {
		p.goBackground(func() {
			p.engine.watchReloads(ctx, p.log, func() {
				p.log.Info("dockerd reloaded its config; registering with its new NRI instance")
				p.refreshEngineInfo(ctx)
				p.reconnectNRI()
			})
		})
	})
}

// refreshEngineInfo asks /info again in the background: dockerd may not
// answer its API yet while it registers NRI plugins at start.
func (p *Plugin) refreshEngineInfo(ctx context.Context) {
	if p.engine == nil || !p.engine.refreshing.CompareAndSwap(false, true) {
		return
	}
	p.goBackground(func() {
		defer p.engine.refreshing.Store(false)
		for delay := minBackoff; ; delay = min(2*delay, maxBackoff) {
			if _, err := p.engine.loadInfo(ctx); err == nil || ctx.Err() != nil {
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	})
}

// decideDocker establishes the image of a container dockerd is about to
// create and decides it, within budget.
func (p *Plugin) decideDocker(ctx context.Context, rec *record, ctr *api.Container, budget time.Duration) error {
	rec.container = strings.TrimPrefix(rec.container, "/")
	taskID := ctr.GetLabels()[labelTaskID]
	if taskID == "" {
		rec.counters = p.state.Load().counters[""]
		// dockerd has not registered a container created through the
		// Engine API yet (inspect answers 404), so nothing here says what it
		// runs. The authorization plugin decides it at start, and the guard
		// refuses to create any container that was not admitted there.
		if p.cfg.Docker.AuthzPlugin == "" {
			return rec.deny(fmt.Sprintf("imagegate: cannot establish the image of container %s: "+
				"Docker names no image at create outside a swarm service, and the authorization plugin "+
				"that decides such containers at start is disabled (docker.authzPlugin)", rec.container))
		}
		rec.verdict, rec.outcome = allow, "deferred to the authorization plugin at start"
		return nil
	}
	deadline := time.Now().Add(budget)
	image, digest, err := p.taskImage(ctx, taskID, deadline)
	if err != nil {
		rec.counters = p.state.Load().counters[""]
		return rec.deny(fmt.Sprintf("imagegate: cannot establish the image of swarm task %s (container %s): %v",
			taskID, rec.container, err))
	}
	rec.image = image
	if digest == "" {
		rec.digestErr = fmt.Errorf("swarm task %s runs %s, which the swarm did not pin to a digest "+
			"(docker service update --image by tag with the docker CLI 29.8, --no-resolve-image, or a registry the manager could not reach: name the image by digest)", taskID, image)
	} else if err := checkDigest(digest); err != nil {
		rec.digestErr, digest = fmt.Errorf("swarm task %s: %w", taskID, err), ""
	}
	if err := p.judge(ctx, rec, nil, digest, time.Until(deadline)); err != nil {
		return err
	}
	return p.admitted(rec, ctr.GetId())
}

// taskImage returns the pinned image of swarm task id, split into the
// reference and its digest ("" when not pinned), asking before deadline.
func (p *Plugin) taskImage(ctx context.Context, id string, deadline time.Time) (image, digest string, err error) {
	if p.engine == nil {
		return "", "", errors.New("no Docker Engine API is configured (docker.address)")
	}
	lctx := newLazyDeadline(ctx, deadline)
	defer lctx.stop()
	pinned, err := p.engine.taskImage(lctx, id)
	if err != nil {
		return "", "", err
	}
	image, digest, _ = strings.Cut(pinned, "@")
	return image, digest, nil
}

// admitted records an allowed decision for the guard, which imagegate-runc
// asks before it creates the container. A decision the guard will not find
// is denied now, with the reason, rather than by the guard without it.
func (p *Plugin) admitted(rec *record, id string) error {
	if p.admissions == nil {
		return nil
	}
	if err := p.admissions.Admit(id, rec.image, rec.digest); err != nil {
		return rec.deny(fmt.Sprintf("imagegate: cannot record the admission of container %s for the guard: %v", rec.container, err))
	}
	return nil
}
