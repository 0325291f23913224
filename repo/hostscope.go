package repo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"golang.org/x/sync/errgroup"
)

// Host-scoped layout (format version 2, docs/design.md "Layout"): a
// snapshot is snapshots/<tag>-<hash>, with the tag of its host, and an
// index file is index/<tag>-<hash> when a backup of that host (or prune,
// for packs only that host uses) wrote it, or index/shared-<hash>. A
// repository scoped to a host reads only the shared files and its own, so
// a node's backup costs its own data, not the fleet's.

// SharedOwner is the owner of index files no single host owns: prune's
// packs of blobs several hosts use, and those of writers without a host.
const SharedOwner = "shared"

// HostTag is the tag of host's objects (Keys.HostTag).
func (r *Repository) HostTag(host string) string { return r.keys.HostTag(host) }

// HostScoped reports whether the format names objects by host (version
// 2 and later).
func (r *Repository) HostScoped() bool { return r.cfg.Version >= 2 }

// ScopeTo tells the repository which host it works for: in a version 2
// repository LoadIndex and RefreshIndex then read only the shared index
// files and that host's, and new index files carry its tag. A blob that
// another host's file names is not known (a backup writes it again, a
// bounded loss prune merges); a lookup that misses loads the other
// files once (LoadBlob, LoadMissing). Call it before LoadIndex. In a
// version 1 repository it changes nothing.
func (r *Repository) ScopeTo(host string) {
	r.scopeHost = host
	r.scopeTag = r.HostTag(host)
}

// Scope returns the host ScopeTo set, or "".
func (r *Repository) Scope() string { return r.scopeHost }

// scoped reports whether loads read only the scope's index files.
func (r *Repository) scoped() bool { return r.HostScoped() && r.scopeTag != "" }

// Log returns the repository's logger.
func (r *Repository) Log() *slog.Logger { return r.log }

// indexPrefix is the name prefix of an index file of owner ("": the
// repository's own, its scope's tag or shared), or "" in a version 1
// repository, whose index files are named by their hash alone.
func (r *Repository) indexPrefix(owner string) string {
	if !r.HostScoped() {
		return ""
	}
	if owner == "" {
		owner = SharedOwner
		if r.scopeTag != "" {
			owner = r.scopeTag
		}
	}
	return owner
}

// IndexName is the name of the index file of owner (as for SaveIndexAs)
// whose stored bytes hash to id.
func (r *Repository) IndexName(owner string, id ID) string {
	if p := r.indexPrefix(owner); p != "" {
		return p + "-" + id.String()
	}
	return id.String()
}

// SaveIndexAs writes one index file of owner: a host's tag, SharedOwner,
// or "" for the repository's own (its scope's tag, else shared). In a
// version 1 repository every index file is named by its hash.
func (r *Repository) SaveIndexAs(ctx context.Context, owner string, d *IndexData) (ID, error) {
	plain := EncodeIndex(d)
	if n, bound := int64(len(plain))+Overhead, maxObjectSize(IndexFile); n > bound {
		return ID{}, fmt.Errorf("save %s of %d bytes: over the %d bytes %s may have", IndexFile, n, bound, objectNoun(IndexFile))
	}
	sealed := r.keys.Seal(nil, plain)
	id := Hash(sealed)
	h := Handle{Type: IndexFile, Name: r.IndexName(owner, id)}
	if err := r.be.Save(ctx, h, sealed); err != nil && !errors.Is(err, ErrExists) {
		return id, fmt.Errorf("save %s: %w", h, err)
	}
	return id, nil
}

// ParseObjectName parses the name of an index file or snapshot in either
// layout: a bare hash (version 1, and any writer's in a version 1
// repository) or <owner>-<hash>, whose owner is a host tag or, for index
// files, SharedOwner. It returns the owner ("" for a bare hash) and the
// hash of the stored bytes.
func ParseObjectName(t FileType, name string) (owner string, id ID, ok bool) {
	if id, err := ParseID(name); err == nil && id.String() == name {
		return "", id, true
	}
	prefix, id, ok := SplitNamed(name)
	if !ok {
		return "", ID{}, false
	}
	if t == IndexFile && prefix == SharedOwner || isHostTag(prefix) {
		return prefix, id, true
	}
	return "", ID{}, false
}

func isHostTag(s string) bool {
	if len(s) != HostTagLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isLowerHex(s[i]) {
			return false
		}
	}
	return true
}

// ObjectInfo is one listed index file or snapshot.
type ObjectInfo struct {
	Name  string
	Owner string // a host tag, SharedOwner, or "" for a bare-hash name
	ID    ID     // the hash of its stored bytes
	Size  int64
}

// ListObjects lists every index file or snapshot (t), in both layouts.
// Names of neither form (stray files) are skipped with a warning.
func (r *Repository) ListObjects(ctx context.Context, t FileType, fn func(ObjectInfo) error) error {
	return r.be.List(ctx, t, r.objectLister(t, fn))
}

