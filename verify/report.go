package verify

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/imagegate/imagegate/policy"
)

// Report formats, as report.Format names them.
const (
	formatTrivy       = "trivy"
	formatGrype       = "grype"
	formatInTotoVulns = "in-toto-vulns"
)

// maxFindings bounds the entries one report may list, duplicates included.
// Real images have hundreds; a report far beyond that is broken or hostile,
// and a scan we cannot read whole must not pass as a shorter clean one.
const maxFindings = 100_000

// finding is one vulnerability a scanner reported.
type finding struct {
	ID       string
	Severity policy.Severity
}

// report is what a scan found, in a format we could read.
type report struct {
	Format   string // formatTrivy, formatGrype or formatInTotoVulns
	Findings []finding
}

// scannerReport holds the fields of both formats, so that one decoding pass
// both tells the format and reads it. Fields match as encoding/json matches
// them, whatever their case: as the scanners' own Go code reads a report
// back, so that "results" cannot pass for a report without Results.
type scannerReport struct {
	SchemaVersion json.RawMessage
	Results       []trivyResult
	Matches       []grypeMatch     `json:"matches"`
	Descriptor    *grypeDescriptor `json:"descriptor"`
}

type trivyResult struct {
	Target          string
	Vulnerabilities []trivyVulnerability
}

type trivyVulnerability struct {
	VulnerabilityID string
	Severity        string
}

type grypeMatch struct {
	Vulnerability grypeVulnerability `json:"vulnerability"`
}

type grypeVulnerability struct {
	ID       string `json:"id"`
	Severity string `json:"severity"`
}

type grypeDescriptor struct {
	Name string `json:"name"`
}

// parseScannerResult reads predicate.scanner.result of a cosign vuln
// attestation (https://cosign.sigstore.dev/attestation/vuln/v1): a Trivy or
// a Grype JSON report. The format is told by the fields only it has; a
// result in any other shape is an error, never a clean scan.
func parseScannerResult(raw json.RawMessage) (report, error) {
	r, err := decodeObject[scannerReport](raw, "scanner result")
	if err != nil {
		return report{}, err
	}
	// Trivy omits Results when it found nothing to scan, and wrote no
	// SchemaVersion before v0.20: either one is enough to tell it.
	trivy := r.SchemaVersion != nil || r.Results != nil
	grype := r.Matches != nil && r.Descriptor != nil
	switch {
	case trivy && grype:
		return report{}, errors.New("scanner result has the fields of both a Trivy report (SchemaVersion, Results) and a Grype report (matches, descriptor)")
	case trivy:
		return readTrivy(r.SchemaVersion, r.Results)
	case grype:
		return readGrype(r.Matches, r.Descriptor)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return report{}, fmt.Errorf("scanner result: %w", err)
	}
	if len(fields) == 0 {
		return report{}, errors.New("scanner result is an empty object, not a Trivy or Grype report")
	}
	return report{}, fmt.Errorf("scanner result is neither a Trivy report (SchemaVersion, Results) nor a Grype report (matches, descriptor); it has %s", fieldNames(fields))
}

func readTrivy(schemaVersion json.RawMessage, results []trivyResult) (report, error) {
	if schemaVersion != nil && string(schemaVersion) != "2" {
		// A new schema may move the findings; reading it as this one
		// could find none.
		return report{}, fmt.Errorf("trivy report: SchemaVersion %.20s, only 2 is read", schemaVersion)
	}
	var found findingSet
	for i, res := range results {
		if res.Target == "" {
			return report{}, fmt.Errorf("trivy report: Results[%d]: no Target", i)
		}
		for j, v := range res.Vulnerabilities {
			if strings.TrimSpace(v.VulnerabilityID) == "" {
				return report{}, fmt.Errorf("trivy report: Results[%d].Vulnerabilities[%d]: no VulnerabilityID", i, j)
			}
			if err := found.add(v.VulnerabilityID, policy.ParseReportSeverity(v.Severity)); err != nil {
				return report{}, fmt.Errorf("trivy report: %w", err)
			}
		}
	}
	return report{Format: formatTrivy, Findings: found.list}, nil
}

func readGrype(matches []grypeMatch, desc *grypeDescriptor) (report, error) {
	if desc.Name != "grype" {
		return report{}, fmt.Errorf("grype report: descriptor.name is %.40q, want \"grype\"", desc.Name)
	}
	var found findingSet
	for i, m := range matches {
		v := m.Vulnerability
		if strings.TrimSpace(v.ID) == "" {
			return report{}, fmt.Errorf("grype report: matches[%d].vulnerability: no id", i)
		}
		if err := found.add(v.ID, policy.ParseReportSeverity(v.Severity)); err != nil {
			return report{}, fmt.Errorf("grype report: %w", err)
		}
	}
	return report{Format: formatGrype, Findings: found.list}, nil
}

type inTotoVulnsPredicate struct {
	Scanner *struct {
		Result []inTotoResult `json:"result"`
	} `json:"scanner"`
}

type inTotoResult struct {
	ID       string           `json:"id"`
	Severity []inTotoSeverity `json:"severity"`
	// The spec's field list nests id and severity in "vulnerability"
	// while its example does not; producers follow either.
	Vulnerability *inTotoVuln `json:"vulnerability"`
}

type inTotoVuln struct {
	ID       string           `json:"id"`
	Severity []inTotoSeverity `json:"severity"`
}

type inTotoSeverity struct {
	Score json.RawMessage `json:"score"`
}

