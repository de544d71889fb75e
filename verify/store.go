package verify

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Store keeps, per digest, the evidence that counted when the image was
// last verified from its registry. After a daemon or node restart, with
// the registry unreachable, an image verified before is verified again
// from it: cryptographically and under the policy in force then, so a
// policy change still applies and a scan still grows old. The store is
// never trusted: a record that does not match its checksum is ignored.
type Store struct {
	dir string
	max int

	mu    sync.Mutex
	count int
}

// storeVersion changes whenever the record format does; older records are
// ignored.
const storeVersion = 1

// maxStoredRecord bounds one record as read back: what a registry could
// make imagegate store is bounded by the fetch limits, this by the disk.
const maxStoredRecord = 64 << 20

// errNotStored says no usable evidence is stored for a digest.
var errNotStored = errors.New("no stored evidence")

// OpenStore opens (creating it) the evidence store in dir, keeping at most
// maxRecords digests: the oldest are dropped first.
func OpenStore(dir string, maxRecords int) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("evidence store: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("evidence store: %w", err)
	}
	return &Store{dir: dir, max: maxRecords, count: len(entries)}, nil
}

// record is one digest's evidence as stored.
type record struct {
	Version int          `json:"version"`
	Digest  string       `json:"digest"`
	Saved   time.Time    `json:"saved"`
	Sigs    []storedSig  `json:"sigs,omitempty"`
	Atts    []storedBlob `json:"atts,omitempty"`
	Bundles []storedBlob `json:"bundles,omitempty"`
}

type storedSig struct {
	Mechanism string `json:"mechanism"`
	Payload   []byte `json:"payload"`
	Signature string `json:"signature"`
}

type storedBlob struct {
	Mechanism string `json:"mechanism"`
	Data      []byte `json:"data"`
}

func (s *Store) path(digest v1.Hash) string {
	return filepath.Join(s.dir, digest.Algorithm+"-"+digest.Hex+".json")
}

// save writes ev for digest atomically: a reader sees the old record or
// the new one, never half of one.
func (s *Store) save(digest v1.Hash, ev evidence, now time.Time) error {
	rec := record{Version: storeVersion, Digest: digest.String(), Saved: now.UTC()}
	for _, c := range ev.sigs {
		rec.Sigs = append(rec.Sigs, storedSig{Mechanism: c.mechanism, Payload: c.payload, Signature: c.b64sig})
	}
	for _, c := range ev.atts {
		rec.Atts = append(rec.Atts, storedBlob{Mechanism: c.mechanism, Data: c.envelope})
	}
	for _, c := range ev.bundles {
		rec.Bundles = append(rec.Bundles, storedBlob{Mechanism: c.mechanism, Data: c.data})
	}
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	data := append([]byte(hex.EncodeToString(sum[:])+"\n"), body...)

	tmp, err := os.CreateTemp(s.dir, ".tmp-*")
	if err != nil {
		return fmt.Errorf("evidence store: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("evidence store: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("evidence store: %w", err)
	}
	path := s.path(digest)
	_, statErr := os.Stat(path)
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("evidence store: %w", err)
	}
	if errors.Is(statErr, fs.ErrNotExist) {
		s.added()
	}
	return nil
}

// added counts a new record and, past the bound, drops the oldest tenth
// at once, so that the directory is listed rarely.
func (s *Store) added() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.count++
	if s.count <= s.max {
		return
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return
	}
	type aged struct {
		name string
		mod  time.Time
	}
	var all []aged
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			all = append(all, aged{e.Name(), fi.ModTime()})
		}
	}
	slices.SortFunc(all, func(a, b aged) int { return a.mod.Compare(b.mod) })
	drop := len(all) - s.max + s.max/10
	for _, a := range all[:max(0, min(drop, len(all)))] {
		os.Remove(filepath.Join(s.dir, a.name))
	}
	s.count = len(all) - max(0, min(drop, len(all)))
}

// load reads the evidence stored for digest. A missing, corrupt, foreign
// or outdated record is errNotStored: the caller goes on as if nothing had
// been stored.
func (s *Store) load(digest v1.Hash) (evidence, error) {
	data, err := readBounded(s.path(digest), maxStoredRecord)
	if err != nil {
		return evidence{}, fmt.Errorf("%w for %s: %v", errNotStored, digest, err)
	}
	sumHex, body, ok := bytes.Cut(data, []byte("\n"))
	sum := sha256.Sum256(body)
	if !ok || hex.EncodeToString(sum[:]) != string(sumHex) {
		return evidence{}, fmt.Errorf("%w for %s: the stored record is corrupt", errNotStored, digest)
	}
	var rec record
	if err := json.Unmarshal(body, &rec); err != nil || rec.Version != storeVersion || rec.Digest != digest.String() {
		return evidence{}, fmt.Errorf("%w for %s: the stored record is not one of this version for this digest", errNotStored, digest)
	}
	var ev evidence
	for _, c := range rec.Sigs {
		ev.sigs = append(ev.sigs, sigCandidate{mechanism: c.Mechanism, payload: c.Payload, b64sig: c.Signature})
	}
	for _, c := range rec.Atts {
		ev.atts = append(ev.atts, attCandidate{mechanism: c.Mechanism, envelope: c.Data})
	}
	for _, c := range rec.Bundles {
		ev.bundles = append(ev.bundles, bundleCandidate{mechanism: c.Mechanism, data: c.Data})
	}
	return ev, nil
}

func readBounded(path string, limit int64) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > limit {
		return nil, fmt.Errorf("%s is not a regular file of at most %d bytes", path, limit)
	}
	return os.ReadFile(path)
}

// accepted is the part of ev that counted for a signer or attestor of the
// rule: what is worth keeping for a later offline verification.
func (ev evidence) accepted(bundles []bundleResult) evidence {
	var out evidence
	for _, c := range ev.sigs {
		if c.accepted {
			out.sigs = append(out.sigs, c)
		}
	}
	for _, c := range ev.atts {
		if c.accepted {
			out.atts = append(out.atts, c)
		}
	}
	for i, b := range bundles {
		if b.signer != nil {
			out.bundles = append(out.bundles, ev.bundles[i])
		}
	}
	return out
}

func (ev evidence) empty() bool {
	return len(ev.sigs) == 0 && len(ev.atts) == 0 && len(ev.bundles) == 0
}