// ListOwned lists the index files or snapshots (t) named with owner's
// prefix (a host tag or SharedOwner), with the backend's PrefixLister
// where it has one.
func (r *Repository) ListOwned(ctx context.Context, t FileType, owner string, fn func(ObjectInfo) error) error {
	return ListPrefix(ctx, r.be, t, owner+"-", r.objectLister(t, func(o ObjectInfo) error {
		if o.Owner != owner {
			return nil
		}
		return fn(o)
	}))
}

func (r *Repository) objectLister(t FileType, fn func(ObjectInfo) error) func(FileInfo) error {
	return func(fi FileInfo) error {
		owner, id, ok := ParseObjectName(t, fi.Name)
		if !ok {
			r.log.Warn("ignoring stray object", "type", t, "name", fi.Name)
			return nil
		}
		return fn(ObjectInfo{Name: fi.Name, Owner: owner, ID: id, Size: fi.Size})
	}
}

// LoadObject loads, verifies and decrypts the index file or snapshot t/name
// (either layout); size is what a listing said (-1: not known).
func (r *Repository) LoadObject(ctx context.Context, t FileType, name string, size int64) ([]byte, error) {
	_, id, ok := ParseObjectName(t, name)
	if !ok {
		return nil, fmt.Errorf("load %s/%s: not a name of this layout", t, name)
	}
	return r.loadHashed(ctx, Handle{Type: t, Name: name}, id, size)
}

// listIndexScope lists the index files a load reads: the shared ones and
// the scope's (two listings at once) when scoped, else every one.
func (r *Repository) listIndexScope(ctx context.Context) ([]ObjectInfo, error) {
	if !r.scoped() {
		var out []ObjectInfo
		err := r.ListObjects(ctx, IndexFile, func(o ObjectInfo) error {
			out = append(out, o)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list index: %w", err)
		}
		return out, nil
	}
	owners := []string{SharedOwner, r.scopeTag}
	lists := make([][]ObjectInfo, len(owners))
	g, gctx := errgroup.WithContext(ctx)
	for i, owner := range owners {
		g.Go(func() error {
			return r.ListOwned(gctx, IndexFile, owner, func(o ObjectInfo) error {
				lists[i] = append(lists[i], o)
				return nil
			})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("list index: %w", err)
	}
	return append(lists[0], lists[1]...), nil
}

// LoadMissing is what a reader calls when a blob it needs is not in the
// index: it brings the index up to date (RefreshIndex) and, in a scoped
// repository, loads the index files of every other host once, so a blob
// another host stored, and prune has not yet moved to a shared pack, is
// found. Those files are read best effort: one that cannot be read or
// decoded is reported through the logger and left out (blobs are verified
// by their id, so a wrong location can only fail a read, never corrupt
// one).
func (r *Repository) LoadMissing(ctx context.Context) error {
	if err := r.RefreshIndex(ctx); err != nil {
		return err
	}
	return r.widenIndex(ctx)
}

// widenIndex loads the index files outside the scope, once, best effort.
func (r *Repository) widenIndex(ctx context.Context) error {
	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	if !r.scoped() || r.widened {
		return nil
	}
	if _, err := r.unparkLocked(); err != nil {
		return err
	}
	var all, others []ObjectInfo
	if err := r.ListObjects(ctx, IndexFile, func(o ObjectInfo) error {
		all = append(all, o)
		if !r.indexSeen[o.ID] {
			others = append(others, o)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	r.widened = true
	r.log.Info("a blob is not in this host's index files; loading every other host's", "files", len(others))
	var bad atomic.Int64
	res, err := r.readIndexFiles(ctx, others, false, func(f ObjectInfo, err error) bool {
		if !errors.Is(err, ErrNotFound) { // gone: a prune removed it
			r.log.Warn("skipping an index file of another host that cannot be read", "file", "index/"+f.Name, "err", err)
			bad.Add(1)
		}
		return false
	})
	if err != nil {
		return err
	}
	redo := false
	for _, x := range res {
		for _, id := range x.Supersedes {
			redo = redo || r.indexSeen[id]
			r.superseded[id] = true
		}
	}
	for i, f := range others {
		redo = redo || res[i].Err == nil && r.superseded[f.ID]
	}
	if redo {
		// A file just read supersedes one already in the index (a prune
		// is finishing): load everything again without the superseded.
		r.resetIndex()
		rest := make([]ObjectInfo, 0, len(all))
		for _, f := range all {
			if !r.superseded[f.ID] {
				rest = append(rest, f)
			}
		}
		if _, r.superseded, err = r.loadStreamed(ctx, rest, r.superseded, true); err != nil {
			return err
		}
	}
	r.markSeen(others)
	if n := bad.Load(); n > 0 {
		r.log.Warn("index files of other hosts were left out; snap check names them", "files", n)
	}
	return nil
}

// TrimOwner returns name's hash part, for short display.
func TrimOwner(name string) string {
	if i := strings.LastIndexByte(name, '-'); i >= 0 {
		return name[i+1:]
	}
	return name
}
