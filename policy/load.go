package policy

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"gopkg.in/yaml.v3"
)

// maxPolicyFile bounds the memory one policy file may take in a reload;
// real policies are a few KiB.
const maxPolicyFile = 4 << 20

// Load reads, validates and merges every *.yaml file of dir, in lexical
// order. On any problem it returns no policy and an *Error listing every
// problem found: a node must never run on half a policy.
func Load(dir string) (*Policy, error) {
	l := &loader{
		dir: dir,
		pol: &Policy{
			Signers:    map[string]*Signer{},
			Registries: map[string]*Registry{},
			Unmatched:  "deny",
		},
		gen:        sha256.New(),
		signerAt:   map[string]string{},
		keyOwner:   map[string]*Signer{},
		registryAt: map[string]string{},
		ruleAt:     map[string]string{},
	}
	files := l.readDir()
	// Signers are pooled from every file before any rule is read, so a
	// rule may name a signer that a later file defines.
	for _, f := range files {
		for _, doc := range f.docs {
			f.each("signers", doc["signers"], f.signer)
			f.each("registries", doc["registries"], f.registry)
			if d := doc["defaults"]; d != nil {
				f.defaults(d)
			}
		}
	}
	for _, f := range files {
		for _, doc := range f.docs {
			f.each("rules", doc["rules"], f.rule)
		}
	}
	if len(l.problems) > 0 {
		slices.SortStableFunc(l.problems, func(a, b Problem) int {
			return cmp.Or(strings.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
		})
		return nil, &Error{Problems: l.problems}
	}
	l.pol.Generation = hex.EncodeToString(l.gen.Sum(nil))
	return l.pol, nil
}

// loader is the state of one Load: what has been defined so far and where,
// so that a second definition can point at the first.
type loader struct {
	dir      string
	pol      *Policy
	problems []Problem
	// gen hashes every file and key read, in read order.
	gen hash.Hash

	signerAt map[string]string // every signer name defined, valid or not, by FILE:LINE
	// keyOwner maps a key's DER to the signer holding it: one key under
	// two names would count twice toward a threshold.
	keyOwner map[string]*Signer
	// keyless holds the keyless signers defined so far: two whose
	// identities could match one certificate would count it twice.
	keyless     []*Signer
	registryAt  map[string]string
	ruleAt      map[string]string
	unmatchedAt string
}

// file is one policy file being read.
type file struct {
	*loader
	path string // filepath.Join(dir, name), as problems and sources name it
	// docs holds the top-level fields of each YAML document.
	docs []map[string]*yaml.Node
}

func (l *loader) readDir() []*file {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		msg := "cannot read the policy directory: " + pathErr(err)
		if errors.Is(err, fs.ErrNotExist) {
			msg = "the policy directory does not exist; without a policy no image could be checked"
		}
		l.problems = append(l.problems, Problem{File: l.dir, Msg: msg})
		return nil
	}
	var files []*file
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") {
			files = append(files, l.readFile(e.Name()))
		}
	}
	if len(files) == 0 {
		l.problems = append(l.problems, Problem{File: l.dir, Msg: "no *.yaml policy files; without a policy no image could be checked"})
	}
	return files
}

// yamlErr splits the parser's "yaml: line N: msg" so the line is a line.
var yamlErr = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (l *loader) readFile(name string) *file {
	f := &file{loader: l, path: filepath.Join(l.dir, name)}
	data, err := readRegular(f.path, maxPolicyFile)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		l.problems = append(l.problems, Problem{File: f.path, Msg: "cannot read this file: " + err.Error()})
		return f
	}
	l.hashPart(name, data)
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p := Problem{File: f.path, Msg: "invalid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}
			if m := yamlErr.FindStringSubmatch(err.Error()); m != nil {
				p.Line, _ = strconv.Atoi(m[1])
				p.Msg = "invalid YAML: " + m[2]
			}
			l.problems = append(l.problems, p)
			break
		}
		if len(doc.Content) == 0 {
			continue
		}
		top := deref(doc.Content[0])
		if isNull(top) {
			continue
		}
		if top.Kind != yaml.MappingNode {
			f.problem(top, "", "a policy file must be a mapping of signers, registries, rules and defaults")
			continue
		}
		f.docs = append(f.docs, f.fields("", "", top, "signers", "registries", "rules", "defaults"))
	}
	return f
}

// hashPart adds one named content to the generation, length-prefixed so
// that no two different sets of files hash alike.
func (l *loader) hashPart(name string, data []byte) {
	var n [8]byte
	for _, b := range [][]byte{[]byte(name), data} {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		l.gen.Write(n[:])
		l.gen.Write(b)
	}
}

// resolve makes a path from a policy file relative to that file's
// directory, so that a policy reads the same whatever the daemon's cwd.
func (f *file) resolve(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(filepath.Dir(f.path), p)
}

