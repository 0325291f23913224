package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// RepairIndexOptions configure RepairIndex.
type RepairIndexOptions struct {
	// ReadAllPacks reads the header of every pack, also of those an
	// index file that loads names with the right size.
	ReadAllPacks bool
	RetryLock    time.Duration
	Now          func() time.Time // the lock holder's clock; nil: time.Now
	// Progress, if not nil, is called after each pack header read.
	Progress func(done, total int)
}

// DamagedPack is a pack whose header could not be read: it is left in
// storage, unindexed.
type DamagedPack struct {
	ID    ID     `json:"pack"`
	Size  int64  `json:"size"`
	Error string `json:"error"`
}

// DamagedIndex is an index file that did not load.
type DamagedIndex struct {
	ID    ID     `json:"index"`
	Name  string `json:"name"` // its object name: the hash, or <owner>-<hash>
	Error string `json:"error"`
}

// RepairIndexResult says what RepairIndex found and did.
type RepairIndexResult struct {
	Packs          int            `json:"packs"`             // stored packs now indexed
	Blobs          int            `json:"blobs"`             // blobs they hold
	HeadersRead    int            `json:"pack_headers_read"` // packs whose header was read
	DamagedPacks   []DamagedPack  `json:"damaged_packs"`     // left alone, not indexed
	MissingPacks   int            `json:"missing_packs"`     // named by an old index file, not stored: dropped
	DamagedIndex   []DamagedIndex `json:"damaged_index_files"`
	IndexesWritten int            `json:"index_files_written"`
	IndexesRemoved int            `json:"index_files_removed"`
}

// repairBatchBlobs bounds the blobs of one index file RepairIndex writes:
// some 200 MB of index, well under maxIndexObject.
const repairBatchBlobs = 4 << 20

