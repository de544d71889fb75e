//go:build e2edocker

package e2edocker

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imagegate/imagegate/test/e2eutil"
)

// What imagegate says of an unsigned image and of one with a critical CVE
// (the same texts as on a containerd node). Every denial the test reads
// must also name imagegate.
const (
	unsignedReason = "missing ci (no signature)"
	criticalReason = "CVE-2024-3094 (critical)"
)

// node is one engine of the swarm and its imagegate.
type node struct {
	role      string // "manager" or "worker"
	engine    *Engine
	imagegate *Imagegate
	id        string // swarm node ID
}

// cluster is the machine under test.
type cluster struct {
	t     *testing.T
	tools Tools
	dir   string
	// The registry with the test's images, and the policy.
	*e2eutil.Site
	// nodes: manager first.
	nodes []*node
	// madeDirs are host directories the test created, deepest first.
	madeDirs []string
	// names makes service and container names unique.
	names int
}

func (c *cluster) manager() *node { return c.nodes[0] }

func TestDockerSwarm(t *testing.T) {
	c := setUp(t)

	t.Run("signed service runs on manager and worker", func(t *testing.T) {
		for _, n := range c.nodes {
			svc := c.service(t, n, "shop/good:1")
			c.waitTask(t, svc, "running on the "+n.role, 60*time.Second, func(tk Task) bool {
				return tk.Status.State == "running" && tk.NodeID == n.id
			})
		}
	})

	t.Run("unsigned service is rejected on manager and worker", func(t *testing.T) {
		for _, n := range c.nodes {
			svc := c.service(t, n, "shop/unsigned:1")
			c.wantRejected(t, svc, n, time.Time{}, unsignedReason)
		}
	})

	t.Run("update to a critical image is rejected and the old task keeps running", func(t *testing.T) {
		critical := c.Registry + "/shop/critical:1"
		for _, n := range c.nodes {
			svc := c.service(t, n, "shop/good:1")
			old := c.waitTask(t, svc, "running on the "+n.role, 60*time.Second, func(tk Task) bool {
				return tk.Status.State == "running" && tk.NodeID == n.id
			})
			// As typed. The docker CLI 29.8 does not pin an image given
			// to `service update --image` (it drops QueryRegistry), so
			// the task may name no digest: imagegate must refuse it
			// as unknown then.
			tk := c.updateRejected(t, svc, n, critical, old, "imagegate")
			if !strings.Contains(tk.Status.Err, criticalReason) && !strings.Contains(tk.Status.Err, "did not pin") {
				t.Errorf("%s: neither the CVE nor a missing digest named", tk)
			}
			// Pinned, as a deploy pipeline does: judged by the scan.
			c.updateRejected(t, svc, n, critical+"@"+c.Digests["shop/critical:1"], old, criticalReason)
		}
	})

	t.Run("re-pointed tag is judged by the pinned digest", func(t *testing.T) {
		// shop/moved:1 is unsigned when the services are created, and the
		// CLI pins that digest; the tag then moves to a signed image. Every
		// retry must still be judged by (and denied for) the pinned digest.
		unsigned, signed := c.Digests["shop/moved:1"], c.Digests["shop/moved:signed"]
		var svcs []string
		for _, n := range c.nodes {
			svc := c.service(t, n, "shop/moved:1")
			svcs = append(svcs, svc)
			c.wantRejected(t, svc, n, time.Time{}, unsignedReason)
		}
		if err := c.Images.Tag(c.Registry+"/shop/moved", signed, "1"); err != nil {
			t.Fatal(err)
		}
		since := time.Now()
		for i, n := range c.nodes {
			tk := c.wantRejected(t, svcs[i], n, since, unsignedReason, unsigned)
			if !strings.HasSuffix(tk.Spec.ContainerSpec.Image, "@"+unsigned) {
				t.Errorf("task image %s, want it pinned at %s", tk.Spec.ContainerSpec.Image, unsigned)
			}
		}
	})

	t.Run("docker run of an unsigned image is refused and of a signed one works", func(t *testing.T) {
		for _, n := range c.nodes {
			c.wantRunRefused(t, n, "shop/unsigned:1", unsignedReason)
			c.wantRunWorks(t, n, "shop/good:1")
		}
	})

	t.Run("imagegate killed: nothing unsigned runs, enforcement returns", func(t *testing.T) {
		// Services whose tasks swarm keeps retrying while imagegate is
		// down: each retry reaches the guard on its node.
		svcs := map[*node]string{}
		for _, n := range c.nodes {
			svcs[n] = c.service(t, n, "shop/unsigned:1")
			c.wantRejected(t, svcs[n], n, time.Time{}, unsignedReason)
		}
		offsets := map[*node]int64{}
		for _, n := range c.nodes {
			offsets[n] = n.engine.LogSize()
			n.imagegate.Kill()
		}
		// The manager's API waits on its authorization plugin now: what
		// happens is read from the engines' logs and the processes.
		for _, n := range c.nodes {
			err := e2eutil.WaitFor(60*time.Second, n.role+" retries the unsigned task while imagegate is down", func() error {
				if img := c.running(n, "shop/unsigned:1"); img != "" {
					t.Fatalf("an unsigned container runs on the %s while imagegate is down: fail-open", n.role)
				}
				var fails []string
				for _, l := range n.engine.LogSince(offsets[n]) {
					if strings.Contains(l, "fatal task error") {
						fails = append(fails, l)
					}
				}
				if len(fails) < 2 {
					return fmt.Errorf("%d failed task starts logged", len(fails))
				}
				// The guard's refusal, as dockerd reports it.
				for _, l := range fails {
					if strings.Contains(l, "OCI runtime create failed: imagegate") {
						t.Logf("%s while imagegate is down: %s", n.role, l)
						return nil
					}
				}
				return fmt.Errorf("no failed start names imagegate's guard: %s", fails[len(fails)-1])
			})
			if err != nil {
				t.Errorf("%v%s", err, n.engine.Tail(10))
			}
		}
		for _, n := range c.nodes {
			if img := c.running(n, "shop/unsigned:1"); img != "" {
				t.Errorf("an unsigned container runs on the %s while imagegate is down: fail-open", n.role)
			}
		}
		for _, n := range c.nodes {
			if err := n.imagegate.Start(); err != nil {
				t.Fatalf("%v%s", err, n.imagegate.Tail(20))
			}
		}
		for _, n := range c.nodes {
			c.waitServing(t, n)
		}
		// Judged through NRI again: rejected, with imagegate's reason.
		before := time.Now()
		for _, n := range c.nodes {
			c.wantRejected(t, svcs[n], n, before, unsignedReason)
			c.wantRunRefused(t, n, "shop/unsigned:1", unsignedReason)
		}
		for _, n := range c.nodes {
			c.wantRunWorks(t, n, "shop/good:1")
		}
	})

	t.Run("dockerd reloaded: still enforced", func(t *testing.T) {
		since := time.Now().Add(-time.Second)
		regs := map[*node]float64{}
		for _, n := range c.nodes {
			r, err := n.imagegate.Registrations()
			if err != nil {
				t.Fatal(err)
			}
			regs[n] = r
			if err := n.engine.Dockerd().Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		for _, n := range c.nodes {
			err := e2eutil.WaitFor(30*time.Second, n.role+"'s dockerd reloaded", func() error {
				evs, err := n.engine.Events(since, `{"type":["daemon"],"event":["reload"]}`)
				if err != nil {
					return err
				}
				if !strings.Contains(evs, `"Action":"reload"`) {
					return fmt.Errorf("no reload event yet")
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%v%s", err, n.engine.Tail(10))
			}
			// A reload drops external NRI plugins without a word:
			// imagegate must register with the new NRI instance.
			if err := n.imagegate.WaitRegistered(regs[n], 20*time.Second); err != nil {
				t.Fatalf("%v%s", err, n.imagegate.Tail(20))
			}
		}
		for _, n := range c.nodes {
			svc := c.service(t, n, "shop/unsigned:1")
			c.wantRejected(t, svc, n, time.Time{}, unsignedReason)
			c.wantRunRefused(t, n, "shop/unsigned:1", unsignedReason)
			c.wantRunWorks(t, n, "shop/good:1")
		}
	})

	t.Run("restart refused under a stricter policy, admissions survive imagegate's restart", c.testRestart)
}

// setUp builds the swarm and registers its teardown.
func setUp(t *testing.T) *cluster {
	tools, err := ToolsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	// Short: the engines' sockets live below it.
	dir, err := e2eutil.WorkDir("igd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, tools: tools, dir: dir}
	t.Cleanup(c.tearDown)

	start := time.Now()
	c.Site, err = e2eutil.NewSite(tools.Crane, tools.Busybox, tools.Cosign, dir, []e2eutil.SignedImage{
		{Ref: "shop/good:1", Signers: []string{"ci", "staging"}, Report: "trivy-clean.json"},
		{Ref: "shop/unsigned:1"},
		{Ref: "shop/critical:1", Signers: []string{"ci", "staging"}, Report: "trivy-critical.json"},
		{Ref: "shop/moved:1"},
		{Ref: "shop/moved:signed", Signers: []string{"ci", "staging"}, Report: "trivy-clean.json"},
	})
	t.Cleanup(c.Site.Stop)
	if err != nil {
		t.Fatal(err)
	}
	addr := c.Registry
	t.Logf("registry %s with signed images and policy ready in %s", addr, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	c.pluginDirs()
	for _, spec := range []struct{ role, name, addr, subnet string }{
		{"manager", "m", "127.0.0.1", "10.254.91.0/24"},
		{"worker", "w", "127.0.0.2", "10.254.92.0/24"},
	} {
		edir := filepath.Join(dir, spec.name)
		// The engines share /run/docker/plugins: one plugin name each.
		authz := fmt.Sprintf("imagegate-e2e%d-%s", os.Getpid(), spec.name)
		e, err := NewEngine(tools, spec.name, edir, spec.addr, spec.subnet, EngineOptions{
			Registry: addr, AuthzPlugin: authz, Guard: tools.ImagegateRunc,
		})
		if err != nil {
			t.Fatal(err)
		}
		g, err := NewImagegate(tools, filepath.Join(edir, "ig"), c.PolicyDir, authz, e)
		if err != nil {
			t.Fatal(err)
		}
		// The guard, started by the engine's containerd shims, reads the
		// same config as its imagegate.
		e.SetGuardConfig(g.Config)
		n := &node{role: spec.role, engine: e, imagegate: g}
		c.nodes = append(c.nodes, n)
		// imagegate first: dockerd exits when a configured authorization
		// plugin is missing.
		if err := g.Start(); err != nil {
			t.Fatalf("%v%s", err, g.Tail(30))
		}
		if err := e2eutil.WaitFor(10*time.Second, g.Name+" serves its authorization plugin", g.AuthzServed); err != nil {
			t.Fatalf("%v%s", err, g.Tail(30))
		}
		if err := e.StartContainerd(); err != nil {
			t.Fatal(err)
		}
		if err := e.StartDockerd(); err != nil {
			t.Fatalf("%v%s", err, e.Tail(30))
		}
		// docker_gwbridge made first keeps swarm's bridge private.
		if _, err := e.Docker("network", "create", "-d", "bridge", "--subnet", spec.subnet,
			"-o", "com.docker.network.bridge.name="+e.Bridge,
			"-o", "com.docker.network.bridge.enable_icc=false",
			"-o", "com.docker.network.bridge.enable_ip_masquerade=false", "docker_gwbridge"); err != nil {
			t.Fatal(err)
		}
	}
	m, w := c.nodes[0].engine, c.nodes[1].engine
	if _, err := m.Docker("swarm", "init", "--advertise-addr", m.Addr, "--listen-addr", m.Addr+":2377"); err != nil {
		t.Fatal(err)
	}
	token, err := m.Docker("swarm", "join-token", "-q", "worker")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Docker("swarm", "join", "--token", token, "--advertise-addr", w.Addr,
		"--listen-addr", w.Addr+":2377", m.Addr+":2377"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		if n.id, err = n.engine.NodeID(); err != nil {
			t.Fatal(err)
		}
	}
	err = e2eutil.WaitFor(30*time.Second, "the worker ready in the swarm", func() error {
		var nodes []struct {
			ID     string
			Status struct{ State string }
		}
		if err := m.Get("/nodes", &nodes); err != nil {
			return err
		}
		for _, nd := range nodes {
			if nd.ID == c.nodes[1].id && nd.Status.State == "ready" {
				return nil
			}
		}
		return fmt.Errorf("nodes %+v", nodes)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		c.waitServing(t, n)
	}
	t.Logf("two engines and their imagegates up, swarm formed in %s", time.Since(start).Round(time.Millisecond))
	return c
}

// waitServing waits until n's imagegate is connected to its dockerd's NRI
// and serves its authorization plugin.
func (c *cluster) waitServing(t *testing.T, n *node) {
	t.Helper()
	if err := n.imagegate.WaitRegistered(0, 20*time.Second); err != nil {
		t.Fatalf("%v%s", err, n.imagegate.Tail(30))
	}
	if err := e2eutil.WaitFor(10*time.Second, n.imagegate.Name+" serves its authorization plugin", n.imagegate.AuthzServed); err != nil {
		t.Fatalf("%v%s", err, n.imagegate.Tail(30))
	}
}

// pluginDirs notes which of /run/docker and /run/docker/plugins the test
// makes (dockerd and imagegate create them), to remove them afterwards.
func (c *cluster) pluginDirs() {
	for _, d := range []string{filepath.Dir(PluginDir), PluginDir} {
		if _, err := os.Stat(d); os.IsNotExist(err) {
			c.madeDirs = append([]string{d}, c.madeDirs...)
		}
	}
}

func (c *cluster) tearDown() {
	t := c.t
	for _, n := range c.nodes {
		if t.Failed() {
			t.Logf("%s dockerd's log:%s", n.role, n.engine.Tail(30))
			t.Logf("%s imagegate's log:%s", n.role, n.imagegate.Tail(30))
		}
	}
	// Services first, so that the engines stop in a few seconds; not
	// while an imagegate is down, though: the manager's API would wait on
	// its authorization plugin (15 s and more a call).
	up := len(c.nodes) > 0
	for _, n := range c.nodes {
		if n.imagegate.Exited() != nil {
			up = false
		}
	}
	if up {
		m := c.manager().engine
		if out, err := m.Docker("service", "ls", "-q"); err == nil && out != "" {
			if _, err := m.Docker(append([]string{"service", "rm"}, strings.Fields(out)...)...); err != nil {
				t.Log(err)
			}
		}
	}
	// dockerd before imagegate: it asks the authorization plugin until it
	// is gone.
	for i := len(c.nodes) - 1; i >= 0; i-- {
		for _, err := range c.nodes[i].engine.Stop() {
			t.Error(err)
		}
	}
	for _, n := range c.nodes {
		n.imagegate.Stop()
		n.imagegate.RemovePluginSocket()
		n.engine.RemoveBridge()
	}
	for _, d := range c.madeDirs {
		_ = os.Remove(d) // only when empty
	}
	e2eutil.RemoveWorkDir(t, c.dir)
}

// service creates a service of image (relative to the registry) placed on
// n's role, as a user would with the docker CLI (which pins the image's
// digest), and returns its name.
func (c *cluster) service(t *testing.T, n *node, image string) string {
	t.Helper()
	c.names++
	name := fmt.Sprintf("s%d-%s", c.names, n.engine.Name)
	_, err := c.manager().engine.Docker("service", "create", "--detach", "--name", name,
		"--constraint", "node.role=="+n.role,
		"--restart-delay", "1s", "--stop-grace-period", "1s",
		"--update-order", "start-first", "--update-failure-action", "pause",
		c.Registry+"/"+image)
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// waitTask waits for a task of svc for which ok holds, and returns it.
func (c *cluster) waitTask(t *testing.T, svc, what string, timeout time.Duration, ok func(Task) bool) Task {
	t.Helper()
	var found Task
	err := e2eutil.WaitFor(timeout, svc+" "+what, func() error {
		ts, err := c.manager().engine.Tasks(svc)
		if err != nil {
			return err
		}
		for _, tk := range ts {
			if ok(tk) {
				found = tk
				return nil
			}
		}
		return fmt.Errorf("tasks: %s", summary(ts))
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// wantRejected waits for a task of svc, created after since, that swarm
// rejected on n with an error holding imagegate's reason (every part of
// want), and checks that no task of svc runs.
func (c *cluster) wantRejected(t *testing.T, svc string, n *node, since time.Time, want ...string) Task {
	t.Helper()
	tk := c.waitTask(t, svc, "rejected on the "+n.role, 60*time.Second, func(tk Task) bool {
		return tk.NodeID == n.id && tk.CreatedAt.After(since) &&
			(tk.Status.State == "rejected" || tk.Status.State == "failed" || tk.Status.State == "running")
	})
	if tk.Status.State == "running" {
		t.Fatalf("%s runs on the %s, want it rejected: %s", svc, n.role, tk)
	}
	for _, w := range append([]string{"imagegate"}, want...) {
		if !strings.Contains(tk.Status.Err, w) {
			t.Errorf("%s lacks %q", tk, w)
		}
	}
	if tk.Status.State != "rejected" {
		t.Errorf("%s: state %s, want rejected (imagegate's NRI decision)", svc, tk.Status.State)
	}
	t.Logf("%s on the %s: %s: %s", svc, n.role, tk.Status.State, tk.Status.Err)
	return tk
}

// updateRejected updates svc on n to image, waits for the new task to be
// rejected with every part of want and the update to pause on it, and
// checks that the task old still runs and nothing of the new image does.
func (c *cluster) updateRejected(t *testing.T, svc string, n *node, image string, old Task, want ...string) Task {
	t.Helper()
	since := time.Now()
	out, err := c.manager().engine.DockerCombined("service", "update", "--detach", "--image", image, svc)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, "\n") {
		t.Logf("docker service update --image %s: %s", image, out)
	}
	tk := c.wantRejected(t, svc, n, since, want...)
	err = e2eutil.WaitFor(60*time.Second, "update of "+svc+" paused on task "+tk.ID, func() error {
		var s Service
		if err := c.manager().engine.Get("/services/"+svc, &s); err != nil {
			return err
		}
		if s.UpdateStatus == nil || s.UpdateStatus.State != "paused" || !strings.Contains(s.UpdateStatus.Message, tk.ID) {
			return fmt.Errorf("update status %+v", s.UpdateStatus)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	ts, err := c.manager().engine.Tasks(svc)
	if err != nil {
		t.Fatal(err)
	}
	kept := false
	for _, x := range ts {
		if x.ID == old.ID && x.Status.State == "running" && x.DesiredState == "running" {
			kept = true
		} else if x.Status.State == "running" {
			t.Errorf("another task runs: %s", x)
		}
	}
	if !kept {
		t.Errorf("the old task %.12s of %s no longer runs: %s", old.ID, svc, summary(ts))
	}
	return tk
}

// wantRunRefused checks that `docker run` of image on n is refused with
// imagegate's reason.
func (c *cluster) wantRunRefused(t *testing.T, n *node, image string, want ...string) {
	t.Helper()
	c.names++
	name := fmt.Sprintf("r%d", c.names)
	out, err := n.engine.Docker("run", "-d", "--name", name, "--stop-timeout", "1", c.Registry+"/"+image)
	defer n.engine.Docker("rm", "-f", name)
	if err == nil {
		t.Errorf("docker run %s on the %s started %s, want it refused", image, n.role, out)
		return
	}
	for _, w := range append([]string{"imagegate"}, want...) {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("docker run %s on the %s failed with\n\t%v\nwhich lacks %q", image, n.role, err, w)
		}
	}
	t.Logf("docker run %s on the %s refused: %v", image, n.role, err)
}

// wantRunWorks checks that `docker run` of image on n starts a container
// that runs.
func (c *cluster) wantRunWorks(t *testing.T, n *node, image string) {
	t.Helper()
	c.names++
	name := fmt.Sprintf("r%d", c.names)
	if _, err := n.engine.Docker("run", "-d", "--name", name, "--stop-timeout", "1", c.Registry+"/"+image); err != nil {
		t.Errorf("docker run %s on the %s: %v", image, n.role, err)
		return
	}
	defer n.engine.Docker("rm", "-f", name)
	out, err := n.engine.Docker("inspect", "-f", "{{.State.Running}} {{.Image}}", name)
	if err != nil {
		t.Error(err)
		return
	}
	if !strings.HasPrefix(out, "true ") {
		t.Errorf("docker run %s on the %s: container not running: %s", image, n.role, out)
	}
}

// running returns the image (as /etc/e2e-image in it names it) of a
// container of image that runs on n now, or "": the container processes
// are found as children of the shims of n's containerd.
func (c *cluster) running(n *node, image string) string {
	want := c.Registry + "/" + image
	procs, _ := filepath.Glob("/proc/[0-9]*/root/etc/e2e-image")
	for _, f := range procs {
		b, err := os.ReadFile(f)
		if err != nil || strings.TrimSpace(string(b)) != want {
			continue
		}
		pid := strings.Split(f, "/")[2]
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		fields := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(fields) < 2 {
			continue
		}
		cmd, _ := os.ReadFile("/proc/" + fields[1] + "/cmdline")
		if strings.Contains(string(cmd), "\x00-address\x00"+n.engine.Containerd+"\x00") {
			return want
		}
	}
	return ""
}

// summary lists tasks for a failure message.
func summary(ts []Task) string {
	var s []string
	for _, tk := range ts {
		s = append(s, "\n\t"+tk.String())
	}
	return strings.Join(s, "")
}
