package repo

import (
	"context"
	"fmt"

	"golang.org/x/sync/errgroup"
)

// StoredIndex is one stored index file and what it says.
type StoredIndex struct {
	ID   ID
	Size int64 // stored (sealed) bytes
	Data *IndexData
}

// IndexSet is every index file of a repository, for prune and check,
// which need to know which file says what.
type IndexSet struct {
	Files      []StoredIndex
	Superseded map[ID]bool // files named in another file's Supersedes
}

// LoadIndexFiles reads and decodes every index file and makes the
// in-memory index hold the blobs of those no other file supersedes (what
// LoadIndex does). A file that cannot be read or decoded is passed to
// onError: with a nil onError, or when it returns an error, loading stops;
// otherwise the file is left out. Prune must not leave files out (it would
// take their packs for garbage); check reports them and goes on.
func (r *Repository) LoadIndexFiles(ctx context.Context, onError func(ID, error) error) (*IndexSet, error) {
	var files []StoredIndex
	if err := r.List(ctx, IndexFile, func(id ID, size int64) error {
		files = append(files, StoredIndex{ID: id, Size: size})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list index: %w", err)
	}
	errs := make([]error, len(files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.conns)
	for i := range files {
		g.Go(func() error {
			plain, err := r.loadUnpacked(gctx, IndexFile, files[i].ID, files[i].Size)
			if err == nil {
				files[i].Data, err = DecodeIndex(plain)
				if err != nil {
					err = fmt.Errorf("index/%s: %w", files[i].ID, err)
				}
			}
			if err != nil && (onError == nil || gctx.Err() != nil) {
				return err
			}
			errs[i] = err
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := &IndexSet{Superseded: map[ID]bool{}}
	for i, f := range files {
		if errs[i] != nil {
			if err := onError(f.ID, errs[i]); err != nil {
				return nil, err
			}
			continue
		}
		out.Files = append(out.Files, f)
		for _, s := range f.Data.Supersedes {
			out.Superseded[s] = true
		}
	}
	r.idx.reset()
	r.indexSeen = make(map[ID]bool, len(out.Files))
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
// to date. New index files from other writers are added. If an index file
// read earlier is gone, or a new one supersedes others, a prune ran in
// between and may have deleted packs the old index names: then the index
// is loaded again from scratch, so nothing the prune removed is taken for
// stored. Without an earlier load it just loads the index.
func (r *Repository) RefreshIndex(ctx context.Context) error {
	if r.indexSeen == nil {
		return r.LoadIndex(ctx)
	}
	current := map[ID]bool{}
	if err := r.List(ctx, IndexFile, func(id ID, _ int64) error {
		current[id] = true
		return nil
	}); err != nil {
		return fmt.Errorf("list index: %w", err)
	}
	var fresh []ID
	for id := range current {
		if !r.indexSeen[id] {
			fresh = append(fresh, id)
		}
	}
	stale := false
	for id := range r.indexSeen {
		if !current[id] {
			stale = true
			break
		}
	}
	var datas []*IndexData
	if !stale && len(fresh) > 0 {
		// A file removed since the listing (a prune) comes back nil: reload below.
		var err error
		if datas, err = r.loadIndexFiles(ctx, fresh, true); err != nil {
			return err
		}
		for _, d := range datas {
			if d == nil || len(d.Supersedes) > 0 {
				stale = true
			}
		}
	}
	if stale {
		r.log.Info("the index changed since it was loaded (a prune ran); loading it again")
		r.idx.reset()
		r.indexSeen = nil
		return r.LoadIndex(ctx)
	}
	for i, d := range datas {
		for _, p := range d.Packs {
			r.idx.AddPack(p)
		}
		r.indexSeen[fresh[i]] = true
	}
	return nil
}

// LoadIndexData reads and decodes the index files ids, without adding
// them to the in-memory index: for prune, which takes in the files
// written while it planned.
func (r *Repository) LoadIndexData(ctx context.Context, ids []ID) ([]*IndexData, error) {
	return r.loadIndexFiles(ctx, ids, false)
}