// strictOwnership is set when imagegate runs as root: then the files that
// decide what runs on the node must be root's and writable by root only,
// or anyone who can write one of them decides instead.
var strictOwnership = os.Geteuid() == 0

// openRegular opens path when it is a regular file that only root can
// change (when running as root). Anything else is refused before it is
// opened: opening a FIFO would hang a reload.
func openRegular(path string) (*os.File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, &fs.PathError{Op: "open", Path: path, Err: errors.New("not a regular file")}
	}
	if err := checkOwnership(fi); err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.Open(path)
}

func checkOwnership(fi fs.FileInfo) error {
	if !strictOwnership {
		return nil
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("writable by group or others (mode %04o): refused; chmod go-w it", perm)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
		return fmt.Errorf("owned by uid %d, not root: refused; chown root it", st.Uid)
	}
	return nil
}

// readRegular reads a regular file of at most limit bytes.
func readRegular(path string, limit int64) ([]byte, error) {
	fh, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	data, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, &fs.PathError{Op: "read", Path: path, Err: fmt.Errorf("larger than %d bytes", limit)}
	}
	return data, nil
}

// pathErr words a file error as "PATH: reason", without Go's "open" or
// "stat" in front.
func pathErr(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Path + ": " + pe.Err.Error()
	}
	return err.Error()
}

func (f *file) problem(n *yaml.Node, ctx, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if ctx != "" {
		msg = ctx + ": " + msg
	}
	f.problems = append(f.problems, Problem{File: f.path, Line: n.Line, Msg: msg})
}

func (f *file) source(n *yaml.Node) string { return fmt.Sprintf("%s:%d", f.path, n.Line) }

// fields checks that n is a mapping of known fields, each set once, and
// returns the values by field; a null value counts as not set. in names n
// for messages when n is nested in the thing ctx names.
func (f *file) fields(ctx, in string, n *yaml.Node, known ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		f.problem(n, ctx, "%s must be a mapping", in)
		return nil
	}
	where := ""
	if in != "" {
		where = " in " + in
	}
	m := make(map[string]*yaml.Node, len(n.Content)/2)
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), deref(n.Content[i+1])
		switch {
		case !slices.Contains(known, k.Value):
			f.problem(k, ctx, "unknown field %q%s (want %s)", k.Value, where, oneOf(known))
		case seen[k.Value]:
			f.problem(k, ctx, "field %q is set twice%s", k.Value, where)
		default:
			seen[k.Value] = true
			if !isNull(v) {
				m[k.Value] = v
			}
		}
	}
	return m
}

// each calls fn for every mapping in the list n, the value of field.
func (f *file) each(field string, n *yaml.Node, fn func(*yaml.Node)) {
	for _, item := range f.list("", field, n) {
		if item.Kind != yaml.MappingNode {
			f.problem(item, "", "each entry of %s must be a mapping", field)
			continue
		}
		fn(item)
	}
}

func (f *file) list(ctx, field string, n *yaml.Node) []*yaml.Node {
	if n == nil {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		f.problem(n, ctx, "%s must be a list", field)
		return nil
	}
	items := make([]*yaml.Node, 0, len(n.Content))
	for _, item := range n.Content {
		items = append(items, deref(item))
	}
	return items
}

// str returns the string n holds, "" for null; ok is false when n is
// absent or was reported as not a string.
func (f *file) str(ctx, field string, n *yaml.Node) (s string, ok bool) {
	switch {
	case n == nil:
		return "", false
	case isNull(n):
		return "", true
	case n.Kind != yaml.ScalarNode:
		f.problem(n, ctx, "%s must be a string", field)
		return "", false
	}
	return n.Value, true
}

// boolean takes only YAML's true and false: the yes/on/y that yaml.v3
// also turns into a bool are too easy to write by mistake. ok is false
// when n was reported.
func (f *file) boolean(ctx, field string, n *yaml.Node) (b, ok bool) {
	if n == nil {
		return false, true
	}
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		f.problem(n, ctx, "%s must be true or false", field)
		return false, false
	}
	return b, true
}

func (f *file) integer(ctx, field string, n *yaml.Node) (int, bool) {
	var i int
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
		f.problem(n, ctx, "%s must be a whole number", field)
		return 0, false
	}
	return i, true
}

// peek returns the string under key in the mapping n, before n is
// checked, so that every message about n can name it.
func peek(n *yaml.Node, key string) string {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, v := deref(n.Content[i]), deref(n.Content[i+1]); k.Value == key && v.Kind == yaml.ScalarNode && !isNull(v) {
			return v.Value
		}
	}
	return ""
}

func deref(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// oneOf words a list of choices: "a, b or c".
func oneOf(choices []string) string {
	if len(choices) == 1 {
		return choices[0]
	}
	return strings.Join(choices[:len(choices)-1], ", ") + " or " + choices[len(choices)-1]
}
