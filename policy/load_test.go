package policy

import (
	"crypto/ecdsa"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadMergesFilesInLexicalOrder(t *testing.T) {
	p, err := Load("testdata/valid")
	if err != nil {
		t.Fatal(err)
	}

	var rules []string
	for _, r := range p.Rules {
		rules = append(rules, r.Name+"@"+r.Source)
	}
	wantRules := []string{
		"pause@testdata/valid/10-base.yaml:19",
		"prod@testdata/valid/10-base.yaml:23",
		"team-api@testdata/valid/50-team.yaml:7",
		"hub@testdata/valid/50-team.yaml:15",
		"everything-else@testdata/valid/90-local.yaml:6",
	}
	if got, want := strings.Join(rules, "\n"), strings.Join(wantRules, "\n"); got != want {
		t.Errorf("rules:\n%s\nwant:\n%s", got, want)
	}

	wantSigners := map[string]string{
		"ci":      "testdata/valid/10-base.yaml:3",
		"scanner": "testdata/valid/10-base.yaml:5",
		"staging": "testdata/valid/50-team.yaml:2",
		"qa":      "testdata/valid/90-local.yaml:2",
	}
	if len(p.Signers) != len(wantSigners) {
		t.Errorf("signers: %v, want %v", p.Signers, wantSigners)
	}
	for name, src := range wantSigners {
		s := p.Signers[name]
		if s == nil || s.Name != name || s.Source != src {
			t.Errorf("signer %q = %+v, want source %s", name, s, src)
			continue
		}
		if _, ok := s.Key.(*ecdsa.PublicKey); !ok {
			t.Errorf("signer %q key is %T, want *ecdsa.PublicKey", name, s.Key)
		}
	}

	if r := p.Registries["127.0.0.1:5000"]; r == nil || !r.Insecure || r.Auth != "" {
		t.Errorf("registry 127.0.0.1:5000 = %+v", r)
	}
	if r := p.Registries["registry.example.com"]; r == nil || r.Insecure || r.Auth != "testdata/valid/auth.json" {
		t.Errorf("registry registry.example.com = %+v, want auth relative to the file's dir", r)
	}
	if p.Unmatched != "deny" {
		t.Errorf("unmatched = %q", p.Unmatched)
	}
	if len(p.Generation) != 64 {
		t.Errorf("generation %q is not a hex sha256", p.Generation)
	}

	pause, prod, teamAPI, hub := p.Rules[0], p.Rules[1], p.Rules[2], p.Rules[3]
	if !pause.Allow || pause.Mode != ModeEnforce || pause.Signatures != nil || pause.Scan != nil {
		t.Errorf("pause = %+v", pause)
	}
	if teamAPI.Mode != ModeWarn || hub.Mode != ModeAudit {
		t.Errorf("modes: team-api %q, hub %q", teamAPI.Mode, hub.Mode)
	}
	sigs := prod.Signatures
	if sigs.Threshold != 2 || names(sigs.Signers) != "ci scanner staging" || names(sigs.Required) != "ci" {
		t.Errorf("prod signatures = threshold %d, signers %q, required %q", sigs.Threshold, names(sigs.Signers), names(sigs.Required))
	}
	if sigs.Signers[0] != p.Signers["ci"] {
		t.Error("prod's signers are not the policy's signers")
	}
	scan := prod.Scan
	if names(scan.Attestors) != "scanner" || scan.MaxSeverity != SeverityHigh || scan.MaxAge != 168*time.Hour {
		t.Errorf("prod scan = %+v", scan)
	}
	wantIgnore := []Ignore{
		{CVE: "CVE-2024-3094", Until: time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC), Reason: "not reachable in this image"},
		{CVE: "CVE-2023-44487", Until: time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)},
		{CVE: "CVE-2021-44228"},
	}
	if len(scan.Ignore) != len(wantIgnore) {
		t.Fatalf("prod ignore = %+v", scan.Ignore)
	}
	for i, w := range wantIgnore {
		if g := scan.Ignore[i]; g.CVE != w.CVE || !g.Until.Equal(w.Until) || g.Reason != w.Reason {
			t.Errorf("ignore[%d] = %+v, want %+v", i, g, w)
		}
	}
	// qa is defined in 90-local.yaml, after the file whose rule names it.
	if names(hub.Scan.Attestors) != "scanner qa" || hub.Scan.MaxAge != 7*24*time.Hour || hub.Scan.MaxSeverity != SeverityCritical {
		t.Errorf("hub scan = %+v", hub.Scan)
	}
}

