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
	Err        error  // the file's: not found, unreadable, undecodable
	parked     []byte // the plaintext of a parked file
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
				switch {
				case !keep && r.parkShared && f.Owner == SharedOwner:
					if res.Supersedes, err = IndexSupersedes(plain); err == nil {
						res.parked = plain
					}
				case keep:
					if res.Data, err = DecodeIndex(plain); err == nil {
						res.Supersedes = res.Data.Supersedes
					}
				default:
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
	r.growFor(files)
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
		r.park(files, res, superseded)
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
	r.resetIndex()
	r.growFor(keepFiles)
	res, err = r.readIndexFiles(ctx, keepFiles, false, func(ObjectInfo, error) bool { return true })
	if err != nil {
		return nil, nil, err
	}
	r.park(keepFiles, res, superseded)
	return read, superseded, nil
}

// growFor sizes the index for the blobs of files that a stream adds (not
// those it parks). Entries are 44 to 49 bytes; the sizes overestimate a
// little.
func (r *Repository) growFor(files []ObjectInfo) {
	var size int64
	for _, f := range files {
		if !(r.parkShared && f.Owner == SharedOwner) {
			size += f.Size
		}
	}
	r.idx.Grow(int(size / 44))
}

// resetIndex empties the in-memory index and drops what is parked.
func (r *Repository) resetIndex() {
	r.idx.reset()
	r.parked, r.parkedSize = nil, 0
	r.parkedN.Store(0)
}

// Parking (docs/design.md, "Index files"): a scoped load reads the shared
// index files like its own, verifies them and takes in what they
// supersede, but keeps their plaintext aside instead of adding their blobs
// to the index; the first lookup or parent chunk that misses adds them
// (unpark), and so does a backup once the new data it found passes their
// size. A small incremental backup or a restore of a host's own data then
// never pays for the pool the fleet shares.
type parkedIndex struct {
	file  ObjectInfo
	plain []byte
}

// park keeps the parked plaintexts that readIndexFiles returned for files,
// leaving out those superseded. indexMu is held.
func (r *Repository) park(files []ObjectInfo, res []indexResult, superseded map[ID]bool) {
	for i, x := range res {
		if x.parked == nil || x.Err != nil || superseded[files[i].ID] {
			continue
		}
		r.parked = append(r.parked, parkedIndex{files[i], x.parked})
		r.parkedSize += int64(len(x.parked))
	}
	r.parkedN.Store(int64(len(r.parked)))
}

// unpark adds the parked files' blobs to the index; it reports whether
// there were any. A parked file was verified when it was read, so only a
// defect of the file's contents can fail it, and then the file's error is
// returned, its blobs left out.
func (r *Repository) unpark() (bool, error) {
	if r.parkedN.Load() == 0 {
		return false, nil
	}
	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	return r.unparkLocked()
}

func (r *Repository) unparkLocked() (bool, error) {
	r.parkShared = false // from now on the shared files are read as any other
	if len(r.parked) == 0 {
		return false, nil
	}
	parked := r.parked
	r.parked, r.parkedSize = nil, 0
	r.parkedN.Store(0)
	var size int
	for _, p := range parked {
		size += len(p.plain)
	}
	r.idx.Grow(size / 44)
	var errs []error
	for i := range parked {
		if _, err := r.idx.AddEncoded(parked[i].plain); err != nil {
			errs = append(errs, fmt.Errorf("index/%s: %w", parked[i].file.Name, err))
		}
		parked[i].plain = nil
	}
	r.log.Debug("the shared index files are needed; added them", "files", len(parked))
	return true, errors.Join(errs...)
}

// unparkFor is what the saver calls for a blob of n bytes that the index
// does not have: it reports whether the parked files were added now
// (then the caller looks again), which happens once the new data since
// the load passes their size.
func (r *Repository) unparkFor(n int) (bool, error) {
	if r.parkedN.Load() == 0 {
		return false, nil
	}
	r.indexMu.Lock()
	threshold := r.parkedSize
	r.indexMu.Unlock()
	if r.missBytes.Add(int64(n)) <= threshold {
		return false, nil
	}
	return r.unpark()
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
