package e2eutil

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Images builds runnable images from a static busybox and pushes them with
// crane: one layer with busybox, shared by all, and one that makes each
// image's digest its own.
type Images struct {
	crane   string
	dir     string
	busybox string
}

// NewImages prepares image building in dir with the crane binary and a
// statically linked busybox.
func NewImages(crane, busybox, dir string) (*Images, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return nil, err
	}
	layer := filepath.Join(dir, "busybox.tar")
	err = writeTar(layer, []tarEntry{{"bin/", nil, 0o755}, {"bin/busybox", bb, 0o755}})
	return &Images{crane: crane, dir: dir, busybox: layer}, err
}

type tarEntry struct {
	name string
	data []byte // nil for a directory
	mode int64
}

func writeTar(path string, entries []tarEntry) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := tar.NewWriter(f)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Size: int64(len(e.data)), Typeflag: tar.TypeReg}
		if e.data == nil {
			h.Typeflag = tar.TypeDir
		}
		if err := w.WriteHeader(h); err != nil {
			f.Close()
			return err
		}
		if _, err := w.Write(e.data); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Push pushes an image whose process sleeps for an hour as ref
// (host/repo:tag) and returns its manifest digest.
func (im *Images) Push(ref string) (string, error) {
	marker := filepath.Join(im.dir, strings.NewReplacer("/", "_", ":", "_").Replace(ref)+".tar")
	err := writeTar(marker, []tarEntry{{"etc/", nil, 0o755}, {"etc/e2e-image", []byte(ref + "\n"), 0o644}})
	if err != nil {
		return "", err
	}
	if _, err := Run(nil, im.crane, "append", "--oci-empty-base",
		"-f", im.busybox, "-f", marker, "-t", ref); err != nil {
		return "", err
	}
	// busybox ignores SIGTERM as PID 1; the test stops containers with
	// SIGKILL, so nothing waits for a grace period.
	if _, err := Run(nil, im.crane, "mutate", ref,
		"--entrypoint", "/bin/busybox,sleep,3600",
		"--set-platform", "linux/"+runtime.GOARCH, "-t", ref); err != nil {
		return "", err
	}
	return Run(nil, im.crane, "digest", ref)
}

// Tag points tag of repo (host/repo) at digest, as a registry user who
// moves a tag does.
func (im *Images) Tag(repo, digest, tag string) error {
	_, err := Run(nil, im.crane, "tag", repo+"@"+digest, tag)
	return err
}

// Cosign runs the real cosign CLI with keys in Dir.
type Cosign struct {
	Bin string
	Dir string
}

// cosign's options for a plain-HTTP registry on loopback and no
// transparency log, which is not reachable from here.
var cosignLocal = []string{"--tlog-upload=false", "--allow-http-registry", "--allow-insecure-registry", "-y"}

// The keys have an empty password.
var cosignEnv = []string{"COSIGN_PASSWORD="}

// GenerateKey makes the key pair NAME.key, NAME.pub in Dir and returns the
// public key's path.
func (c Cosign) GenerateKey(name string) (string, error) {
	prefix := filepath.Join(c.Dir, name)
	_, err := Run(cosignEnv, c.Bin, "generate-key-pair", "--output-key-prefix", prefix)
	return prefix + ".pub", err
}

// Sign signs image (host/repo@digest) with key NAME.
func (c Cosign) Sign(name, image string) error {
	args := append([]string{c.Bin, "sign", "--key", filepath.Join(c.Dir, name+".key")}, cosignLocal...)
	_, err := Run(cosignEnv, append(args, image)...)
	return err
}

// AttestVuln attests, with key NAME, a vulnerability scan of image
// (host/repo@digest) whose scanner result is the Trivy report in the file
// report, finished at finished.
func (c Cosign) AttestVuln(name, image, report string, finished time.Time) error {
	result, err := os.ReadFile(report)
	if err != nil {
		return err
	}
	pred, err := json.Marshal(map[string]any{
		"invocation": map[string]any{"uri": "", "event_id": "", "builder.id": ""},
		"scanner": map[string]any{
			"uri":     "pkg:github/aquasecurity/trivy@0.58.1",
			"version": "0.58.1",
			"result":  json.RawMessage(result),
		},
		"metadata": map[string]any{
			"scanStartedOn":  finished.Add(-time.Minute).UTC().Format(time.RFC3339),
			"scanFinishedOn": finished.UTC().Format(time.RFC3339),
		},
	})
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(c.Dir, "predicate-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(pred); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	args := append([]string{c.Bin, "attest", "--key", filepath.Join(c.Dir, name+".key"),
		"--type", "vuln", "--predicate", f.Name()}, cosignLocal...)
	if _, err := Run(cosignEnv, append(args, image)...); err != nil {
		return fmt.Errorf("attest: %w", err)
	}
	return nil
}
