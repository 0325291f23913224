package source

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Source kinds, recorded in every snapshot (docs/design.md, "Snapshots and
// trees").
const (
	// KindFreeze is a server that answers FREEZE: its data directory's
	// listed files, RocksDB's rules for them.
	KindFreeze = "freeze"
	// KindDir is a directory no one writes while it is read: a closed
	// database or a checkpoint, every file under it.
	KindDir = "dir"
	// KindRedis is a redis-server 7's multi-part AOF directory: one point
	// of a chain (docs/design.md, "Redis chains").
	KindRedis = "redis"
)

// legacyFreeze is what snapshots written before kinds had names say.
const legacyFreeze = "rocksdb-freeze"

// CanonicalKind returns the kind a stored snapshot's kind field names:
// snapshots written before kinds had names (and with no kind at all) are
// of the freeze kind.
func CanonicalKind(k string) string {
	if k == "" || k == legacyFreeze {
		return KindFreeze
	}
	return k
}

// ErrTargetHasDatabase is returned when a restore target already holds a
// database.
var ErrTargetHasDatabase = errors.New("target already holds a database")

// Kind is what a restore needs from the kind of source that made a
// snapshot: the rules for putting its files back belong to the kind, not
// to the restore.
type Kind interface {
	// Name is the kind's name, as snapshots record it.
	Name() string
	// CheckTarget refuses a target directory that already holds what a
	// restore of this kind would write. leftover reports whether a name
	// is an interrupted restore's, which the restore may replace.
	CheckTarget(dir string, names []string, leftover func(string) bool) error
	// Last is the file written after every other, once they are all
	// durable, so that an interrupted restore leaves nothing that looks
	// whole; empty for none.
	Last() string
	// TempNames reports whether files are written under temporary names
	// and renamed once durable, so that no half-written file ever has its
	// final name.
	TempNames() bool
}

// KindOf returns the kind named k (after CanonicalKind).
func KindOf(k string) (Kind, error) {
	switch CanonicalKind(k) {
	case KindFreeze:
		return freezeKind{}, nil
	case KindDir:
		return dirKind{}, nil
	case KindRedis:
		return redisKind{}, nil
	}
	return nil, fmt.Errorf("snapshot of source kind %q, which this snap does not know; upgrade snap", k)
}

// freezeKind restores a RocksDB data directory: CURRENT, which names the
// live MANIFEST, is written last, and a directory without it is no
// database to RocksDB or to snap.
type freezeKind struct{}

func (freezeKind) Name() string    { return KindFreeze }
func (freezeKind) Last() string    { return currentName }
func (freezeKind) TempNames() bool { return false }

func (freezeKind) CheckTarget(dir string, names []string, leftover func(string) bool) error {
	if _, err := os.Lstat(filepath.Join(dir, currentName)); err == nil {
		return fmt.Errorf("%w: %s exists", ErrTargetHasDatabase, filepath.Join(dir, currentName))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(dir, n)); err == nil && !leftover(n) {
			return fmt.Errorf("target %s already has %s; restore does not overwrite files (use an empty directory)", dir, n)
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

const currentName = "CURRENT"

// dirKind restores a directory tree: the target must be empty (but for
// what an interrupted restore left), and every file is written under a
// temporary name and renamed once durable.
type dirKind struct{}

func (dirKind) Name() string    { return KindDir }
func (dirKind) Last() string    { return "" }
func (dirKind) TempNames() bool { return true }

func (dirKind) CheckTarget(dir string, _ []string, leftover func(string) bool) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !leftover(e.Name()) {
			return fmt.Errorf("%w: target %s is not empty (it has %s); a directory snapshot is restored only into an empty directory", ErrTargetHasDatabase, dir, e.Name())
		}
	}
	return nil
}

// redisKind writes the files of a redis snapshot into the staging
// directory a chain restore renames into place once whole: like the dir
// kind, an empty directory and temporary names.
type redisKind struct{ dirKind }

func (redisKind) Name() string { return KindRedis }
