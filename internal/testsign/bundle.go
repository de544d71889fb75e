package testsign

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/cosign/v2/pkg/cosign/attestation"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"google.golang.org/protobuf/encoding/protojson"
)

// BundleMediaType is what cosign v3 writes: a sigstore bundle v0.3.
const BundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// StartReferrersRegistry serves a registry with the OCI 1.1 referrers API
// on loopback until Close. go-containerregistry's registry lists each
// referrer with its config's media type as artifactType; this one lists
// the manifest's own artifactType, as the distribution spec says.
func StartReferrersRegistry() (*Registry, error) {
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)), registry.WithReferrersSupport(true))
	return serveRegistry("127.0.0.1:0", &artifactTypeFix{next: h, types: map[string]string{}})
}

type artifactTypeFix struct {
	next  http.Handler
	mu    sync.Mutex
	types map[string]string // manifest digest -> its artifactType
}

func (f *artifactTypeFix) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/manifests/") {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var m struct {
			ArtifactType string `json:"artifactType"`
		}
		if json.Unmarshal(body, &m) == nil && m.ArtifactType != "" {
			f.mu.Lock()
			f.types[fmt.Sprintf("sha256:%x", sha256.Sum256(body))] = m.ArtifactType
			f.mu.Unlock()
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	if req.Method != http.MethodGet || !strings.Contains(req.URL.Path, "/referrers/") {
		f.next.ServeHTTP(w, req)
		return
	}
	rec := httptest.NewRecorder()
	f.next.ServeHTTP(rec, req)
	var idx v1.IndexManifest
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &idx) != nil {
		copyResponse(w, rec, rec.Body.Bytes())
		return
	}
	f.mu.Lock()
	for i, d := range idx.Manifests {
		if at, ok := f.types[d.Digest.String()]; ok {
			idx.Manifests[i].ArtifactType = at
		}
	}
	f.mu.Unlock()
	body, err := json.Marshal(idx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	copyResponse(w, rec, body)
}

func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder, body []byte) {
	for k, vs := range rec.Header() {
		if k != "Content-Length" {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(rec.Code)
	w.Write(body) //nolint:errcheck // the client sees a short body
}

// keypair signs bundles with a Key, as `cosign sign --key` (v3) does.
type keypair struct{ k *Key }

func (p keypair) GetHashAlgorithm() protocommon.HashAlgorithm {
	return protocommon.HashAlgorithm_SHA2_256
}

func (p keypair) GetSigningAlgorithm() protocommon.PublicKeyDetails {
	return protocommon.PublicKeyDetails_PKIX_ECDSA_P256_SHA_256
}

func (p keypair) GetHint() []byte {
	der, _ := x509.MarshalPKIXPublicKey(p.k.Public)
	sum := sha256.Sum256(der)
	return []byte(base64.StdEncoding.EncodeToString(sum[:]))
}

func (p keypair) GetKeyAlgorithm() string        { return "ECDSA" }
func (p keypair) GetPublicKey() crypto.PublicKey { return p.k.Public }

func (p keypair) GetPublicKeyPem() (string, error) {
	pem, err := cryptoutils.MarshalPublicKeyToPEM(p.k.Public)
	return string(pem), err
}

func (p keypair) SignData(_ context.Context, data []byte) ([]byte, []byte, error) {
	sig, err := p.k.sv.SignMessage(bytes.NewReader(data))
	sum := sha256.Sum256(data)
	return sig, sum[:], err
}

// statementV1 is an in-toto v1 statement about one digest, with no name,
// the shape of cosign v3's image signature.
func statementV1(claimed name.Digest, predicateType string, predicate any) map[string]any {
	return map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"digest": map[string]string{"sha256": strings.TrimPrefix(claimed.DigestStr(), "sha256:")}}},
		"predicateType": predicateType,
		"predicate":     predicate,
	}
}

// SignImageV3 signs d as `cosign sign --key` (v3, no transparency log)
// does: a DSSE bundle over an in-toto statement with predicate
// https://sigstore.dev/cosign/sign/v1 about d, attached as a referrer.
func (k *Key) SignImageV3(d name.Digest) error { return k.SignImageV3As(d, d) }

// SignImageV3As makes the v3 image signature about claimed but attaches
// it to d: a bundle copied from another image.
func (k *Key) SignImageV3As(d, claimed name.Digest) error {
	const predicateType = "https://sigstore.dev/cosign/sign/v1"
	b, err := k.DSSEBundle(statementV1(claimed, predicateType, map[string]any{}))
	if err != nil {
		return err
	}
	return AttachBundle(d, b, predicateType)
}

// AttestVulnV3 attests a scan of d as `cosign attest --type vuln` (v3)
// does: an in-toto v0.1 statement naming the repository, in a DSSE
// bundle attached as a referrer.
func (k *Key) AttestVulnV3(d name.Digest, report []byte, finished time.Time) error {
	stmt, err := vulnStatement(d, report, finished)
	if err != nil {
		return err
	}
	b, err := k.DSSEBundle(stmt)
	if err != nil {
		return err
	}
	return AttachBundle(d, b, attestation.CosignVulnProvenanceV01)
}

