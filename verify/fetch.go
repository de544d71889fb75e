package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/docker/cli/cli/config"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/cosign/v2/pkg/oci/static"
	"golang.org/x/sync/errgroup"

	"github.com/imagegate/imagegate/policy"
)

// Bounds on what one image's evidence may cost. A registry is not trusted
// to be small or honest: past these the evidence is refused, not read.
const (
	// maxLayers bounds the signatures or attestations read from one tag.
	maxLayers = 256
	// maxSignatureSize bounds a simple-signing payload.
	maxSignatureSize = 1 << 20
	// maxAttestationSize bounds a DSSE envelope (scan reports can be large).
	maxAttestationSize = 32 << 20
	// maxManifestSize bounds a manifest, index or token response: cosign's
	// are a few KiB, and go-containerregistry alone would read 100 MiB.
	maxManifestSize = 4 << 20
	// fetchParallelism bounds concurrent blob fetches for one image.
	fetchParallelism = 8
)

// mechanism names where a piece of evidence was found.
const mechanismCosignTag = "cosign-v2-tag"

// sigCandidate is a signature found for the subject, not yet verified.
type sigCandidate struct {
	mechanism string
	payload   []byte
	b64sig    string
	// err is set when the candidate could not be read; it still shows up
	// in the reasons so a broken signature is not silently dropped.
	err error
	// accepted is set once a signer of the rule counted it.
	accepted bool
}

// attCandidate is a DSSE envelope found for the subject, not yet verified.
type attCandidate struct {
	mechanism string
	envelope  []byte
	err       error
	// accepted is set once an attestor of the rule signed it.
	accepted bool
}

// evidence is everything found for one digest in one pass.
type evidence struct {
	sigs []sigCandidate
	atts []attCandidate
	// bundles hold signatures and attestations alike: which one a bundle
	// is shows only once it is verified.
	bundles []bundleCandidate
}

// remoteOptions returns how to reach repo's registry under the policy:
// plain HTTP only where the policy says insecure, credentials only from the
// auth file the policy names.
func (v *Verifier) remoteOptions(ctx context.Context, repo name.Repository) (name.Repository, []remote.Option, error) {
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithTransport(v.transport),
		// go-containerregistry's retries sleep for seconds without
		// watching the context, far past a create's budget. A failed
		// fetch is not cached, so the runtime's next attempt retries.
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
	}
	reg := v.pol.Registries[registryHost(repo)]
	if reg == nil {
		return repo, append(opts, remote.WithAuth(authn.Anonymous)), nil
	}
	if reg.Insecure {
		r, err := name.NewRepository(repo.String(), name.Insecure)
		if err != nil {
			return repo, nil, err
		}
		repo = r
	}
	if reg.Auth == "" {
		return repo, append(opts, remote.WithAuth(authn.Anonymous)), nil
	}
	auth, err := authFromFile(reg.Auth, repo.RegistryStr())
	if err != nil {
		return repo, nil, err
	}
	return repo, append(opts, remote.WithAuth(auth)), nil
}

// authFromFile reads the credentials for host from a docker config.json.
func authFromFile(path, host string) (authn.Authenticator, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("registry auth: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("registry auth %s: %w", path, err)
	}
	key := host
	if host == name.DefaultRegistry {
		key = authn.DefaultAuthKey
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return nil, fmt.Errorf("registry auth %s: %w", path, err)
	}
	return authn.FromConfig(authn.AuthConfig{
		Username:      ac.Username,
		Password:      ac.Password,
		Auth:          ac.Auth,
		IdentityToken: ac.IdentityToken,
		RegistryToken: ac.RegistryToken,
	}), nil
}

// fetch collects the signatures (when wantSigs) and attestations (when
// wantAtts) of subj in one pass, the tags and the referrers fetched side
// by side.
func (v *Verifier) fetch(ctx context.Context, subj Subject, wantSigs, wantAtts bool) (evidence, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	repo, opts, err := v.remoteOptions(ctx, subj.Repository)
	if err != nil {
		return evidence{}, err
	}
	var (
		ev                        evidence
		sigErr, attErr, bundleErr error
		wg                        sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		ev.bundles, bundleErr = v.fetchReferrers(repo, subj.Digest, opts)
	}()
	if wantSigs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var layers []layerBlob
			layers, sigErr = fetchTagLayers(repo, subj.Digest, "sig", maxSignatureSize, opts)
			for _, l := range layers {
				ev.sigs = append(ev.sigs, sigCandidate{
					mechanism: mechanismCosignTag,
					payload:   l.data,
					b64sig:    l.desc.Annotations[static.SignatureAnnotationKey],
					err:       l.err,
				})
			}
		}()
	}
	if wantAtts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var layers []layerBlob
			layers, attErr = fetchTagLayers(repo, subj.Digest, "att", maxAttestationSize, opts)
			for _, l := range layers {
				ev.atts = append(ev.atts, attCandidate{mechanism: mechanismCosignTag, envelope: l.data, err: l.err})
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(sigErr, attErr, bundleErr); err != nil {
		return evidence{}, unreachable(repo, err)
	}
	return ev, nil
}

