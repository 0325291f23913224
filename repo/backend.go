package repo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/snapbackup/snap/internal/directio"
)

// FileType names a kind of object in the repository layout. Each type lives
// under its own prefix (see docs/design.md, "Layout").
type FileType string

const (
	ConfigFile   FileType = "config"
	KeyFile      FileType = "keys"
	PackFile     FileType = "data"
	IndexFile    FileType = "index"
	SnapshotFile FileType = "snapshots"
	TailFile     FileType = "tails"   // a followed log's tail (Redis AOF), named <prefix>-<hash>: SplitNamed
	ClusterFile  FileType = "cluster" // cluster members, group requests and node status, named by what they are: SaveAs
	LockFile     FileType = "locks"
)

// AllFileTypes lists every type, in the order a reader of a repository should
// consider them.
var AllFileTypes = []FileType{ConfigFile, KeyFile, SnapshotFile, TailFile, ClusterFile, IndexFile, PackFile, LockFile}

// Handle names one object. Name is empty for ConfigFile and a lower-case hex
// string (or another name without '/') for every other type.
type Handle struct {
	Type FileType
	Name string
}

func (h Handle) String() string {
	if h.Type == ConfigFile {
		return string(ConfigFile)
	}
	return string(h.Type) + "/" + h.Name
}

// TempPrefix starts the names backends use for objects still being written.
// No handle may use it, so a temp file is never mistaken for an object.
const TempPrefix = ".tmp-"

// Validate rejects handles a backend must not store: unknown types, a name
// for the config, and names that could escape the type's directory or be
// mistaken for a temp file. Every backend checks it, so tests against the
// in-memory backend catch handles a real one would reject.
func (h Handle) Validate() error {
	switch h.Type {
	case ConfigFile:
		if h.Name != "" {
			return fmt.Errorf("invalid name %q: config has no name", h.Name)
		}
		return nil
	case KeyFile, PackFile, IndexFile, SnapshotFile, TailFile, ClusterFile, LockFile:
	default:
		return fmt.Errorf("invalid file type %q", h.Type)
	}
	n := h.Name
	switch {
	case n == "":
		return errors.New("invalid name: empty")
	case n == "." || strings.Contains(n, ".."):
		return fmt.Errorf("invalid name %q: contains \"..\"", n)
	case strings.ContainsAny(n, "/\\\x00"):
		return fmt.Errorf("invalid name %q: contains a path separator or NUL", n)
	case strings.HasPrefix(n, TempPrefix):
		return fmt.Errorf("invalid name %q: reserved for temp files", n)
	}
	// Packs are fanned out over data/00..ff by their first two characters.
	if h.Type == PackFile && (len(n) < 2 || !isLowerHex(n[0]) || !isLowerHex(n[1])) {
		return fmt.Errorf("invalid pack name %q: must start with two lower-case hex digits", n)
	}
	return nil
}

func isLowerHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// FileInfo describes one stored object.
type FileInfo struct {
	Name string
	Size int64
	// ModTime is when the object was stored, by the storage's clock, or
	// zero when the backend does not say. Prune uses it for its margin on
	// packs no index names (docs/design.md, "Prune").
	ModTime time.Time
}

var (
	// ErrNotFound is returned (wrapped) by Load, Stat and Remove when the
	// object does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrExists is returned (wrapped) by Save when an object of that name is
	// already stored. The stored object is left untouched.
	ErrExists = errors.New("object already exists")
)

// Backend stores named, immutable objects. It is deliberately small: retries,
// verification, rate limits and logging are decorators above it.
//
// Guarantees every implementation gives:
//   - Save is create-only and all-or-nothing: after it returns nil the object
//     is durably stored whole under its name; after an error (or a crash
//     mid-call) the name is either absent or holds an object some earlier
//     Save stored whole. It never overwrites: if the name exists it returns
//     an error wrapping ErrExists and leaves the object as it was.
//   - Read-after-write: once Save returned nil, Load, Stat and List see the
//     object from any process.
//   - Load reads length bytes starting at offset (length 0 means to the end)
//     and hands them to fn as a stream. If fn returns an error, Load returns
//     it unwrapped. Load may call fn again after a retry, so fn must start
//     over each time it is called. Reading past the end is an error, never
//     a short read presented as success.
//   - List calls fn once per object of the type, in no particular order; an
//     object saved before List began is listed. List(ConfigFile) lists the
//     config, if there is one, as one entry with an empty name. If fn
//     returns an error, List stops and returns that error unwrapped.
//     A type nothing was ever saved under lists nothing, also where a
//     repository made before the type existed lacks its place (a local
//     repository without tails/); Save makes that place.
//   - Remove deletes one object; removing an absent object returns an error
//     wrapping ErrNotFound.
//   - Save, Load, Stat and Remove reject a handle whose Validate fails.
//   - All methods are safe for concurrent use.
type Backend interface {
	// Location says where the repository is, for messages (a path, a URL).
	Location() string
	Save(ctx context.Context, h Handle, data []byte) error
	Load(ctx context.Context, h Handle, offset, length int64, fn func(rd io.Reader) error) error
	Stat(ctx context.Context, h Handle) (FileInfo, error)
	List(ctx context.Context, t FileType, fn func(FileInfo) error) error
	Remove(ctx context.Context, h Handle) error
	Close() error
}