func names(signers []*Signer) string {
	var s []string
	for _, sg := range signers {
		s = append(s, sg.Name)
	}
	return strings.Join(s, " ")
}

func TestIgnoreDateHoldsThroughTheDay(t *testing.T) {
	p, err := Load("testdata/valid")
	if err != nil {
		t.Fatal(err)
	}
	ig := p.Rules[1].Scan.Ignore[0] // until: 2027-01-31
	for _, tc := range []struct {
		at   string
		want bool
	}{
		{"2027-01-31T00:00:00Z", true},
		{"2027-01-31T23:59:59Z", true},
		{"2027-02-01T00:00:00Z", false},
	} {
		at, _ := time.Parse(time.RFC3339, tc.at)
		if got := ig.Ignores("CVE-2024-3094", at); got != tc.want {
			t.Errorf("Ignores at %s = %v, want %v", tc.at, got, tc.want)
		}
	}
}

func TestLoadReportsEveryProblemWithFileAndLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		dir  string
		want []string
	}{
		{"unknown fields are named where they are", "unknown-fields", []string{
			`testdata/invalid/unknown-fields/policy.yaml:1: unknown field "signer" (want signers, registries, rules or defaults)`,
			`testdata/invalid/unknown-fields/policy.yaml:6: signer "ci": unknown field "comment" (want name, key, keyData, keyless, trustedRoot or tlog)`,
			`testdata/invalid/unknown-fields/policy.yaml:10: registry "registry.example.com": unknown field "username" (want host, insecure or auth)`,
			`testdata/invalid/unknown-fields/policy.yaml:14: rule "prod": unknown field "signature" (want name, images, allow, mode, signatures or scan)`,
			`testdata/invalid/unknown-fields/policy.yaml:19: rule "prod": unknown field "requires" in signatures (want threshold, signers or required)`,
			`testdata/invalid/unknown-fields/policy.yaml:24: rule "prod": unknown field "maxAgeDays" in scan (want attestors, maxSeverity, maxAge or ignore)`,
			`testdata/invalid/unknown-fields/policy.yaml:27: rule "prod": unknown field "expires" in an ignore entry (want cve, until or reason)`,
			`testdata/invalid/unknown-fields/policy.yaml:30: unknown field "mode" in defaults (want unmatched)`,
		}},
		{"signers need a name and exactly one readable public key", "signer-keys", []string{
			`testdata/invalid/signer-keys/policy.yaml:2: a signer has no name`,
			`testdata/invalid/signer-keys/policy.yaml:5: signer "both": give either key or keyData, not both`,
			`testdata/invalid/signer-keys/policy.yaml:7: signer "none": no key: give key (a PEM file) or keyData (inline PEM)`,
			`testdata/invalid/signer-keys/policy.yaml:9: signer "missing": cannot read key file: testdata/invalid/signer-keys/keys/missing.pub: no such file or directory`,
			`testdata/invalid/signer-keys/policy.yaml:11: signer "notpem": key file testdata/keys/notpem.pub is not a PEM public key: PEM decoding failed`,
			`testdata/invalid/signer-keys/policy.yaml:13: signer "private": key file testdata/keys/private.pem is not a PEM public key: unknown Public key PEM file type: EC PRIVATE KEY. Are you passing the correct public key?`,
			`testdata/invalid/signer-keys/policy.yaml:15: signer "x25519": key file testdata/keys/x25519.pub holds a *ecdh.PublicKey, not an ECDSA, RSA or Ed25519 public key`,
			`testdata/invalid/signer-keys/policy.yaml:17: signer "inline": keyData is not a PEM public key: PEM decoding failed`,
			`testdata/invalid/signer-keys/policy.yaml:22: signer "release-ci": cannot read trusted root: /etc/imagegate/trusted_root.json: no such file or directory`,
			`testdata/invalid/signer-keys/policy.yaml:25: signer "stray": tlog applies to keyless signers only`,
			`testdata/invalid/signer-keys/policy.yaml:27: signer "dir": cannot read key file: testdata/keys: not a regular file`,
		}},
		{"keyless signers need one identity, a readable trusted root, and no overlap", "keyless", []string{
			`testdata/invalid/keyless/policy.yaml:13: signer "overlap-exact": its identity could match the same certificate as signer "release-ci" at testdata/invalid/keyless/policy.yaml:2 (same issuer, subjects not clearly disjoint); one certificate must never count twice`,
			`testdata/invalid/keyless/policy.yaml:18: signer "overlap-regexp": its identity could match the same certificate as signer "release-ci" at testdata/invalid/keyless/policy.yaml:2 (same issuer, subjects not clearly disjoint); one certificate must never count twice`,
			"testdata/invalid/keyless/policy.yaml:26: signer \"bad-regexp\": subjectRegExp is not a regular expression: error parsing regexp: missing closing ): `^(unclosed`",
			`testdata/invalid/keyless/policy.yaml:32: signer "both": give either subject or subjectRegExp, not both`,
			`testdata/invalid/keyless/policy.yaml:34: signer "no-root": a keyless signer needs trustedRoot: a sigstore trusted_root.json shipped with the policy, since nothing is fetched when a container starts`,
			`testdata/invalid/keyless/policy.yaml:42: signer "bad-root": trusted root testdata/invalid/keyless/bad_root.json is not a sigstore trusted_root.json: unsupported TrustedRoot media type: nope`,
			`testdata/invalid/keyless/policy.yaml:47: signer "missing-root": cannot read trusted root: testdata/invalid/keyless/missing.json: no such file or directory`,
			`testdata/invalid/keyless/policy.yaml:53: signer "bad-tlog": tlog must be require or ignore, not "maybe"`,
			`testdata/invalid/keyless/policy.yaml:56: signer "no-issuer": keyless needs an issuer: the OIDC issuer URL the certificate names, like https://token.actions.githubusercontent.com`,
			`testdata/invalid/keyless/policy.yaml:58: signer "with-key": give either keyless or key/keyData, not both`,
		}},
		{"one key under two signer names", "duplicate-key", []string{
			`testdata/invalid/duplicate-key/policy.yaml:4: signer "ci-again": same public key as signer "ci" at testdata/invalid/duplicate-key/policy.yaml:2; one key must never count twice`,
		}},
		{"names defined twice across files point at the first", "duplicates", []string{
			`testdata/invalid/duplicates/50-team.yaml:2: signer "ci" is already defined at testdata/invalid/duplicates/10-base.yaml:2`,
			`testdata/invalid/duplicates/50-team.yaml:5: registry "registry.example.com" is already defined at testdata/invalid/duplicates/10-base.yaml:5`,
			`testdata/invalid/duplicates/50-team.yaml:7: rule "prod" is already defined at testdata/invalid/duplicates/10-base.yaml:7`,
			`testdata/invalid/duplicates/50-team.yaml:12: rule "prod" is already defined at testdata/invalid/duplicates/10-base.yaml:7`,
			`testdata/invalid/duplicates/50-team.yaml:16: defaults.unmatched is "allow" here but "deny" at testdata/invalid/duplicates/10-base.yaml:13`,
		}},
		{"rules need a name, images and something to check", "rules", []string{
			`testdata/invalid/rules/policy.yaml:5: a rule has no name`,
			`testdata/invalid/rules/policy.yaml:7: rule "no-images": no images: list the repository globs the rule governs`,
			`testdata/invalid/rules/policy.yaml:10: rule "empty-images": no images: list the repository globs the rule governs`,
			`testdata/invalid/rules/policy.yaml:14: rule "allow-and-check": allow: true exempts images from every check, so it cannot go with signatures or scan`,
			`testdata/invalid/rules/policy.yaml:18: rule "checks-nothing": checks nothing: with neither signatures nor scan it would allow every image it matches; write allow: true to exempt images on purpose`,
			`testdata/invalid/rules/policy.yaml:23: rule "bad-mode": unknown mode "strict" (want enforce, warn or audit)`,
			`testdata/invalid/rules/policy.yaml:27: rule "yes-is-not-true": allow must be true or false`,
			`testdata/invalid/rules/policy.yaml:29: rule "images-not-a-list": images must be a list`,
			`testdata/invalid/rules/policy.yaml:31: each entry of rules must be a mapping`,
		}},
		{"bad globs", "globs", []string{
			`testdata/invalid/globs/policy.yaml:5: rule "globs": an image glob is empty`,
			`testdata/invalid/globs/policy.yaml:6: rule "globs": image glob "registry.example.com//app" has an empty path segment`,
			`testdata/invalid/globs/policy.yaml:7: rule "globs": image glob "registry.example.com/app/" has an empty path segment`,
			`testdata/invalid/globs/policy.yaml:8: rule "globs": image glob "/app" has an empty path segment`,
			`testdata/invalid/globs/policy.yaml:9: rule "globs": image glob "registry.example.com/***" has "***": use * within a segment or ** across segments`,
			`testdata/invalid/globs/policy.yaml:10: rule "globs": image glob "Registry.example.com/app" has upper-case letters; repository names are lower-case`,
			`testdata/invalid/globs/policy.yaml:11: rule "globs": image glob "nginx:latest" has a tag: globs match repository names, without tag or digest`,
			`testdata/invalid/globs/policy.yaml:12: rule "globs": image glob "registry.example.com/app:1.0" has a tag: globs match repository names, without tag or digest`,
			`testdata/invalid/globs/policy.yaml:13: rule "globs": image glob "registry.example.com/app@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" has a digest: globs match repository names, without tag or digest`,
			`testdata/invalid/globs/policy.yaml:14: rule "globs": image glob "registry.example.com" names only a host; write "registry.example.com/**" to match its repositories`,
			`testdata/invalid/globs/policy.yaml:15: rule "globs": image glob "registry.example.com/my app" has ' ', which cannot appear in a repository name`,
			`testdata/invalid/globs/policy.yaml:16: rule "globs": image glob "registry.example.com/app+x" has '+', which cannot appear in a repository name`,
		}},
		{"signature thresholds and signer lists", "signatures", []string{
			`testdata/invalid/signatures/policy.yaml:12: rule "prod": threshold 4 is larger than its 3 signers`,
			`testdata/invalid/signatures/policy.yaml:17: rule "zero": threshold 0 must be at least 1`,
			`testdata/invalid/signatures/policy.yaml:22: rule "no-threshold": signatures needs a threshold: how many distinct signers must have signed`,
			`testdata/invalid/signatures/policy.yaml:27: rule "unknown": unknown signer "qa" in signatures.signers`,
			`testdata/invalid/signatures/policy.yaml:28: rule "unknown": unknown signer "release" in signatures.required`,
			`testdata/invalid/signatures/policy.yaml:34: rule "not-subset": required signer "staging" is not among its signers`,
			`testdata/invalid/signatures/policy.yaml:39: rule "twice": signer "ci" is listed twice in signatures.signers`,
			`testdata/invalid/signatures/policy.yaml:40: rule "twice": signer "ci" is listed twice in signatures.required`,
			`testdata/invalid/signatures/policy.yaml:44: rule "no-signers": signatures lists no signers`,
			`testdata/invalid/signatures/policy.yaml:48: rule "words": threshold must be a whole number`,
			`testdata/invalid/signatures/policy.yaml:53: rule "one": threshold 2 is larger than its 1 signer`,
		}},
		{"scan attestors, severity, age and ignores", "scan", []string{
			`testdata/invalid/scan/policy.yaml:8: rule "unknown-attestor": unknown signer "trivy" in scan.attestors`,
			`testdata/invalid/scan/policy.yaml:14: rule "no-attestors": scan lists no attestors: name the signers whose scan attestations count`,
			`testdata/invalid/scan/policy.yaml:21: rule "bad-values": maxSeverity: unknown severity "severe" (want none, low, medium, high or critical)`,
			`testdata/invalid/scan/policy.yaml:22: rule "bad-values": maxAge "a week" is not a duration like 168h or 7d`,
			`testdata/invalid/scan/policy.yaml:28: rule "zero-age": maxAge "0d" must be positive`,
			`testdata/invalid/scan/policy.yaml:34: rule "negative-age": maxAge "-1h" must be positive`,
			`testdata/invalid/scan/policy.yaml:38: rule "missing": scan needs a maxSeverity: none, low, medium, high or critical`,
			`testdata/invalid/scan/policy.yaml:38: rule "missing": scan needs a maxAge, like 168h or 7d`,
			`testdata/invalid/scan/policy.yaml:46: rule "ignores": an ignore entry has no cve`,
			`testdata/invalid/scan/policy.yaml:48: rule "ignores": ignore CVE-2024-3094: until "next tuesday" is neither a date (2027-01-31) nor an RFC 3339 time (2027-01-31T12:00:00Z)`,
			`testdata/invalid/scan/policy.yaml:50: rule "ignores": ignore CVE-2024-1: until "2027-01-31 10:00" is neither a date (2027-01-31) nor an RFC 3339 time (2027-01-31T12:00:00Z)`,
			`testdata/invalid/scan/policy.yaml:51: rule "ignores": an ignore entry must be a mapping`,
		}},
		{"registries need a host and a readable auth file", "registries", []string{
			`testdata/invalid/registries/policy.yaml:2: a registry has no host`,
			`testdata/invalid/registries/policy.yaml:3: registry "https://registry.example.com": host must be a host name with an optional port, like registry.example.com:5000`,
			`testdata/invalid/registries/policy.yaml:5: registry "registry.example.com": cannot read auth file: testdata/invalid/registries/missing-auth.json: no such file or directory`,
			`testdata/invalid/registries/policy.yaml:7: registry "127.0.0.1:5000": insecure must be true or false`,
			`testdata/invalid/registries/policy.yaml:9: registry "docker.io" is already defined at testdata/invalid/registries/policy.yaml:8`,
		}},
		{"unmatched set twice differently", "defaults", []string{
			`testdata/invalid/defaults/20-local.yaml:2: defaults.unmatched is "allow" here but "deny" at testdata/invalid/defaults/10-base.yaml:2`,
			`testdata/invalid/defaults/20-local.yaml:5: defaults.unmatched must be deny or allow, not "maybe"`,
		}},
		{"a broken file does not hide the others' problems", "yaml-syntax", []string{
			`testdata/invalid/yaml-syntax/10-broken.yaml:2: invalid YAML: did not find expected ',' or ']'`,
			`testdata/invalid/yaml-syntax/20-list.yaml:1: a policy file must be a mapping of signers, registries, rules and defaults`,
			`testdata/invalid/yaml-syntax/30-ok-but-wrong.yaml:2: rule "loose": checks nothing: with neither signatures nor scan it would allow every image it matches; write allow: true to exempt images on purpose`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Load(filepath.Join("testdata/invalid", tc.dir))
			if p != nil {
				t.Error("Load returned a policy along with problems")
			}
			checkProblems(t, err, tc.want)
		})
	}
}

