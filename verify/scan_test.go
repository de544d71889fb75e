package verify_test

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
)

// attest is one scan attestation put on the image before it is verified,
// in the order listed (the order cosign appends them in).
type attest struct {
	by     string
	report string // a file of testdata/reports, or raw JSON when it starts with "{"
	age    time.Duration
	// about another image: the attestation is copied onto this one.
	copied bool
}

func TestScanGate(t *testing.T) {
	f := newFixture(t)
	other := f.reg.Push(t, "shop/other:1")
	tests := []struct {
		name     string
		attests  []attest
		max      policy.Severity
		ignore   []policy.Ignore
		allowed  bool
		reason   string
		blocking []string
		maxSev   string
	}{
		{
			name:    "clean scan allows",
			attests: []attest{{by: "scanner", report: "trivy-clean.json", age: time.Hour}},
			max:     policy.SeverityHigh, allowed: true, blocking: []string{}, maxSev: "none",
		},
		{
			name:     "critical CVE denies naming it",
			attests:  []attest{{by: "scanner", report: "trivy-critical.json", age: time.Hour}},
			max:      policy.SeverityHigh,
			reason:   "scan: 1 vulnerability above high in the scan by scanner: CVE-2024-3094 (critical)",
			blocking: []string{"CVE-2024-3094"}, maxSev: "critical",
		},
		{
			name:     "ignored CVE allows",
			attests:  []attest{{by: "scanner", report: "trivy-critical.json", age: time.Hour}},
			max:      policy.SeverityHigh,
			ignore:   []policy.Ignore{{CVE: "CVE-2024-3094", Reason: "not reachable"}},
			allowed:  true,
			blocking: []string{}, maxSev: "critical",
		},
		{
			name:     "expired ignore denies again",
			attests:  []attest{{by: "scanner", report: "trivy-critical.json", age: time.Hour}},
			max:      policy.SeverityHigh,
			ignore:   []policy.Ignore{{CVE: "CVE-2024-3094", Until: now.Add(-24 * time.Hour)}},
			reason:   "scan: 1 vulnerability above high in the scan by scanner: CVE-2024-3094 (critical)",
			blocking: []string{"CVE-2024-3094"}, maxSev: "critical",
		},
		{
			name:     "grype high under maxSeverity medium denies",
			attests:  []attest{{by: "scanner", report: "grype-high.json", age: time.Hour}},
			max:      policy.SeverityMedium,
			reason:   "scan: 1 vulnerability above medium in the scan by scanner: CVE-2024-28757 (high)",
			blocking: []string{"CVE-2024-28757"}, maxSev: "high",
		},
		{
			name:     "negligible findings block under maxSeverity none",
			attests:  []attest{{by: "scanner", report: "grype-negligible.json", age: time.Hour}},
			max:      policy.SeverityNone,
			reason:   "scan: 3 vulnerabilities above none in the scan by scanner: CVE-2011-3374 (unknown), TEMP-0841856-B18BAF (unknown), CVE-2005-2541 (unknown)",
			blocking: []string{"CVE-2011-3374", "TEMP-0841856-B18BAF", "CVE-2005-2541"}, maxSev: "unknown",
		},
		{
			name:     "stale scan denies",
			attests:  []attest{{by: "scanner", report: "trivy-clean.json", age: 30 * 24 * time.Hour}},
			max:      policy.SeverityHigh,
			reason:   "scan: newest scan by scanner finished 2026-10-21T12:00:00Z, 30d old, rule allows 7d",
			blocking: []string{}, maxSev: "none",
		},
		{
			name:    "scan attested by a key that is not an attestor denies",
			attests: []attest{{by: "ci", report: "trivy-clean.json", age: time.Hour}},
			max:     policy.SeverityHigh,
			reason:  "scan: no scan attestation from scanner; did not count: an attestation signed by a key that is not an attestor of the rule",
		},
		{
			name:    "scan copied from another image denies",
			attests: []attest{{by: "scanner", report: "trivy-clean.json", age: time.Hour, copied: true}},
			max:     policy.SeverityHigh,
			reason:  "scan: no scan attestation from scanner; did not count: a scan by scanner about another image",
		},
		{
			name: "older critical scan after a newer clean one allows",
			attests: []attest{
				{by: "scanner", report: "trivy-clean.json", age: time.Hour},
				{by: "scanner", report: "trivy-critical.json", age: 48 * time.Hour},
			},
			max: policy.SeverityHigh, allowed: true, blocking: []string{}, maxSev: "none",
		},
		{
			name: "newer critical scan after an older clean one denies",
			attests: []attest{
				{by: "scanner", report: "trivy-critical.json", age: time.Hour},
				{by: "scanner", report: "trivy-clean.json", age: 48 * time.Hour},
			},
			max:      policy.SeverityHigh,
			reason:   "scan: 1 vulnerability above high in the scan by scanner: CVE-2024-3094 (critical)",
			blocking: []string{"CVE-2024-3094"}, maxSev: "critical",
		},
		{
			name:   "no attestation denies",
			max:    policy.SeverityHigh,
			reason: "scan: no scan attestation from scanner",
		},
		{
			name:     "report in an unknown format denies",
			attests:  []attest{{by: "scanner", report: "unknown-format.json", age: time.Hour}},
			max:      policy.SeverityHigh,
			reason:   "scan: newest scan by scanner (2026-11-20T11:00:00Z) cannot be read: scanner result is neither a Trivy report (SchemaVersion, Results) nor a Grype report (matches, descriptor); it has \"$schema\", \"runs\", \"version\"",
			blocking: []string{}, maxSev: "none",
		},
		{
			name:     "empty report denies",
			attests:  []attest{{by: "scanner", report: "{}", age: time.Hour}},
			max:      policy.SeverityHigh,
			reason:   "scan: newest scan by scanner (2026-11-20T11:00:00Z) cannot be read: scanner result is an empty object, not a Trivy or Grype report",
			blocking: []string{}, maxSev: "none",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := f.reg.Push(t, "shop/scan:"+string(rune('a'+i)))
			for _, a := range tt.attests {
				about := d
				if a.copied {
					about = other
				}
				rep := []byte(a.report)
				if a.report[0] != '{' {
					rep = report(t, a.report)
				}
				testsign.AttestVulnAs(t, f.keys[a.by], d, about, rep, now.Add(-a.age))
			}
			vd := f.verify(t, d, f.scanRule(tt.max, tt.ignore...))
			checkVerdict(t, vd.Allowed, vd.Reasons, tt.allowed, tt.reason)
			if tt.blocking == nil {
				if vd.Scan != nil {
					t.Errorf("scan = %+v, want none", vd.Scan)
				}
				return
			}
			if vd.Scan == nil {
				t.Fatal("no scan status")
			}
			if !slices.Equal(vd.Scan.Blocking, tt.blocking) || vd.Scan.MaxSeverity.String() != tt.maxSev || vd.Scan.Attestor != "scanner" {
				t.Errorf("scan = %+v, want blocking %q max %s", vd.Scan, tt.blocking, tt.maxSev)
			}
		})
	}
}

