package policy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

// FuzzLoad feeds arbitrary policy files to Load: whatever an operator or a
// fleet tool drops into the directory, the daemon must report it, never
// crash on it. Seeds may name keys/a.pub and keys/b.pub.
func FuzzLoad(f *testing.F) {
	keys := map[string][]byte{}
	for _, k := range []string{"a.pub", "b.pub"} {
		data, err := os.ReadFile(filepath.Join("testdata/keys", k))
		if err != nil {
			f.Fatal(err)
		}
		keys[k] = data
	}
	var repos []name.Repository
	for _, s := range []string{"nginx", "registry.example.com/prod/api", "127.0.0.1:5000/shop/a/b"} {
		r, err := name.NewRepository(s)
		if err != nil {
			f.Fatal(err)
		}
		repos = append(repos, r)
	}
	f.Fuzz(func(t *testing.T, policy []byte) {
		dir := t.TempDir()
		if err := os.Mkdir(filepath.Join(dir, "keys"), 0o755); err != nil {
			t.Fatal(err)
		}
		for k, data := range keys {
			if err := os.WriteFile(filepath.Join(dir, "keys", k), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), policy, 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := Load(dir)
		if err != nil {
			var perr *Error
			if !errors.As(err, &perr) || len(perr.Problems) == 0 || p != nil {
				t.Fatalf("Load = %v, %v (%T): want no policy and problems", p, err, err)
			}
			return
		}
		if p == nil || len(p.Generation) != 64 {
			t.Fatalf("Load = %+v without error", p)
		}
		for _, r := range repos {
			p.RuleFor(r)
		}
	})
}