// PlacedReader is implemented by a reader that Backend.Load hands to its
// function when it can read straight into the caller's memory with direct
// I/O, where the bytes then need no copy out of a block of its own (a
// local repository's large ranges).
type PlacedReader interface {
	// ReadPlaced skips skip bytes of the range, then reads the next n
	// bytes into b[pad:pad+n], where pad is the remainder of their offset
	// in the object modulo directio.Align. b must start at an Align
	// boundary and hold the whole pages around the bytes:
	// PlacedLen(pad+n). What b holds outside b[pad:pad+n] is undefined.
	// A range that ends before the n bytes do is an io.ErrUnexpectedEOF.
	ReadPlaced(b []byte, skip int64, n int) (pad int, err error)
}

// PlacedLen is the room ReadPlaced needs to read bytes that end n bytes
// after the start of their first page: n rounded up to whole pages.
func PlacedLen(n int) int { return (n + directio.Align - 1) &^ (directio.Align - 1) }

// Spooler is implemented by backends that can take an object as a stream
// whose name is only known at its end, as a pack's is (its name is the
// hash of its bytes). The packer streams packs through it in small blocks
// instead of holding whole packs in memory. Backends without it get whole
// packs through Save.
type Spooler interface {
	// Spool starts a new object of type t.
	Spool(ctx context.Context, t FileType) (Spool, error)
}

// Spool is one object being written. It is used by one goroutine at a
// time.
type Spool interface {
	// Write appends p. It does not retain p. The packer passes blocks that
	// start aligned to directio.Align, which a backend may use.
	Write(p []byte) error
	// Commit stores what was written under h (of the spool's type) with
	// Save's guarantees: durable and whole after nil, create-only (an
	// error wrapping ErrExists leaves the stored object untouched), and
	// nothing under h after a crash or an error. h's name is the hash of
	// what was written, as a pack's is; a spool that reads its bytes back
	// checks that it stores exactly those. The spool is finished either
	// way.
	Commit(ctx context.Context, h Handle) error
	// Abort discards what was written. It is a no-op after Commit.
	Abort()
}

// TempRemover is implemented by backends whose writers leave temp objects
// behind when they die (the local backend's ".tmp-" files). Prune calls it
// under the exclusive lock with its margin, so a temp file a live writer
// still needs is never removed.
type TempRemover interface {
	// RemoveTemp removes temp objects last modified before cutoff and
	// reports how many and how many bytes.
	RemoveTemp(ctx context.Context, cutoff time.Time) (n int, size int64, err error)
}

// PrefixLister is implemented by backends that can list only the objects
// of a type whose names start with a prefix, without reading the others'
// names (GCS: a query prefix). A scoped repository lists its own host's
// index files and snapshots this way (docs/design.md, "Layout"). Find it
// with As; ListPrefix below falls back to List and a filter.
type PrefixLister interface {
	// ListPrefix is List restricted to names that start with prefix,
	// with List's guarantees. It is not defined for ConfigFile.
	ListPrefix(ctx context.Context, t FileType, prefix string, fn func(FileInfo) error) error
}

// ListPrefix calls fn for every object of type t whose name starts with
// prefix: through be's PrefixLister where it has one, else by List and a
// filter.
func ListPrefix(ctx context.Context, be Backend, t FileType, prefix string, fn func(FileInfo) error) error {
	if pl, ok := As[PrefixLister](be); ok {
		return pl.ListPrefix(ctx, t, prefix, fn)
	}
	return be.List(ctx, t, func(fi FileInfo) error {
		if !strings.HasPrefix(fi.Name, prefix) {
			return nil
		}
		return fn(fi)
	})
}
