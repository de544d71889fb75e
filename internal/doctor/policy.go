package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"gopkg.in/yaml.v3"

	"github.com/imagegate/imagegate/policy"
)

const registryTimeout = 3 * time.Second

func checkPolicy(ctx context.Context, dir string) []Result {
	pol, err := policy.Load(dir)
	if err != nil {
		var perr *policy.Error
		if errors.As(err, &perr) && len(perr.Problems) > 1 {
			err = fmt.Errorf("%d problems, the first: %s", len(perr.Problems), perr.Problems[0])
		}
		return []Result{fail("policy "+dir, "does not load (%v): `imagegate policy check --policy-dir %s` lists every problem", err, dir)}
	}
	rs := []Result{ok("policy %s: %d signers, %d rules", dir, len(pol.Signers), len(pol.Rules))}
	rs = append(rs, checkPermissions(dir)...)
	return append(rs, checkRegistries(ctx, pol)...)
}

// checkPermissions fails every policy file, key or trusted root that
// someone other than its owner may write: whoever can write it decides
// which images run on the node.
func checkPermissions(dir string) []Result {
	files, err := policyFiles(dir)
	if err != nil {
		return []Result{fail("policy files", "%v", err)}
	}
	var rs []Result
	for _, f := range files {
		st, err := os.Stat(f)
		switch {
		case err != nil:
			rs = append(rs, fail("file "+f, "%v", err))
		case st.Mode().Perm()&0o022 != 0:
			rs = append(rs, fail("file "+f, "writable by group or others (%v): chmod go-w %s", st.Mode().Perm(), f))
		}
	}
	if len(rs) == 0 {
		rs = append(rs, ok("policy directory, files and keys writable by their owner only (%d checked)", len(files)))
	}
	return rs
}

// policyFiles returns dir, its policy files and the key and trusted root
// files they name. policy.Load has checked the files, so what does not
// parse here is skipped.
func policyFiles(dir string) ([]string, error) {
	yamls, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	files := append([]string{dir}, yamls...)
	for _, y := range yamls {
		data, err := os.ReadFile(y)
		if err != nil {
			return nil, err
		}
		files = append(files, KeyFiles(filepath.Dir(y), data)...)
	}
	slices.Sort(files[1+len(yamls):])
	return slices.Compact(files), nil
}

// KeyFiles returns the key and trusted root files named by the signers of
// a policy file in dir, resolved as policy.Load resolves them.
func KeyFiles(dir string, data []byte) []string {
	var files []string
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	for {
		var doc struct {
			Signers []struct {
				Key         string `yaml:"key"`
				TrustedRoot string `yaml:"trustedRoot"`
			} `yaml:"signers"`
		}
		if err := dec.Decode(&doc); err != nil {
			return files
		}
		for _, s := range doc.Signers {
			for _, p := range []string{s.Key, s.TrustedRoot} {
				if p == "" {
					continue
				}
				if !filepath.IsAbs(p) {
					p = filepath.Join(dir, p)
				}
				files = append(files, p)
			}
		}
	}
}

// checkRegistries asks every registry the policy names, and every host a
// checked rule matches, for its API root: verification needs them all.
func checkRegistries(ctx context.Context, pol *policy.Policy) []Result {
	hosts := RegistryHosts(pol)
	rs := make([]Result, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() { rs[i] = checkRegistry(ctx, h, pol.Registries[h]) })
	}
	wg.Wait()
	return rs
}

// RegistryHosts returns the hosts of the policy's registries and of the
// image globs of rules that check something, sorted.
func RegistryHosts(pol *policy.Policy) []string {
	var hosts []string
	for h := range pol.Registries {
		hosts = append(hosts, h)
	}
	for _, r := range pol.Rules {
		if r.Allow {
			continue
		}
		for _, img := range r.Images {
			host, _, found := strings.Cut(img, "/")
			// A glob without a host part is a Docker Hub name.
			if !found || !strings.ContainsAny(host, ".:") && host != "localhost" {
				host = "docker.io"
			}
			if !strings.ContainsAny(host, "*?[") {
				hosts = append(hosts, strings.ToLower(host))
			}
		}
	}
	slices.Sort(hosts)
	return slices.Compact(hosts)
}

func checkRegistry(ctx context.Context, host string, reg *policy.Registry) Result {
	var opts []name.Option
	if reg != nil && reg.Insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.NewRegistry(host, opts...)
	if err != nil {
		return fail("registry "+host, "%v", err)
	}
	url := r.Scheme() + "://" + r.RegistryStr() + "/v2/"
	ctx, cancel := context.WithTimeout(ctx, registryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail("registry "+host, "%v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fail("registry "+host, "GET %s: %v: verification will deny its images as \"registry unreachable\"", url, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	// 401 is how a registry that wants a token says hello.
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
		return fail("registry "+host, "GET %s: %s: this is not a registry's API", url, resp.Status)
	}
	return ok("registry %s reachable (%s)", host, url)
}

// checkClock judges whether the clock can date scans and certificates.
func checkClock(ctx context.Context) Result {
	now := time.Now().UTC()
	if now.Year() < 2024 {
		return fail("clock", "it reads %s: set the time; scan ages and certificate validity are judged by it", now.Format(time.RFC3339))
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "timedatectl", "show", "-p", "NTPSynchronized").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%v: %s", err, lastLine(string(ee.Stderr)))
		} else if errors.Is(err, exec.ErrNotFound) {
			err = errors.New("timedatectl not found")
		}
		return warn("clock "+now.Format(time.RFC3339), "NTP synchronization unknown (%v)", err)
	}
	switch synced, known := NTPSynchronized(out); {
	case !known:
		return warn("clock "+now.Format(time.RFC3339), "NTP synchronization unknown (timedatectl said %q)", strings.TrimSpace(string(out)))
	case !synced:
		return fail("clock "+now.Format(time.RFC3339), "not NTP-synchronized: enable time synchronization (timedatectl set-ntp true)")
	}
	return ok("clock %s, NTP-synchronized", now.Format(time.RFC3339))
}

// NTPSynchronized reads `timedatectl show -p NTPSynchronized`.
func NTPSynchronized(out []byte) (synced, known bool) {
	switch strings.TrimSpace(string(out)) {
	case "NTPSynchronized=yes":
		return true, true
	case "NTPSynchronized=no":
		return false, true
	}
	return false, false
}
