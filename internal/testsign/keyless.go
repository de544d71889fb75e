package testsign

// A private sigstore deployment for tests, in memory: a Fulcio-like CA
// issuing short-lived certificates with an embedded SCT from its own CT
// log, a Rekor-like log whose entries carry a signed entry timestamp, a
// real Merkle inclusion proof and a signed checkpoint, and an RFC 3161
// timestamp authority. Bundles signed here verify offline with
// sigstore-go against TrustedRootJSON with every check on: chain, SCT,
// tlog inclusion and signing time. The approach is that of sigstore-go's
// pkg/testing/ca (Apache-2.0), fixed where its bundles do not verify.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
	"github.com/digitorus/timestamp"
	ct "github.com/google/certificate-transparency-go"
	cttls "github.com/google/certificate-transparency-go/tls"
	ctx509 "github.com/google/certificate-transparency-go/x509"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/cosign/v2/pkg/cosign/attestation"
	ctypes "github.com/sigstore/cosign/v2/pkg/types"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	rekortypes "github.com/sigstore/rekor/pkg/types"
	rekordsse "github.com/sigstore/rekor/pkg/types/dsse"
	_ "github.com/sigstore/rekor/pkg/types/dsse/v0.0.1" // the dsse entry kind Rekor v1 logs
	rekorutil "github.com/sigstore/rekor/pkg/util"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/sign"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/transparency-dev/merkle/rfc6962"
	"google.golang.org/protobuf/encoding/protojson"
)

// Fulcio's certificate extensions naming the OIDC issuer: v1 holds the
// raw string, v2 a DER UTF8String. Fulcio writes both.
var (
	oidIssuerV1 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 1}
	oidIssuerV2 = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 1, 8}
)

// CertLifetime is how long a keyless certificate is valid, as at Fulcio.
const CertLifetime = 10 * time.Minute

// Identity is who a keyless certificate names: the OIDC issuer and the
// subject (a URI such as a CI workflow ref, or an email address).
type Identity struct {
	Issuer  string
	Subject string
}

// KeylessOptions say when and how a keyless bundle is made.
type KeylessOptions struct {
	// At is when the certificate is issued and the signature made.
	At time.Time
	// LogAt is the log entry's integrated time; zero means 2 s after At.
	LogAt time.Time
	// NoTLog leaves the bundle without a transparency-log entry.
	NoTLog bool
	// Timestamp adds an RFC 3161 timestamp of the signature, made at At.
	Timestamp bool
}

// Sigstore is a private sigstore deployment. Its methods are safe for
// concurrent use.
type Sigstore struct {
	start, end time.Time
	ca         *fulcioCA
	ctKey      *ecdsa.PrivateKey
	log        *rekorLog
	tsa        *timestampAuthority
}

type fulcioCA struct {
	root, intermediate *x509.Certificate
	key                *ecdsa.PrivateKey // the intermediate's
}

type timestampAuthority struct {
	root, intermediate, leaf *x509.Certificate
	key                      *ecdsa.PrivateKey // the leaf's
}

// CreateSigstore makes a deployment whose keys and certificates are valid
// from a day before start for ten years.
func CreateSigstore(start time.Time) (*Sigstore, error) {
	s := &Sigstore{start: start.Add(-24 * time.Hour), end: start.AddDate(10, 0, 0)}
	var err error
	if s.ca, err = s.newFulcioCA(); err != nil {
		return nil, err
	}
	if s.ctKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if s.log, err = newRekorLog(); err != nil {
		return nil, err
	}
	if s.tsa, err = s.newTimestampAuthority(); err != nil {
		return nil, err
	}
	return s, nil
}

// WithOtherCA returns a deployment with the same logs and timestamp
// authority but another certificate authority: its certificates chain to
// a root that s's trusted root does not hold.
func (s *Sigstore) WithOtherCA() (*Sigstore, error) {
	ca, err := s.newFulcioCA()
	if err != nil {
		return nil, err
	}
	other := *s
	other.ca = ca
	return &other, nil
}

func (s *Sigstore) newFulcioCA() (*fulcioCA, error) {
	root, rootKey, err := s.selfSigned("imagegate test fulcio root")
	if err != nil {
		return nil, err
	}
	inter, key, err := s.intermediate("imagegate test fulcio intermediate", x509.ExtKeyUsageCodeSigning, root, rootKey)
	if err != nil {
		return nil, err
	}
	return &fulcioCA{root: root, intermediate: inter, key: key}, nil
}

