package snapshot

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/source"
)

// DiffResult is what differs from one tree to another (snap diff; --json
// prints it as is).
type DiffResult struct {
	From     string       `json:"from"`
	To       string       `json:"to"`
	Added    []DiffFile   `json:"added"`
	Removed  []DiffFile   `json:"removed"`
	Changed  []DiffChange `json:"changed"`
	Appended []DiffAppend `json:"appended"`
	Summary  DiffSummary  `json:"summary"`
}

type DiffFile struct {
	Name   string `json:"name"`
	Type   string `json:"type"` // file, dir, symlink or hardlink
	Target string `json:"target,omitempty"`
	Bytes  int64  `json:"bytes"`
}

type DiffChange struct {
	Name     string `json:"name"`
	Type     string `json:"type"` // in the second snapshot
	OldBytes int64  `json:"old_bytes"`
	NewBytes int64  `json:"new_bytes"`
	// What changed: type, target, role, content, mode, mtime.
	What []string `json:"what"`
}

// DiffAppend is a file that grew: the second's bytes start with all of
// the first's.
type DiffAppend struct {
	Name     string `json:"name"`
	OldBytes int64  `json:"old_bytes"`
	NewBytes int64  `json:"new_bytes"`
	Appended int64  `json:"appended"`
}

type DiffSummary struct {
	Added         int   `json:"added"`
	Removed       int   `json:"removed"`
	Changed       int   `json:"changed"`
	Appended      int   `json:"appended"`
	AddedBytes    int64 `json:"added_bytes"`
	RemovedBytes  int64 `json:"removed_bytes"`
	AppendedBytes int64 `json:"appended_bytes"`
	FromBytes     int64 `json:"from_bytes"` // the files' lengths added up
	ToBytes       int64 `json:"to_bytes"`
	// NewBytes is what the distinct chunks of the second snapshot that
	// the first has not hold: the most a backup after the first stored.
	NewBytes  int64 `json:"new_bytes"`
	NewChunks int   `json:"new_chunks"`
}

// LoadBlob returns a blob's plaintext.
type LoadBlob func(ctx context.Context, id repo.ID) ([]byte, error)

// DiffTrees compares two trees by name. With metadata it also lists
// entries whose mode or mtime alone changed. load reads the few chunks
// that tell whether a file that is not append-only grew or was rewritten.
func DiffTrees(ctx context.Context, from, to *Tree, metadata bool, load LoadBlob) (*DiffResult, error) {
	d := &DiffResult{Added: []DiffFile{}, Removed: []DiffFile{}, Changed: []DiffChange{}, Appended: []DiffAppend{}}
	old := make(map[string]File, len(from.Files))
	have := make(map[repo.ID]bool)
	for _, f := range from.Files {
		old[f.Name] = f
		d.Summary.FromBytes += f.Length
		for _, c := range f.Chunks {
			have[c] = true
		}
	}
	names := make(map[string]bool, len(to.Files))
	for _, n := range to.Files {
		names[n.Name] = true
		d.Summary.ToBytes += n.Length
		for i, c := range n.Chunks {
			if !have[c] {
				have[c] = true // count each chunk once
				d.Summary.NewBytes += int64(n.Sizes[i])
				d.Summary.NewChunks++
			}
		}
		o, ok := old[n.Name]
		if !ok {
			d.Added = append(d.Added, DiffFile{Name: n.Name, Type: typeName(n.Type), Target: n.Target, Bytes: n.Length})
			d.Summary.AddedBytes += n.Length
			continue
		}
		what := changes(o, n)
		if len(what) == 0 {
			continue
		}
		if slices.Contains(what, "content") {
			grown, err := appended(ctx, o, n, load)
			if err != nil {
				return nil, fmt.Errorf("compare %s: %w", n.Name, err)
			}
			if grown {
				d.Appended = append(d.Appended, DiffAppend{Name: n.Name, OldBytes: o.Length, NewBytes: n.Length, Appended: n.Length - o.Length})
				d.Summary.AppendedBytes += n.Length - o.Length
				continue
			}
		}
		if !metadata && metadataOnly(what) {
			continue
		}
		d.Changed = append(d.Changed, DiffChange{Name: n.Name, Type: typeName(n.Type), OldBytes: o.Length, NewBytes: n.Length, What: what})
	}
	for _, o := range from.Files {
		if !names[o.Name] {
			d.Removed = append(d.Removed, DiffFile{Name: o.Name, Type: typeName(o.Type), Target: o.Target, Bytes: o.Length})
			d.Summary.RemovedBytes += o.Length
		}
	}
	for _, l := range [][]DiffFile{d.Added, d.Removed} {
		slices.SortFunc(l, func(a, b DiffFile) int { return strings.Compare(a.Name, b.Name) })
	}
	slices.SortFunc(d.Changed, func(a, b DiffChange) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(d.Appended, func(a, b DiffAppend) int { return strings.Compare(a.Name, b.Name) })
	d.Summary.Added, d.Summary.Removed = len(d.Added), len(d.Removed)
	d.Summary.Changed, d.Summary.Appended = len(d.Changed), len(d.Appended)
	return d, nil
}

// changes lists what differs between two entries of the same name. A
// stat identity is no change: only what a restore would write counts.
func changes(o, n File) []string {
	var what []string
	if o.Type != n.Type {
		what = append(what, "type")
	}
	if o.Target != n.Target {
		what = append(what, "target")
	}
	if o.Role != n.Role {
		what = append(what, "role")
	}
	if o.Type == TypeFile && n.Type == TypeFile && (o.Length != n.Length || !slices.Equal(o.Chunks, n.Chunks)) {
		what = append(what, "content")
	}
	if o.Mode != n.Mode {
		what = append(what, "mode")
	}
	if o.MtimeNs != n.MtimeNs {
		what = append(what, "mtime")
	}
	return what
}

// MetadataOnly reports whether only the mode or mtime changed.
func (c DiffChange) MetadataOnly() bool { return metadataOnly(c.What) }

func metadataOnly(what []string) bool {
	for _, w := range what {
		if w != "mode" && w != "mtime" {
			return false
		}
	}
	return true
}

// appended reports whether n is o grown: longer, and its chunks start
// with all of o's but possibly the last, which ended at o's end and so
// was cut again once more bytes followed. For an append-only role (wal,
// manifest, aof-incr) that is enough, since such files only grow; for
// any other file the bytes of o's last chunk must begin n's rest.
func appended(ctx context.Context, o, n File, load LoadBlob) (bool, error) {
	if o.Type != TypeFile || n.Type != TypeFile || o.Role != n.Role || n.Length <= o.Length {
		return false, nil
	}
	k := len(o.Chunks)
	if k == 0 {
		return true, nil
	}
	// n is longer than the k-1 shared chunks, so it has a k-th.
	if len(n.Chunks) < k || !slices.Equal(o.Chunks[:k-1], n.Chunks[:k-1]) {
		return false, nil
	}
	if o.Chunks[k-1] == n.Chunks[k-1] || source.Role(n.Role).AppendOnly() {
		return true, nil
	}
	last, err := load(ctx, o.Chunks[k-1])
	if err != nil {
		return false, err
	}
	var rest []byte
	for i := k - 1; i < len(n.Chunks) && len(rest) < len(last); i++ {
		b, err := load(ctx, n.Chunks[i])
		if err != nil {
			return false, err
		}
		rest = append(rest, b...)
	}
	return len(rest) >= len(last) && bytes.Equal(rest[:len(last)], last), nil
}

func typeName(t string) string {
	if t == TypeFile {
		return "file"
	}
	return t
}
