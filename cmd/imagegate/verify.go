package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/imagegate/imagegate/plugin"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("policy-dir", defaultPolicyDir, "policy directory")
	output := fs.String("output", "text", "output format: text or json")
	offline := fs.Bool("offline", false, "verify from the node's evidence store only, asking no registry (IMAGE@DIGEST)")
	stateDir := fs.String("state-dir", defaultStateDir, "the daemon's state directory, holding the evidence store (with --offline)")
	if err := fs.Parse(args); err != nil {
		return exitError
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(stderr, "imagegate verify: --output must be text or json, not %q\n", *output)
		return exitError
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "imagegate verify: name at least one IMAGE")
		return exitError
	}
	pol, err := policy.Load(*dir)
	if err != nil {
		fmt.Fprintf(stderr, "imagegate verify: invalid policy:\n%v\n", err)
		return exitError
	}
	var opts []verify.Option
	if *offline {
		store, err := verify.OpenStore(filepath.Join(*stateDir, "evidence"), plugin.DefaultConfig().Cache.Size)
		if err != nil {
			fmt.Fprintf(stderr, "imagegate verify: %v\n", err)
			return exitError
		}
		opts = append(opts, verify.WithStore(store), verify.WithOffline())
	}
	v := verify.New(pol, opts...)
	code := exitOK
	enc := json.NewEncoder(stdout)
	for _, image := range fs.Args() {
		vd, err := decide(ctx, v, image)
		if errors.Is(err, errBadImage) {
			fmt.Fprintf(stderr, "imagegate verify: %v\n", err)
			return exitError
		}
		if !vd.Allowed {
			code = max(code, exitDenied)
		}
		if *output == "json" {
			if err := enc.Encode(vd); err != nil {
				fmt.Fprintf(stderr, "imagegate verify: %v\n", err)
				return exitError
			}
			continue
		}
		fmt.Fprintln(stdout, textLine(vd))
	}
	return code
}

var errBadImage = errors.New("bad image reference")

// decide runs the plugin's decision for one image named on the command
// line. What cannot be evaluated (registry down, no such tag) is a deny
// with the reason, as it is on the node.
func decide(ctx context.Context, v *verify.Verifier, image string) (verify.Verdict, error) {
	subj, err := v.Resolve(ctx, image)
	if err != nil {
		if !errors.Is(err, verify.ErrUnreachable) && !errors.Is(err, verify.ErrTagNotFound) {
			return verify.Verdict{}, fmt.Errorf("%w: %v", errBadImage, err)
		}
		return deny(image, "", err), nil
	}
	vd, err := v.Decide(ctx, subj)
	if err != nil {
		return deny(image, subj.Digest.String(), err), nil
	}
	return vd, nil
}

func deny(image, digest string, err error) verify.Verdict {
	return verify.Verdict{
		Image:    image,
		Digest:   digest,
		Mode:     policy.ModeEnforce,
		Signers:  []string{},
		Evidence: []verify.Evidence{},
		Reasons:  []string{err.Error()},
	}
}

// textLine says what the JSON says, in one line.
func textLine(vd verify.Verdict) string {
	word := "ALLOW"
	switch {
	case !vd.Allowed:
		word = "DENY"
	case !vd.Passed():
		word = strings.ToUpper(string(vd.Mode))
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-5s %s", word, vd.Image)
	if vd.Digest != "" {
		fmt.Fprintf(&b, "@%s", vd.Digest)
	}
	if vd.Rule != "" {
		fmt.Fprintf(&b, " rule=%s", vd.Rule)
	}
	if len(vd.Evidence) > 0 {
		// signers=ci(cosign-v2-tag),release-ci(bundle-referrer): who
		// signed, and where their signature was found.
		parts := make([]string, len(vd.Evidence))
		for i, e := range vd.Evidence {
			parts[i] = fmt.Sprintf("%s(%s)", e.Signer, e.Mechanism)
		}
		fmt.Fprintf(&b, " signers=%s", strings.Join(parts, ","))
	}
	if vd.Scan != nil {
		fmt.Fprintf(&b, " scan=%s@%s max=%s", vd.Scan.Attestor, vd.Scan.Finished.UTC().Format("2006-01-02T15:04:05Z"), vd.Scan.MaxSeverity)
	}
	if vd.Stored {
		b.WriteString(" evidence=stored")
	}
	if len(vd.Reasons) > 0 {
		fmt.Fprintf(&b, ": %s", strings.Join(vd.Reasons, "; "))
	}
	return b.String()
}
