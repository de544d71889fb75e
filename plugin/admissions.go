package plugin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// admissionMaxAge drops the record of a container not admitted (nor
	// re-admitted by the guard) for this long. Docker sends no event when
	// a container is removed, so age stands in for it; a container that
	// really is that old and restarts is refused with a reason saying
	// imagegate has no record, and runs again once recreated.
	admissionMaxAge = 180 * 24 * time.Hour
	// maxAdmissions bounds the directory. Beyond it the least recently
	// admitted records go first, down to 90% of it, so that a prune does
	// not run at every admission.
	maxAdmissions = 20000
	// maxAdmissionSize bounds what is read of one record.
	maxAdmissionSize = 8 << 10
	// tmpPrefix marks a record being written; container IDs never start
	// with a dot.
	tmpPrefix = ".tmp-"
	// tmpMaxAge is how long a temporary file may be left before a prune
	// takes it for the leftover of a crash rather than a write under way.
	tmpMaxAge = time.Minute
)

// errNoRecord is what a container ID without an admission gets.
var errNoRecord = errors.New("imagegate has no record of this container " +
	"(it was not created through NRI or the Engine API while imagegate was running)")

// Admissions keeps, per container ID, the image and digest imagegate
// admitted, so that a container the runtime creates again without asking
// (Docker's restarts reach runc without a new NRI event) is decided by what
// it was admitted as, under the policy in force then. One small file per
// ID under dir, written atomically (temporary file and rename), so
// imagegate's restarts keep them. Files are not synced: after a power loss
// a record may be missing or unreadable, and such a container is refused,
// never allowed.
//
// A nil *Admissions keeps nothing: Admit does nothing and Lookup finds
// nothing.
type Admissions struct {
	dir string
	// max is maxAdmissions but in tests.
	max int
	// count is the number of records, give or take concurrent writes; it
	// triggers a prune past maxAdmissions.
	count   atomic.Int64
	pruning atomic.Bool
	// pruneWG lets tests wait for a prune started in the background.
	pruneWG sync.WaitGroup
}

// admission is one record as stored.
type admission struct {
	ID     string `json:"id"`
	Image  string `json:"image"`
	Digest string `json:"digest,omitempty"`
}

// OpenAdmissions opens (creating it 0700) the admissions directory dir and
// drops what is stale there.
func OpenAdmissions(dir string) (*Admissions, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admissions: %w", err)
	}
	a := &Admissions{dir: dir, max: maxAdmissions}
	if err := a.prune(); err != nil {
		return nil, fmt.Errorf("admissions: %w", err)
	}
	return a, nil
}

// Admit records that container id was admitted to run image at digest
// (digest may be empty only when the rule needed no evidence). Admitting
// the same again refreshes the record's age.
func (a *Admissions) Admit(id, image, digest string) error {
	if a == nil {
		return nil
	}
	if err := checkContainerID(id); err != nil {
		return err
	}
	if image == "" || strings.ContainsAny(image, "\n\x00") {
		return fmt.Errorf("admissions: container %s: bad image %q", id, image)
	}
	if digest != "" {
		if err := checkDigest(digest); err != nil {
			return fmt.Errorf("admissions: container %s: %w", id, err)
		}
	}
	data, err := json.Marshal(admission{ID: id, Image: image, Digest: digest})
	if err != nil {
		return err
	}
	data = append(data, '\n')
	path := filepath.Join(a.dir, id)
	old, err := os.ReadFile(path)
	if err == nil && bytes.Equal(old, data) {
		// NRI's CreateContainer and ValidateContainerAdjustment both
		// admit; the second, and every restart, only needs the age.
		now := time.Now()
		return os.Chtimes(path, now, now)
	}
	existed := err == nil
	if err := a.write(path, data); err != nil {
		return fmt.Errorf("admissions: container %s: %w", id, err)
	}
	if !existed && a.count.Add(1) > int64(a.max) && a.pruning.CompareAndSwap(false, true) {
		// A prune reads the whole directory: not on the create's time.
		a.pruneWG.Add(1)
		go func() {
			defer a.pruneWG.Done()
			defer a.pruning.Store(false)
			_ = a.prune() // the next Admit past the bound tries again
		}()
	}
	return nil
}