func (s *Sigstore) newTimestampAuthority() (*timestampAuthority, error) {
	root, rootKey, err := s.selfSigned("imagegate test tsa root")
	if err != nil {
		return nil, err
	}
	inter, interKey, err := s.intermediate("imagegate test tsa intermediate", x509.ExtKeyUsageTimeStamping, root, rootKey)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	// RFC 3161 wants the timestamping EKU alone and critical.
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{{1, 3, 6, 1, 5, 5, 7, 3, 8}})
	if err != nil {
		return nil, err
	}
	leaf, err := createCert(&x509.Certificate{
		SerialNumber:    serial(),
		Subject:         pkix.Name{CommonName: "imagegate test tsa"},
		NotBefore:       s.start,
		NotAfter:        s.end,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 37}, Critical: true, Value: eku}},
	}, inter, key.Public(), interKey)
	if err != nil {
		return nil, err
	}
	return &timestampAuthority{root: root, intermediate: inter, leaf: leaf, key: key}, nil
}

func (s *Sigstore) selfSigned(cn string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"imagegate.test"}},
		NotBefore:             s.start,
		NotAfter:              s.end,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	cert, err := createCert(tmpl, tmpl, key.Public(), key)
	return cert, key, err
}

func (s *Sigstore) intermediate(cn string, eku x509.ExtKeyUsage, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	cert, err := createCert(&x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"imagegate.test"}},
		NotBefore:             s.start,
		NotAfter:              s.end,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{eku},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}, parent, key.Public(), parentKey)
	return cert, key, err
}

func createCert(tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n
}

// logID is how CT and Rekor name a log: the SHA-256 of its DER public key.
func logID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:], nil
}

// issueCert issues a Fulcio-style certificate for pub naming id, valid
// for CertLifetime from at, with an SCT embedded the way Fulcio does it:
// the CT log signs a precertificate (the same TBS with the poison
// extension where the SCT list goes), then the SCT list replaces it.
func (s *Sigstore) issueCert(pub crypto.PublicKey, id Identity, at time.Time) ([]byte, error) {
	issuerV2, err := asn1.MarshalWithParams(id.Issuer, "utf8")
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		NotBefore:    at,
		NotAfter:     at.Add(CertLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		ExtraExtensions: []pkix.Extension{
			{Id: oidIssuerV1, Value: []byte(id.Issuer)},
			{Id: oidIssuerV2, Value: issuerV2},
		},
	}
	if strings.Contains(id.Subject, "://") {
		u, err := url.Parse(id.Subject)
		if err != nil {
			return nil, err
		}
		tmpl.URIs = []*url.URL{u}
	} else {
		tmpl.EmailAddresses = []string{id.Subject}
	}
	exts := tmpl.ExtraExtensions
	tmpl.ExtraExtensions = append(exts, pkix.Extension{Id: asn1.ObjectIdentifier(ctx509.OIDExtensionCTPoison), Critical: true, Value: asn1.NullBytes})
	pre, err := x509.CreateCertificate(rand.Reader, tmpl, s.ca.intermediate, pub, s.ca.key)
	if err != nil {
		return nil, err
	}
	sctList, err := s.signSCT(pre, at)
	if err != nil {
		return nil, err
	}
	tmpl.ExtraExtensions = append(exts, pkix.Extension{Id: asn1.ObjectIdentifier(ctx509.OIDExtensionCTSCT), Value: sctList})
	return x509.CreateCertificate(rand.Reader, tmpl, s.ca.intermediate, pub, s.ca.key)
}

