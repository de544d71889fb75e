package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/imagegate/imagegate/internal/doctor"
	"github.com/imagegate/imagegate/plugin"
)

// runDoctor prints one line per check and exits 0 only when none failed;
// 2 when imagegate's own config cannot be read, since nothing else can be
// judged then. With --docker-config it prints dockerd's daemon.json merged
// with the keys imagegate needs instead, and writes no file.
func runDoctor(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("doctor", flag.ContinueOnError)
	flags.SetOutput(stderr)
	path := flags.String("config", defaultConfig, "daemon config file")
	dockerConfig := flags.Bool("docker-config", false, "print dockerd's daemon.json merged with the keys imagegate needs; writes nothing")
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
	if *dockerConfig {
		return printDockerConfig(cfg, stdout, stderr)
	}
	results := doctor.Run(ctx, doctor.Config{
		Runtime:           cfg.Runtime,
		ContainerdAddress: cfg.Containerd.Address,
		NRISocket:         cfg.NRI.Socket,
		PolicyDir:         cfg.PolicyDir,
		DockerAddress:     cfg.Docker.Address,
		AuthzPlugin:       cfg.Docker.AuthzPlugin,
		GuardSocket:       cfg.Guard.Socket,
		MetricsListen:     cfg.MetricsListen,
	})
	for _, r := range results {
		fmt.Fprintln(stdout, r)
	}
	if !doctor.Passed(results) {
		return exitDenied
	}
	return exitOK
}

// daemonJSON is where --docker-config reads the operator's daemon.json when
// no dockerd answers to say which file it was started with; tests change it.
var daemonJSON = "/etc/docker/daemon.json"

// printDockerConfig prints the daemon.json of the dockerd on docker.address
// (else /etc/docker/daemon.json; {} when there is none) merged with what
// imagegate needs, and says on stderr which of the operator's values it
// replaced.
func printDockerConfig(cfg plugin.Config, stdout, stderr io.Writer) int {
	path := daemonJSON
	if socket, err := doctor.DockerSocket(cfg.Docker.Address); err == nil {
		if p, err := doctor.DaemonJSONPath(socket); err == nil {
			path = p
		}
	}
	data, err := doctor.ReadDaemonJSON(path)
	if err != nil {
		fmt.Fprintf(stderr, "imagegate doctor: %v\n", err)
		return exitError
	}
	merged, notes, err := doctor.MergeDaemonJSON(data, doctor.DockerNeeds{
		NRISocket:   cfg.NRI.Socket,
		AuthzPlugin: cfg.Docker.AuthzPlugin,
	})
	if err != nil {
		fmt.Fprintf(stderr, "imagegate doctor: %s %v\n", path, err)
		return exitError
	}
	for _, n := range notes {
		fmt.Fprintf(stderr, "imagegate doctor: %s: %s\n", path, n)
	}
	if cfg.Docker.AuthzPlugin == "" {
		fmt.Fprintln(stderr, "imagegate doctor: docker.authzPlugin is empty in imagegate's config: no authorization plugin added")
	}
	stdout.Write(merged) //nolint:errcheck // nothing to do about a failed stdout
	return exitOK
}
