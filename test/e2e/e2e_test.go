//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/imagegate/imagegate/test/e2eutil"
)

// What the runtime says when imagegate is not connected; imagegate's own
// denials start with "imagegate: ".
const notPresent = `required plugin "imagegate" not present`

// node is the machine under test: a registry, a containerd with imagegate
// required, imagegate, and a pod to create containers in.
type node struct {
	t     *testing.T
	tools Tools
	dir   string
	// The registry with the test's images, and the policy.
	*e2eutil.Site
	containerd *Containerd
	imagegate  *e2eutil.Imagegate
	cri        *CRI
	pod        *Pod
	// names makes container names unique: a name stays taken by a
	// created container.
	names int
}

func TestEndToEnd(t *testing.T) {
	n := setUp(t)

	// Every image is pulled by tag, as a workload names it; what is judged
	// is the digest containerd pulled.
	good := n.pull("shop/good:1")
	t.Run("signed and cleanly scanned image runs", func(t *testing.T) {
		id, err := n.create(good, "shop/good:1")
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		n.start(t, id)
	})

	for _, c := range []struct {
		name, image string
		want        []string
	}{
		{"unsigned image is refused", "shop/unsigned:1",
			[]string{`denied by rule "shop"`, "signatures:", "missing ci (no signature)"}},
		{"image under the signature threshold is refused", "shop/under:1",
			[]string{`denied by rule "shop"`, "rule needs 2 of ci, staging", "missing staging"}},
		{"image with a critical CVE is refused", "shop/critical:1",
			[]string{`denied by rule "shop"`, "scan:", "CVE-2024-3094 (critical)"}},
		{"image no rule matches is refused", "other/thing:1",
			[]string{"imagegate: image", "denied"}},
	} {
		ref := n.pull(c.image)
		t.Run(c.name, func(t *testing.T) {
			n.wantDenied(t, ref, c.image, c.want...)
		})
	}

	t.Run("image pulled by tag is judged by the digest pulled", func(t *testing.T) {
		// The tag pointed at an unsigned image when the node pulled it; it
		// points at a signed one now. The node runs what it pulled.
		ref := n.pull("shop/moved:1")
		unsigned := n.digest("shop/moved:1")
		signed := n.digest("shop/moved:signed")
		if err := n.Images.Tag(n.Registry+"/shop/moved", signed, "1"); err != nil {
			t.Fatal(err)
		}
		n.wantDenied(t, ref, "shop/moved:1", unsigned, "missing ci (no signature)")
	})

	t.Run("creates fail while imagegate is down and work when it is back", func(t *testing.T) {
		if err := n.imagegate.Stop(); err != nil {
			t.Fatal(err)
		}
		err := e2eutil.WaitFor(10*time.Second, "containerd refuses creates without imagegate", func() error {
			_, err := n.create(good, "shop/good:1")
			switch {
			case err == nil:
				t.Fatalf("a container was created while imagegate was down: fail-open")
			case !strings.Contains(err.Error(), notPresent):
				return err
			}
			t.Logf("refused while imagegate is down: %v", err)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.imagegate.Start(); err != nil {
			t.Fatal(err)
		}
		if err := n.imagegate.WaitRegistered(0, 10*time.Second); err != nil {
			t.Fatalf("%v%s", err, n.imagegate.Tail(20))
		}
		id := n.createDecided(t, good, "shop/good:1")
		n.start(t, id)
		n.wantDenied(t, n.pull("shop/unsigned:1"), "shop/unsigned:1", "missing ci (no signature)")
	})

	t.Run("containerd restart is survived", func(t *testing.T) {
		before, err := n.imagegate.Registrations()
		if err != nil {
			t.Fatal(err)
		}
		if err := n.containerd.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := n.containerd.Start(); err != nil {
			t.Fatalf("%v%s", err, n.containerd.Tail(20))
		}
		if err := n.imagegate.WaitRegistered(before, 15*time.Second); err != nil {
			t.Fatalf("imagegate did not reconnect: %v%s", err, n.imagegate.Tail(20))
		}
		n.wantDenied(t, n.pull("shop/unsigned:1"), "shop/unsigned:1", "missing ci (no signature)")
		id := n.createDecided(t, good, "shop/good:1")
		n.start(t, id)
	})

	t.Run("doctor passes a fail-closed containerd", func(t *testing.T) {
		out, code := n.doctor(n.imagegate.Config)
		if code != 0 {
			t.Errorf("imagegate doctor exited %d, want 0", code)
		}
		for _, want := range []string{
			"OK  containerd 2.4.2+unknown answers on " + n.containerd.Socket,
			"OK  containerd config read from the process: pid ",
			" --config " + n.containerd.Config + "\n",
			"OK  NRI enabled in containerd",
			`OK  fail-closed: containerd requires NRI plugin imagegate`,
			"OK  NRI socket " + n.containerd.NRISocket + " reachable",
			"OK  imagegate runs and is connected to the runtime's NRI (http://",
			"OK  policy " + n.PolicyDir + ": 3 signers, 1 rules",
			"OK  registry " + n.Registry + " reachable",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("imagegate doctor said\n%s\nwhich lacks %q", out, want)
			}
		}
	})

	t.Run("doctor fails a fail-open containerd", func(t *testing.T) {
		dir := filepath.Join(n.dir, "o")
		open, err := NewContainerd(n.tools, dir, ContainerdOptions{
			Registry: n.Registry, PauseImage: n.Registry + "/pause:1", FailOpen: true,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := open.Start(); err != nil {
			t.Fatalf("%v%s", err, open.Tail(20))
		}
		defer func() {
			if err := open.Stop(); err != nil {
				t.Error(err)
			}
		}()
		g, err := NewImagegate(n.tools.Imagegate, dir, n.PolicyDir, open)
		if err != nil {
			t.Fatal(err)
		}
		out, code := n.doctor(g.Config)
		if code != 1 {
			t.Errorf("imagegate doctor exited %d, want 1", code)
		}
		want := "FAIL fail-closed: fail-open: containers will be created while imagegate is down; " +
			"set enable = true under [plugins.'io.containerd.nri.v1.nri'.default_validator] in the config of pid "
		if !strings.Contains(out, want) || !strings.Contains(out, open.Config+", and restart containerd") {
			t.Errorf("imagegate doctor said\n%s\nwhich lacks %q naming %s", out, want, open.Config)
		}
	})
}

// setUp builds the node and registers its teardown.
func setUp(t *testing.T) *node {
	tools, err := ToolsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	// Short: containerd's sockets live below it.
	dir, err := e2eutil.WorkDir("ige2e-")
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, tools: tools, dir: dir}
	t.Cleanup(n.tearDown)

	start := time.Now()
	n.Site, err = e2eutil.NewSite(tools.Crane, tools.Busybox, tools.Cosign, dir, []e2eutil.SignedImage{
		{Ref: "pause:1"},
		{Ref: "shop/good:1", Signers: []string{"ci", "staging"}, Report: "trivy-clean.json"},
		{Ref: "shop/unsigned:1"},
		{Ref: "shop/under:1", Signers: []string{"ci"}, Report: "trivy-clean.json"},
		{Ref: "shop/critical:1", Signers: []string{"ci", "staging"}, Report: "trivy-critical.json"},
		{Ref: "other/thing:1", Signers: []string{"ci", "staging"}, Report: "trivy-clean.json"},
		{Ref: "shop/moved:1"},
		{Ref: "shop/moved:signed", Signers: []string{"ci", "staging"}, Report: "trivy-clean.json"},
	})
	t.Cleanup(n.Site.Stop)
	if err != nil {
		t.Fatal(err)
	}
	addr := n.Registry
	t.Logf("registry %s with signed images and policy ready in %s", addr, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	n.containerd, err = NewContainerd(tools, filepath.Join(dir, "c"), ContainerdOptions{
		Registry: addr, PauseImage: addr + "/pause:1",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.containerd.Start(); err != nil {
		t.Fatalf("%v%s", err, n.containerd.Tail(30))
	}
	n.imagegate, err = NewImagegate(tools.Imagegate, dir, n.PolicyDir, n.containerd)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.imagegate.Start(); err != nil {
		t.Fatalf("%v%s", err, n.imagegate.Tail(30))
	}
	if err := n.imagegate.WaitRegistered(0, 10*time.Second); err != nil {
		t.Fatalf("%v%s", err, n.imagegate.Tail(30))
	}
	n.cri, err = DialCRI(n.containerd.Socket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n.pod, err = n.cri.RunPod(ctx, "e2e")
	if err != nil {
		t.Fatalf("RunPodSandbox: %v%s", err, n.containerd.Tail(30))
	}
	t.Logf("containerd, imagegate and a pod up in %s", time.Since(start).Round(time.Millisecond))
	return n
}

func (n *node) tearDown() {
	t := n.t
	if t.Failed() && n.containerd != nil {
		t.Logf("containerd's log:%s", n.containerd.Tail(40))
	}
	if t.Failed() && n.imagegate != nil {
		t.Logf("imagegate's log:%s", n.imagegate.Tail(40))
	}
	if n.cri != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := n.cri.RemoveAllPods(ctx); err != nil {
			t.Errorf("removing the pods: %v", err)
		}
		cancel()
		n.cri.Close()
	}
	if n.imagegate != nil {
		n.imagegate.Stop()
	}
	if n.containerd != nil {
		if err := n.containerd.Stop(); err != nil {
			t.Error(err)
		}
		e2eutil.KillShims(n.containerd.Socket)
	}
	e2eutil.RemoveWorkDir(t, n.dir)
}

// doctor runs imagegate doctor with the daemon config cfg.
func (n *node) doctor(cfg string) (string, int) {
	out, err := exec.Command(n.tools.Imagegate, "doctor", "--config", cfg).CombinedOutput()
	n.t.Logf("imagegate doctor --config %s:\n%s", cfg, out)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		n.t.Fatal(err)
	}
	return string(out), 0
}

// pull pulls host/ref through the CRI and returns the image reference a
// kubelet would create containers with.
func (n *node) pull(ref string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := n.cri.Pull(ctx, n.Registry+"/"+ref)
	if err != nil {
		n.t.Fatalf("pull %s: %v", ref, err)
	}
	return id
}

// digest returns the digest the registry serves for host/ref now.
func (n *node) digest(ref string) string {
	d, err := e2eutil.Run(nil, n.tools.Crane, "digest", n.Registry+"/"+ref)
	if err != nil {
		n.t.Fatal(err)
	}
	return d
}

// create creates a container of imageRef as the workload image userImage
// (relative to the registry) would be.
func (n *node) create(imageRef, userImage string) (string, error) {
	n.names++
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return n.cri.CreateContainer(ctx, n.pod, fmt.Sprintf("c%d", n.names), imageRef, n.Registry+"/"+userImage)
}

// createDecided creates a container that must be allowed right after
// imagegate (re)registered: the runtime counts a plugin as present only
// once its synchronization is done, a moment after it registered.
func (n *node) createDecided(t *testing.T, imageRef, userImage string) string {
	t.Helper()
	var id string
	err := e2eutil.WaitFor(5*time.Second, "create allowed", func() error {
		var err error
		id, err = n.create(imageRef, userImage)
		if err != nil && !strings.Contains(err.Error(), notPresent) {
			t.Fatalf("create %s: %v", userImage, err)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// start starts container id and checks that it runs.
func (n *node) start(t *testing.T, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.cri.StartContainer(ctx, id); err != nil {
		t.Fatalf("start: %v", err)
	}
	st, err := n.cri.ContainerState(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st != runtimeapi.ContainerState_CONTAINER_RUNNING {
		t.Fatalf("container %s is %s after start, want running", id, st)
	}
}

// wantDenied checks that a create is refused by imagegate with an error
// that holds every part of want. A verification that outlasts the create's
// budget is denied "in progress, retry", as the kubelet would retry.
func (n *node) wantDenied(t *testing.T, imageRef, userImage string, want ...string) {
	t.Helper()
	var err error
	werr := e2eutil.WaitFor(10*time.Second, "a verdict", func() error {
		_, err = n.create(imageRef, userImage)
		if err != nil && strings.Contains(err.Error(), "in progress, retry") {
			return err
		}
		return nil
	})
	if werr != nil {
		t.Fatal(werr)
	}
	if err == nil {
		t.Fatalf("create of %s succeeded, want it denied", userImage)
	}
	for _, w := range append([]string{"imagegate: "}, want...) {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("create of %s failed with\n\t%v\nwhich lacks %q", userImage, err, w)
		}
	}
	t.Logf("%s refused: %v", userImage, err)
}