func checkProblems(t *testing.T, err error, want []string) {
	t.Helper()
	var perr *Error
	if !errors.As(err, &perr) {
		t.Fatalf("error %v (%T), want *Error", err, err)
	}
	var got []string
	for _, p := range perr.Problems {
		got = append(got, p.String())
	}
	if g, w := strings.Join(got, "\n"), strings.Join(want, "\n"); g != w {
		t.Errorf("problems:\n%s\nwant:\n%s", g, w)
	}
	if perr.Error() != strings.Join(got, "\n") {
		t.Errorf("Error() = %q, want the problems one per line", perr.Error())
	}
}

func TestLoadRefusesNoPolicy(t *testing.T) {
	empty := t.TempDir()
	onlyOther := t.TempDir()
	if err := os.WriteFile(filepath.Join(onlyOther, "policy.yml"), []byte("rules: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "policy.d")
	for _, tc := range []struct {
		name string
		dir  string
		want string
	}{
		{"empty dir", empty, empty + ": no *.yaml policy files; without a policy no image could be checked"},
		{"no *.yaml file", onlyOther, onlyOther + ": no *.yaml policy files; without a policy no image could be checked"},
		{"missing dir", missing, missing + ": the policy directory does not exist; without a policy no image could be checked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Load(tc.dir)
			if p != nil {
				t.Error("Load returned a policy")
			}
			checkProblems(t, err, []string{tc.want})
		})
	}
}

func TestLoadRefusesAPolicyFileItCannotRead(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "10-base.yaml"), "defaults: {unmatched: deny}\n")
	if err := os.Mkdir(filepath.Join(dir, "50-team.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, err := Load(dir)
	if p != nil {
		t.Error("Load returned a policy")
	}
	checkProblems(t, err, []string{filepath.Join(dir, "50-team.yaml") + ": cannot read this file: not a regular file"})
}

func TestLoadResolvesAbsoluteKeyPaths(t *testing.T) {
	key, err := filepath.Abs("testdata/keys/a.pub")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "policy.yaml"), "signers:\n  - name: ci\n    key: "+key+"\n")
	p, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if p.Signers["ci"] == nil {
		t.Errorf("signers = %v", p.Signers)
	}
}

func TestGenerationChangesWithAnyInput(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"00-comments.yaml", "10-base.yaml", "50-team.yaml", "90-local.yaml", "auth.json", "keys/ci.pub", "keys/staging.pub", "keys/qa.pub"} {
		data, err := os.ReadFile(filepath.Join("testdata/valid", name))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name), string(data))
	}
	generation := func() string {
		t.Helper()
		p, err := Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		return p.Generation
	}
	first := generation()
	if again := generation(); again != first {
		t.Fatalf("generation changed with nothing changed: %s, then %s", first, again)
	}

	other, err := os.ReadFile("testdata/keys/b.pub")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "keys/staging.pub"), string(other))
	afterKey := generation()
	if afterKey == first {
		t.Error("generation unchanged after a key file changed")
	}

	writeFile(t, filepath.Join(dir, "00-comments.yaml"), "# a comment changed\n")
	if generation() == afterKey {
		t.Error("generation unchanged after a policy file changed")
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
