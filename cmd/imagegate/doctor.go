package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/imagegate/imagegate/internal/doctor"
)

// runDoctor prints one line per check and exits 0 only when none failed;
// 2 when imagegate's own config cannot be read, since nothing else can be
// judged then.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("doctor", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := flags.String("config", defaultConfig, "daemon config file")
	if err := flags.Parse(args); err != nil {
		return exitError
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "imagegate doctor: unexpected argument %q\n", flags.Arg(0))
		return exitError
	}
	cfg, err := loadConfig(flags, *path)
	if err != nil {
		fmt.Fprintf(stderr, "imagegate doctor: %v\n", err)
		return exitError
	}
	results := doctor.Run(ctx, doctor.Config{
		ContainerdAddress: cfg.Containerd.Address,
		NRISocket:         cfg.NRI.Socket,
		PolicyDir:         cfg.PolicyDir,
	})
	for _, r := range results {
		fmt.Fprintln(stdout, r)
	}
	if !doctor.Passed(results) {
		return exitDenied
	}
	return exitOK
}
