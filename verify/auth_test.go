package verify_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/imagegate/imagegate/internal/testsign"
	"github.com/imagegate/imagegate/policy"
	"github.com/imagegate/imagegate/verify"
)

// A registry that wants basic auth: the credentials come from the auth
// file the policy names, and never show in what imagegate says.
func TestRegistryAuth(t *testing.T) {
	const user, pass = "robot", "s3cret-token-do-not-print"
	inner := registry.New()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
			return
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	host := u.Host

	dir := t.TempDir()
	writeAuth := func(name, password string) string {
		p := filepath.Join(dir, name)
		auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + password))
		if err := os.WriteFile(p, []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, bad := writeAuth("good.json", pass), writeAuth("bad.json", "wrong-"+pass)

	ci := testsign.NewKey(t, "ci")
	signer := &policy.Signer{Name: "ci", Key: ci.Public}
	rule := &policy.Rule{Name: "prod", Mode: policy.ModeEnforce,
		Signatures: &policy.Signatures{Threshold: 1, Signers: []*policy.Signer{signer}}}
	verifyWith := func(auth string) (verify.Verdict, error) {
		pol := &policy.Policy{
			Signers:    map[string]*policy.Signer{"ci": signer},
			Registries: map[string]*policy.Registry{host: {Host: host, Insecure: true, Auth: auth}},
		}
		subj, err := verify.NewSubject(host+"/shop/api", "sha256:"+strings.Repeat("ab", 32))
		if err != nil {
			t.Fatal(err)
		}
		return verify.New(pol).Verify(context.Background(), subj, rule)
	}

	if vd, err := verifyWith(good); err != nil || vd.Allowed {
		t.Errorf("with the right credentials: verdict %+v err %v, want an unsigned deny from the registry", vd, err)
	}
	for _, auth := range []string{"", bad} {
		vd, err := verifyWith(auth)
		if err == nil {
			t.Fatalf("auth %q: verdict %+v, want an error", auth, vd)
		}
		if !strings.Contains(err.Error(), "refused access (check its auth file in the policy's registries)") {
			t.Errorf("auth %q: %v, want it to say access was refused", auth, err)
		}
		if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString([]byte(user+":"))) {
			t.Errorf("the error shows the credentials: %v", err)
		}
	}
}
