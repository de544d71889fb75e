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
	report := flag.String("report", "verify/testdata/reports/trivy-high.json", "scan report to attest")
	rounds := flag.Int("rounds", 15, "rounds per comparison")
	flag.Parse()
	if err := run(*imagegate, *cosign, *report, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "cmpbench:", err)
		os.Exit(1)
	}
}

func run(imagegate, cosign, reportFile string, rounds int) error {
	reg, err := testsign.StartRegistry()
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

	sigsOnly, err := writePolicy(work, "sigs", reg.Host, "")
	if err != nil {
		return err
	}
	withScan, err := writePolicy(work, "scan", reg.Host, "    scan: {attestors: [scanner], maxSeverity: critical, maxAge: 168h}\n")
	if err != nil {
		return err
	}

	cosignVerify := func(n string) []string {
		return []string{cosign, "verify", "--key", filepath.Join(work, n+".pub"),
			"--insecure-ignore-tlog", "--allow-http-registry", "--allow-insecure-registry", image}
	}
	var sigCmds [][]string
	for _, n := range names {
		sigCmds = append(sigCmds, cosignVerify(n))
	}
	attCmd := []string{cosign, "verify-attestation", "--type", "vuln", "--key", filepath.Join(work, "scanner.pub"),
		"--insecure-ignore-tlog", "--allow-http-registry", "--allow-insecure-registry", image}

	fmt.Printf("image %s: 3 signatures (ci, scanner, staging) and 1 vuln attestation (scanner); %d rounds each\n\n", image, rounds)
	fmt.Printf("%-44s %12s %12s %8s\n", "check", "imagegate", "cosign", "ratio")
	for _, c := range []struct {
		what   string
		policy string
		cosign [][]string
	}{
		{"3 signers (3x cosign verify)", sigsOnly, sigCmds},
		{"3 signers + scan (+ cosign verify-attestation)", withScan, append(slices.Clone(sigCmds), attCmd)},
	} {
		ig := [][]string{{imagegate, "verify", "--policy-dir", c.policy, image}}
		igT, coT, err := compare(ig, c.cosign, rounds, work)
		if err != nil {
			return fmt.Errorf("%s: %w", c.what, err)
		}
		fmt.Printf("%-44s %10.1fms %10.1fms %7.1fx\n", c.what, ms(igT), ms(coT), float64(coT)/float64(igT))
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
