// Command imagegate is the node-level image admission gate: the NRI plugin
// daemon and the operator's command line for the same decision.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"syscall"
)

// version is set at build time (-ldflags "-X main.version=...").
var version = "dev"

const (
	defaultConfig    = "/etc/imagegate/imagegate.yaml"
	defaultPolicyDir = "/etc/imagegate/policy.d"
	defaultStateDir  = "/var/lib/imagegate"
)

// Exit statuses of DESIGN.md: 0 all allowed, 1 some denied, 2 error.
const (
	exitOK     = 0
	exitDenied = 1
	exitError  = 2
)

const usage = `usage:
  imagegate run      [--config FILE]
  imagegate verify   [--policy-dir DIR] [--output text|json] [--offline [--state-dir DIR]] IMAGE...
  imagegate policy check [--policy-dir DIR]
  imagegate doctor   [--config FILE] [--docker-config]
  imagegate version
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitError
	}
	switch args[0] {
	case "run":
		return runDaemon(ctx, args[1:], stderr)
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "policy":
		if len(args) < 2 || args[1] != "check" {
			fmt.Fprint(stderr, usage)
			return exitError
		}
		return runPolicyCheck(args[2:], stdout, stderr)
	case "doctor":
		return runDoctor(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintf(stdout, "imagegate %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "imagegate: unknown command %q\n%s", args[0], usage)
	return exitError
}
