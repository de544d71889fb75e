package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/imagegate/imagegate/policy"
)

// Docker's authorization plugin protocol (moby pkg/authorization): dockerd
// asks before every Engine API request and after it. imagegate decides
// POST /containers/{id}/start, when the container exists and its image ID
// is known, and lets everything else through at once: dockerd waits for
// the answer on every request, imagegate's own included.

// defaultAuthzDir is where dockerd looks for plugin sockets; it is fixed,
// whatever dockerd's --exec-root says.
const defaultAuthzDir = "/run/docker/plugins"

// authzContentType is the plugin protocol's media type.
const authzContentType = "application/vnd.docker.plugins.v1.2+json"

// maxAuthzRequest caps a request read: dockerd adds the API request's body
// (up to 4 MiB, base64) to it.
const maxAuthzRequest = 8 << 20

// startPath matches a container start under any API version prefix.
var startPath = regexp.MustCompile(`^(?:/v[0-9]+(?:\.[0-9]+)*)?/containers/([^/]+)/start$`)

// WithAuthzDir sets where the authorization plugin's socket is served,
// instead of /run/docker/plugins.
func WithAuthzDir(dir string) Option { return func(p *Plugin) { p.authz.dir = dir } }

// authzServer is the authorization plugin's socket.
type authzServer struct {
	dir     string
	mu      sync.Mutex
	serving bool
}

type authzRequest struct {
	RequestMethod string
	RequestURI    string `json:"RequestUri"`
}

type authzResponse struct {
	Allow bool
	Msg   string `json:",omitempty"`
	Err   string `json:",omitempty"`
}

// serveAuthz serves the authorization plugin on its socket until ctx ends.
func (p *Plugin) serveAuthz(ctx context.Context) error {
	p.authz.mu.Lock()
	defer p.authz.mu.Unlock()
	if p.authz.serving {
		return nil
	}
	dir := p.authz.dir
	if dir == "" {
		dir = defaultAuthzDir
	}
	// dockerd creates the directory 0700 too, but imagegate must be up
	// before dockerd: dockerd refuses to start without its plugins.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("docker.authzPlugin: %w", err)
	}
	path := filepath.Join(dir, p.cfg.Docker.AuthzPlugin+".sock")
	// A socket left by a killed imagegate refuses connections: replace it.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("docker.authzPlugin: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("docker.authzPlugin: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Plugin.Activate", func(w http.ResponseWriter, _ *http.Request) {
		writeAuthz(w, map[string][]string{"Implements": {"authz"}})
	})
	mux.HandleFunc("POST /AuthZPlugin.AuthZReq", p.authzReq)
	mux.HandleFunc("POST /AuthZPlugin.AuthZRes", func(w http.ResponseWriter, _ *http.Request) {
		writeAuthz(w, authzResponse{Allow: true})
	})
	// Each connection is served on its own goroutine: while a start is
	// decided, dockerd asks about imagegate's own Engine API calls on
	// other connections.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	p.goBackground(func() {
		<-ctx.Done()
		srv.Close()
	})
	p.goBackground(func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("authorization plugin stopped; dockerd refuses every API request until it is back",
				zap.String("socket", path), zap.Error(err))
		}
	})
	p.authz.serving = true
	p.log.Info("serving Docker's authorization plugin", zap.String("socket", path))
	return nil
}

func writeAuthz(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", authzContentType)
	_ = json.NewEncoder(w).Encode(v)
}

func (p *Plugin) authzReq(w http.ResponseWriter, r *http.Request) {
	var req authzRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxAuthzRequest)).Decode(&req); err != nil {
		writeAuthz(w, authzResponse{Err: "imagegate: unreadable authorization request: " + err.Error()})
		return
	}
	ref, ok := startedContainer(req)
	if !ok {
		writeAuthz(w, authzResponse{Allow: true})
		return
	}
	if err := p.authorizeStart(r.Context(), ref); err != nil {
		writeAuthz(w, authzResponse{Msg: err.Error()})
		return
	}
	writeAuthz(w, authzResponse{Allow: true})
}

// startedContainer returns the container a start request names.
func startedContainer(req authzRequest) (string, bool) {
	if req.RequestMethod != http.MethodPost {
		return "", false
	}
	u, err := url.ParseRequestURI(req.RequestURI)
	if err != nil {
		return "", false
	}
	m := startPath.FindStringSubmatch(u.Path)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// authorizeStart decides whether container ref (an ID or a name) may
// start, from the image ID dockerd created it with, and logs the decision.
func (p *Plugin) authorizeStart(ctx context.Context, ref string) (err error) {
	start := time.Now()
	rec := record{event: "docker start", container: ref, mode: policy.ModeEnforce, outcome: "none",
		counters: p.state.Load().counters[""]}
	defer p.settle(&rec, start, &err)
	if p.engine == nil {
		return rec.deny(fmt.Sprintf("imagegate: cannot establish the image of container %s: "+
			"no Docker Engine API is configured (docker.address)", ref))
	}
	// No NRI deadline here: dockerd waits for the plugin. A start may wait
	// for one registry fetch.
	deadline := time.Now().Add(p.cfg.RegistryTimeout + budgetMargin)
	lctx := newLazyDeadline(ctx, deadline)
	defer lctx.stop()
	c, err := p.engine.container(lctx, ref)
	if err != nil {
		return rec.deny(fmt.Sprintf("imagegate: cannot establish the image of container %s: %v", ref, err))
	}
	rec.container = strings.TrimPrefix(c.Name, "/")
	rec.image = c.Config.Image
	digest, err := p.engine.imageDigest(lctx, c.Image, c.Config.Image)
	if err != nil {
		rec.digestErr, digest = err, ""
	}
	if err := p.judge(ctx, &rec, nil, digest, time.Until(deadline)); err != nil {
		return err
	}
	return p.admitted(&rec, c.ID)
}
