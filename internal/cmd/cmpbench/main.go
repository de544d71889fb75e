// Command cmpbench measures `imagegate verify` against the cosign commands
// an operator would otherwise run for the same check, in one run, on one
// image in a loopback registry: signatures only (one `cosign verify` per
// key), and signatures plus the scan attestation (`cosign
// verify-attestation --type vuln` besides). The two sides alternate round
// by round so that noise on this shared machine hits both alike.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/imagegate/imagegate/internal/testsign"
)

func main() {
	imagegate := flag.String("imagegate", "bin/imagegate", "the imagegate binary")
	cosign := flag.String("cosign", "cosign", "the cosign v2 binary")
	cosign3 := flag.String("cosign3", "", "the cosign v3 binary: also compare on an image signed with v3 bundles")
	report := flag.String("report", "verify/testdata/reports/trivy-high.json", "scan report to attest")
	rounds := flag.Int("rounds", 15, "rounds per comparison")
	flag.Parse()
	if err := run(*imagegate, *cosign, *cosign3, *report, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "cmpbench:", err)
		os.Exit(1)
	}
}

func run(imagegate, cosign, cosign3, reportFile string, rounds int) error {
	// The referrers API lets cosign v3 find bundles as it does on real
	// registries; cosign v2's tags are found the same with or without it.
	reg, err := testsign.StartReferrersRegistry()
	if err != nil {
		return err
	}
	defer reg.Close()
	work, err := os.MkdirTemp("", "imagegate-cmpbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	d, err := reg.PushRandomImage("shop/api:1.4")
	if err != nil {
		return err
	}
	names := []string{"ci", "scanner", "staging"}
	keys := map[string]*testsign.Key{}
	for _, n := range names {
		k, err := testsign.GenerateKey(n)
		if err != nil {
			return err
		}
		if _, err := k.SavePub(work); err != nil {
			return err
		}
		if err := k.SignImage(d); err != nil {
			return err
		}
		keys[n] = k
	}
	rep, err := os.ReadFile(reportFile)
	if err != nil {
		return err
	}
	if err := keys["scanner"].AttestVuln(d, rep, time.Now().Add(-time.Hour)); err != nil {
		return err
	}
	image := d.String()
	d3, err := reg.PushRandomImage("shop/api:1.5")
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := keys[n].SignImageV3(d3); err != nil {
			return err
		}
	}
	if err := keys["scanner"].AttestVulnV3(d3, rep, time.Now().Add(-time.Hour)); err != nil {
		return err
	}

	sigsOnly, err := writePolicy(work, "sigs", reg.Host, "")
	if err != nil {
		return err
	}
	withScan, err := writePolicy(work, "scan", reg.Host, "    scan: {attestors: [scanner], maxSeverity: critical, maxAge: 168h}\n")
	if err != nil {
		return err
	}

	// What an operator runs: one verify per key, and one verify-attestation.
	cosignCmds := func(bin, image string) (sigs [][]string, att []string) {
		flags := []string{"--insecure-ignore-tlog", "--allow-http-registry", "--allow-insecure-registry", image}
		for _, n := range names {
			sigs = append(sigs, append([]string{bin, "verify", "--key", filepath.Join(work, n+".pub")}, flags...))
		}
		att = append([]string{bin, "verify-attestation", "--type", "vuln", "--key", filepath.Join(work, "scanner.pub")}, flags...)
		return sigs, att
	}
	sigCmds, attCmd := cosignCmds(cosign, image)

	fmt.Printf("image %s: 3 signatures (ci, scanner, staging) and 1 vuln attestation (scanner); %d rounds each\n\n", image, rounds)
	fmt.Printf("%-48s %12s %12s %8s\n", "check", "imagegate", "cosign", "ratio")
	type comparison struct {
		what   string
		policy string
		image  string
		cosign [][]string
	}
	comparisons := []comparison{
		{"3 signers (3x cosign verify)", sigsOnly, image, sigCmds},
		{"3 signers + scan (+ cosign verify-attestation)", withScan, image, append(slices.Clone(sigCmds), attCmd)},
	}
	if cosign3 != "" {
		sigs3, att3 := cosignCmds(cosign3, d3.String())
		comparisons = append(comparisons, comparison{"v3 bundles: 3 signers + scan (cosign v3)", withScan, d3.String(), append(sigs3, att3)})
	}
	for _, c := range comparisons {
		ig := [][]string{{imagegate, "verify", "--policy-dir", c.policy, c.image}}
		igT, coT, err := compare(ig, c.cosign, rounds, work)
		if err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		fmt.Printf("%-48s %10.1fms %10.1fms %7.1fx\n", c.what, ms(igT), ms(coT), float64(coT)/float64(igT))
	}
	fmt.Println("\n(medians of wall time per round; a round runs all commands of a side in sequence)")
	return nil
}

func writePolicy(work, name, host, scan string) (string, error) {
	dir := filepath.Join(work, "policy-"+name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	y := fmt.Sprintf(`signers:
  - {name: ci, key: %[1]s/ci.pub}
  - {name: scanner, key: %[1]s/scanner.pub}
  - {name: staging, key: %[1]s/staging.pub}
registries:
  - {host: %[2]q, insecure: true}
rules:
  - name: prod
    images: [%[3]q]
    signatures: {threshold: 3, signers: [ci, scanner, staging]}
%[4]s`, work, host, host+"/**", scan)
	return dir, os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(y), 0o644)
}

// compare runs both sides once to check they pass, then alternates rounds
// and returns the median wall time of each.
func compare(a, b [][]string, rounds int, home string) (time.Duration, time.Duration, error) {
	var ta, tb []time.Duration
	for i := 0; i <= rounds; i++ {
		da, err := runAll(a, home)
		if err != nil {
			return 0, 0, err
		}
		db, err := runAll(b, home)
		if err != nil {
			return 0, 0, err
		}
		if i == 0 {
			continue // warm-up: page cache, first connections
		}
		ta, tb = append(ta, da), append(tb, db)
	}
	return median(ta), median(tb), nil
}

func runAll(cmds [][]string, home string) (time.Duration, error) {
	start := time.Now()
	for _, c := range cmds {
		cmd := exec.Command(c[0], c[1:]...)
		// cosign keeps a TUF cache under HOME; a private one keeps the
		// operator's out of it.
		cmd.Env = append(os.Environ(), "HOME="+home)
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	return time.Since(start), nil
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
