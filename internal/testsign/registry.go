package testsign

import (
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Registry is an in-process registry on loopback that counts the requests
// it serves and can be made to fail.
type Registry struct {
	// Host is host:port, reachable over plain HTTP.
	Host string
	srv  *http.Server
	ln   net.Listener

	mu       sync.Mutex
	requests map[string]int
	down     bool
	delay    time.Duration
}

// StartRegistry serves a registry on a free loopback port until Close.
func StartRegistry() (*Registry, error) { return StartRegistryOn("127.0.0.1:0") }

// StartRegistryOn serves a registry on addr until Close. It has no
// referrers API: clients use the referrers tag schema.
func StartRegistryOn(addr string) (*Registry, error) {
	return serveRegistry(addr, registry.New(registry.Logger(log.New(io.Discard, "", 0))))
}

func serveRegistry(addr string, h http.Handler) (*Registry, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	r := &Registry{Host: ln.Addr().String(), ln: ln, requests: map[string]int{}}
	r.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.requests[req.Method+" "+req.URL.Path]++
		down, delay := r.down, r.delay
		r.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-req.Context().Done():
				return
			}
		}
		if down {
			http.Error(w, "registry is down", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, req)
	})}
	go r.srv.Serve(ln) //nolint:errcheck // ends with Close
	return r, nil
}

// Close stops the registry: connections are refused from then on.
func (r *Registry) Close() { r.srv.Close() }

// Requests returns how many requests the registry served whose method and
// path contain substr (all of them for "").
func (r *Registry) Requests(substr string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for k, c := range r.requests {
		if strings.Contains(k, substr) {
			n += c
		}
	}
	return n
}

// ResetRequests zeroes the request counts.
func (r *Registry) ResetRequests() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = map[string]int{}
}

// SetDown makes every request fail with 503 (true) or be served (false).
func (r *Registry) SetDown(down bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down = down
}

// SetDelay makes every request wait d before it is answered: a slow
// registry. Zero answers at once.
func (r *Registry) SetDelay(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.delay = d
}

// Ref parses REPO:TAG or REPO@DIGEST in this registry.
func (r *Registry) Ref(repoRef string) (name.Reference, error) {
	return name.ParseReference(r.Host+"/"+repoRef, name.Insecure)
}

// PushRandomImage pushes a small random image as REPO:TAG.
func (r *Registry) PushRandomImage(repoTag string) (name.Digest, error) {
	img, err := random.Image(256, 1)
	if err != nil {
		return name.Digest{}, err
	}
	return r.PushImage(repoTag, img)
}

// PushImage pushes img as REPO:TAG and returns its digest.
func (r *Registry) PushImage(repoTag string, img v1.Image) (name.Digest, error) {
	ref, err := r.Ref(repoTag)
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.Write(ref, img); err != nil {
		return name.Digest{}, err
	}
	h, err := img.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return ref.Context().Digest(h.String()), nil
}

// PushRandomIndex pushes a two-platform image index as REPO:TAG and
// returns the index digest.
func (r *Registry) PushRandomIndex(repoTag string) (name.Digest, error) {
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := random.Image(256, 1)
		if err != nil {
			return name.Digest{}, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	ref, err := r.Ref(repoTag)
	if err != nil {
		return name.Digest{}, err
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		return name.Digest{}, err
	}
	h, err := idx.Digest()
	if err != nil {
		return name.Digest{}, err
	}
	return ref.Context().Digest(h.String()), nil
}
