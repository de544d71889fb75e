package verify

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/imagegate/imagegate/policy"
)

func reportFixture(t *testing.T, name string) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "reports", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseScannerResult(t *testing.T) {
	tests := []struct {
		name    string
		fixture string // file in testdata/reports, or else
		raw     string
		format  string
		want    []finding
	}{{
		name:    "trivy report lists a CVE found in two packages once",
		fixture: "trivy-critical.json",
		format:  formatTrivy,
		want: []finding{
			{"CVE-2023-42363", policy.SeverityMedium},
			{"CVE-2024-2511", policy.SeverityLow},
			{"CVE-2024-28757", policy.SeverityHigh},
			{"CVE-2024-28182", policy.SeverityUnknown},
			{"CVE-2024-3094", policy.SeverityCritical},
			{"CVE-2023-45288", policy.SeverityHigh},
		},
	}, {
		name:    "trivy report reads OS and language package results",
		fixture: "trivy-high.json",
		format:  formatTrivy,
		want: []finding{
			{"CVE-2011-3374", policy.SeverityLow},
			{"CVE-2024-2961", policy.SeverityHigh},
			{"CVE-2024-0553", policy.SeverityMedium},
			{"CVE-2023-31484", policy.SeverityHigh},
			{"CVE-2023-45288", policy.SeverityHigh},
			{"CVE-2024-24785", policy.SeverityMedium},
		},
	}, {
		name:    "trivy results without vulnerabilities are a clean scan",
		fixture: "trivy-clean.json",
		format:  formatTrivy,
	}, {
		name:   "trivy report without results is a clean scan",
		raw:    `{"SchemaVersion":2,"ArtifactName":"registry.example.com/shop/static:1","ArtifactType":"container_image","Metadata":{}}`,
		format: formatTrivy,
	}, {
		name: "the same CVE rated differently counts once at its highest",
		raw: `{"SchemaVersion":2,"Results":[
			{"Target":"img (debian 12.5)","Vulnerabilities":[{"VulnerabilityID":"CVE-2023-45288","Severity":"LOW"}]},
			{"Target":"usr/bin/a","Vulnerabilities":[{"VulnerabilityID":"CVE-2023-45288","Severity":"HIGH"}]},
			{"Target":"usr/bin/b","Vulnerabilities":[{"VulnerabilityID":"CVE-2023-45288","Severity":"MEDIUM"}]}]}`,
		format: formatTrivy,
		want:   []finding{{"CVE-2023-45288", policy.SeverityHigh}},
	}, {
		// As the scanners' own Go code would read the report back: a
		// lowercase "results" must not pass for a report without results.
		name:   "field names match whatever their case",
		raw:    `{"schemaVersion":2,"results":[{"target":"img","vulnerabilities":[{"vulnerabilityID":"CVE-2024-3094","severity":"critical"}]}]}`,
		format: formatTrivy,
		want:   []finding{{"CVE-2024-3094", policy.SeverityCritical}},
	}, {
		name:    "grype report lists a CVE found in two packages once",
		fixture: "grype-high.json",
		format:  formatGrype,
		want: []finding{
			{"CVE-2023-42363", policy.SeverityMedium},
			{"CVE-2024-0727", policy.SeverityMedium},
			{"CVE-2024-28757", policy.SeverityHigh},
		},
	}, {
		name:    "grype negligible ranks as unknown",
		fixture: "grype-negligible.json",
		format:  formatGrype,
		want: []finding{
			{"CVE-2011-3374", policy.SeverityUnknown},
			{"TEMP-0841856-B18BAF", policy.SeverityUnknown},
			{"CVE-2005-2541", policy.SeverityUnknown},
		},
	}, {
		name:    "grype report without matches is a clean scan",
		fixture: "grype-clean.json",
		format:  formatGrype,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := json.RawMessage(tt.raw)
			if tt.fixture != "" {
				raw = reportFixture(t, tt.fixture)
			}
			got, err := parseScannerResult(raw)
			if err != nil {
				t.Fatalf("parseScannerResult: %v", err)
			}
			if got.Format != tt.format {
				t.Errorf("Format = %q, want %q", got.Format, tt.format)
			}
			if !slices.Equal(got.Findings, tt.want) {
				t.Errorf("Findings = %v\nwant %v", got.Findings, tt.want)
			}
		})
	}
}