// layerBlob is one layer of a cosign tag: its descriptor and content, or
// why the content could not be used.
type layerBlob struct {
	desc v1.Descriptor
	data []byte
	err  error
}

// fetchTagLayers reads the cosign v2 tag sha256-<hex>.<suffix> of digest
// and every layer it lists. A missing tag is no evidence, not an error; a
// layer that is too large or does not match its digest is kept with its
// error, so the verdict can say what was wrong with it.
func fetchTagLayers(repo name.Repository, digest v1.Hash, suffix string, maxSize int64, opts []remote.Option) ([]layerBlob, error) {
	tag := repo.Tag(fmt.Sprintf("%s-%s.%s", digest.Algorithm, digest.Hex, suffix))
	desc, err := remote.Get(tag, opts...)
	if isNotFound(err) {
		return nil, nil
	}
	if errors.Is(err, errTooLarge) {
		return []layerBlob{{err: fmt.Errorf("%s: %w", tag.TagStr(), err)}}, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return []layerBlob{{err: fmt.Errorf("%s is not an image manifest: %w", tag.TagStr(), err)}}, nil
	}
	layers := m.Layers
	if len(layers) > maxLayers {
		return []layerBlob{{err: fmt.Errorf("%s lists %d layers, more than the %d read", tag.TagStr(), len(layers), maxLayers)}}, nil
	}
	blobs := make([]layerBlob, len(layers))
	errs := make([]error, len(layers))
	// Every layer is fetched, whatever another's fate: each error is
	// judged on its own below.
	var g errgroup.Group
	g.SetLimit(fetchParallelism)
	for i, l := range layers {
		blobs[i].desc = l
		if l.Size > maxSize || l.Size < 0 {
			blobs[i].err = fmt.Errorf("layer %s is %d bytes, more than the %d read", l.Digest, l.Size, maxSize)
			continue
		}
		g.Go(func() error {
			blobs[i].data, errs[i] = readLayer(repo.Digest(l.Digest.String()), l.Size, opts)
			return nil
		})
	}
	_ = g.Wait()
	for i, err := range errs {
		if err == nil {
			continue
		}
		if isUnusable(err) {
			// The registry answered, with something unusable: that is
			// evidence that does not count, not an outage.
			blobs[i].err = err
			continue
		}
		return nil, err
	}
	return blobs, nil
}

var errTooLarge = errors.New("response larger than imagegate reads")

func readLayer(ref name.Digest, size int64, opts []remote.Option) ([]byte, error) {
	l, err := remote.Layer(ref, opts...)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	// The verifying reader checks the digest at EOF; the limit keeps a
	// lying Content-Length from costing more than the manifest declared.
	data, err := io.ReadAll(io.LimitReader(rc, size+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > size {
		return nil, fmt.Errorf("blob %s is larger than its manifest says: %w", ref.DigestStr(), errTooLarge)
	}
	return data, nil
}

// isUnusable tells a blob the registry served wrong (too large, not
// matching its digest, refused with a client error) from a failure to
// reach the registry, which is retried rather than judged.
func isUnusable(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 400 && te.StatusCode < 500 && te.StatusCode != http.StatusTooManyRequests
	}
	// go-containerregistry's verifying reader reports a digest or size
	// mismatch only as text.
	return errors.Is(err, errTooLarge) || strings.Contains(err.Error(), "error verifying")
}

// unreachable words a failed fetch from repo's registry; a refusal says
// where credentials come from, never what they are.
func unreachable(repo name.Repository, err error) error {
	var te *transport.Error
	if errors.As(err, &te) && (te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("%w: %s refused access (check its auth file in the policy's registries): %w", ErrUnreachable, repo.RegistryStr(), err)
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, repo.RegistryStr(), err)
}

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// registryHost names repo's registry as the policy keys registries.
func registryHost(repo name.Repository) string {
	host, _, _ := strings.Cut(policy.RepositoryName(repo), "/")
	return host
}

// boundedTransport caps every response body, so that no registry answer,
// whatever its headers claim, costs more memory than imagegate would use
// of it.
type boundedTransport struct{ rt http.RoundTripper }

// maxRedirects bounds a redirect chain. go-containerregistry installs its
// own redirect check, which drops net/http's limit of 10: a registry
// redirecting to itself would otherwise hold a create until its deadline.
const maxRedirects = 10

func (b boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	hops := 0
	for r := req.Response; r != nil && r.Request != nil; r = r.Request.Response {
		if hops++; hops > maxRedirects {
			return nil, fmt.Errorf("stopped after %d redirects", maxRedirects)
		}
	}
	resp, err := b.rt.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	limit := int64(maxManifestSize)
	if strings.Contains(req.URL.Path, "/blobs/") {
		limit = maxAttestationSize
	}
	resp.Body = &boundedBody{ReadCloser: resp.Body, left: limit, limit: limit}
	return resp, nil
}

type boundedBody struct {
	io.ReadCloser
	left, limit int64
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		// One byte past the limit tells a body of exactly limit bytes
		// from a larger one.
		var one [1]byte
		n, err := b.ReadCloser.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("more than %d bytes: %w", b.limit, errTooLarge)
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
