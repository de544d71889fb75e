package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/nri/pkg/api"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/zap"
	"google.golang.org/protobuf/encoding/protowire"
)

// notManager is what dockerd on a swarm worker answers GET /tasks/{id}.
const notManager = "This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. " +
	"Please run this command on a manager node or promote the current node to a manager."

// fakeEngine is dockerd's Engine API as imagegate uses it, on a unix
// socket. Like dockerd, it asks the authorization plugin about every
// request, imagegate's own included.
type fakeEngine struct {
	t    testing.TB
	sock string
	// root is the data root /info reports.
	root string
	// authz is the authorization plugin's socket; "" asks none.
	authz string

	mu              sync.Mutex
	manager         bool
	containerdStore bool
	tasks           map[string]string
	containers      map[string]fakeContainer
	repoDigests     map[string][]string
	drop            chan struct{}

	events      chan string
	subscribers atomic.Int32
}

type fakeContainer struct {
	id, name, image, typed string
}

func newFakeEngine(t testing.TB, dir string) *fakeEngine {
	t.Helper()
	f := &fakeEngine{
		t: t, sock: filepath.Join(dir, "docker.sock"), root: filepath.Join(dir, "docker"),
		manager: true, containerdStore: true,
		tasks: map[string]string{}, containers: map[string]fakeContainer{}, repoDigests: map[string][]string{},
		drop: make(chan struct{}), events: make(chan string),
	}
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /info", f.info)
	mux.HandleFunc("GET /tasks/{id}", f.task)
	mux.HandleFunc("GET /containers/{id}/json", f.container)
	mux.HandleFunc("GET /images/{id}/json", f.image)
	mux.HandleFunc("POST /containers/{id}/start", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /events", f.eventStream)
	srv := httptest.NewUnstartedServer(f.authorized(mux))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(func() {
		f.dropStreams()
		srv.Close()
	})
	return f
}

var versionPrefix = regexp.MustCompile(`^/v[0-9.]+/`)

// authorized asks the authorization plugin first, as dockerd does, and
// strips the API version.
func (f *fakeEngine) authorized(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if f.authz != "" {
			allow, msg := f.authorize(r)
			if !allow {
				apiMessage(w, http.StatusForbidden, "authorization denied by plugin imagegate: "+msg)
				return
			}
		}
		r.URL.Path = versionPrefix.ReplaceAllString(r.URL.Path, "/")
		next.ServeHTTP(w, r)
	})
}

func (f *fakeEngine) authorize(r *http.Request) (bool, string) {
	body, _ := json.Marshal(map[string]any{"RequestMethod": r.Method, "RequestUri": r.URL.RequestURI(), "User": ""})
	var resp authzResponse
	if err := pluginCall(f.authz, "/AuthZPlugin.AuthZReq", body, &resp); err != nil {
		return false, err.Error()
	}
	return resp.Allow, resp.Msg
}

