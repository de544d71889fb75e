//go:build e2edocker

package e2edocker

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagegate/imagegate/test/e2eutil"
)

// testRestart: Docker restarts a container (`docker restart`, `docker
// start`) without a new NRI event; imagegate decides the digest it admitted
// the container with again, under the policy in force, from the record in
// its stateDir, which outlives imagegate itself.
func (c *cluster) testRestart(t *testing.T) {
	names := map[*node]string{}
	for _, n := range c.nodes {
		c.names++
		name := fmt.Sprintf("rs%d", c.names)
		id, err := n.engine.Docker("run", "-d", "--name", name, "--stop-timeout", "1", c.Registry+"/shop/good:1")
		if err != nil {
			t.Fatalf("docker run shop/good:1 on the %s: %v", n.role, err)
		}
		t.Cleanup(func() { n.engine.Docker("rm", "-f", name) })
		names[n] = name
		c.wantState(t, n, name, "true")
		// Admitted through NRI: the record the guard answers restarts from.
		rec := filepath.Join(n.imagegate.StateDir, "admissions", id)
		if _, err := os.Stat(rec); err != nil {
			t.Fatalf("%s: no admission record for %.12s: %v", n.role, id, err)
		}
	}

	// A stricter policy: a release signature, which shop/good:1 lacks, is
	// now required.
	file := filepath.Join(c.PolicyDir, "50-e2e.yaml")
	orig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := c.Cosign.GenerateKey("release")
	if err != nil {
		t.Fatal(err)
	}
	strict := strings.Replace(string(orig), "signers:\n", fmt.Sprintf("signers:\n  - name: release\n    key: %s\n", pub), 1)
	strict = strings.Replace(strict, "signers: [ci, staging]\n      required: [ci]",
		"signers: [ci, staging, release]\n      required: [ci, release]", 1)
	if strict == string(orig) || !strings.Contains(strict, "required: [ci, release]") {
		t.Fatalf("the policy no longer has the shape this test rewrites:\n%s", orig)
	}
	c.setPolicy(t, file, []byte(strict))
	restored := false
	defer func() {
		if !restored {
			c.setPolicy(t, file, orig)
		}
	}()

	for _, n := range c.nodes {
		name := names[n]
		// The restart passes the authorization plugin (it decides starts
		// only); the guard refuses the runc create.
		_, err := n.engine.Docker("restart", "-t", "1", name)
		c.wantRefused(t, n, "docker restart", err, "imagegate", "release")
		c.wantState(t, n, name, "false")
		// `docker start`: refused by the authorization plugin.
		_, err = n.engine.Docker("start", name)
		c.wantRefused(t, n, "docker start", err, "imagegate", "release")
		c.wantState(t, n, name, "false")
	}

	c.setPolicy(t, file, orig)
	restored = true

	// imagegate crashes and comes back: what it admitted is in its
	// stateDir, not in memory.
	for _, n := range c.nodes {
		n.imagegate.Kill()
		if err := n.imagegate.Start(); err != nil {
			t.Fatalf("%v%s", err, n.imagegate.Tail(20))
		}
		c.waitServing(t, n)
		if out, err := n.engine.Docker("start", names[n]); err != nil {
			t.Errorf("docker start %s on the %s after imagegate's restart: %v", names[n], n.role, err)
		} else {
			t.Logf("docker start %s on the %s after imagegate's restart: %s", names[n], n.role, out)
		}
		c.wantState(t, n, names[n], "true")
	}
}

// wantRefused checks that a docker command on n failed with every part of
// want in its error.
func (c *cluster) wantRefused(t *testing.T, n *node, what string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s on the %s worked under the stricter policy, want it refused", what, n.role)
		return
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s on the %s failed with\n\t%v\nwhich lacks %q", what, n.role, err, w)
		}
	}
	t.Logf("%s on the %s refused: %v", what, n.role, err)
}

// wantState checks that container name on n is running ("true") or not
// ("false").
func (c *cluster) wantState(t *testing.T, n *node, name, running string) {
	t.Helper()
	out, err := n.engine.Docker("inspect", "-f", "{{.State.Running}}", name)
	if err != nil {
		t.Fatal(err)
	}
	if out != running {
		t.Errorf("container %s on the %s: running %s, want %s", name, n.role, out, running)
	}
}

// setPolicy replaces the policy file with content (whole, by a rename) and
// waits until every node's imagegate has put a new generation in force.
func (c *cluster) setPolicy(t *testing.T, file string, content []byte) {
	t.Helper()
	before := map[*node]string{}
	for _, n := range c.nodes {
		g, err := n.imagegate.PolicyGeneration()
		if err != nil {
			t.Fatal(err)
		}
		before[n] = g
	}
	// Written beside the policy directory, not in it: imagegate must never
	// read half a file.
	tmp := filepath.Join(c.dir, "policy.tmp")
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		err := e2eutil.WaitFor(20*time.Second, n.imagegate.Name+" reloads its policy", func() error {
			g, err := n.imagegate.PolicyGeneration()
			if err != nil {
				return err
			}
			if g == before[n] {
				return fmt.Errorf("generation %s still in force", g)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v%s", err, n.imagegate.Tail(10))
		}
	}
}

// PolicyGeneration reads the generation label of imagegate_policy_info.
func (g *Imagegate) PolicyGeneration() (string, error) {
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + g.Metrics + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	s := bufio.NewScanner(resp.Body)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), `imagegate_policy_info{generation="`); ok {
			if gen, _, ok := strings.Cut(v, `"`); ok {
				return gen, nil
			}
		}
	}
	if err := s.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("imagegate_policy_info not served")
}
