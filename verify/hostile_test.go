package verify_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

// hostile is a registry written to hurt: each test decides what its
// manifests and blobs say. The image under test has a .sig tag and
// nothing else.
type hostile struct {
	manifest func(w http.ResponseWriter, r *http.Request)
	blob     func(w http.ResponseWriter, r *http.Request)
	blobs    int
}

func (h *hostile) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/v2/":
		w.WriteHeader(http.StatusOK)
	case strings.Contains(r.URL.Path, "/manifests/sha256-") && strings.HasSuffix(r.URL.Path, ".sig"):
		h.manifest(w, r)
	case strings.Contains(r.URL.Path, "/blobs/") && h.blob != nil:
		h.blobs++
		h.blob(w, r)
	default:
		http.Error(w, `{"errors":[{"code":"MANIFEST_UNKNOWN"}]}`, http.StatusNotFound)
	}
}

// sigManifest is a cosign .sig manifest listing layers.
func sigManifest(layers ...v1.Descriptor) []byte {
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Size: 2, Digest: hashOf([]byte("{}"))},
		Layers:        layers,
	}
	b, _ := json.Marshal(m)
	return b
}

func hashOf(b []byte) v1.Hash {
	sum := sha256.Sum256(b)
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sum)}
}

func sigLayer(payload []byte, size int64) v1.Descriptor {
	return v1.Descriptor{
		MediaType:   "application/vnd.dev.cosign.simplesigning.v1+json",
		Size:        size,
		Digest:      hashOf(payload),
		Annotations: map[string]string{"dev.cosignproject.cosign/signature": "c2ln"},
	}
}

func serveManifest(body []byte) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
		w.Header().Set("Docker-Content-Digest", hashOf(body).String())
		w.Write(body)
	}
}

