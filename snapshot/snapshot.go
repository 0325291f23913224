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

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/source"
)

const (
	snapshotVersion = 1
	treeVersion     = 1
)

// Source says where a snapshot's files came from.
type Source struct {
	Kind    string `json:"kind"`    // "rocksdb-freeze"
	Address string `json:"address"` // server address
	DataDir string `json:"data_dir"`
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

	ID repo.ID `json:"-"` // the name it is stored under; set by Save, Load and List
}

// Identity is the stat identity used to skip unchanged files.
type Identity struct {
	Size    int64  `json:"size"`
	MtimeNs int64  `json:"mtime_ns"`
	Inode   uint64 `json:"inode"`
}

// File is one file of a tree. Its bytes are the concatenation of Chunks,
// whose plaintext lengths are Sizes, and they add up to Length.
type File struct {
	Name     string    `json:"name"`
	Role     string    `json:"role"`
	Length   int64     `json:"length"`
	Identity *Identity `json:"identity,omitempty"`
	Chunks   []repo.ID `json:"chunks"`
	Sizes    []uint32  `json:"sizes"`
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

// Validate checks the invariants every tree holds: plain unique names,
// chunk lists that add up to the file's length.
func (t *Tree) Validate() error {
	seen := make(map[string]bool, len(t.Files))
	for i, f := range t.Files {
		if err := source.ValidName(f.Name); err != nil {
			return fmt.Errorf("tree file %d: %w", i, err)
		}
		if seen[f.Name] {
			return fmt.Errorf("tree file %d: duplicate name %q", i, f.Name)
		}
		seen[f.Name] = true
		if len(f.Chunks) != len(f.Sizes) {
			return fmt.Errorf("tree file %q: %d chunks but %d sizes", f.Name, len(f.Chunks), len(f.Sizes))
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

// Save stores sn and sets its ID. The tree it names must already be saved
// and flushed: packs, then index, then snapshot.
func Save(ctx context.Context, r *repo.Repository, sn *Snapshot) error {
	sn.Version = snapshotVersion
	data, err := json.Marshal(sn)
	if err != nil {
		return err
	}
	id, err := r.SaveUnpacked(ctx, repo.SnapshotFile, data)
	if err != nil {
		return err
	}
	sn.ID = id
	return nil
}

// Load reads one snapshot.
func Load(ctx context.Context, r *repo.Repository, id repo.ID) (*Snapshot, error) {
	data, err := r.LoadUnpacked(ctx, repo.SnapshotFile, id)
	if err != nil {
		return nil, err
	}
	sn, err := Decode(data)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", id.Str(), err)
	}
	sn.ID = id
	return sn, nil
}

// List loads every snapshot, oldest first.
func List(ctx context.Context, r *repo.Repository) ([]*Snapshot, error) {
	var ids []repo.ID
	if err := r.List(ctx, repo.SnapshotFile, func(id repo.ID, _ int64) error {
		ids = append(ids, id)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	out := make([]*Snapshot, 0, len(ids))
	for _, id := range ids {
		sn, err := Load(ctx, r, id)
		if err != nil {
			return nil, err
		}
		out = append(out, sn)
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

// SaveTree stores t as a tree blob; the caller flushes the repository.
func SaveTree(ctx context.Context, r *repo.Repository, t *Tree) (repo.ID, error) {
	t.Version = treeVersion
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
func LoadTree(ctx context.Context, r *repo.Repository, id repo.ID) (*Tree, error) {
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
