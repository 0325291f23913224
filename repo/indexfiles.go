package repo

import (
	"context"
	"errors"
	"fmt"
)

// StoredIndex is one stored index file and what it says.
type StoredIndex struct {
	ID    ID     // the hash of its stored bytes, which Supersedes name
	Name  string // its name: the hash, or <owner>-<hash> (version 2)
	Owner string // a host tag, SharedOwner, or "" for a bare-hash name
	Size  int64  // stored (sealed) bytes
	Data  *IndexData
}

// IndexSet is every index file of a repository, for prune and check,
// which need to know which file says what.
type IndexSet struct {
	Files      []StoredIndex
	Superseded map[ID]bool // files named in another file's Supersedes
}

// LoadIndexFiles reads and decodes every index file, in either layout
// and whatever the scope, and makes the in-memory index hold the blobs of
// those no other file supersedes. A file that cannot be read or decoded
// is passed to onError: with a nil onError, or when it
// returns an error, loading stops; otherwise the file is left out. Prune
// must not leave files out (it would take their packs for garbage); check
// reports them and goes on.
func (r *Repository) LoadIndexFiles(ctx context.Context, onError func(f StoredIndex, err error) error) (*IndexSet, error) {
	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	var files []StoredIndex
	if err := r.ListObjects(ctx, IndexFile, func(o ObjectInfo) error {
		files = append(files, StoredIndex{ID: o.ID, Name: o.Name, Owner: o.Owner, Size: o.Size})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list index: %w", err)
	}
	objs := make([]ObjectInfo, len(files))
	for i, f := range files {
		objs[i] = ObjectInfo{Name: f.Name, Owner: f.Owner, ID: f.ID, Size: f.Size}
	}
	res, err := r.readIndexFiles(ctx, objs, true, func(ObjectInfo, error) bool { return onError == nil })
	if err != nil {
		return nil, err
	}
	errs := make([]error, len(files))
	for i := range res {
		files[i].Data, errs[i] = res[i].Data, res[i].Err
	}
	out := &IndexSet{Superseded: map[ID]bool{}}
	for i, f := range files {
		if errs[i] != nil {
			if err := onError(f, errs[i]); err != nil {
				return nil, err
			}
			continue
		}
		out.Files = append(out.Files, f)
		for _, s := range f.Data.Supersedes {
			out.Superseded[s] = true
		}
	}
	r.resetIndex()
	r.parkShared = false
	r.indexSeen = make(map[ID]bool, len(out.Files))
	r.superseded = out.Superseded
	r.widened = true // nothing outside any scope is left to load
	for _, f := range out.Files {
		r.indexSeen[f.ID] = true
		if out.Superseded[f.ID] {
			continue
		}
		for _, p := range f.Data.Packs {
			r.idx.AddPack(p)
		}
	}
	return out, nil
}

// RefreshIndex brings an index loaded before the caller took its lock up
// to date. New index files from other writers (of the scope, when scoped)
// are added. If an index file read earlier is gone, or a new one
// supersedes others, a prune ran in between and may have deleted packs the
// old index names: then the index is loaded again from scratch, so nothing
// the prune removed is taken for stored. A scoped reader sees a prune
// too: prune writes its shared index file last, superseding every file it
// replaced. Without an earlier load it just loads the index.
func (r *Repository) RefreshIndex(ctx context.Context) error {
	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	if r.indexSeen == nil {
		return r.loadIndexLocked(ctx)
	}
	if r.scoped() && r.widened {
		// The files outside the scope were read best effort; start over
		// from the scope, and let the next miss widen again.
		r.indexSeen = nil
		return r.loadIndexLocked(ctx)
	}
	files, err := r.listIndexScope(ctx)
	if err != nil {
		return err
	}
	current := make(map[ID]bool, len(files))
	var fresh []ObjectInfo
	for _, f := range files {
		current[f.ID] = true
		if !r.indexSeen[f.ID] {
			fresh = append(fresh, f)
		}
	}
	stale := false
	for id := range r.indexSeen {
		if !current[id] {
			stale = true
			break
		}
	}
	if !stale && len(fresh) > 0 {
		// A file removed since the listing (a prune) is left out: reload below.
		res, err := r.readIndexFiles(ctx, fresh, false, func(_ ObjectInfo, err error) bool { return !errors.Is(err, ErrNotFound) })
		if err != nil {
			return err
		}
		for _, x := range res {
			if x.Err != nil || len(x.Supersedes) > 0 {
				stale = true
			}
		}
		if !stale {
			r.park(fresh, res, nil)
		}
	}
	if stale {
		r.log.Info("the index changed since it was loaded (a prune ran); loading it again")
		r.indexSeen = nil
		return r.loadIndexLocked(ctx)
	}
	r.markSeen(fresh)
	return nil
}

// LoadIndexData reads and decodes the index files ids, without adding
// them to the in-memory index: for prune, which takes in the files
// written while it planned.
func (r *Repository) LoadIndexData(ctx context.Context, files []ObjectInfo) ([]*IndexData, error) {
	res, err := r.readIndexFiles(ctx, files, true, func(ObjectInfo, error) bool { return true })
	if err != nil {
		return nil, err
	}
	datas := make([]*IndexData, len(res))
	for i := range res {
		datas[i] = res[i].Data
	}
	return datas, nil
}