func TestParseScannerResultRejects(t *testing.T) {
	tests := []struct {
		name    string
		fixture string
		raw     string
		want    string
	}{
		{name: "nothing", raw: ``, want: "scanner result is missing, want an object"},
		{name: "null", raw: `null`, want: "scanner result is null, want an object"},
		{name: "empty object", raw: ` {} `, want: "scanner result is an empty object, not a Trivy or Grype report"},
		{name: "string", raw: `"{\"SchemaVersion\":2}"`, want: "scanner result is a string, want an object"},
		{name: "list as Trivy wrote before v0.20", raw: `[{"Target":"img","Vulnerabilities":[]}]`, want: "scanner result is a list, want an object"},
		{name: "number", raw: `0`, want: "scanner result is a number, want an object"},
		{name: "not JSON", raw: `nul`, want: "scanner result is not valid JSON, want an object"},
		{name: "truncated", raw: `{"SchemaVersion":2,"Results":[`, want: "scanner result: unexpected end of JSON input"},
		{
			name:    "SARIF",
			fixture: "unknown-format.json",
			want:    `scanner result is neither a Trivy report (SchemaVersion, Results) nor a Grype report (matches, descriptor); it has "$schema", "runs", "version"`,
		},
		{
			name: "many unknown fields",
			raw:  `{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10}`,
			want: `scanner result is neither a Trivy report (SchemaVersion, Results) nor a Grype report (matches, descriptor); it has "a", "b", "c", "d", "e", "f", "g", "h" and 2 more`,
		},
		{
			name: "both shapes",
			raw:  `{"SchemaVersion":2,"Results":[],"matches":[],"descriptor":{"name":"grype"}}`,
			want: "scanner result has the fields of both a Trivy report (SchemaVersion, Results) and a Grype report (matches, descriptor)",
		},
		{name: "trivy results an object", raw: `{"Results":{"Target":"img"}}`, want: "scanner result: Results has an object where a list belongs"},
		{
			name: "trivy vulnerability a string",
			raw:  `{"Results":[{"Target":"img","Vulnerabilities":["CVE-2024-3094"]}]}`,
			want: "scanner result: Results.Vulnerabilities has a string where an object belongs",
		},
		{
			name: "trivy vulnerability id a number",
			raw:  `{"Results":[{"Target":"img","Vulnerabilities":[{"VulnerabilityID":3094,"Severity":"CRITICAL"}]}]}`,
			want: "scanner result: Results.Vulnerabilities.VulnerabilityID has a number where a string belongs",
		},
		{name: "trivy schema from the future", raw: `{"SchemaVersion":3,"Results":[]}`, want: "trivy report: SchemaVersion 3, only 2 is read"},
		{
			name: "trivy results null without a schema version",
			raw:  `{"Results":null}`,
			want: `scanner result is neither a Trivy report (SchemaVersion, Results) nor a Grype report (matches, descriptor); it has "Results"`,
		},
		{name: "trivy result null", raw: `{"Results":[{"Target":"img"},null]}`, want: "trivy report: Results[1]: no Target"},
		{name: "trivy result without target", raw: `{"Results":[{"Vulnerabilities":[]}]}`, want: "trivy report: Results[0]: no Target"},
		{
			name: "trivy vulnerability without id",
			raw:  `{"Results":[{"Target":"img","Vulnerabilities":[{"VulnerabilityID":"CVE-2024-3094","Severity":"CRITICAL"},{"Severity":"CRITICAL"}]}]}`,
			want: "trivy report: Results[0].Vulnerabilities[1]: no VulnerabilityID",
		},
		{
			name: "trivy vulnerability with a blank id",
			raw:  `{"Results":[{"Target":"img","Vulnerabilities":[{"VulnerabilityID":" ","Severity":"CRITICAL"}]}]}`,
			want: "trivy report: Results[0].Vulnerabilities[0]: no VulnerabilityID",
		},
		{
			name: "trivy vulnerability null",
			raw:  `{"Results":[{"Target":"img","Vulnerabilities":[null]}]}`,
			want: "trivy report: Results[0].Vulnerabilities[0]: no VulnerabilityID",
		},
		{
			name: "grype matches without descriptor",
			raw:  `{"matches":[{"vulnerability":{"id":"CVE-2024-3094","severity":"Critical"}}],"source":{}}`,
			want: `scanner result is neither a Trivy report (SchemaVersion, Results) nor a Grype report (matches, descriptor); it has "matches", "source"`,
		},
		{
			name: "grype matches null",
			raw:  `{"matches":null,"descriptor":{"name":"grype"}}`,
			want: `scanner result is neither a Trivy report (SchemaVersion, Results) nor a Grype report (matches, descriptor); it has "descriptor", "matches"`,
		},
		{name: "grype descriptor a string", raw: `{"matches":[],"descriptor":"grype"}`, want: "scanner result: descriptor has a string where an object belongs"},
		{name: "grype descriptor of another tool", raw: `{"matches":[],"descriptor":{"name":"syft"}}`, want: `grype report: descriptor.name is "syft", want "grype"`},
		{
			name: "grype match without vulnerability",
			raw:  `{"matches":[{"artifact":{"name":"xz-libs"}}],"descriptor":{"name":"grype"}}`,
			want: "grype report: matches[0].vulnerability: no id",
		},
		{
			name: "grype vulnerability without id",
			raw:  `{"matches":[{"vulnerability":{"severity":"Critical"}}],"descriptor":{"name":"grype"}}`,
			want: "grype report: matches[0].vulnerability: no id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := json.RawMessage(tt.raw)
			if tt.fixture != "" {
				raw = reportFixture(t, tt.fixture)
			}
			got, err := parseScannerResult(raw)
			if err == nil {
				t.Fatalf("parseScannerResult = %+v, want error %q", got, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q\nwant    %q", err, tt.want)
			}
		})
	}
}