func (a *Admissions) write(path string, data []byte) error {
	f, err := os.CreateTemp(a.dir, tmpPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// Lookup returns the image and digest container id was admitted with. An
// unreadable, malformed or expired record is not found.
func (a *Admissions) Lookup(id string) (image, digest string, ok bool) {
	rec, err := a.lookup(id)
	if err != nil {
		return "", "", false
	}
	return rec.Image, rec.Digest, true
}

// lookup says why a record is not found: errNoRecord, or what is wrong
// with it.
func (a *Admissions) lookup(id string) (admission, error) {
	if a == nil {
		return admission{}, errors.New("imagegate keeps no admissions (stateDir is empty)")
	}
	if err := checkContainerID(id); err != nil {
		return admission{}, err
	}
	f, err := os.Open(filepath.Join(a.dir, id))
	if errors.Is(err, fs.ErrNotExist) {
		return admission{}, errNoRecord
	}
	if err != nil {
		return admission{}, fmt.Errorf("imagegate cannot read its record of this container: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return admission{}, fmt.Errorf("imagegate cannot read its record of this container: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return admission{}, errors.New("imagegate's record of this container is not a regular file")
	}
	if time.Since(fi.ModTime()) > admissionMaxAge {
		return admission{}, fmt.Errorf("%w; the last was older than %d days", errNoRecord, admissionMaxAge/(24*time.Hour))
	}
	data, err := io.ReadAll(io.LimitReader(f, maxAdmissionSize+1))
	if err != nil {
		return admission{}, fmt.Errorf("imagegate cannot read its record of this container: %w", err)
	}
	var rec admission
	if len(data) > maxAdmissionSize {
		return admission{}, errors.New("imagegate's record of this container is corrupt (too large)")
	}
	if err := json.Unmarshal(data, &rec); err != nil {
		return admission{}, fmt.Errorf("imagegate's record of this container is corrupt: %v", err)
	}
	switch {
	case rec.ID != id:
		return admission{}, fmt.Errorf("imagegate's record of this container is corrupt: it is about container %q", rec.ID)
	case rec.Image == "":
		return admission{}, errors.New("imagegate's record of this container is corrupt: no image")
	case rec.Digest != "" && checkDigest(rec.Digest) != nil:
		return admission{}, fmt.Errorf("imagegate's record of this container is corrupt: %v", checkDigest(rec.Digest))
	}
	return rec, nil
}

// Forget drops the record of container id, for a container the runtime
// removed.
func (a *Admissions) Forget(id string) error {
	if a == nil || checkContainerID(id) != nil {
		return nil
	}
	err := os.Remove(filepath.Join(a.dir, id))
	if err == nil {
		a.count.Add(-1)
		return nil
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// prune drops leftover temporary files, records past admissionMaxAge and,
// past maxAdmissions, the least recently admitted down to pruneTarget.
func (a *Admissions) prune() error {
	entries, err := os.ReadDir(a.dir)
	if err != nil {
		return err
	}
	type rec struct {
		name string
		mod  time.Time
	}
	now := time.Now()
	recs := make([]rec, 0, len(entries))
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		age := now.Sub(fi.ModTime())
		switch {
		case strings.HasPrefix(e.Name(), tmpPrefix):
			if age > tmpMaxAge {
				os.Remove(filepath.Join(a.dir, e.Name()))
			}
		case !fi.Mode().IsRegular():
		case age > admissionMaxAge:
			os.Remove(filepath.Join(a.dir, e.Name()))
		default:
			recs = append(recs, rec{e.Name(), fi.ModTime()})
		}
	}
	if len(recs) > a.max {
		slices.SortFunc(recs, func(x, y rec) int { return x.mod.Compare(y.mod) })
		keep := a.max * 9 / 10
		for _, r := range recs[:len(recs)-keep] {
			os.Remove(filepath.Join(a.dir, r.name))
		}
		recs = recs[len(recs)-keep:]
	}
	a.count.Store(int64(len(recs)))
	return nil
}

// checkContainerID accepts what runc accepts as a container ID, which is
// also safe as a file name: letters, digits and _ + - ., not starting
// with a dot.
func checkContainerID(id string) error {
	if id == "" || len(id) > 255 || id[0] == '.' {
		return fmt.Errorf("invalid container ID %q", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '+' || c == '-' || c == '.') {
			return fmt.Errorf("invalid container ID %q", id)
		}
	}
	return nil
}