// pluginCall posts body to a plugin's socket as dockerd's plugin client
// does and decodes the answer into v.
func pluginCall(sock, path string, body []byte, v any) error {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	resp, err := c.Post("http://plugin.moby.localhost"+path, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != authzContentType {
		return fmt.Errorf("content type %q", ct)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func apiMessage(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func (f *fakeEngine) info(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	status := [][2]string{{"driver-type", "io.containerd.snapshotter.v1"}}
	if !f.containerdStore {
		status = [][2]string{{"Backing Filesystem", "extfs"}}
	}
	json.NewEncoder(w).Encode(map[string]any{"DockerRootDir": f.root, "DriverStatus": status})
}

func (f *fakeEngine) task(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := r.PathValue("id")
	if !f.manager {
		apiMessage(w, http.StatusServiceUnavailable, notManager)
		return
	}
	image, ok := f.tasks[id]
	if !ok {
		apiMessage(w, http.StatusNotFound, "task "+id+" not found")
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"ID": id, "Spec": map[string]any{"ContainerSpec": map[string]any{"Image": image}}})
}

func (f *fakeEngine) container(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ref := r.PathValue("id")
	for _, c := range f.containers {
		if c.id == ref || c.name == ref {
			json.NewEncoder(w).Encode(map[string]any{"Id": c.id, "Name": "/" + c.name, "Image": c.image,
				"Config": map[string]any{"Image": c.typed}})
			return
		}
	}
	apiMessage(w, http.StatusNotFound, "No such container: "+ref)
}

func (f *fakeEngine) image(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rd, ok := f.repoDigests[r.PathValue("id")]
	if !ok {
		apiMessage(w, http.StatusNotFound, "No such image: "+r.PathValue("id"))
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"Id": r.PathValue("id"), "RepoDigests": rd})
}

func (f *fakeEngine) eventStream(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("filters") != `{"type":["daemon"],"event":["reload"]}` {
		apiMessage(w, http.StatusBadRequest, "unexpected filters "+r.URL.Query().Get("filters"))
		return
	}
	f.mu.Lock()
	drop := f.drop
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	f.subscribers.Add(1)
	defer f.subscribers.Add(-1)
	for {
		select {
		case action := <-f.events:
			fmt.Fprintf(w, `{"Type":"daemon","Action":%q,"Actor":{"ID":"x","Attributes":{}},"scope":"local","time":%d}`+"\n",
				action, time.Now().Unix())
			w.(http.Flusher).Flush()
		case <-drop:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// dropStreams ends the event streams, as a dockerd restart does.
func (f *fakeEngine) dropStreams() {
	f.mu.Lock()
	defer f.mu.Unlock()
	close(f.drop)
	f.drop = make(chan struct{})
}

func (f *fakeEngine) set(fn func(f *fakeEngine)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

// start starts container ref through the Engine API, as docker start does.
func (f *fakeEngine) start(ref string) error {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", f.sock)
		}}}
	resp, err := c.Post("http://docker/v1.52/containers/"+ref+"/start", "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent {
		return nil
	}
	var m struct{ Message string }
	json.NewDecoder(resp.Body).Decode(&m)
	return fmt.Errorf("%s", m.Message)
}

// withDocker makes the runtime side identify as dockerd and points the
// plugin at fe, serving the authorization plugin in the test's directory.
func withDocker(fe **fakeEngine) envOption {
	return func(e *env, opts *[]Option) {
		*fe = newFakeEngine(e.t, e.dir)
		e.runtime = "docker"
		e.cfg.Docker.Address = "unix://" + (*fe).sock
		e.cfg.Docker.AuthzPlugin = "imagegate"
		(*fe).authz = filepath.Join(e.dir, "docker-plugins", "imagegate.sock")
		*opts = append(*opts, WithAuthzDir(filepath.Join(e.dir, "docker-plugins")))
	}
}

// taskRecord is a swarmkit api.Task as the worker's store keeps it, with
// fields around the image that the reader must skip.
func taskRecord(id, image string) []byte {
	var ctr []byte
	ctr = protowire.AppendTag(ctr, 2, protowire.BytesType) // labels
	ctr = protowire.AppendBytes(ctr, []byte("\n\x03key\x12\x05value"))
	ctr = protowire.AppendTag(ctr, 1, protowire.BytesType)
	ctr = protowire.AppendString(ctr, image)
	ctr = protowire.AppendTag(ctr, 17, protowire.VarintType) // tty
	ctr = protowire.AppendVarint(ctr, 1)
	var spec []byte
	spec = protowire.AppendTag(spec, 1, protowire.BytesType)
	spec = protowire.AppendBytes(spec, ctr)
	spec = protowire.AppendTag(spec, 5, protowire.BytesType) // restart policy
	spec = protowire.AppendBytes(spec, []byte{0x08, 0x01})
	var task []byte
	task = protowire.AppendTag(task, 1, protowire.BytesType)
	task = protowire.AppendString(task, id)
	task = protowire.AppendTag(task, 2, protowire.BytesType) // meta
	task = protowire.AppendBytes(task, []byte{0x0a, 0x02, 0x08, 0x07})
	task = protowire.AppendTag(task, 3, protowire.BytesType)
	task = protowire.AppendBytes(task, spec)
	task = protowire.AppendTag(task, 6, protowire.VarintType) // slot
	task = protowire.AppendVarint(task, 1)
	return task
}

// openTaskStore writes the worker's task store under root and keeps it
// open, holding bbolt's exclusive lock as dockerd does.
func openTaskStore(t testing.TB, root string, tasks map[string]string) *bolt.DB {
	t.Helper()
	path := filepath.Join(root, taskStorePath)
	must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	db, err := bolt.Open(path, 0o600, nil)
	must(t, err)
	t.Cleanup(func() { db.Close() })
	must(t, db.Update(func(tx *bolt.Tx) error {
		v1, err := tx.CreateBucketIfNotExists([]byte("v1"))
		if err != nil {
			return err
		}
		tb, err := v1.CreateBucketIfNotExists([]byte("tasks"))
		if err != nil {
			return err
		}
		for id, image := range tasks {
			b, err := tb.CreateBucketIfNotExists([]byte(id))
			if err != nil {
				return err
			}
			if err := b.Put([]byte("data"), taskRecord(id, image)); err != nil {
				return err
			}
		}
		return nil
	}))
	return db
}

// swarmContainer is a task's container as dockerd's NRI reports it: no
// image, no CRI annotations, the task's labels merged with the image's.
func swarmContainer(id, taskID string, labels map[string]string) *api.Container {
	l := map[string]string{
		"com.docker.swarm.node.id":      "node1",
		"com.docker.swarm.service.id":   "svc1",
		"com.docker.swarm.service.name": "shop",
		"com.docker.swarm.task":         "",
		"com.docker.swarm.task.id":      taskID,
		"com.docker.swarm.task.name":    "shop.1." + taskID,
	}
	for k, v := range labels {
		l[k] = v
	}
	return &api.Container{Id: id, PodSandboxId: testPod.Id, Name: "/shop.1." + taskID, Labels: l}
}

func TestDockerSwarmTasks(t *testing.T) {
	for _, node := range []string{"manager", "worker"} {
		t.Run(node, func(t *testing.T) {
			var fe *fakeEngine
			e := newEnv(t, withDocker(&fe))
			host := e.reg.Host
			signed := e.push("shop/api:1.4", "ci", "staging")
			unsigned := e.push("shop/unsigned:1")
			tasks := map[string]string{
				"tsigned":   e.image("shop/api:1.4") + "@" + signed.DigestStr(),
				"tunsigned": e.image("shop/unsigned:1") + "@" + unsigned.DigestStr(),
				"tunpinned": e.image("shop/api:1.4"),
				"texempt":   e.image("pause:3.10"),
			}
			if node == "manager" {
				fe.set(func(f *fakeEngine) { f.tasks = tasks })
			} else {
				fe.set(func(f *fakeEngine) { f.manager = false })
				openTaskStore(t, fe.root, tasks)
			}
			notFound := "the swarm managers know no task tgone"
			if node == "worker" {
				notFound = "task tgone is not in the worker's task store " + filepath.Join(fe.root, taskStorePath)
			}
			unsignedWhy := fmt.Sprintf(`imagegate: image %s/shop/unsigned:1 (%s) denied by rule "prod": `+
				`signatures: no signer verified, rule needs 2 of ci, scanner, staging; required signer ci did not sign; `+
				`missing ci (no signature), scanner (no signature), staging (no signature)`, host, unsigned.DigestStr())

			for _, tc := range []struct {
				name string
				ctr  *api.Container
				want string // "" allows
			}{
				{name: "signed", ctr: swarmContainer("c1", "tsigned", nil)},
				{name: "unsigned", ctr: swarmContainer("c2", "tunsigned", nil), want: unsignedWhy},
				{
					name: "labels claiming a signed image are ignored",
					ctr: swarmContainer("c3", "tunsigned", map[string]string{
						annImageName:                    e.image("shop/api:1.4"),
						"org.opencontainers.image.ref":  e.image("shop/api:1.4") + "@" + signed.DigestStr(),
						"com.docker.swarm.service.name": "api",
					}),
					want: unsignedWhy,
				},
				{
					name: "task not found",
					ctr:  swarmContainer("c4", "tgone", nil),
					want: "imagegate: cannot establish the image of swarm task tgone (container shop.1.tgone): " + notFound,
				},
				{
					name: "image not pinned",
					ctr:  swarmContainer("c5", "tunpinned", nil),
					want: fmt.Sprintf("imagegate: cannot establish the image digest of container shop.1.tunpinned: "+
						"swarm task tunpinned runs %s/shop/api:1.4, which the swarm did not pin to a digest "+
						"(docker service update --image by tag with the docker CLI 29.8, --no-resolve-image, or a registry the manager could not reach: name the image by digest)", host),
				},
				{name: "exempt image needs no digest", ctr: swarmContainer("c6", "texempt", nil)},
			} {
				t.Run(tc.name, func(t *testing.T) {
					e.wantCreate(t, tc.ctr, tc.want)
				})
			}
			// The guard finds what NRI admitted, and only that.
			if img, d, ok := e.p.admissions.Lookup("c1"); !ok || img != e.image("shop/api:1.4") || d != signed.DigestStr() {
				t.Errorf("admission of c1 = %q %q %v", img, d, ok)
			}
			if _, _, ok := e.p.admissions.Lookup("c2"); ok {
				t.Error("a denied container was admitted")
			}
			ent := e.logs.FilterMessage("decision").FilterField(zap.String("container", "shop.1.tunsigned")).All()
			if len(ent) == 0 || ent[0].ContextMap()["image"] != e.image("shop/unsigned:1") || ent[0].ContextMap()["digest"] != unsigned.DigestStr() {
				t.Errorf("audit line of the unsigned task: %v", ent)
			}
		})
	}
}

func TestDockerRunDeferredToStart(t *testing.T) {
	var fe *fakeEngine
	e := newEnv(t, withDocker(&fe))
	// A docker run container: dockerd has not registered it yet.
	ctr := &api.Container{Id: "abc", PodSandboxId: testPod.Id, Name: "/web",
		Labels: map[string]string{annImageName: e.image("shop/api:1.4")}}
	if err := e.rt.create(ctr); err != nil {
		t.Fatalf("NRI create of a docker run container denied: %v", err)
	}
	if _, _, ok := e.p.admissions.Lookup("abc"); ok {
		t.Error("NRI admitted a container whose image it could not see; the guard would let it run")
	}
}

func TestDockerRunWithoutAuthzPluginDenied(t *testing.T) {
	var fe *fakeEngine
	e := newEnv(t, withDocker(&fe), func(e *env, _ *[]Option) { e.cfg.Docker.AuthzPlugin = "" })
	err := e.rt.create(&api.Container{Id: "abc", PodSandboxId: testPod.Id, Name: "/web"})
	want := rpcPrefix + "imagegate: cannot establish the image of container web: Docker names no image at create " +
		"outside a swarm service, and the authorization plugin that decides such containers at start is disabled (docker.authzPlugin)"
	if err == nil || err.Error() != want {
		t.Errorf("error:\n got %v\nwant %s", err, want)
	}
}

func TestAuthzPlugin(t *testing.T) {
	var fe *fakeEngine
	e := newEnv(t, withDocker(&fe))
	host := e.reg.Host
	signed := e.push("shop/api:1.4", "ci", "staging")
	unsigned := e.push("shop/unsigned:1")
	fe.set(func(f *fakeEngine) {
		f.containers["a"] = fakeContainer{id: "aaaa", name: "api", image: signed.DigestStr(), typed: e.image("shop/api:1.4")}
		f.containers["u"] = fakeContainer{id: "uuuu", name: "bad", image: unsigned.DigestStr(), typed: e.image("shop/unsigned:1")}
		// Re-tagged on the node: the tag names a signed image, the
		// container runs the unsigned one.
		f.containers["r"] = fakeContainer{id: "rrrr", name: "retag", image: unsigned.DigestStr(), typed: e.image("shop/api:1.4")}
	})

	var act struct{ Implements []string }
	must(t, pluginCall(fe.authz, "/Plugin.Activate", nil, &act))
	if len(act.Implements) != 1 || act.Implements[0] != "authz" {
		t.Errorf("Activate = %v", act.Implements)
	}

	unsignedWhy := func(image string) string {
		return fmt.Sprintf(`authorization denied by plugin imagegate: imagegate: image %s (%s) denied by rule "prod": `+
			`signatures: no signer verified, rule needs 2 of ci, scanner, staging; required signer ci did not sign; `+
			`missing ci (no signature), scanner (no signature), staging (no signature)`, image, unsigned.DigestStr())
	}
	for _, tc := range []struct {
		name, ref, want string
	}{
		{name: "signed, by ID", ref: "aaaa"},
		{name: "signed, by name", ref: "api"},
		{name: "unsigned", ref: "uuuu", want: unsignedWhy(host + "/shop/unsigned:1")},
		{name: "re-tagged locally", ref: "rrrr", want: unsignedWhy(host + "/shop/api:1.4")},
		{name: "no such container", ref: "nope",
			want: "authorization denied by plugin imagegate: imagegate: cannot establish the image of container nope: " +
				"the Docker Engine API answered 404: No such container: nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Through the engine: imagegate's own inspect goes through the
			// authorization plugin while it decides the start.
			err := fe.start(tc.ref)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("start denied: %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Errorf("start:\n got %v\nwant %s", err, tc.want)
			}
		})
	}
	if img, d, ok := e.p.admissions.Lookup("aaaa"); !ok || img != e.image("shop/api:1.4") || d != signed.DigestStr() {
		t.Errorf("admission of aaaa = %q %q %v", img, d, ok)
	}
	if _, _, ok := e.p.admissions.Lookup("uuuu"); ok {
		t.Error("a denied container was admitted")
	}
	ent := e.logs.FilterMessage("decision").FilterField(zap.String("event", "docker start")).FilterField(zap.String("container", "bad")).All()
	if len(ent) != 1 || ent[0].ContextMap()["verdict"] != "deny" {
		t.Errorf("audit lines of the unsigned start: %v", ent)
	}

	// Everything else is allowed at once, without asking the engine.
	for _, req := range []map[string]any{
		{"RequestMethod": "GET", "RequestUri": "/v1.52/containers/uuuu/json"},
		{"RequestMethod": "POST", "RequestUri": "/v1.52/containers/create?name=x"},
		{"RequestMethod": "POST", "RequestUri": "/v1.52/containers/uuuu/stop"},
		{"RequestMethod": "GET", "RequestUri": "/_ping"},
	} {
		body, _ := json.Marshal(req)
		var resp authzResponse
		must(t, pluginCall(fe.authz, "/AuthZPlugin.AuthZReq", body, &resp))
		if !resp.Allow || resp.Msg != "" {
			t.Errorf("%v: %+v", req, resp)
		}
	}
	body, _ := json.Marshal(map[string]any{"RequestMethod": "POST", "RequestUri": "/v1.52/containers/uuuu/start",
		"ResponseStatusCode": 204})
	var resp authzResponse
	must(t, pluginCall(fe.authz, "/AuthZPlugin.AuthZRes", body, &resp))
	if !resp.Allow {
		t.Errorf("AuthZRes: %+v", resp)
	}
}

func TestAuthzLegacyImageStore(t *testing.T) {
	var fe *fakeEngine
	e := newEnv(t, withDocker(&fe), func(*env, *[]Option) { fe.containerdStore = false })
	signed := e.push("shop/api:1.4", "ci", "staging")
	other := e.push("shop/other:1", "ci", "staging")
	const configID = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	fe.set(func(f *fakeEngine) {
		f.containers["a"] = fakeContainer{id: "aaaa", name: "api", image: configID, typed: e.image("shop/api:1.4")}
		f.containers["b"] = fakeContainer{id: "bbbb", name: "other", image: configID, typed: e.image("shop/nowhere:1")}
		f.repoDigests[configID] = []string{e.image("shop/other") + "@" + other.DigestStr(), e.image("shop/api") + "@" + signed.DigestStr()}
	})
	must(t, fe.start("aaaa"))
	if _, d, _ := e.p.admissions.Lookup("aaaa"); d != signed.DigestStr() {
		t.Errorf("admitted at %s, want the RepoDigest of the repository typed %s", d, signed.DigestStr())
	}
	err := fe.start("bbbb")
	want := fmt.Sprintf("authorization denied by plugin imagegate: imagegate: cannot establish the image digest of container other: "+
		"image %s holds no registry digest for %s/shop/nowhere (built or loaded on this node, or pulled under another name)", configID, e.reg.Host)
	if err == nil || err.Error() != want {
		t.Errorf("start:\n got %v\nwant %s", err, want)
	}
}

func TestDockerReloadReregisters(t *testing.T) {
	var fe *fakeEngine
	e := newEnv(t, withDocker(&fe))
	unsigned := e.push("shop/unsigned:1")
	fe.set(func(f *fakeEngine) { f.tasks["t1"] = e.image("shop/unsigned:1") + "@" + unsigned.DigestStr() })
	waitFor(t, "the event subscription", func() bool { return fe.subscribers.Load() == 1 })

	// A reload: dockerd starts a new NRI instance on the same socket; the
	// old one keeps the plugin's connection and never calls it again.
	reload := func() *testRuntime {
		t.Helper()
		e.rt.nri.Stop()
		rt := startRuntimeAs(t, "docker", e.sock, false)
		regs := e.metric("imagegate_nri_registrations_total")
		fe.events <- "reload"
		rt.waitPlugins(t, 1)
		waitFor(t, "a new registration", func() bool { return e.metric("imagegate_nri_registrations_total") == regs+1 })
		e.rt = rt
		return rt
	}
	rt := reload()
	err := rt.create(swarmContainer("c1", "t1", nil))
	if err == nil || !strings.Contains(err.Error(), `denied by rule "prod"`) {
		t.Errorf("create after a reload: %v", err)
	}

	// dockerd restarting ends the stream: imagegate subscribes again.
	fe.dropStreams()
	waitFor(t, "the subscription again", func() bool { return fe.subscribers.Load() == 1 })
	rt = reload()
	if err := rt.create(swarmContainer("c2", "t1", nil)); err == nil {
		t.Error("a create after the second reload was not judged")
	}
}

func TestRuntimeDetection(t *testing.T) {
	for _, tc := range []struct {
		runtime, announced string
		docker             bool
	}{
		{"auto", "docker", true},
		{"auto", "containerd", false},
		{"docker", "containerd", true},
		{"containerd", "docker", false},
	} {
		t.Run(tc.runtime+" "+tc.announced, func(t *testing.T) {
			e := newEnv(t, func(e *env, _ *[]Option) { e.cfg.Runtime, e.runtime = tc.runtime, tc.announced })
			if got := e.p.docker.Load(); got != tc.docker {
				t.Errorf("docker mode = %v, want %v", got, tc.docker)
			}
		})
	}
}

func TestWorkerTaskStoreUnreadable(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, taskStorePath)
	_, err := workerTaskImage(context.Background(), dir, "t1")
	want := "no worker task store at " + path + ": is this node part of a swarm, and is docker.address the engine whose data root that is?"
	if err == nil || err.Error() != want {
		t.Errorf("missing store:\n got %v\nwant %s", err, want)
	}
	must(t, os.MkdirAll(filepath.Dir(path), 0o700))
	must(t, os.WriteFile(path, bytes.Repeat([]byte{0xa5}, 16384), 0o600))
	_, err = workerTaskImage(context.Background(), dir, "t1")
	want = "reading the worker's task store " + path + ": invalid database"
	if err == nil || err.Error() != want {
		t.Errorf("garbage store:\n got %v\nwant %s", err, want)
	}
}

func TestTaskImageDecoding(t *testing.T) {
	img, err := taskImage(taskRecord("t1", "reg/app:1@sha256:00"))
	if err != nil || img != "reg/app:1@sha256:00" {
		t.Errorf("taskImage = %q, %v", img, err)
	}
	if _, err := taskImage(taskRecord("t1", "x")[:20]); err == nil || !strings.HasPrefix(err.Error(), "undecodable task record: ") {
		t.Errorf("truncated record: %v", err)
	}
	var noSpec []byte
	noSpec = protowire.AppendTag(noSpec, 1, protowire.BytesType)
	noSpec = protowire.AppendString(noSpec, "t1")
	if _, err := taskImage(noSpec); err == nil || err.Error() != "the task record names no container image" {
		t.Errorf("record without spec: %v", err)
	}
}
