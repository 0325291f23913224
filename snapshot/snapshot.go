// Package snapshot defines the snapshot object and its tree, the record of
// one frozen listing: which files, in which roles, at which byte lengths,
// made of which chunks (docs/design.md, "Snapshots and trees").
package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/source"
)

const (
	snapshotVersion = 1
	// treeVersion is the newest tree format: 2 adds directories, symlinks,
	// hard links, nested names, modes and mtimes (the dir kind). A tree
	// that needs none of them is still written as version 1, so older
	// snaps read freeze snapshots as before.
	treeVersion = 2
)

// Source says where a snapshot's files came from.
type Source struct {
	Kind    string `json:"kind"`              // source.KindFreeze, source.KindDir or source.KindRedis
	Address string `json:"address,omitempty"` // server address (freeze)
	DataDir string `json:"data_dir"`          // the directory read
}

// Summary is what the backup that made a snapshot did.
type Summary struct {
	Files       int       `json:"files"`
	Bytes       int64     `json:"bytes"`        // logical size of all files
	BytesRead   int64     `json:"bytes_read"`   // read from the data directory
	BytesNew    int64     `json:"bytes_new"`    // plaintext of new blobs
	BytesStored int64     `json:"bytes_stored"` // written to packs
	BlobsNew    int64     `json:"blobs_new"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
}

// Snapshot is the stored object snapshots/<id>.
type Snapshot struct {
	Version int       `json:"version"`
	Time    time.Time `json:"time"` // when the freeze was taken
	Host    string    `json:"host"`
	Tags    []string  `json:"tags,omitempty"`
	Parent  *repo.ID  `json:"parent,omitempty"`
	Source  Source    `json:"source"`
	Tree    repo.ID   `json:"tree"`
	Summary Summary   `json:"summary"`
	Program string    `json:"program,omitempty"`
	// Partial marks a snapshot of a directory in which files changed
	// while they were read (backup --allow-changes): each file is whole,
	// but they may not be of one moment.
	Partial bool `json:"partial,omitempty"`
	// Redis is the AOF point of a redis snapshot (docs/design.md, "Redis
	// chains").
	Redis *source.AOFPoint `json:"redis,omitempty"`
	// Group is set on a node's part of a cluster group.
	Group *GroupRef `json:"group,omitempty"`
	// Original is the snapshot this one is a copy of (snap copy), as it
	// is named in the repository where it was first written.
	Original *repo.ID `json:"original,omitempty"`
	// Repaired marks a snapshot that snap repair snapshots wrote in place
	// of one whose data was partly lost: it lacks the files that used it.
	Repaired bool `json:"repaired,omitempty"`

	ID   repo.ID `json:"-"` // the hash of its stored bytes; set by Save, Load and List
	Name string  `json:"-"` // its object name: ID, or <host tag>-<ID> (version 2)
}

// Identity is the stat identity used to skip unchanged files.
type Identity struct {
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
	CtimeNs int64  `json:"ctime_ns,omitempty"` // dir kind
}

// Entry types of a tree (version 2; a version 1 tree has regular files
// only).
const (
	TypeFile     = ""         // a regular file: its bytes are Chunks
	TypeDir      = "dir"      // a directory
	TypeSymlink  = "symlink"  // Target is the link's text, never followed
	TypeHardlink = "hardlink" // Target names an earlier regular file of the tree: the same file
)

// File is one entry of a tree. A regular file's bytes are the
// concatenation of Chunks, whose plaintext lengths are Sizes, and they add
// up to Length; other entries have no bytes.
type File struct {
	Name     string    `json:"name"` // a plain name (freeze), or a relative slash-separated path (dir)
	Type     string    `json:"type,omitempty"`
	Role     string    `json:"role"`
	Length   int64     `json:"length"`
	Mode     uint32    `json:"mode,omitempty"`     // permission bits, with setuid, setgid and sticky (dir kind)
	MtimeNs  int64     `json:"mtime_ns,omitempty"` // dir kind
	Target   string    `json:"target,omitempty"`
	Identity *Identity `json:"identity,omitempty"`
	Chunks   []repo.ID `json:"chunks"`
	Sizes    []uint32  `json:"sizes"`
}

// v1 reports whether f needs nothing that tree version 1 lacks.
func (f File) v1() bool {
	return f.Type == TypeFile && f.Mode == 0 && f.MtimeNs == 0 && f.Target == "" && !strings.Contains(f.Name, "/") &&
		(f.Identity == nil || f.Identity.CtimeNs == 0)
}

// Tree is the list of files of a snapshot, stored as a tree blob.
type Tree struct {
	Version int    `json:"version"`
	Files   []File `json:"files"`
}

// Decode parses and validates a stored snapshot.
func Decode(data []byte) (*Snapshot, error) {
	var sn Snapshot
	if err := json.Unmarshal(data, &sn); err != nil {
		return nil, fmt.Errorf("%w: snapshot is not valid JSON: %v", repo.ErrCorrupt, err)
	}
	if sn.Version > snapshotVersion {
		return nil, fmt.Errorf("snapshot format version %d is newer than this snap reads (%d); upgrade snap", sn.Version, snapshotVersion)
	}
	if sn.Version < 1 {
		return nil, fmt.Errorf("%w: snapshot has version %d", repo.ErrCorrupt, sn.Version)
	}
	if sn.Tree.IsNull() {
		return nil, fmt.Errorf("%w: snapshot has no tree", repo.ErrCorrupt)
	}
	if sn.Time.IsZero() {
		return nil, fmt.Errorf("%w: snapshot has no time", repo.ErrCorrupt)
	}
	sn.Source.Kind = source.CanonicalKind(sn.Source.Kind)
	if (sn.Source.Kind == source.KindRedis) != (sn.Redis != nil) {
		return nil, fmt.Errorf("%w: snapshot of kind %q with%s a redis point", repo.ErrCorrupt, sn.Source.Kind, map[bool]string{true: "", false: "out"}[sn.Redis != nil])
	}
	if sn.Group != nil {
		if err := sn.Group.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %v", repo.ErrCorrupt, err)
		}
	}
	if sn.Redis != nil {
		if err := sn.Redis.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %v", repo.ErrCorrupt, err)
		}
	}
	return &sn, nil
}

// DecodeTree parses and validates a tree.
func DecodeTree(data []byte) (*Tree, error) {
	var t Tree
	if err := json.Unmarshal(data, &t); err != nil {
		return nil, fmt.Errorf("%w: tree is not valid JSON: %v", repo.ErrCorrupt, err)
	}
	if t.Version > treeVersion {
		return nil, fmt.Errorf("tree format version %d is newer than this snap reads (%d); upgrade snap", t.Version, treeVersion)
	}
	if t.Version < 1 {
		return nil, fmt.Errorf("%w: tree has version %d", repo.ErrCorrupt, t.Version)
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", repo.ErrCorrupt, err)
	}
	return &t, nil
}

// Validate checks the invariants every tree holds: unique names that
// cannot leave the target (plain names in version 1; in version 2
// slash-separated paths whose every parent is a directory entry listed
// before them), chunk lists that add up to a regular file's length, no
// bytes for other entries, and hard links to earlier regular files.
func (t *Tree) Validate() error {
	seen := make(map[string]string, len(t.Files)) // name -> type
	for i, f := range t.Files {
		if t.Version == 1 {
			if err := source.ValidName(f.Name); err != nil {
				return fmt.Errorf("tree file %d: %w", i, err)
			}
			if !f.v1() {
				return fmt.Errorf("tree file %d %q: a version 1 tree holds only plain regular files", i, f.Name)
			}
		}
		if err := source.ValidPath(f.Name); err != nil {
			return fmt.Errorf("tree file %d: %w", i, err)
		}
		if _, dup := seen[f.Name]; dup {
			return fmt.Errorf("tree file %d: duplicate name %q", i, f.Name)
		}
		if dir, _, nested := cutLast(f.Name); nested {
			// Also keeps a restore from writing through a symlink.
			if typ, ok := seen[dir]; !ok || typ != TypeDir {
				return fmt.Errorf("tree file %q: its directory %q is not a directory listed before it", f.Name, dir)
			}
		}
		seen[f.Name] = f.Type
		if len(f.Chunks) != len(f.Sizes) {
			return fmt.Errorf("tree file %q: %d chunks but %d sizes", f.Name, len(f.Chunks), len(f.Sizes))
		}
		switch f.Type {
		case TypeFile:
		case TypeDir, TypeSymlink, TypeHardlink:
			if len(f.Chunks) != 0 || f.Length != 0 {
				return fmt.Errorf("tree file %q: a %s with %d bytes", f.Name, f.Type, f.Length)
			}
		default:
			return fmt.Errorf("tree file %q: unknown type %q", f.Name, f.Type)
		}
		switch f.Type {
		case TypeSymlink:
			if f.Target == "" || strings.IndexByte(f.Target, 0) >= 0 || len(f.Target) > 4096 {
				return fmt.Errorf("tree file %q: symlink without a valid target", f.Name)
			}
		case TypeHardlink:
			if typ, ok := seen[f.Target]; !ok || typ != TypeFile || f.Target == f.Name {
				return fmt.Errorf("tree file %q: hard link to %q, which is not a regular file listed before it", f.Name, f.Target)
			}
		default:
			if f.Target != "" {
				return fmt.Errorf("tree file %q: a %s with a target", f.Name, typeNoun(f.Type))
			}
		}
		if f.Mode&^0o7777 != 0 {
			return fmt.Errorf("tree file %q: mode %o has bits beyond the permissions", f.Name, f.Mode)
		}
		var sum int64
		for _, s := range f.Sizes {
			if s == 0 {
				return fmt.Errorf("tree file %q: empty chunk", f.Name)
			}
			sum += int64(s)
		}
		if f.Length < 0 || sum != f.Length {
			return fmt.Errorf("tree file %q: chunks hold %d bytes, length is %d", f.Name, sum, f.Length)
		}
	}
	return nil
}

func typeNoun(t string) string {
	if t == TypeFile {
		return "regular file"
	}
	return t
}

// cutLast splits a path at its last '/'.
func cutLast(name string) (dir, base string, ok bool) {
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return "", name, false
	}
	return name[:i], name[i+1:], true
}

// Save stores sn and sets its ID and Name. The tree it names must already
// be saved and flushed: packs, then index, then snapshot. In a version 2
// repository it is named <tag>-<hash> with its host's tag, so that
// ListHost finds it without reading any other host's.
func Save(ctx context.Context, r SnapshotWriter, sn *Snapshot) error {
	sn.Version = snapshotVersion
	data, err := json.Marshal(sn)
	if err != nil {
		return err
	}
	if !r.HostScoped() {
		id, err := r.SaveUnpacked(ctx, repo.SnapshotFile, data)
		if err != nil {
			return err
		}
		sn.ID, sn.Name = id, id.String()
		return nil
	}
	name, err := r.SaveNamed(ctx, repo.SnapshotFile, r.HostTag(sn.Host), data)
	if err != nil {
		return err
	}
	_, id, _ := repo.SplitNamed(name)
	sn.ID, sn.Name = id, name
	return nil
}

// Load reads the snapshot whose stored bytes hash to id, under either
// layout's name: a version 2 name is found by a listing of names (no
// snapshot but this one is read).
func Load(ctx context.Context, r Lister, id repo.ID) (*Snapshot, error) {
	name := id.String()
	if r.HostScoped() {
		err := r.ListObjects(ctx, repo.SnapshotFile, func(o repo.ObjectInfo) error {
			if o.ID == id {
				name = o.Name
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list snapshots: %w", err)
		}
	}
	return LoadNamed(ctx, r, name, -1)
}

// LoadNamed reads the snapshot stored as name; size is what a listing
// said (-1: not known).
func LoadNamed(ctx context.Context, r Lister, name string, size int64) (*Snapshot, error) {
	data, err := r.LoadObject(ctx, repo.SnapshotFile, name, size)
	if err != nil {
		return nil, err
	}
	_, id, _ := repo.ParseObjectName(repo.SnapshotFile, name)
	sn, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id.Str(), err)
	}
	sn.ID, sn.Name = id, name
	return sn, nil
}

// minListLoads is the fewest snapshots List loads at once: each is a
// small object, so its cost is the round trip, however few connections
// the repository was opened with.
const minListLoads = 4

// List loads every snapshot of every host, oldest first. It loads up to
// r.Connections() of them at once (at least minListLoads): a repository
// shared by many hosts holds thousands. The first error ends it: the
// loads under way are cancelled and it returns that error, as Load gave
// it. Where the host is known, ListHost reads only its snapshots.
func List(ctx context.Context, r Lister) ([]*Snapshot, error) {
	var objs []repo.ObjectInfo
	if err := r.ListObjects(ctx, repo.SnapshotFile, func(o repo.ObjectInfo) error {
		objs = append(objs, o)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	return loadListed(ctx, r, objs)
}

// ListHost loads the snapshots of host, oldest first. In a version 2
// repository it lists only the names with host's tag and reads only those
// (in parallel, as List does); one whose stored host is another (a tag
// collision, or a misnamed object) is logged and left out. In a version 1
// repository it is List and a filter.
func ListHost(ctx context.Context, r Lister, host string) ([]*Snapshot, error) {
	if !r.HostScoped() {
		snaps, err := List(ctx, r)
		if err != nil {
			return nil, err
		}
		return slices.DeleteFunc(snaps, func(sn *Snapshot) bool { return sn.Host != host }), nil
	}
	var objs []repo.ObjectInfo
	if err := r.ListOwned(ctx, repo.SnapshotFile, r.HostTag(host), func(o repo.ObjectInfo) error {
		objs = append(objs, o)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list snapshots of %s: %w", host, err)
	}
	snaps, err := loadListed(ctx, r, objs)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(snaps, func(sn *Snapshot) bool {
		if sn.Host != host {
			r.Log().Warn("snapshot named with the host's tag is of another host; ignored", "snapshot", sn.Name, "host", sn.Host, "want", host)
			return true
		}
		return false
	}), nil
}

// loadListed loads listed snapshots in parallel and sorts them by time.
func loadListed(ctx context.Context, r Lister, objs []repo.ObjectInfo) ([]*Snapshot, error) {
	out := make([]*Snapshot, len(objs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(r.Connections(), minListLoads))
	for i, o := range objs {
		// After a failure the loads still to start fail at once on the
		// cancelled context (every backend refuses one), and Wait keeps
		// the first error; a caller's cancellation reads as Load's, as
		// it did one at a time.
		g.Go(func() error {
			sn, err := LoadNamed(gctx, r, o.Name, o.Size)
			out[i] = sn
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b *Snapshot) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID.String(), b.ID.String())
	})
	return out, nil
}

// ErrNoSnapshot is returned when no snapshot matches.
var ErrNoSnapshot = errors.New("no snapshot found")

// Find resolves an id or a unique id prefix among snaps.
func Find(snaps []*Snapshot, prefix string) (*Snapshot, error) {
	prefix = strings.ToLower(prefix)
	if len(prefix) < 4 {
		return nil, fmt.Errorf("snapshot id %q is too short: give at least 4 hex characters", prefix)
	}
	var found *Snapshot
	for _, sn := range snaps {
		if strings.HasPrefix(sn.ID.String(), prefix) {
			if found != nil {
				return nil, fmt.Errorf("snapshot id %q is ambiguous: %s and %s", prefix, found.ID.Str(), sn.ID.Str())
			}
			found = sn
		}
	}
	if found == nil {
		return nil, fmt.Errorf("%w with id %q", ErrNoSnapshot, prefix)
	}
	return found, nil
}

// Latest returns the newest snapshot that match accepts, or nil.
func Latest(snaps []*Snapshot, match func(*Snapshot) bool) *Snapshot {
	for i := len(snaps) - 1; i >= 0; i-- {
		if match == nil || match(snaps[i]) {
			return snaps[i]
		}
	}
	return nil
}

// SaveTree stores t as a tree blob; the caller flushes the repository. A
// tree that needs nothing of version 2 is written as version 1.
func SaveTree(ctx context.Context, r BlobWriter, t *Tree) (repo.ID, error) {
	t.Version = 1
	for _, f := range t.Files {
		if !f.v1() {
			t.Version = treeVersion
			break
		}
	}
	if err := t.Validate(); err != nil {
		return repo.ID{}, err
	}
	data, err := json.Marshal(t)
	if err != nil {
		return repo.ID{}, err
	}
	id := r.BlobID(data)
	if _, err := r.SaveBlob(ctx, repo.TreeBlob, id, data); err != nil {
		return id, fmt.Errorf("save tree: %w", err)
	}
	return id, nil
}

// LoadTree loads and validates the tree blob id.
func LoadTree(ctx context.Context, r BlobReader, id repo.ID) (*Tree, error) {
	data, err := r.LoadBlob(ctx, id, nil)
	if err != nil {
		return nil, fmt.Errorf("load tree %s: %w", id.Str(), err)
	}
	t, err := DecodeTree(data)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id.Str(), err)
	}
	return t, nil
}