// parseInTotoVulns reads an in-toto vulns predicate
// (https://in-toto.io/attestation/vulns/v0.1): scanner.result lists each
// vulnerability with its severity as scored by one or more methods.
func parseInTotoVulns(predicate json.RawMessage) (report, error) {
	const what = "in-toto vulns predicate"
	p, err := decodeObject[inTotoVulnsPredicate](predicate, what)
	if err != nil {
		return report{}, err
	}
	if p.Scanner == nil {
		return report{}, fmt.Errorf("%s: no scanner", what)
	}
	// Only a list says what the scan found; absent or null says nothing.
	if p.Scanner.Result == nil {
		return report{}, fmt.Errorf("%s: no scanner.result list", what)
	}
	var found findingSet
	for i, r := range p.Scanner.Result {
		path := fmt.Sprintf("scanner.result[%d]", i)
		v := inTotoVuln{ID: r.ID, Severity: r.Severity}
		if r.Vulnerability != nil {
			if v.ID != "" || v.Severity != nil {
				return report{}, fmt.Errorf("%s: %s: both id/severity and vulnerability", what, path)
			}
			v, path = *r.Vulnerability, path+".vulnerability"
		}
		if strings.TrimSpace(v.ID) == "" {
			return report{}, fmt.Errorf("%s: %s: no id", what, path)
		}
		// Methods disagree (a vendor's rating, NVD's score): the highest
		// one counts, as a scanner would rank it.
		sev := policy.SeverityUnknown
		for j, m := range v.Severity {
			s, err := scoreSeverity(m.Score)
			if err != nil {
				return report{}, fmt.Errorf("%s: %s.severity[%d]: %w", what, path, j, err)
			}
			sev = max(sev, s)
		}
		if err := found.add(v.ID, sev); err != nil {
			return report{}, fmt.Errorf("%s: %w", what, err)
		}
	}
	return report{Format: formatInTotoVulns, Findings: found.list}, nil
}

// scoreSeverity maps one in-toto severity score: a CVSS score, as a JSON
// number or a string, or a rating word such as the spec's own example
// "medium".
func scoreSeverity(raw json.RawMessage) (policy.Severity, error) {
	var score string
	switch kind := jsonKind(raw); kind {
	case "missing":
		return policy.SeverityUnknown, nil
	case "a number":
		score = string(raw)
	case "a string":
		if err := json.Unmarshal(raw, &score); err != nil {
			return 0, fmt.Errorf("score: %w", err)
		}
	default:
		return 0, fmt.Errorf("score is %s, want a number or a string", kind)
	}
	cvss, err := strconv.ParseFloat(strings.TrimSpace(score), 64)
	if errors.Is(err, strconv.ErrSyntax) {
		return policy.ParseReportSeverity(score), nil
	}
	switch {
	case !(cvss >= 0 && cvss <= 10): // NaN, ±Inf and out of range alike
		return 0, fmt.Errorf("score %.20q is not a CVSS score (0 to 10)", score)
	case cvss >= 9:
		return policy.SeverityCritical, nil
	case cvss >= 7:
		return policy.SeverityHigh, nil
	case cvss >= 4:
		return policy.SeverityMedium, nil
	case cvss > 0:
		return policy.SeverityLow, nil
	}
	return policy.SeverityUnknown, nil
}

// findingSet collects a report's findings. Scanners list a vulnerability
// once per package it is found in, and may rate it differently per
// package: it counts once, at its highest severity.
type findingSet struct {
	read  int
	index map[string]int
	list  []finding
}

func (s *findingSet) add(id string, sev policy.Severity) error {
	s.read++
	if s.read > maxFindings {
		return fmt.Errorf("more than %d findings", maxFindings)
	}
	if i, ok := s.index[id]; ok {
		s.list[i].Severity = max(s.list[i].Severity, sev)
		return nil
	}
	if s.index == nil {
		s.index = make(map[string]int)
	}
	s.index[id] = len(s.list)
	s.list = append(s.list, finding{ID: id, Severity: sev})
	return nil
}

// decodeObject decodes raw into a T, requiring a JSON object: json would
// decode null into a zero T without complaint.
func decodeObject[T any](raw json.RawMessage, what string) (T, error) {
	var v T
	if kind := jsonKind(raw); kind != "an object" {
		return v, fmt.Errorf("%s is %s, want an object", what, kind)
	}
	err := json.Unmarshal(raw, &v)
	// Go's own words for a type error name Go types; say it in JSON's.
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		return v, fmt.Errorf("%s: %s has %s where %s belongs", what, te.Field, jsonValueName(te.Value), jsonKindOf(te.Type))
	}
	if err != nil {
		return v, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

// jsonValueName names a JSON kind as json.UnmarshalTypeError.Value does.
func jsonValueName(value string) string {
	switch value {
	case "object":
		return "an object"
	case "array":
		return "a list"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	}
	return "a number"
}

// jsonKindOf names the JSON kind that decodes into t, for the types reports
// are decoded into.
func jsonKindOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Slice:
		return "a list"
	case reflect.Struct:
		return "an object"
	case reflect.String:
		return "a string"
	}
	return t.String()
}

// jsonKind names the kind of JSON value raw holds, for errors. Objects and
// lists are not validated here: an object is decoded next, which says where
// it breaks, and a list is refused whether it is valid or not.
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimLeft(raw, " \t\r\n")
	switch {
	case len(raw) == 0:
		return "missing"
	case raw[0] == '{':
		return "an object"
	case raw[0] == '[':
		return "a list"
	case !json.Valid(raw):
		return "not valid JSON"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	}
	return "a number"
}

// fieldNames lists an object's field names for an error, a bounded few.
func fieldNames(fields map[string]json.RawMessage) string {
	const most = 8
	names := slices.Sorted(maps.Keys(fields))
	var b strings.Builder
	for i, name := range names[:min(len(names), most)] {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%.40q", name)
	}
	if len(names) > most {
		fmt.Fprintf(&b, " and %d more", len(names)-most)
	}
	return b.String()
}
