package plugin

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/imagegate/imagegate/policy"
)

// loadPolicy loads dir, saying which directory an error is about.
func loadPolicy(dir string) (*policy.Policy, error) {
	pol, err := policy.Load(dir)
	if err != nil {
		return nil, fmt.Errorf("invalid policy in %s:\n%w", dir, err)
	}
	return pol, nil
}

// Reload loads the policy directory again and, when it is valid and
// different, puts it in force for every decision from now on. An invalid
// policy is logged with every problem and refused: the last good one stays.
func (p *Plugin) Reload() error {
	p.reloadMu.Lock()
	defer p.reloadMu.Unlock()
	// The fingerprint is taken before reading, so that a change made while
	// reading shows up as a change at the next poll.
	p.lastPrint = fingerprint(p.cfg.PolicyDir)
	old := p.state.Load().pol
	pol, err := loadPolicy(p.cfg.PolicyDir)
	if err != nil {
		p.metrics.reloadFailures.Inc()
		problems := []string{err.Error()}
		var perr *policy.Error
		if errors.As(err, &perr) {
			problems = problems[:0]
			for _, pr := range perr.Problems {
				problems = append(problems, pr.String())
			}
		}
		p.log.Error("policy reload refused; the last good policy stays in force",
			zap.String("policyDir", p.cfg.PolicyDir), zap.Strings("problems", problems),
			zap.String("generation", old.Generation))
		return err
	}
	if pol.Generation == old.Generation {
		return nil
	}
	p.swap(pol)
	p.log.Info("policy reloaded", zap.String("policyDir", p.cfg.PolicyDir),
		zap.String("generation", pol.Generation), zap.String("previousGeneration", old.Generation),
		zap.Int("rules", len(pol.Rules)))
	return nil
}

// watchPolicy reloads when the policy directory changes. It polls a stat
// of every file instead of subscribing to inotify, so that it also sees
// keys in subdirectories and files replaced through symlinks (Kubernetes
// ConfigMaps, fleet tools that swap a directory link).
func (p *Plugin) watchPolicy(ctx context.Context) {
	t := time.NewTicker(p.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.reloadMu.Lock()
		changed := fingerprint(p.cfg.PolicyDir) != p.lastPrint
		p.reloadMu.Unlock()
		if changed {
			// Reload logs and counts its own failure.
			_ = p.Reload()
		}
	}
}

// fingerprint hashes the names, sizes, modes and modification times of
// everything under dir, links followed.
func fingerprint(dir string) uint64 {
	h := fnv.New64a()
	err := filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(h, "%s\x00error %v\x00", path, err)
			return nil
		}
		fi, err := os.Stat(path)
		if err != nil {
			fmt.Fprintf(h, "%s\x00error %v\x00", path, err)
			return nil
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00%d\x00", path, fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		fmt.Fprintf(h, "error %v", err)
	}
	return h.Sum64()
}

// warmOnPulls verifies images as the runtime pulls them, re-subscribing
// with backoff whenever the runtime goes away.
func (p *Plugin) warmOnPulls(ctx context.Context) {
	delay := minBackoff
	for {
		start := time.Now()
		err := p.pulls.WatchPulls(ctx, p.warm)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > maxBackoff {
			delay = minBackoff
		}
		p.log.Warn("image pull events: watch ended; subscribing again", zap.Error(err), zap.Duration("retryIn", delay))
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}