func TestHostileRegistryNeverAllows(t *testing.T) {
	payload := []byte(`{"critical":{"identity":{"docker-reference":"x"},"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"}}`)
	many := make([]v1.Descriptor, 5000)
	for i := range many {
		many[i] = sigLayer([]byte(fmt.Sprint(i)), 10)
	}
	tests := []struct {
		name     string
		reg      *hostile
		timeout  time.Duration
		reason   string // a substring of the one reason, for a verdict
		err      string // a substring of the error, when it is one
		maxAlloc uint64 // bytes the verification may allocate, 0 for no check
		noBlobs  bool
	}{
		{
			name:    "thousands of signature layers are refused unread",
			reg:     &hostile{manifest: serveManifest(sigManifest(many...)), blob: func(w http.ResponseWriter, _ *http.Request) {}},
			reason:  "lists 5000 layers, more than the 256 read",
			noBlobs: true,
		},
		{
			name: "a huge manifest is cut off",
			reg: &hostile{manifest: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", string(types.OCIManifestSchema1))
				w.Write([]byte(`{"schemaVersion":2,"layers":[`))
				pad := []byte(strings.Repeat(" ", 1<<20))
				for range 64 {
					if _, err := w.Write(pad); err != nil {
						return
					}
				}
			}},
			reason:   "more than 4194304 bytes",
			maxAlloc: 32 << 20,
		},
		{
			name: "a manifest served as HTML with a forged signature does not count",
			reg: &hostile{manifest: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				w.Write(sigManifest(sigLayer(payload, int64(len(payload)))))
			}, blob: func(w http.ResponseWriter, _ *http.Request) { w.Write(payload) }},
			reason: "1 signature(s) by keys the rule does not trust",
		},
		{
			name:   "a manifest that is not JSON does not count",
			reg:    &hostile{manifest: serveManifest([]byte("<html>hello</html>"))},
			reason: "is not an image manifest",
		},
		{
			name:    "a layer declared too large is not fetched",
			reg:     &hostile{manifest: serveManifest(sigManifest(sigLayer(payload, 1<<40))), blob: func(w http.ResponseWriter, _ *http.Request) {}},
			reason:  "is 1099511627776 bytes, more than the 1048576 read",
			noBlobs: true,
		},
		{
			name: "a blob larger than its manifest says is cut off",
			reg: &hostile{manifest: serveManifest(sigManifest(sigLayer(payload, int64(len(payload))))), blob: func(w http.ResponseWriter, _ *http.Request) {
				w.Write(payload)
				pad := []byte(strings.Repeat("x", 1<<20))
				for range 64 {
					if _, err := w.Write(pad); err != nil {
						return
					}
				}
			}},
			reason:   "larger than",
			maxAlloc: 32 << 20,
		},
		{
			name: "a blob that does not match its digest does not count",
			reg: &hostile{manifest: serveManifest(sigManifest(sigLayer(payload, int64(len(payload))))), blob: func(w http.ResponseWriter, _ *http.Request) {
				w.Write([]byte(strings.ToUpper(string(payload))))
			}},
			reason: "error verifying sha256 checksum",
		},
		{
			name: "a registry that drips bytes times out",
			reg: &hostile{manifest: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "100000")
				w.WriteHeader(http.StatusOK)
				for {
					if _, err := w.Write([]byte(" ")); err != nil {
						return
					}
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
						return
					case <-time.After(20 * time.Millisecond):
					}
				}
			}},
			timeout: 300 * time.Millisecond,
			err:     "context deadline exceeded",
		},
		{
			name: "a redirect loop fails",
			reg: &hostile{manifest: func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, r.URL.Path, http.StatusFound)
			}},
			err: "redirects",
		},
		{
			name: "a truncated body fails",
			reg: &hostile{manifest: func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", "1000")
				w.WriteHeader(http.StatusOK)
				w.Write([]byte(`{"schemaVersion":2`))
			}},
			err: "EOF",
		},
		{
			name: "a server error fails",
			reg: &hostile{manifest: func(w http.ResponseWriter, _ *http.Request) {
				http.Error(w, "boom", http.StatusInternalServerError)
			}},
			err: "500",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.reg)
			t.Cleanup(srv.Close)
			u, _ := url.Parse(srv.URL)
			ci := testsign.NewKey(t, "ci")
			signer := &policy.Signer{Name: "ci", Key: ci.Public}
			pol := &policy.Policy{
				Signers:    map[string]*policy.Signer{"ci": signer},
				Registries: map[string]*policy.Registry{u.Host: {Host: u.Host, Insecure: true}},
			}
			rule := &policy.Rule{Name: "prod", Mode: policy.ModeEnforce,
				Signatures: &policy.Signatures{Threshold: 1, Signers: []*policy.Signer{signer}}}
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			subj, err := verify.NewSubject(u.Host+"/shop/api", hashOf([]byte("image")).String())
			if err != nil {
				t.Fatal(err)
			}
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			vd, err := verify.New(pol, verify.WithTimeout(timeout)).Verify(context.Background(), subj, rule)
			runtime.ReadMemStats(&after)
			if tt.maxAlloc > 0 && after.TotalAlloc-before.TotalAlloc > tt.maxAlloc {
				t.Errorf("allocated %d MiB, want at most %d MiB", (after.TotalAlloc-before.TotalAlloc)>>20, tt.maxAlloc>>20)
			}
			if tt.noBlobs && tt.reg.blobs > 0 {
				t.Errorf("fetched %d blobs, want none", tt.reg.blobs)
			}
			if tt.err != "" {
				if !errors.Is(err, verify.ErrUnreachable) || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("err = %v, want ErrUnreachable mentioning %q (verdict %+v)", err, tt.err, vd)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v, want a verdict", err)
			}
			if vd.Allowed || len(vd.Reasons) != 1 || !strings.Contains(vd.Reasons[0], tt.reason) {
				t.Errorf("allowed %v reasons %q, want a deny mentioning %q", vd.Allowed, vd.Reasons, tt.reason)
			}
		})
	}
}