// DSSEBundle signs stmt in a DSSE envelope and returns the bundle JSON.
func (k *Key) DSSEBundle(stmt any) ([]byte, error) {
	payload, err := json.Marshal(stmt)
	if err != nil {
		return nil, err
	}
	pb, err := sign.Bundle(&sign.DSSEData{Data: payload, PayloadType: ctypes.IntotoPayloadType}, keypair{k}, sign.BundleOptions{})
	if err != nil {
		return nil, err
	}
	return protojson.Marshal(pb)
}

// MessageBundle signs data (its sha256 digest) as a message signature
// and returns the bundle JSON.
func (k *Key) MessageBundle(data []byte) ([]byte, error) {
	pb, err := sign.Bundle(&sign.PlainData{Data: data}, keypair{k}, sign.BundleOptions{})
	if err != nil {
		return nil, err
	}
	return protojson.Marshal(pb)
}

// AttachBundle attaches bundle to d as cosign v3 does: a referrer
// manifest with artifactType and one layer of the bundle media type.
func AttachBundle(d name.Digest, bundle []byte, predicateType string) error {
	return AttachReferrer(d, BundleMediaType, BundleMediaType, bundle, map[string]string{
		"dev.sigstore.bundle.content":       "dsse-envelope",
		"dev.sigstore.bundle.predicateType": predicateType,
	})
}

// AttachReferrer attaches an artifact of artifactType, with one layer of
// layerType holding data, to d as an OCI 1.1 referrer (the shape of
// cosign's WriteReferrer), without checking anything. Where the registry
// has no referrers API, go-containerregistry updates the referrers tag.
func AttachReferrer(d name.Digest, artifactType, layerType string, data []byte, annotations map[string]string) error {
	subj, err := remote.Head(d)
	if err != nil {
		return err
	}
	config := static.NewLayer([]byte("{}"), "application/vnd.oci.empty.v1+json")
	layer := static.NewLayer(data, types.MediaType(layerType))
	for _, l := range []v1.Layer{config, layer} {
		if err := remote.WriteLayer(d.Repository, l); err != nil {
			return err
		}
	}
	raw, err := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  artifactType,
		Config:        descriptorOf(config),
		Layers:        []v1.Descriptor{descriptorOf(layer)},
		Subject:       &v1.Descriptor{MediaType: subj.MediaType, Digest: subj.Digest, Size: subj.Size},
		Annotations:   annotations,
	})
	if err != nil {
		return err
	}
	return remote.Put(d.Repository.Digest(fmt.Sprintf("sha256:%x", sha256.Sum256(raw))), rawManifest(raw))
}

func descriptorOf(l v1.Layer) v1.Descriptor {
	mt, _ := l.MediaType()
	h, _ := l.Digest()
	sz, _ := l.Size()
	return v1.Descriptor{MediaType: mt, Digest: h, Size: sz}
}

// rawManifest pushes exactly these bytes as an OCI image manifest.
type rawManifest []byte

func (r rawManifest) RawManifest() ([]byte, error)        { return r, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }

// AttachManyReferrers attaches n bundle referrers to d, each with the
// same unsigned bundle layer, for tests of how many are read.
func AttachManyReferrers(d name.Digest, n int) error {
	_, err := attachMany(d, n)
	return err
}

func attachMany(d name.Digest, n int) (v1.Hash, error) {
	var last v1.Hash
	subj, err := remote.Head(d)
	if err != nil {
		return last, err
	}
	config := static.NewLayer([]byte("{}"), "application/vnd.oci.empty.v1+json")
	layer := static.NewLayer([]byte(`{}`), BundleMediaType)
	for _, l := range []v1.Layer{config, layer} {
		if err := remote.WriteLayer(d.Repository, l); err != nil {
			return last, err
		}
	}
	pusher, err := remote.NewPusher()
	if err != nil {
		return last, err
	}
	for i := range n {
		raw, err := json.Marshal(v1.Manifest{
			SchemaVersion: 2,
			MediaType:     types.OCIManifestSchema1,
			ArtifactType:  BundleMediaType,
			Config:        descriptorOf(config),
			Layers:        []v1.Descriptor{descriptorOf(layer)},
			Subject:       &v1.Descriptor{MediaType: subj.MediaType, Digest: subj.Digest, Size: subj.Size},
			Annotations:   map[string]string{"n": fmt.Sprint(i)},
		})
		if err != nil {
			return last, err
		}
		last = v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", sha256.Sum256(raw))}
		if err := remote.Put(d.Repository.Digest(last.String()), rawManifest(raw), remote.Reuse(pusher)); err != nil {
			return last, err
		}
	}
	return last, nil
}

// WriteReferrersTag writes d's referrers tag (sha256-<hex>) as an index
// listing one bundle referrer n times: what a registry without the
// referrers API serves when someone floods it.
func WriteReferrersTag(d name.Digest, n int) error {
	h, err := attachMany(d, 1)
	if err != nil {
		return err
	}
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for range n {
		idx.Manifests = append(idx.Manifests, v1.Descriptor{
			MediaType:    types.OCIManifestSchema1,
			ArtifactType: BundleMediaType,
			Size:         100,
			Digest:       h,
		})
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		return err
	}
	tag := d.Repository.Tag(strings.Replace(d.DigestStr(), ":", "-", 1))
	return remote.Put(tag, rawIndex(raw))
}

type rawIndex []byte

func (r rawIndex) RawManifest() ([]byte, error)        { return r, nil }
func (r rawIndex) MediaType() (types.MediaType, error) { return types.OCIImageIndex, nil }