// RepairIndex rebuilds the index from the packs themselves, under the
// exclusive lock (docs/design.md, "Repair"). Every stored pack is indexed
// by its header; where an old index file that loads names a pack with
// the size its entries imply, those entries are used instead of reading
// the header (unless o.ReadAllPacks): they are authenticated, and say
// what the header says. A pack whose header cannot be read is reported
// and left alone. The new index files are written, the last superseding
// every old one, and then the old ones are removed, so a repair killed at
// any point leaves an index at least as whole as before.
//
// It loads the new index into r.
func (r *Repository) RepairIndex(ctx context.Context, o RepairIndexOptions) (*RepairIndexResult, error) {
	lk, err := r.Lock(ctx, LockOptions{Exclusive: true, Command: "repair index", Now: o.Now, RetryFor: o.RetryLock})
	if err != nil {
		return nil, err
	}
	defer lk.Unlock(ctx)

	res := &RepairIndexResult{DamagedPacks: []DamagedPack{}, DamagedIndex: []DamagedIndex{}}
	var mu sync.Mutex
	oldName := map[ID]string{}
	set, err := r.LoadIndexFiles(ctx, func(f StoredIndex, err error) error {
		if errors.Is(err, ErrNotFound) || ctx.Err() != nil {
			return err
		}
		mu.Lock()
		res.DamagedIndex = append(res.DamagedIndex, DamagedIndex{ID: f.ID, Name: f.Name, Error: err.Error()})
		oldName[f.ID] = f.Name
		mu.Unlock()
		r.log.Warn("index file does not load; rebuilding without it", "index", f.Name, "err", err)
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Every index file listed, the damaged ones too: the new index
	// supersedes them all.
	var old []ID
	for _, f := range set.Files {
		old = append(old, f.ID)
		oldName[f.ID] = f.Name
	}
	for _, d := range res.DamagedIndex {
		old = append(old, d.ID)
	}
	slices.SortFunc(old, compareIDs)

	known := map[ID][]BlobEntry{}
	if !o.ReadAllPacks {
		for _, f := range set.Files {
			for _, p := range f.Data.Packs {
				if _, ok := known[p.PackID]; !ok {
					known[p.PackID] = p.Blobs
				}
			}
		}
	}

	stored := map[ID]int64{}
	if err := r.List(ctx, PackFile, func(id ID, size int64) error {
		stored[id] = size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	for id := range known {
		if _, ok := stored[id]; !ok {
			res.MissingPacks++
		}
	}
	if o.ReadAllPacks {
		// known is empty; count what the loaded files named.
		named := map[ID]bool{}
		for _, f := range set.Files {
			for _, p := range f.Data.Packs {
				if _, ok := stored[p.PackID]; !ok && !named[p.PackID] {
					named[p.PackID] = true
					res.MissingPacks++
				}
			}
		}
	}

	ids := make([]ID, 0, len(stored))
	for id := range stored {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, compareIDs)
	packs := make([]PackBlobs, len(ids))
	var toRead []int
	for i, id := range ids {
		if e, ok := known[id]; ok && sizeOfEntries(e) == stored[id] {
			packs[i] = PackBlobs{PackID: id, Blobs: e}
			continue
		}
		toRead = append(toRead, i)
	}
	r.log.Info("reading pack headers", "packs", len(toRead), "from_index", len(ids)-len(toRead))
	damaged := make([]error, len(ids))
	var done int
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.conns)
	for _, i := range toRead {
		g.Go(func() error {
			entries, err := r.ReadPackHeader(gctx, ids[i], stored[ids[i]])
			if gctx.Err() != nil {
				return gctx.Err()
			}
			if err != nil {
				damaged[i] = err
			} else {
				packs[i] = PackBlobs{PackID: ids[i], Blobs: entries}
			}
			mu.Lock()
			done++
			if o.Progress != nil {
				o.Progress(done, len(toRead))
			}
			mu.Unlock()
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	res.HeadersRead = len(toRead)
	var good []PackBlobs
	for i, id := range ids {
		if damaged[i] != nil {
			if errors.Is(damaged[i], ErrNotFound) {
				// Removed since the listing (under the exclusive lock,
				// only by hand): nothing there to index.
				continue
			}
			res.DamagedPacks = append(res.DamagedPacks, DamagedPack{ID: id, Size: stored[id], Error: damaged[i].Error()})
			r.log.Warn("pack header does not load; leaving the pack unindexed", "pack", id, "err", damaged[i])
			continue
		}
		good = append(good, packs[i])
		res.Blobs += len(packs[i].Blobs)
	}
	res.Packs = len(good)

	// New files first, the last superseding every old one; then the old
	// ones go. Before the last is written, old and new name the same
	// packs alike (both authenticated, from the same headers).
	batches := batchPacks(good, repairBatchBlobs)
	for i, b := range batches {
		d := &IndexData{Packs: b}
		if i == len(batches)-1 {
			d.Supersedes = old
		}
		if err := lk.Err(); err != nil {
			return nil, fmt.Errorf("not writing the new index: %w", err)
		}
		if _, err := r.SaveIndex(ctx, d); err != nil {
			return nil, err
		}
		res.IndexesWritten++
	}
	for _, id := range old {
		h := Handle{Type: IndexFile, Name: oldName[id]}
		if err := lk.Err(); err != nil {
			return nil, fmt.Errorf("not removing %s: %w", h, err)
		}
		if err := r.be.Remove(ctx, h); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("remove %s: %w", h, err)
		}
		res.IndexesRemoved++
	}
	r.resetIndex()
	r.indexSeen = nil
	if err := r.LoadIndex(ctx); err != nil {
		return nil, fmt.Errorf("load the new index: %w", err)
	}
	return res, nil
}

// batchPacks splits packs into groups of at most maxBlobs blobs (a pack
// with more stays whole). There is always one group, perhaps empty: the
// file that supersedes the old ones.
func batchPacks(packs []PackBlobs, maxBlobs int) [][]PackBlobs {
	out := [][]PackBlobs{nil}
	n := 0
	for _, p := range packs {
		last := len(out) - 1
		if n > 0 && n+len(p.Blobs) > maxBlobs {
			out = append(out, nil)
			last, n = last+1, 0
		}
		out[last] = append(out[last], p)
		n += len(p.Blobs)
	}
	return out
}

// sizeOfEntries is the size of the pack whose index entries these are,
// or -1 if they do not tile it from offset 0.
func sizeOfEntries(entries []BlobEntry) int64 {
	s := sortedByOffset(entries)
	var end int64
	for _, e := range s {
		if int64(e.Offset) != end {
			return -1
		}
		end += int64(e.Length)
	}
	return PackSizeFor(end, len(s))
}

func compareIDs(a, b ID) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}