// signSCT has the CT log sign precert and returns the value of the SCT
// list extension holding that one SCT.
func (s *Sigstore) signSCT(precert []byte, at time.Time) ([]byte, error) {
	pre, err := ctx509.ParseCertificate(precert)
	if err != nil {
		return nil, err
	}
	issuer, err := ctx509.ParseCertificate(s.ca.intermediate.Raw)
	if err != nil {
		return nil, err
	}
	ts := uint64(at.UnixMilli())
	leaf, err := ct.MerkleTreeLeafFromChain([]*ctx509.Certificate{pre, issuer}, ct.PrecertLogEntryType, ts)
	if err != nil {
		return nil, err
	}
	id, err := logID(s.ctKey.Public())
	if err != nil {
		return nil, err
	}
	sct := ct.SignedCertificateTimestamp{SCTVersion: ct.V1, Timestamp: ts, Extensions: ct.CTExtensions{}}
	copy(sct.LogID.KeyID[:], id)
	input, err := ct.SerializeSCTSignatureInput(sct, ct.LogEntry{Leaf: *leaf})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(input)
	sig, err := ecdsa.SignASN1(rand.Reader, s.ctKey, sum[:])
	if err != nil {
		return nil, err
	}
	sct.Signature = ct.DigitallySigned{
		Algorithm: cttls.SignatureAndHashAlgorithm{Hash: cttls.SHA256, Signature: cttls.ECDSA},
		Signature: sig,
	}
	raw, err := cttls.Marshal(sct)
	if err != nil {
		return nil, err
	}
	list, err := cttls.Marshal(ctx509.SignedCertificateTimestampList{SCTList: []ctx509.SerializedSCT{{Val: raw}}})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(list)
}

// timestamp returns an RFC 3161 timestamp response over sig, dated at.
func (s *Sigstore) timestamp(sig []byte, at time.Time) ([]byte, error) {
	rawReq, err := timestamp.CreateRequest(bytes.NewReader(sig), &timestamp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		return nil, err
	}
	req, err := timestamp.ParseRequest(rawReq)
	if err != nil {
		return nil, err
	}
	ts := timestamp.Timestamp{
		HashAlgorithm:   req.HashAlgorithm,
		HashedMessage:   req.HashedMessage,
		Time:            at,
		Policy:          asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 57264, 2},
		ExtraExtensions: req.Extensions,
	}
	return ts.CreateResponseWithOpts(s.tsa.leaf, s.tsa.key, crypto.SHA256)
}

// TrustedRoot returns the deployment's trusted root as sigstore-go reads
// it, through its trusted_root.json.
func (s *Sigstore) TrustedRoot() (*root.TrustedRoot, error) {
	data, err := s.TrustedRootJSON()
	if err != nil {
		return nil, err
	}
	return root.NewTrustedRootFromJSON(data)
}

// TrustedRootJSON returns the deployment's trusted_root.json: its
// certificate authority, CT log, Rekor log and timestamp authority.
func (s *Sigstore) TrustedRootJSON() ([]byte, error) {
	ctID, err := logID(s.ctKey.Public())
	if err != nil {
		return nil, err
	}
	rekorID, err := logID(s.log.key.Public())
	if err != nil {
		return nil, err
	}
	tr, err := root.NewTrustedRoot(root.TrustedRootMediaType01,
		[]root.CertificateAuthority{&root.FulcioCertificateAuthority{
			Root:                s.ca.root,
			Intermediates:       []*x509.Certificate{s.ca.intermediate},
			ValidityPeriodStart: s.start,
			ValidityPeriodEnd:   s.end,
			URI:                 "https://fulcio.imagegate.test",
		}},
		map[string]*root.TransparencyLog{hex.EncodeToString(ctID): {
			BaseURL:             "https://ctlog.imagegate.test",
			ID:                  ctID,
			ValidityPeriodStart: s.start,
			ValidityPeriodEnd:   s.end,
			HashFunc:            crypto.SHA256,
			PublicKey:           s.ctKey.Public(),
			SignatureHashFunc:   crypto.SHA256,
		}},
		[]root.TimestampingAuthority{&root.SigstoreTimestampingAuthority{
			Root:                s.tsa.root,
			Intermediates:       []*x509.Certificate{s.tsa.intermediate},
			Leaf:                s.tsa.leaf,
			ValidityPeriodStart: s.start,
			ValidityPeriodEnd:   s.end,
			URI:                 "https://tsa.imagegate.test",
		}},
		map[string]*root.TransparencyLog{hex.EncodeToString(rekorID): {
			BaseURL:             "https://" + rekorHost,
			ID:                  rekorID,
			ValidityPeriodStart: s.start,
			ValidityPeriodEnd:   s.end,
			HashFunc:            crypto.SHA256,
			PublicKey:           s.log.key.Public(),
			SignatureHashFunc:   crypto.SHA256,
		}},
	)
	if err != nil {
		return nil, err
	}
	return tr.MarshalJSON()
}

