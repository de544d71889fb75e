package verify

import (
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/imagegate/imagegate/policy"
)

var fuzzDigest = v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("ab", 32)}

// FuzzCheckSimpleSigning feeds signature payloads as a registry might
// serve them: only a cosign payload naming the digest may pass.
func FuzzCheckSimpleSigning(f *testing.F) {
	f.Add([]byte(`{"critical":{"identity":{"docker-reference":"r/x"},"image":{"docker-manifest-digest":"sha256:` + fuzzDigest.Hex + `"},"type":"cosign container image signature"},"optional":null}`))
	f.Add([]byte(`{"critical":{"image":{"docker-manifest-digest":"sha256:00"},"type":"cosign container image signature"}}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		if checkSimpleSigning(payload, fuzzDigest) == nil && !strings.Contains(string(payload), fuzzDigest.Hex) {
			t.Fatalf("accepted a payload that does not name the digest: %q", payload)
		}
	})
}

// FuzzReadStatement feeds the in-toto statements inside DSSE envelopes
// (after the signature, which a fuzzer cannot forge): reading one must
// never panic, and a scan whose report failed to read must not look clean.
func FuzzReadStatement(f *testing.F) {
	f.Add([]byte(`{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://cosign.sigstore.dev/attestation/vuln/v1","subject":[{"name":"r","digest":{"sha256":"` + fuzzDigest.Hex + `"}}],"predicate":{"scanner":{"result":{"SchemaVersion":2,"Results":[]}},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}}`))
	f.Add([]byte(`{"predicateType":"https://in-toto.io/attestation/vulns/v0.1","subject":[{"digest":{"sha256":"` + fuzzDigest.Hex + `"}}],"predicate":{"scanner":{"result":[{"id":"CVE-1","severity":[{"method":"CVSSv3","score":"9.8"}]}]},"metadata":{"scanFinishedOn":"2026-11-20T10:00:00Z"}}}`))
	f.Add([]byte(`{"predicateType":"https://cosign.sigstore.dev/attestation/vuln/v1","predicate":{"scanner":{"result":null}}}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		var st statement
		if json.Unmarshal(payload, &st) != nil {
			return
		}
		aboutDigest(st, fuzzDigest)
		sc := readScan("scanner", st)
		if sc.err != nil && len(sc.report.Findings) > 0 {
			t.Fatalf("unreadable scan kept findings: %+v", sc)
		}
		rule := &policy.Scan{Attestors: []*policy.Signer{{Name: "scanner"}}, MaxSeverity: policy.SeverityHigh, MaxAge: 1 << 62}
		d := decideScan(rule, []scan{sc}, nil, sc.finished)
		if sc.err != nil && len(d.reasons) == 0 {
			t.Fatalf("an unreadable scan passed: %v", sc.err)
		}
	})
}

// FuzzNewSubject feeds image references and digests as a runtime or a
// workload's annotations might carry them.
func FuzzNewSubject(f *testing.F) {
	f.Add("nginx", "sha256:"+fuzzDigest.Hex)
	f.Add("127.0.0.1:5000/shop/api:1.4", "sha256:"+fuzzDigest.Hex)
	f.Add("registry.example.com/a/b@sha256:"+fuzzDigest.Hex, "sha256:00")
	f.Add("UPPER.example.com/x", "md5:1")
	f.Fuzz(func(t *testing.T, image, digest string) {
		subj, err := NewSubject(image, digest)
		if err != nil {
			return
		}
		if policy.RepositoryName(subj.Repository) == "" {
			t.Fatalf("%q parsed to an empty repository", image)
		}
	})
}