func checkVerdict(t *testing.T, allowed bool, reasons []string, wantAllowed bool, wantReason string) {
	t.Helper()
	if allowed != wantAllowed {
		t.Errorf("allowed = %v, want %v", allowed, wantAllowed)
	}
	switch {
	case wantReason == "" && len(reasons) != 0:
		t.Errorf("reasons = %q, want none", reasons)
	case wantReason != "" && (len(reasons) != 1 || reasons[0] != wantReason):
		t.Errorf("reasons = %q\nwant [%q]", reasons, wantReason)
	}
}

func TestScanWithoutFinishTimeIsInfinitelyOld(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "shop/api:1")
	testsign.AttestVuln(t, f.keys["scanner"], d, report(t, "trivy-clean.json"), time.Time{})
	vd := f.verify(t, d, f.scanRule(policy.SeverityHigh))
	checkVerdict(t, vd.Allowed, vd.Reasons, false, "scan: newest scan by scanner has no finish time, rule allows 7d")
}

func TestCleanScanExpiresWhenItWouldGoStale(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "shop/api:1")
	finished := now.Add(-time.Hour)
	testsign.AttestVuln(t, f.keys["scanner"], d, report(t, "trivy-critical.json"), finished)
	until := now.Add(time.Hour)
	vd := f.verify(t, d, f.scanRule(policy.SeverityHigh, policy.Ignore{CVE: "CVE-2024-3094", Until: until}))
	if !vd.Allowed || !vd.Expires.Equal(until) {
		t.Errorf("allowed %v expires %v, want allowed until the ignore runs out at %v", vd.Allowed, vd.Expires, until)
	}
	vd = f.verify(t, d, f.scanRule(policy.SeverityCritical))
	if want := finished.Add(7 * 24 * time.Hour); !vd.Allowed || !vd.Expires.Equal(want) {
		t.Errorf("allowed %v expires %v, want allowed until %v", vd.Allowed, vd.Expires, want)
	}
}

func TestInTotoVulnsPredicateIsRead(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "shop/api:1")
	var pred map[string]any
	if err := json.Unmarshal(report(t, "intoto-vulns.json"), &pred); err != nil {
		t.Fatal(err)
	}
	pred["metadata"] = map[string]any{"scanFinishedOn": now.Add(-time.Hour).Format(time.RFC3339)}
	stmt := inTotoStatement(d, "https://in-toto.io/attestation/vulns/v0.1", pred)
	if err := f.keys["scanner"].Attest(d, "https://in-toto.io/attestation/vulns/v0.1", stmt); err != nil {
		t.Fatal(err)
	}
	vd := f.verify(t, d, f.scanRule(policy.SeverityHigh))
	if vd.Allowed || vd.Scan == nil || !slices.Contains(vd.Scan.Blocking, "CVE-2024-3094") {
		t.Errorf("in-toto vulns scan with CVE-2024-3094 (CVSS 10): allowed %v scan %+v reasons %q", vd.Allowed, vd.Scan, vd.Reasons)
	}
}

func TestAttestationsOfOtherTypesAreIgnored(t *testing.T) {
	f := newFixture(t)
	d := f.reg.Push(t, "shop/api:1")
	stmt := inTotoStatement(d, "https://slsa.dev/provenance/v1", map[string]any{"buildDefinition": map[string]any{}})
	if err := f.keys["scanner"].Attest(d, "https://slsa.dev/provenance/v1", stmt); err != nil {
		t.Fatal(err)
	}
	vd := f.verify(t, d, f.scanRule(policy.SeverityHigh))
	checkVerdict(t, vd.Allowed, vd.Reasons, false, "scan: no scan attestation from scanner")
}

func inTotoStatement(d name.Digest, predicateType string, pred any) map[string]any {
	return map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"predicateType": predicateType,
		"subject":       []any{map[string]any{"name": d.Repository.String(), "digest": map[string]string{"sha256": d.DigestStr()[7:]}}},
		"predicate":     pred,
	}
}