// rekorHost names the log in its checkpoints, as rekor.sigstore.dev does.
const rekorHost = "rekor.imagegate.test"

// rekorLog is an append-only RFC 6962 Merkle tree of Rekor v1 entries.
type rekorLog struct {
	key    *ecdsa.PrivateKey
	treeID int64
	mu     sync.Mutex
	leaves [][]byte // leaf hashes
}

func newRekorLog() (*rekorLog, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	l := &rekorLog{key: key, treeID: 1193050959916656506}
	// Entries of others, so that every inclusion proof has a path.
	for i := range 5 {
		l.leaves = append(l.leaves, rfc6962.DefaultHasher.HashLeaf(fmt.Appendf(nil, "entry %d", i)))
	}
	return l, nil
}

// add logs body (a canonicalized Rekor entry of kind and version) at
// integrated time at and returns the entry as a bundle holds it: with a
// signed entry timestamp, an inclusion proof against the tree that ends
// with it, and that tree's signed checkpoint.
func (l *rekorLog) add(body []byte, kind, version string, at time.Time) (*protorekor.TransparencyLogEntry, error) {
	l.mu.Lock()
	l.leaves = append(l.leaves, rfc6962.DefaultHasher.HashLeaf(body))
	leaves := l.leaves
	l.mu.Unlock()
	index := int64(len(leaves) - 1)
	rootHash := treeHash(leaves)
	proof := inclusionPath(int(index), leaves)

	id, err := logID(l.key.Public())
	if err != nil {
		return nil, err
	}
	signer, err := signature.LoadECDSASignerVerifier(l.key, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	payload, err := json.Marshal(tlog.RekorPayload{
		Body:           base64.StdEncoding.EncodeToString(body),
		IntegratedTime: at.Unix(),
		LogIndex:       index,
		LogID:          hex.EncodeToString(id),
	})
	if err != nil {
		return nil, err
	}
	canonical, err := jsoncanonicalizer.Transform(payload)
	if err != nil {
		return nil, err
	}
	set, err := signer.SignMessage(bytes.NewReader(canonical))
	if err != nil {
		return nil, err
	}
	checkpoint, err := rekorutil.CreateAndSignCheckpoint(context.Background(), rekorHost, l.treeID, uint64(len(leaves)), rootHash, signer)
	if err != nil {
		return nil, err
	}
	return &protorekor.TransparencyLogEntry{
		LogIndex:          index,
		LogId:             &protocommon.LogId{KeyId: id},
		KindVersion:       &protorekor.KindVersion{Kind: kind, Version: version},
		IntegratedTime:    at.Unix(),
		InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: set},
		CanonicalizedBody: body,
		InclusionProof: &protorekor.InclusionProof{
			LogIndex:   index,
			RootHash:   rootHash,
			TreeSize:   int64(len(leaves)),
			Hashes:     proof,
			Checkpoint: &protorekor.Checkpoint{Envelope: string(checkpoint)},
		},
	}, nil
}

// treeHash is RFC 6962's MTH over leaf hashes.
func treeHash(leaves [][]byte) []byte {
	if len(leaves) == 1 {
		return leaves[0]
	}
	k := splitPoint(len(leaves))
	return rfc6962.DefaultHasher.HashChildren(treeHash(leaves[:k]), treeHash(leaves[k:]))
}

// inclusionPath is RFC 6962's PATH(m, D[n]) over leaf hashes.
func inclusionPath(m int, leaves [][]byte) [][]byte {
	if len(leaves) == 1 {
		return [][]byte{}
	}
	k := splitPoint(len(leaves))
	if m < k {
		return append(inclusionPath(m, leaves[:k]), treeHash(leaves[k:]))
	}
	return append(inclusionPath(m-k, leaves[k:]), treeHash(leaves[:k]))
}

// splitPoint is the largest power of two below n (n > 1).
func splitPoint(n int) int {
	k := 1
	for k<<1 < n {
		k <<= 1
	}
	return k
}

// fulcio hands sign.Bundle the certificate for its ephemeral key.
type fulcio struct {
	s  *Sigstore
	id Identity
	at time.Time
}

