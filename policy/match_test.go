package policy

import (
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func repo(t testing.TB, s string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRuleForFirstMatchWins(t *testing.T) {
	p, err := Load("testdata/valid")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		image string
		want  string
	}{
		{"registry.k8s.io/pause", "pause"},
		{"registry.k8s.io/pause2", "everything-else"},
		// prod (10-base.yaml) comes before team-api (50-team.yaml), which
		// names this repository exactly.
		{"registry.example.com/prod/api", "prod"},
		{"registry.example.com/prod/a/b/c", "prod"},
		{"REGISTRY.EXAMPLE.COM/prod/api", "prod"},
		{"registry.example.com/prod", "everything-else"},
		{"registry.example.com/team/api", "team-api"},
		{"127.0.0.1:5000/shop/api", "prod"},
		{"127.0.0.1:5000/shop/api/v2", "everything-else"},
		{"nginx", "hub"},
		{"library/nginx", "hub"},
		{"docker.io/nginx", "hub"},
		{"index.docker.io/library/nginx", "hub"},
		{"acme/app", "hub"},
		{"acme/app/sub", "everything-else"},
		{"quay.io/acme/app", "everything-else"},
	} {
		t.Run(tc.image, func(t *testing.T) {
			r := p.RuleFor(repo(t, tc.image))
			if r == nil || r.Name != tc.want {
				t.Errorf("RuleFor(%s) = %v, want %s", tc.image, r, tc.want)
			}
		})
	}

	p.Rules = p.Rules[:len(p.Rules)-1] // without the "**" catch-all
	if r := p.RuleFor(repo(t, "quay.io/acme/app")); r != nil {
		t.Errorf("RuleFor(quay.io/acme/app) = %s, want no rule", r.Name)
	}
}

func TestGlobStarStaysInSegmentDoubleStarCrosses(t *testing.T) {
	for _, tc := range []struct {
		glob, name string
		want       bool
	}{
		{"registry.example.com/app", "registry.example.com/app", true},
		{"registry.example.com/app", "registry.example.com/app2", false},
		{"registry.example.com/app", "registry.example.com/ap", false},
		{"registry.example.com/*", "registry.example.com/app", true},
		{"registry.example.com/*", "registry.example.com/team/app", false},
		{"registry.example.com/*/app", "registry.example.com/team/app", true},
		{"registry.example.com/*/app", "registry.example.com/a/b/app", false},
		{"registry.example.com/**", "registry.example.com/team/app", true},
		{"registry.example.com/**", "registry.example.com/app", true},
		// "**" matches zero characters, but the "/" before it is literal.
		{"registry.example.com/**", "registry.example.com2/app", false},
		{"registry.example.com/**/app", "registry.example.com/a/b/app", true},
		{"registry.example.com/**/app", "registry.example.com/a/b/app2", false},
		{"registry.example.com/app-*", "registry.example.com/app-api", true},
		{"registry.example.com/app-*", "registry.example.com/app-", true},
		{"registry.example.com/app-*", "registry.example.com/app-api/x", false},
		{"registry.example.com/a*b*c", "registry.example.com/axxbyyc", true},
		{"registry.example.com/a*b*c", "registry.example.com/axxbyy/c", false},
		{"*.example.com/**", "registry.example.com/app", true},
		{"*.example.com/**", "example.com/app", false},
		{"*.example.com/**", "a.b.example.com/app", true},
		{"**", "quay.io/a/b/c", true},
		{"**/nginx", "docker.io/library/nginx", true},
		{"**/nginx", "docker.io/library/nginx2", false},
		{"**a**a**a**a**b", "registry.example.com/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
		{"localhost:5000/app", "localhost:5000/app", true},
		{"localhost/app", "localhost/app", true},
		// Docker Hub names in globs are normalized like image names.
		{"nginx", "docker.io/library/nginx", true},
		{"nginx*", "docker.io/library/nginx-unprivileged", true},
		{"*", "docker.io/library/busybox", true},
		{"*", "docker.io/acme/busybox", false},
		{"acme/*", "docker.io/acme/app", true},
		{"docker.io/nginx", "docker.io/library/nginx", true},
		{"index.docker.io/acme/**", "docker.io/acme/app/x", true},
		{"docker.io/**", "docker.io/acme/app", true},
	} {
		t.Run(tc.glob+" "+tc.name, func(t *testing.T) {
			g, err := compileGlob(tc.glob)
			if err != nil {
				t.Fatal(err)
			}
			host, path, _ := strings.Cut(tc.name, "/")
			if got := g.match(host, path); got != tc.want {
				t.Errorf("%q matches %q = %v, want %v", tc.glob, tc.name, got, tc.want)
			}
		})
	}
}

func TestRepositoryNameNormalizesDockerHub(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nginx", "docker.io/library/nginx"},
		{"library/nginx", "docker.io/library/nginx"},
		{"docker.io/nginx", "docker.io/library/nginx"},
		{"index.docker.io/nginx", "docker.io/library/nginx"},
		{"acme/app", "docker.io/acme/app"},
		{"registry.example.com/app", "registry.example.com/app"},
		{"Registry.Example.com/app", "registry.example.com/app"},
		{"localhost:5000/a/b", "localhost:5000/a/b"},
	} {
		if got := RepositoryName(repo(t, tc.in)); got != tc.want {
			t.Errorf("RepositoryName(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestRuleForAllocatesNothing(t *testing.T) {
	p, err := Load("testdata/valid")
	if err != nil {
		t.Fatal(err)
	}
	r := repo(t, "quay.io/acme/app")
	if n := testing.AllocsPerRun(100, func() { p.RuleFor(r) }); n != 0 {
		t.Errorf("RuleFor allocates %v times per call", n)
	}
}

func BenchmarkRuleFor(b *testing.B) {
	p, err := Load("testdata/valid")
	if err != nil {
		b.Fatal(err)
	}
	for _, image := range []string{"registry.example.com/prod/api", "acme/app", "quay.io/acme/app"} {
		r := repo(b, image)
		b.Run(image, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.RuleFor(r)
			}
		})
	}
}