func TestFindingsAreCapped(t *testing.T) {
	// The cap counts entries read, duplicates included: deduplicating
	// first would let a report of any length through.
	entries := func(n int, entry string) string {
		return strings.TrimSuffix(strings.Repeat(entry+",", n), ",")
	}
	trivy := func(n int) string {
		// Split over two results: the cap is per report.
		vuln := `{"VulnerabilityID":"CVE-2024-3094","Severity":"CRITICAL"}`
		return fmt.Sprintf(`{"SchemaVersion":2,"Results":[{"Target":"a","Vulnerabilities":[%s]},{"Target":"b","Vulnerabilities":[%s]}]}`,
			entries(n/2, vuln), entries(n-n/2, vuln))
	}
	grype := func(n int) string {
		return fmt.Sprintf(`{"matches":[%s],"descriptor":{"name":"grype"}}`,
			entries(n, `{"vulnerability":{"id":"CVE-2024-3094","severity":"Critical"}}`))
	}
	inToto := func(n int) string {
		return fmt.Sprintf(`{"scanner":{"result":[%s]}}`, entries(n, `{"id":"CVE-2024-3094","severity":[{"method":"nvd","score":"10.0"}]}`))
	}
	tests := []struct {
		name  string
		parse func(json.RawMessage) (report, error)
		raw   func(n int) string
		want  string
	}{
		{"trivy", parseScannerResult, trivy, "trivy report: more than 100000 findings"},
		{"grype", parseScannerResult, grype, "grype report: more than 100000 findings"},
		{"in-toto", parseInTotoVulns, inToto, "in-toto vulns predicate: more than 100000 findings"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" at the limit", func(t *testing.T) {
			got, err := tt.parse(json.RawMessage(tt.raw(maxFindings)))
			if err != nil {
				t.Fatal(err)
			}
			if want := []finding{{"CVE-2024-3094", policy.SeverityCritical}}; !slices.Equal(got.Findings, want) {
				t.Errorf("Findings = %v, want %v", got.Findings, want)
			}
		})
		t.Run(tt.name+" over the limit", func(t *testing.T) {
			_, err := tt.parse(json.RawMessage(tt.raw(maxFindings + 1)))
			if err == nil || err.Error() != tt.want {
				t.Errorf("error = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestParseInTotoVulns(t *testing.T) {
	got, err := parseInTotoVulns(reportFixture(t, "intoto-vulns.json"))
	if err != nil {
		t.Fatal(err)
	}
	want := []finding{
		{"CVE-2024-3094", policy.SeverityCritical},
		{"CVE-2024-28757", policy.SeverityHigh},
		{"CVE-2024-0727", policy.SeverityMedium},
		{"CVE-2024-2511", policy.SeverityLow},
		{"CVE-2024-28182", policy.SeverityUnknown},
	}
	if got.Format != formatInTotoVulns {
		t.Errorf("Format = %q, want %q", got.Format, formatInTotoVulns)
	}
	if !slices.Equal(got.Findings, want) {
		t.Errorf("Findings = %v\nwant %v", got.Findings, want)
	}
}

func TestInTotoSeverity(t *testing.T) {
	tests := []struct {
		name     string
		severity string // the JSON of one result's severity list
		want     policy.Severity
	}{
		{"9 and up is critical", `[{"method":"nvd","score":"9.0"}]`, policy.SeverityCritical},
		{"10 is critical", `[{"method":"nvd","score":"10"}]`, policy.SeverityCritical},
		{"just under 9 is high", `[{"method":"nvd","score":"8.9"}]`, policy.SeverityHigh},
		{"7 is high", `[{"method":"nvd","score":"7"}]`, policy.SeverityHigh},
		{"just under 7 is medium", `[{"method":"nvd","score":"6.9"}]`, policy.SeverityMedium},
		{"4 is medium", `[{"method":"nvd","score":"4.0"}]`, policy.SeverityMedium},
		{"just under 4 is low", `[{"method":"nvd","score":"3.9"}]`, policy.SeverityLow},
		{"just over 0 is low", `[{"method":"nvd","score":"0.1"}]`, policy.SeverityLow},
		{"0 is unknown", `[{"method":"nvd","score":"0.0"}]`, policy.SeverityUnknown},
		{"a JSON number scores as well", `[{"method":"cvss_score","score":9.8}]`, policy.SeverityCritical},
		{"a rating word ranks as its severity", `[{"method":"nvd","score":"Moderate"}]`, policy.SeverityMedium},
		{"a word no scanner uses is unknown", `[{"method":"nvd","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}]`, policy.SeverityUnknown},
		{"no score is unknown", `[{"method":"nvd"}]`, policy.SeverityUnknown},
		{"no severity is unknown", `[]`, policy.SeverityUnknown},
		{"the highest method counts", `[{"method":"debian","score":"low"},{"method":"nvd","score":"9.1"},{"method":"redhat","score":"6.5"}]`, policy.SeverityCritical},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := `{"scanner":{"result":[{"id":"CVE-2024-3094","severity":` + tt.severity + `}]}}`
			got, err := parseInTotoVulns(json.RawMessage(raw))
			if err != nil {
				t.Fatal(err)
			}
			if want := []finding{{"CVE-2024-3094", tt.want}}; !slices.Equal(got.Findings, want) {
				t.Errorf("Findings = %v, want %v", got.Findings, want)
			}
		})
	}
}

func TestParseInTotoVulnsReadsTheNestedForm(t *testing.T) {
	raw := json.RawMessage(`{"scanner":{"result":[
		{"vulnerability":{"id":"GHSA-fxph-q3j8-mv87","severity":[{"method":"cvss_score","score":"10.0"}]}},
		{"id":"CVE-2024-0727","severity":[{"method":"nvd","score":"5.5"}]}]}}`)
	got, err := parseInTotoVulns(raw)
	if err != nil {
		t.Fatal(err)
	}
	want := []finding{{"GHSA-fxph-q3j8-mv87", policy.SeverityCritical}, {"CVE-2024-0727", policy.SeverityMedium}}
	if !slices.Equal(got.Findings, want) {
		t.Errorf("Findings = %v, want %v", got.Findings, want)
	}
}

func TestParseInTotoVulnsRejects(t *testing.T) {
	result := func(entries string) string {
		return `{"scanner":{"uri":"pkg:github/aquasecurity/trivy","result":[` + entries + `]}}`
	}
	tests := []struct {
		name string
		raw  string
		want string
	}{
		{"null", `null`, "in-toto vulns predicate is null, want an object"},
		{"list", `[]`, "in-toto vulns predicate is a list, want an object"},
		{"no scanner", `{"metadata":{"scanFinishedOn":"2024-04-09T07:31:12Z"}}`, "in-toto vulns predicate: no scanner"},
		{"scanner a string", `{"scanner":"trivy"}`, "in-toto vulns predicate: scanner has a string where an object belongs"},
		{"no result", `{"scanner":{"uri":"pkg:github/aquasecurity/trivy"}}`, "in-toto vulns predicate: no scanner.result list"},
		{"result null", `{"scanner":{"result":null}}`, "in-toto vulns predicate: no scanner.result list"},
		{"result a Trivy report", `{"scanner":{"result":{"SchemaVersion":2,"Results":[]}}}`, "in-toto vulns predicate: scanner.result has an object where a list belongs"},
		{"entry a string", result(`"CVE-2024-3094"`), "in-toto vulns predicate: scanner.result has a string where an object belongs"},
		{"entry null", result(`null`), "in-toto vulns predicate: scanner.result[0]: no id"},
		{"severity an object", result(`{"id":"CVE-2024-3094","severity":{"method":"nvd","score":"9.8"}}`), "in-toto vulns predicate: scanner.result.severity has an object where a list belongs"},
		{"entry without id", result(`{"severity":[{"method":"nvd","score":"10.0"}]}`), "in-toto vulns predicate: scanner.result[0]: no id"},
		{"nested entry without id", result(`{"vulnerability":{"severity":[]}}`), "in-toto vulns predicate: scanner.result[0].vulnerability: no id"},
		{
			"entry in both forms",
			result(`{"id":"CVE-2024-0727","vulnerability":{"id":"CVE-2024-3094"}}`),
			"in-toto vulns predicate: scanner.result[0]: both id/severity and vulnerability",
		},
		{
			"score above 10",
			result(`{"id":"CVE-2024-3094","severity":[{"method":"nvd","score":"10.0"},{"method":"x","score":"98"}]}`),
			`in-toto vulns predicate: scanner.result[0].severity[1]: score "98" is not a CVSS score (0 to 10)`,
		},
		{"score below 0", result(`{"id":"CVE-2024-3094","severity":[{"method":"nvd","score":-1}]}`), `in-toto vulns predicate: scanner.result[0].severity[0]: score "-1" is not a CVSS score (0 to 10)`},
		{"score NaN", result(`{"id":"CVE-2024-3094","severity":[{"method":"nvd","score":"NaN"}]}`), `in-toto vulns predicate: scanner.result[0].severity[0]: score "NaN" is not a CVSS score (0 to 10)`},
		{"score overflowing", result(`{"id":"CVE-2024-3094","severity":[{"method":"nvd","score":1e400}]}`), `in-toto vulns predicate: scanner.result[0].severity[0]: score "1e400" is not a CVSS score (0 to 10)`},
		{"score an object", result(`{"id":"CVE-2024-3094","severity":[{"method":"nvd","score":{"base":9.8}}]}`), "in-toto vulns predicate: scanner.result[0].severity[0]: score is an object, want a number or a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseInTotoVulns(json.RawMessage(tt.raw))
			if err == nil {
				t.Fatalf("parseInTotoVulns = %+v, want error %q", got, tt.want)
			}
			if err.Error() != tt.want {
				t.Errorf("error = %q\nwant    %q", err, tt.want)
			}
		})
	}
}

// checkParsedReport holds what every parse must give: an error and nothing
// else, or a report of a known format whose findings are bounded, named
// and distinct.
func checkParsedReport(t *testing.T, r report, err error, formats ...string) {
	t.Helper()
	if err != nil {
		if r.Format != "" || r.Findings != nil {
			t.Errorf("error %v came with a report %+v", err, r)
		}
		return
	}
	if !slices.Contains(formats, r.Format) {
		t.Errorf("Format = %q, want one of %q", r.Format, formats)
	}
	if len(r.Findings) > maxFindings {
		t.Errorf("%d findings, more than %d", len(r.Findings), maxFindings)
	}
	seen := make(map[string]bool, len(r.Findings))
	for _, f := range r.Findings {
		if strings.TrimSpace(f.ID) == "" || seen[f.ID] {
			t.Errorf("finding ID %q is blank or repeated", f.ID)
		}
		seen[f.ID] = true
		if f.Severity < policy.SeverityUnknown || f.Severity > policy.SeverityCritical {
			t.Errorf("finding %s has severity %v", f.ID, f.Severity)
		}
	}
}

func FuzzParseScannerResult(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := parseScannerResult(raw)
		checkParsedReport(t, r, err, formatTrivy, formatGrype)
	})
}

func FuzzParseInTotoVulns(f *testing.F) {
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := parseInTotoVulns(raw)
		checkParsedReport(t, r, err, formatInTotoVulns)
	})
}