func (f fulcio) GetCertificate(_ context.Context, kp sign.Keypair, _ *sign.CertificateProviderOptions) ([]byte, error) {
	return f.s.issueCert(kp.GetPublicKey(), f.id, f.at)
}

// rekor logs the bundle sign.Bundle is making as a dsse entry, the way
// Rekor v1 does for `cosign sign` and `cosign attest` (v3).
type rekor struct {
	log *rekorLog
	at  time.Time
}

func (r rekor) GetTransparencyLogEntry(ctx context.Context, certPEM []byte, b *protobundle.Bundle) error {
	env := b.GetDsseEnvelope()
	if env == nil {
		return errors.New("testsign logs only DSSE bundles")
	}
	envJSON, err := json.Marshal(env)
	if err != nil {
		return err
	}
	proposed, err := rekordsse.New().CreateProposedEntry(ctx, "", rekortypes.ArtifactProperties{
		ArtifactBytes:  envJSON,
		PublicKeyBytes: [][]byte{certPEM},
	})
	if err != nil {
		return err
	}
	entry, err := rekortypes.CreateVersionedEntry(proposed)
	if err != nil {
		return err
	}
	body, err := rekortypes.CanonicalizeEntry(ctx, entry)
	if err != nil {
		return err
	}
	tle, err := r.log.add(body, rekordsse.KIND, entry.APIVersion(), r.at)
	if err != nil {
		return err
	}
	b.VerificationMaterial.TlogEntries = append(b.VerificationMaterial.TlogEntries, tle)
	return nil
}

// DSSEBundle signs stmt keylessly as id, as `cosign sign` and `cosign
// attest` (v3) do: an ephemeral key, a certificate for it, a DSSE
// envelope, a log entry, and the bundle v0.3 JSON of all that.
func (s *Sigstore) DSSEBundle(id Identity, stmt any, o KeylessOptions) ([]byte, error) {
	if o.At.IsZero() {
		return nil, errors.New("KeylessOptions.At is required")
	}
	if o.LogAt.IsZero() {
		o.LogAt = o.At.Add(2 * time.Second)
	}
	payload, err := json.Marshal(stmt)
	if err != nil {
		return nil, err
	}
	kp, err := sign.NewEphemeralKeypair(nil)
	if err != nil {
		return nil, err
	}
	opts := sign.BundleOptions{CertificateProvider: fulcio{s: s, id: id, at: o.At}}
	if !o.NoTLog {
		opts.TransparencyLogs = []sign.Transparency{rekor{log: s.log, at: o.LogAt}}
	}
	pb, err := sign.Bundle(&sign.DSSEData{Data: payload, PayloadType: ctypes.IntotoPayloadType}, kp, opts)
	if err != nil {
		return nil, err
	}
	if o.Timestamp {
		sigs := pb.GetDsseEnvelope().GetSignatures()
		if len(sigs) != 1 {
			return nil, errors.New("a DSSE envelope without its one signature")
		}
		tsr, err := s.timestamp(sigs[0].Sig, o.At)
		if err != nil {
			return nil, err
		}
		pb.VerificationMaterial.TimestampVerificationData = &protobundle.TimestampVerificationData{
			Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: tsr}},
		}
	}
	return protojson.Marshal(pb)
}

// SignImageV3 signs d keylessly as id, as `cosign sign` (v3) does, and
// attaches the bundle as a referrer.
func (s *Sigstore) SignImageV3(d name.Digest, id Identity, o KeylessOptions) error {
	const predicateType = "https://sigstore.dev/cosign/sign/v1"
	b, err := s.DSSEBundle(id, statementV1(d, predicateType, map[string]any{}), o)
	if err != nil {
		return err
	}
	return AttachBundle(d, b, predicateType)
}

// AttestVulnV3 attests a scan of d keylessly as id, as `cosign attest
// --type vuln` (v3) does, and attaches the bundle as a referrer.
func (s *Sigstore) AttestVulnV3(d name.Digest, id Identity, report []byte, finished time.Time, o KeylessOptions) error {
	stmt, err := vulnStatement(d, report, finished)
	if err != nil {
		return err
	}
	b, err := s.DSSEBundle(id, stmt, o)
	if err != nil {
		return err
	}
	return AttachBundle(d, b, attestation.CosignVulnProvenanceV01)
}
