package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/imagegate/imagegate/policy"
)

func runPolicyCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("policy-dir", defaultPolicyDir, "policy directory")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "imagegate policy check: unexpected argument %q\n", fs.Arg(0))
		return exitError
	}
	pol, err := policy.Load(*dir)
	if err != nil {
		var perr *policy.Error
		if errors.As(err, &perr) {
			for _, p := range perr.Problems {
				fmt.Fprintln(stdout, p)
			}
		} else {
			fmt.Fprintln(stdout, err)
		}
		return exitDenied
	}
	fmt.Fprintf(stdout, "%s: OK (%d signers, %d rules, generation %.12s)\n", *dir, len(pol.Signers), len(pol.Rules), pol.Generation)
	return exitOK
}
