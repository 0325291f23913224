package repo

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sync/errgroup"
)

// The one index loader. Every read of index files (a backup's or a
// restore's load, a refresh after the lock, widening a scoped load, and
// the full loads of prune, check, stats and repair) goes through
// readIndexFiles.
//
// Memory: files are read r.conns at a time, each whole (its plaintext,
// bounded by its listed size and the index file bound). Streamed (keep
// false), a file goes into the in-memory index as it arrives through
// Index.AddEncoded, and nothing per blob is built but the index's own
// entry (under 48 bytes a blob, docs/performance.md "In-memory index"):
// a load holds the index plus one plaintext per connection. Kept (keep
// true), each file's IndexData is decoded and returned (about 50 bytes a
// blob more), for callers that need to know which file says what.
//
// Superseded files: a streamed file is added before it is known whether
// another file supersedes it. Such files exist only while a prune
// finishes, or after one was killed, so the callers that find one reset
// the index and stream the files again without them (load).

// indexResult is what readIndexFiles found in one file.
type indexResult struct {
	Data       *IndexData // keep only
	Supersedes []ID
	Err        error // the file's: not found, unreadable, undecodable
}

// readIndexFiles reads files in parallel. A file's error goes to fail:
// true stops the load with that error, false leaves the file out (its
// result carries the error). Streamed files go into r.idx.
func (r *Repository) readIndexFiles(ctx context.Context, files []ObjectInfo, keep bool, fail func(ObjectInfo, error) bool) ([]indexResult, error) {
	out := make([]indexResult, len(files))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.conns)
	for i, f := range files {
		g.Go(func() error {
			res := &out[i]
			plain, err := r.loadHashed(gctx, Handle{Type: IndexFile, Name: f.Name}, f.ID, f.Size)
			if err == nil {
				if keep {
					if res.Data, err = DecodeIndex(plain); err == nil {
						res.Supersedes = res.Data.Supersedes
					}
				} else {
					res.Supersedes, err = r.idx.AddEncoded(plain)
				}
				if err != nil {
					err = fmt.Errorf("index/%s: %w", f.Name, err)
				}
			}
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				if fail(f, err) {
					return err
				}
				res.Err = err
			}
			return nil
		})
	}
	return out, g.Wait()
}

// loadStreamed streams files into r.idx (sized for them first), leaving
// out those superseded by any file read or named in known: if one of
// them was added, the index is reset and the rest streamed again. It
// returns the files read and the union of what they supersede. A file
// gone since the listing (a prune) fails with ErrNotFound unless
// bestEffort; bestEffort leaves out, with a warning, every file that
// cannot be read.
func (r *Repository) loadStreamed(ctx context.Context, files []ObjectInfo, known map[ID]bool, bestEffort bool) (read []ObjectInfo, superseded map[ID]bool, err error) {
	fail := func(f ObjectInfo, err error) bool {
		if !bestEffort {
			return true
		}
		if !errors.Is(err, ErrNotFound) { // gone: a prune removed it
			r.log.Warn("skipping an index file of another host that cannot be read", "file", "index/"+f.Name, "err", err)
		}
		return false
	}
	var size int64
	for _, f := range files {
		size += f.Size
	}
	// Entries are 44 to 49 bytes; the sizes overestimate a little.
	r.idx.Grow(int(size / 44))
	res, err := r.readIndexFiles(ctx, files, false, fail)
	if err != nil {
		return nil, nil, err
	}
	superseded = map[ID]bool{}
	for id := range known {
		superseded[id] = true
	}
	for _, x := range res {
		for _, s := range x.Supersedes {
			superseded[s] = true
		}
	}
	redo := false
	for i, f := range files {
		if res[i].Err == nil {
			read = append(read, f)
			redo = redo || superseded[f.ID]
		}
	}
	if !redo {
		return read, superseded, nil
	}
	// Rare: the files of a prune that has not removed them yet.
	r.log.Debug("superseded index files were loaded; loading without them")
	keepFiles := make([]ObjectInfo, 0, len(read))
	for _, f := range read {
		if !superseded[f.ID] {
			keepFiles = append(keepFiles, f)
		}
	}
	r.idx.reset()
	if _, err := r.readIndexFiles(ctx, keepFiles, false, func(ObjectInfo, error) bool { return true }); err != nil {
		return nil, nil, err
	}
	return read, superseded, nil
}

// markSeen records files as read by a load (see RefreshIndex).
func (r *Repository) markSeen(files []ObjectInfo) {
	if r.indexSeen == nil {
		r.indexSeen = make(map[ID]bool, len(files))
	}
	for _, f := range files {
		r.indexSeen[f.ID] = true
	}
}
