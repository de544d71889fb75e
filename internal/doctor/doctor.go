// Package doctor checks that a node is set up for imagegate to protect it:
// that the containerd which answers on the configured address calls
// imagegate through NRI and refuses to create containers while it is down,
// or on a Docker node that dockerd calls it through NRI and its
// authorization plugin and creates containers only through imagegate-runc,
// that the policy loads, its keys are safe, its registries answer, and the
// clock can be trusted to judge scan ages.
package doctor

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
)

// Status is the outcome of one check.
type Status int

const (
	OK Status = iota
	// Warn is a doubt that does not fail the node.
	Warn
	Fail
)

// Result is one line of the report.
type Result struct {
	Status Status
	// Check names what was checked, with what was found when it passed.
	Check string
	// Fix says what is wrong and what to do about it; empty when OK.
	Fix string
}

func (r Result) String() string {
	switch r.Status {
	case OK:
		return "OK  " + r.Check
	case Warn:
		return "WARN " + r.Check + ": " + r.Fix
	}
	return "FAIL " + r.Check + ": " + r.Fix
}

func ok(check string, args ...any) Result {
	return Result{Status: OK, Check: fmt.Sprintf(check, args...)}
}

func fail(check, fix string, args ...any) Result {
	return Result{Status: Fail, Check: check, Fix: fmt.Sprintf(fix, args...)}
}

func warn(check, fix string, args ...any) Result {
	return Result{Status: Warn, Check: check, Fix: fmt.Sprintf(fix, args...)}
}

// Config is what the checks need of imagegate's daemon config.
type Config struct {
	// Runtime is containerd, docker or auto ("" is auto).
	Runtime           string
	ContainerdAddress string
	NRISocket         string
	PolicyDir         string
	// DockerAddress is docker.address (unix:///run/docker.sock).
	DockerAddress string
	AuthzPlugin   string
	GuardSocket   string
	// MetricsListen is metrics.listen, where the running daemon says
	// whether it is connected.
	MetricsListen string

	// For tests: the daemon.json named in fixes, the directory of
	// dockerd's plugin sockets, and whether dockerd is installed.
	daemonJSON       string
	dockerPluginDir  string
	dockerdInstalled func() bool
}

// Run runs every check and returns their results in report order: the
// runtime's (containerd's, Docker's, or under auto those of each runtime
// found on the node), the policy's, the clock's.
func Run(ctx context.Context, cfg Config) []Result {
	var rs []Result
	docker, containerd := runtimes(cfg)
	if docker {
		rs = append(rs, checkDocker(ctx, cfg)...)
	}
	if containerd {
		rs = append(rs, checkContainerd(ctx, cfg, docker)...)
	}
	rs = append(rs, checkDaemon(ctx, cfg.MetricsListen))
	rs = append(rs, checkPolicy(ctx, cfg.PolicyDir)...)
	rs = append(rs, checkClock(ctx))
	return rs
}

// runtimes decides which runtimes' checks run. Under auto: Docker's when
// dockerd answers on docker.address or is installed, containerd's when
// containerd answers on containerd.address; containerd's alone (which then
// fail) when neither is found.
func runtimes(cfg Config) (docker, containerd bool) {
	switch cfg.Runtime {
	case "containerd":
		return false, true
	case "docker":
		return true, false
	}
	if cfg.DockerAddress != "" {
		installed := cfg.dockerdInstalled
		if installed == nil {
			installed = dockerdInstalled
		}
		socket, err := DockerSocket(cfg.DockerAddress)
		docker = err == nil && answers(socket) || installed()
	}
	containerd = cfg.ContainerdAddress != "" && answers(cfg.ContainerdAddress)
	return docker, containerd || !docker
}

// answers reports whether something accepts connections on a unix socket.
func answers(socket string) bool {
	c, err := net.DialTimeout("unix", socket, callTimeout)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Passed reports whether no check failed.
func Passed(rs []Result) bool {
	return !slices.ContainsFunc(rs, func(r Result) bool { return r.Status == Fail })
}

// quote joins names for a message.
func quote(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
