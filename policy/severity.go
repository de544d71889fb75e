package policy

import (
	"fmt"
	"strings"
)

// Severity ranks vulnerabilities. Scanners' UNKNOWN and Negligible rank
// below low, so that "maxSeverity: none" admits no finding at all.
type Severity int

const (
	SeverityNone Severity = iota
	SeverityUnknown
	SeverityLow
	SeverityMedium
	SeverityHigh
	SeverityCritical
)

var severityNames = [...]string{"none", "unknown", "low", "medium", "high", "critical"}

func (s Severity) String() string {
	if s < 0 || int(s) >= len(severityNames) {
		return fmt.Sprintf("severity(%d)", int(s))
	}
	return severityNames[s]
}

// ParsePolicySeverity parses a maxSeverity value of a policy file:
// none, low, medium, high or critical.
func ParsePolicySeverity(s string) (Severity, error) {
	switch s {
	case "none":
		return SeverityNone, nil
	case "low":
		return SeverityLow, nil
	case "medium":
		return SeverityMedium, nil
	case "high":
		return SeverityHigh, nil
	case "critical":
		return SeverityCritical, nil
	}
	return 0, fmt.Errorf("unknown severity %q (want none, low, medium, high or critical)", s)
}

// ParseReportSeverity maps a severity as scanners write it (Trivy's
// CRITICAL, Grype's Critical, Negligible, UNKNOWN, ...) to a Severity.
// Anything it does not know ranks as unknown: above none, below low.
func ParseReportSeverity(s string) Severity {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "critical":
		return SeverityCritical
	case "high":
		return SeverityHigh
	case "medium", "moderate":
		return SeverityMedium
	case "low":
		return SeverityLow
	}
	return SeverityUnknown
}

// MarshalText writes the severity's name, as reports and JSON output use it.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
