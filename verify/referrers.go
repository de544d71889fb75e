package verify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/errgroup"
)

// Bounds on the OCI 1.1 referrers of one image. Anyone who may push to a
// repository may attach referrers to its images, so their number and size
// are an attacker's choice.
const (
	// maxReferrers bounds the referrers listed for one digest: past it
	// the whole list is refused, not a part of it picked.
	maxReferrers = 256
	// maxReferrerManifest bounds the referrers list and each referrer's
	// manifest: a few hundred descriptors fit in well under this.
	maxReferrerManifest = 4 << 20
	// maxBundleSize bounds a sigstore bundle (attestation bundles carry
	// whole scan reports).
	maxBundleSize = maxAttestationSize
)

// Where a bundle was found: through the registry's referrers API, or
// through the referrers tag schema (tag sha256-<hex>) of registries
// without it.
const (
	mechanismBundleReferrer    = "bundle-referrer"
	mechanismBundleReferrerTag = "bundle-referrer-tag"
)

// ociEmptyType is the media type of the empty config that artifacts such
// as bundles carry; some registries list it as a referrer's artifactType
// instead of the manifest's own.
const ociEmptyType = "application/vnd.oci.empty.v1+json"

// isBundleType reports whether mt names a sigstore bundle, v0.1 to v0.3.
func isBundleType(mt string) bool {
	switch mt {
	case "application/vnd.dev.sigstore.bundle.v0.3+json",
		"application/vnd.dev.sigstore.bundle+json;version=0.1",
		"application/vnd.dev.sigstore.bundle+json;version=0.2",
		"application/vnd.dev.sigstore.bundle+json;version=0.3":
		return true
	}
	return false
}

// bundleCandidate is a sigstore bundle found for the subject, not yet
// verified.
type bundleCandidate struct {
	mechanism string
	data      []byte
	// err is set when the bundle could not be read; it shows up in the
	// reasons so that refused evidence is not silently dropped.
	err error
}

var errReferrerTooLarge = errors.New("larger than the referrers read")

// referrersTransport caps what a referrers list or a manifest may cost
// (go-containerregistry reads up to 100 MiB of either), and records
// whether the registry answered the referrers API, which the evidence's
// mechanism reports.
type referrersTransport struct {
	next http.RoundTripper
	api  atomic.Bool
}

func (t *referrersTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	isList := strings.Contains(req.URL.Path, "/referrers/")
	if isList && resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") == string(types.OCIImageIndex) {
		t.api.Store(true)
	}
	if isList || strings.Contains(req.URL.Path, "/manifests/") {
		resp.Body = &cappedBody{ReadCloser: resp.Body, left: maxReferrerManifest}
	}
	return resp, nil
}

// cappedBody fails a read past its limit rather than truncating, so a
// cut-off list is an error and never a shorter list.
type cappedBody struct {
	io.ReadCloser
	left int64
}

func (c *cappedBody) Read(p []byte) (int, error) {
	if c.left < 0 {
		return 0, fmt.Errorf("%w (%d bytes)", errReferrerTooLarge, maxReferrerManifest)
	}
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.ReadCloser.Read(p)
	c.left -= int64(n)
	if c.left < 0 {
		return 0, fmt.Errorf("%w (%d bytes)", errReferrerTooLarge, maxReferrerManifest)
	}
	return n, err
}

// fetchReferrers reads the sigstore bundles attached to digest as OCI 1.1
// referrers: the referrers API, else the referrers tag schema. Like
// fetchTagLayers, what the registry served wrong is kept as a candidate
// with its error, and only a failure to reach the registry is an error.
func (v *Verifier) fetchReferrers(repo name.Repository, digest v1.Hash, opts []remote.Option) ([]bundleCandidate, error) {
	rt := &referrersTransport{next: v.transport}
	opts = append(opts[:len(opts):len(opts)], remote.WithTransport(rt))
	subject := repo.Digest(digest.String())
	idx, err := remote.Referrers(subject, opts...)
	if err != nil {
		return refused(fmt.Errorf("referrers of %s: %w", digest, err))
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return refused(fmt.Errorf("referrers of %s are not an image index: %w", digest, err))
	}
	mechanism := mechanismBundleReferrerTag
	if rt.api.Load() {
		mechanism = mechanismBundleReferrer
	}
	if n := len(im.Manifests); n > maxReferrers {
		return []bundleCandidate{{mechanism: mechanism,
			err: fmt.Errorf("%s lists %d referrers, more than the %d read", digest, n, maxReferrers)}}, nil
	}
	// Every referrer is fetched, whatever another's fate, so that all the
	// failures are reported together.
	found := make([][]bundleCandidate, len(im.Manifests))
	errs := make([]error, len(im.Manifests))
	var g errgroup.Group
	g.SetLimit(fetchParallelism)
	for i, desc := range im.Manifests {
		if !mightBeBundle(desc) {
			continue
		}
		g.Go(func() error {
			found[i], errs[i] = fetchBundles(repo, desc, mechanism, opts)
			return nil
		})
	}
	_ = g.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return slices.Concat(found...), nil
}

// refused turns what the registry served wrong into refused evidence, and
// passes on a failure to reach it.
func refused(err error) ([]bundleCandidate, error) {
	if isUnusable(err) || errors.Is(err, errReferrerTooLarge) {
		return []bundleCandidate{{err: err}}, nil
	}
	return nil, err
}

// mightBeBundle tells, from a referrers list entry, whether its manifest
// may hold a bundle. The list's artifactType is only a hint (some
// registries report the config's media type there), so anything that
// could hide a bundle is fetched and the manifest's own artifactType
// decides; only what clearly names another artifact is skipped.
func mightBeBundle(desc v1.Descriptor) bool {
	if desc.MediaType != types.OCIManifestSchema1 {
		return false
	}
	return desc.ArtifactType == "" || desc.ArtifactType == ociEmptyType || isBundleType(desc.ArtifactType)
}

// fetchBundles reads one referrer manifest and, when it is a sigstore
// bundle, its bundle layers.
func fetchBundles(repo name.Repository, desc v1.Descriptor, mechanism string, opts []remote.Option) ([]bundleCandidate, error) {
	ref := repo.Digest(desc.Digest.String())
	got, err := remote.Get(ref, opts...)
	if err != nil {
		cands, err := refused(fmt.Errorf("referrer %s: %w", desc.Digest, err))
		for i := range cands {
			cands[i].mechanism = mechanism
		}
		return cands, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(got.Manifest))
	if err != nil {
		return []bundleCandidate{{mechanism: mechanism, err: fmt.Errorf("referrer %s is not an image manifest: %w", desc.Digest, err)}}, nil
	}
	if !isBundleType(m.ArtifactType) {
		return nil, nil
	}
	var cands []bundleCandidate
	for _, l := range m.Layers {
		if !isBundleType(string(l.MediaType)) {
			continue
		}
		c := bundleCandidate{mechanism: mechanism}
		if l.Size > maxBundleSize || l.Size < 0 {
			c.err = fmt.Errorf("bundle %s is %d bytes, more than the %d read", l.Digest, l.Size, maxBundleSize)
			cands = append(cands, c)
			continue
		}
		c.data, err = readLayer(repo.Digest(l.Digest.String()), l.Size, opts)
		if err != nil {
			if !isUnusable(err) {
				return nil, err
			}
			c.err = fmt.Errorf("bundle %s: %w", l.Digest, err)
		}
		cands = append(cands, c)
	}
	return cands, nil
}
