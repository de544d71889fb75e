package policy

import (
	"fmt"
	"math/bits"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

const (
	// dockerHub is how rules and reports name Docker Hub; go-containerregistry
	// says index.docker.io, which no operator writes.
	dockerHub = "docker.io"
	// maxNameLen is the longest repository name a registry accepts, which
	// also bounds a glob's matcher to 256 states.
	maxNameLen = 255
)

// RepositoryName returns repo as rules match it: host/path, with Docker Hub
// as docker.io and its official images under library/ (nginx is
// docker.io/library/nginx).
func RepositoryName(repo name.Repository) string {
	host, path := hostPath(repo)
	return host + "/" + path
}

// hostPath returns the two halves of RepositoryName without joining them,
// so that RuleFor allocates nothing for the usual names.
func hostPath(repo name.Repository) (host, path string) {
	// Host names are case-insensitive: REGISTRY.EXAMPLE.COM pulls the same
	// images as registry.example.com and must meet the same rule.
	host = strings.ToLower(repo.RegistryStr())
	if host == name.DefaultRegistry {
		host = dockerHub
	}
	path = repo.RepositoryStr()
	if host == dockerHub && !strings.Contains(path, "/") {
		path = "library/" + path
	}
	return host, path
}

// RuleFor returns the first rule whose images match repo, nil when none
// does. Only rules that Load made match anything: it compiles their globs.
func (p *Policy) RuleFor(repo name.Repository) *Rule {
	host, path := hostPath(repo)
	for _, r := range p.Rules {
		for i := range r.globs {
			if r.globs[i].match(host, path) {
				return r
			}
		}
	}
	return nil
}

// In a compiled glob, these bytes stand for the wildcards; neither can be a
// literal, since '*' and NUL never appear in a repository name.
const (
	segStar = '*'  // "*": any run of bytes within one path segment
	anyStar = 0x00 // "**": any run of bytes, "/" included
)

// glob is a compiled image glob.
type glob struct {
	// prefix is the literal text before the first wildcard. Most globs
	// differ from a name there, so most are rejected by one comparison.
	prefix string
	// rest is the pattern after prefix, wildcards as segStar and anyStar;
	// nil when the glob is all literal.
	rest []byte
}

// compileGlob validates an image glob as an operator wrote it, normalizes
// Docker Hub names the way image names are normalized, and compiles it.
func compileGlob(pattern string) (glob, error) {
	if err := checkGlob(pattern); err != nil {
		return glob{}, err
	}
	p := normalizeGlob(pattern)
	if len(p) > maxNameLen {
		return glob{}, fmt.Errorf("image glob %q is longer than %d characters, the longest repository name", pattern, maxNameLen)
	}
	i := strings.IndexByte(p, '*')
	if i < 0 {
		return glob{prefix: p}, nil
	}
	g := glob{prefix: p[:i]}
	for i < len(p) {
		switch {
		case strings.HasPrefix(p[i:], "**"):
			g.rest = append(g.rest, anyStar)
			i += 2
		default:
			g.rest = append(g.rest, p[i])
			i++
		}
	}
	return g, nil
}

func checkGlob(pattern string) error {
	switch {
	case pattern == "":
		return fmt.Errorf("an image glob is empty")
	case strings.Contains(pattern, "***"):
		return fmt.Errorf("image glob %q has \"***\": use * within a segment or ** across segments", pattern)
	case strings.ContainsRune(pattern, '@'):
		return fmt.Errorf("image glob %q has a digest: globs match repository names, without tag or digest", pattern)
	}
	segs := strings.Split(pattern, "/")
	for i, seg := range segs {
		if seg == "" {
			return fmt.Errorf("image glob %q has an empty path segment", pattern)
		}
		// Only a host can carry a port (or an IPv6 literal); a colon
		// anywhere else is a tag.
		host := i == 0 && len(segs) > 1
		for _, c := range seg {
			switch {
			case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_', c == '*':
			case c == ':' && !host:
				return fmt.Errorf("image glob %q has a tag: globs match repository names, without tag or digest", pattern)
			case host && (c == ':' || c == '[' || c == ']'):
			case c >= 'A' && c <= 'Z':
				return fmt.Errorf("image glob %q has upper-case letters; repository names are lower-case", pattern)
			default:
				return fmt.Errorf("image glob %q has %q, which cannot appear in a repository name", pattern, c)
			}
		}
	}
	if len(segs) == 1 && (segs[0] == "localhost" || strings.ContainsAny(segs[0], ".:")) {
		return fmt.Errorf("image glob %q names only a host; write %q to match its repositories", pattern, pattern+"/**")
	}
	return nil
}

// normalizeGlob applies Docker's rule for names to a glob: the first
// segment is a host only when it looks like one, else the name is on
// Docker Hub, where a single segment is an official image under library/.
// A wildcard in the first segment makes it a host glob ("*.example.com/x"),
// and "**" there spans hosts ("**", "**/nginx"): those stand as written.
func normalizeGlob(p string) string {
	first, path, ok := strings.Cut(p, "/")
	switch {
	case strings.Contains(first, "**"), ok && strings.Contains(first, "*"):
		return p
	case ok && (first == "localhost" || strings.ContainsAny(first, ".:")):
		if first != name.DefaultRegistry && first != dockerHub {
			return p
		}
	default:
		path = p
	}
	if !strings.Contains(path, "/") && !strings.Contains(path, "**") {
		path = "library/" + path
	}
	return dockerHub + "/" + path
}

// match reports whether host + "/" + path matches g. The name is never
// built: matching runs on every container create and allocates nothing.
func (g *glob) match(host, path string) bool {
	n := len(host) + 1 + len(path)
	if len(g.prefix) > n || !hasPrefix(host, path, g.prefix) {
		return false
	}
	switch {
	case g.rest == nil:
		return n == len(g.prefix)
	case len(g.rest) == 1 && g.rest[0] == anyStar:
		// "host/dir/**" and "**", the commonest globs, need no scan.
		return true
	}
	// A set of NFA states, one per position in rest, run over the name
	// byte by byte: linear in the name for any glob, unlike backtracking,
	// which a glob such as "**a**a**a**b" would make exponential.
	var cur states
	g.enter(&cur, 0)
	for i := len(g.prefix); i < n; i++ {
		c := byteAt(host, path, i)
		var next states
		for w, word := range cur {
			for word != 0 {
				st := w*64 + bits.TrailingZeros64(word)
				word &= word - 1
				if st == len(g.rest) {
					continue
				}
				switch p := g.rest[st]; {
				case p == anyStar, p == segStar && c != '/':
					g.enter(&next, st)
				case p == c:
					g.enter(&next, st+1)
				}
			}
		}
		if next == (states{}) {
			return false
		}
		cur = next
	}
	return cur.has(len(g.rest))
}

// enter adds state st to s and, since a wildcard may match nothing, the
// states right after each wildcard that starts at st.
func (g *glob) enter(s *states, st int) {
	s.add(st)
	for st < len(g.rest) && (g.rest[st] == segStar || g.rest[st] == anyStar) {
		st++
		s.add(st)
	}
}

// states is a set of positions in a glob's rest, which is at most
// maxNameLen bytes long.
type states [4]uint64

func (s *states) add(i int)      { s[i>>6] |= 1 << (i & 63) }
func (s *states) has(i int) bool { return s[i>>6]&(1<<(i&63)) != 0 }

func byteAt(host, path string, i int) byte {
	switch {
	case i < len(host):
		return host[i]
	case i == len(host):
		return '/'
	}
	return path[i-len(host)-1]
}

func hasPrefix(host, path, prefix string) bool {
	if len(prefix) <= len(host) {
		return host[:len(prefix)] == prefix
	}
	return host == prefix[:len(host)] && prefix[len(host)] == '/' && strings.HasPrefix(path, prefix[len(host)+1:])
}
