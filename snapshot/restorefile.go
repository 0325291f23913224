package snapshot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
)

// restoreFile is a file being written. Chunks arrive in pack order, from
// several writers at once, and each is written where it belongs. The
// writer that writes the file's last byte finishes it: cuts it to its
// length and, unless the restore's syncBatch makes it durable with the
// others at the end, fsyncs it, so flushing overlaps the rest of the
// restore instead of following it.
//
// Where the file system allows, the file is written with direct I/O: the
// page cache would cost a copy and a fresh page per 4 KiB in the kernel,
// on the benchmark's machine more than half of what decompressing costs.
// Direct writes need whole, aligned pages, and a chunk starts and ends
// anywhere, so a chunk is written from where the repository decoded it
// (repo.OpenBlob, into a buffer placed for its offset), and a partial
// page at its ends waits in edges for the chunk that completes it, which
// writes it in one request with its own pages. While it is written the
// file is its length rounded up to a page, so the last page is written
// whole too; it is cut to its length before the fsync.
//
// A restore keeps a bounded number of its files open (fileCache): fh is
// the file's descriptor only between acquire and release. Everything
// else, edges too, lives here and survives the descriptor.
type restoreFile struct {
	name   string
	size   int64
	padded bool         // sized up to whole pages until finish
	left   atomic.Int64 // bytes not yet written
	// synced: finished, and fsynced or (batched: every byte went to the
	// device directly) left to the restore's syncBatch
	synced   atomic.Bool
	buffered atomic.Bool // some bytes went through the page cache
	// requests and bytes of the writes to the file, so tests can tell
	// that each page is written once, in one request per chunk
	requests, wroteBytes atomic.Int64

	mu sync.Mutex
	// edges holds, by file offset, the partial pages being filled in; nil
	// when the file is written through the page cache.
	edges map[int64]*edgePage

	fh      *directio.File
	cache   *fileCache
	refs    atomic.Int32 // 0: no descriptor; else 1 + its users
	used    atomic.Bool  // acquired since the clock last passed
	opening bool         // being created or opened; under cache.mu
	created bool         // exists on disk, sized; under cache.mu
}

// edgePage is a page some of whose bytes have arrived.
type edgePage struct {
	buf    []byte // one aligned page
	filled int    // bytes of it that arrived
}

var pagePool = sync.Pool{New: func() any { return directio.Alloc(directio.Align) }}

// newRestoreFile sizes fh, opened for writing, for a file of size bytes,
// outside any fileCache.
func newRestoreFile(fh *directio.File, path string, size int64) (*restoreFile, error) {
	f := &restoreFile{name: path, size: size, created: true}
	f.left.Store(size)
	if err := f.prepare(fh); err != nil {
		fh.Close()
		return nil, err
	}
	f.fh = fh
	return f, nil
}

// create creates (or truncates) the file and sizes it (prepare).
func (f *restoreFile) create() (*directio.File, error) {
	fh, err := directio.OpenFile(f.name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	if err := f.prepare(fh); err != nil {
		fh.Close()
		return nil, err
	}
	return fh, nil
}

// prepare sizes fh, the new file's descriptor, for the file's bytes, and
// readies f for direct writes where fh has direct I/O.
func (f *restoreFile) prepare(fh *directio.File) error {
	alloc := f.size
	if fh.Direct() {
		alloc = roundUp(f.size)
		f.padded = alloc != f.size
		f.edges = map[int64]*edgePage{}
	}
	if err := fh.Truncate(alloc); err != nil {
		return err
	}
	// Allocated up front, a file stays in few extents although its chunks
	// arrive out of order (the 40 SSTs of the benchmark: 40 extents
	// instead of 249).
	return allocate(fh.File, alloc)
}

func roundUp(n int64) int64 { return (n + directio.Align - 1) &^ (directio.Align - 1) }

func roundDown(n int64) int64 { return n &^ (directio.Align - 1) }

// placement is the remainder, modulo directio.Align, of the address where
// a chunk written at off should be decoded to be written without a copy.
func placement(off int64) int { return int(off & (directio.Align - 1)) }

// writeAt writes a whole chunk, b[pad:], at off. Where b starts on a page
// boundary, pad is placement(off) and b has room up to the end of the
// chunk's last page, the chunk is written from where it lies, and each
// partial page at its ends that the chunk completes is written in the
// same request: the page's other bytes, which its neighbours left in
// edges, are copied into b around the chunk. A partial page that is still
// missing bytes waits in edges for the chunk that completes it. So every
// page is written once, and almost always inside a chunk's one request.
// Written alone, the edge pages were half of a restore's requests (1706
// of 3406 in the benchmark's 2 GiB restore), and as they queued behind
// the large ones, the writers spent 8.2 s in pwrite instead of 6.6 s
// (strace).
func (f *restoreFile) writeAt(b []byte, pad int, off int64) error {
	if f.edges == nil {
		return f.writeBuffered(b[pad:], off)
	}
	n := len(b) - pad
	if n == 0 {
		return nil
	}
	if pad != placement(off) || !directio.Aligned(b) || int64(cap(b)) < roundUp(int64(len(b))) {
		// Decoded for another place (a chunk that occurs twice), or
		// without room around it: move it.
		q := directio.Alloc(placement(off) + n)
		copy(q[placement(off):], b[pad:])
		b, pad = q, placement(off)
	}
	b = b[:cap(b)]
	base := off - int64(pad) // the file offset of b[0], a page boundary
	end := off + int64(n)
	// The chunk's whole pages, widened below by the edge pages it
	// completes.
	from, to := roundUp(off), roundDown(end)
	tail := to
	hasTail := end != tail && tail >= from // a partial tail page, other than the head page
	f.mu.Lock()
	if off != from {
		// The head page, which may also be the tail page of a chunk
		// that lies within one page.
		pg := roundDown(off)
		if page := f.fill(off, b[pad:pad+int(min(end, pg+directio.Align)-off)]); page != nil {
			copy(b[pg-base:], page)
			pagePool.Put(page)
			from, to = pg, max(to, pg+directio.Align)
		}
	}
	if hasTail {
		if page := f.fill(tail, b[tail-base:end-base]); page != nil {
			copy(b[tail-base:], page)
			pagePool.Put(page)
			to = tail + directio.Align
		}
	}
	f.mu.Unlock()
	if from >= to {
		return nil
	}
	return f.write(b[from-base:to-base], from)
}

// fill copies b, which lies within one page, to its place at off. When
// that completes the page, fill takes it out of edges and returns it: the
// caller writes it and puts it back into pagePool. f.mu is held.
func (f *restoreFile) fill(off int64, b []byte) []byte {
	pg := roundDown(off)
	e := f.edges[pg]
	if e == nil {
		e = &edgePage{buf: pagePool.Get().([]byte)}
		clear(e.buf)
		f.edges[pg] = e
	}
	copy(e.buf[off-pg:], b)
	e.filled += len(b)
	if e.filled != int(min(directio.Align, f.size-pg)) {
		return nil
	}
	delete(f.edges, pg)
	return e.buf
}

// write writes whole pages with direct I/O (or through the page cache,
// where the file system refuses it: directio.File.WriteAt).
func (f *restoreFile) write(b []byte, off int64) error {
	f.requests.Add(1)
	f.wroteBytes.Add(int64(len(b)))
	if _, err := f.fh.WriteAt(b, off); err != nil {
		return fmt.Errorf("write %s: %w", f.name, err)
	}
	if !f.fh.Direct() { // refused, and written through the page cache
		f.buffered.Store(true)
	}
	return nil
}

// writeBuffered writes p at off through the page cache, and starts writing
// its whole pages to the device. Without that, the kernel starts writeback
// only when gigabytes are dirty or after 30 s, so the fsync after a file's
// last byte wrote all of the file while its worker waited. The partial
// pages at p's ends are left to fsync: the neighbouring chunks may still
// write into them.
func (f *restoreFile) writeBuffered(p []byte, off int64) error {
	f.buffered.Store(true)
	if _, err := f.fh.WriteAt(p, off); err != nil {
		return fmt.Errorf("write %s: %w", f.name, err)
	}
	if start, n := wholePages(off, len(p), pageSize); n > 0 {
		// Only a hint: fsync reports any error of this writeback.
		startWriteback(f.fh.File, start, n)
	}
	return nil
}

// wholePages returns the range of the whole pages of size page inside
// [off, off+n).
func wholePages(off int64, n, page int) (start, length int64) {
	pg := int64(page)
	start = (off + pg - 1) / pg * pg
	end := (off + int64(n)) / pg * pg
	return start, max(end-start, 0)
}

// wrote counts n bytes written; after the last, it cuts the file to its
// length and fsyncs it.
func (f *restoreFile) wrote(n int) error {
	if f.left.Add(-int64(n)) != 0 {
		return nil
	}
	return f.finish()
}

func (f *restoreFile) finish() error {
	if f.padded {
		if err := f.fh.Truncate(f.size); err != nil {
			return fmt.Errorf("size %s: %w", f.name, err)
		}
	}
	// A batched file is made durable by the batch's syncfs. Otherwise: on
	// Linux an fsync through any descriptor of the file flushes all of
	// it, also what was written through one closed since, and reports a
	// writeback error no one has seen.
	batched := f.cache != nil && f.cache.batch != nil && !f.buffered.Load()
	if !batched {
		if err := f.fh.Sync(); err != nil {
			return fmt.Errorf("fsync %s: %w", f.name, err)
		}
	}
	f.synced.Store(true)
	f.used.Store(false) // not written again: the first to close
	return nil
}

type blobTarget struct {
	file   *restoreFile
	offset int64
}

// write writes j's chunk to its place in t.file, with the file's
// descriptor acquired.
func (t blobTarget) write(j writeJob, pr *Progress) error {
	if err := t.file.acquire(); err != nil {
		return err
	}
	defer t.file.release()
	if err := t.file.writeAt(j.placed, j.pad, t.offset); err != nil {
		return err
	}
	n := len(j.placed) - j.pad
	pr.BytesDone.Add(int64(n))
	return t.file.wrote(n)
}

// writeJob is a decoded chunk on its way to its places in the files.
type writeJob struct {
	buf     *directio.Huge // the slot's buffer
	placed  []byte         // the chunk is placed[pad:], placed in buf.B where it could be
	pad     int
	targets []blobTarget
}

// restoreChunks writes every chunk of the packs to its places, in three
// stages that hand over to each other: readers read the sealed chunks of
// packs, decoders (one per core, o.Cores) decrypt, decompress and verify
// them into buffers placed for their files, and writers write them out.
// Only the decoders use the CPU, and they never wait for the disk. When
// each decoder read its own packs, it waited for every range's first
// block, and twice as many decoders as cores, to cover that, took all the
// Ps: readers and writers back from a system call waited for a P (in a
// test program, 4 direct writers beside 4 busy goroutines on 4 Ps wrote
// 1.0 GB/s, on 8 Ps 1.9 GB/s). In a trace of a cold 2 GiB restore the
// cores' idle time fell from 350 to 250 ms. Fixed numbers of buffers
// travel between the stages, which bounds the memory.
//
// A pack that is not found (a prune removed it after the index was
// loaded) fails nothing: its blobs that were not read are returned in
// gone, for the caller to find in the packs a fresh index names.
func restoreChunks(ctx context.Context, r BlobReader, packs []repo.ID, byPack map[repo.ID][]repo.BlobEntry, targets map[repo.ID][]blobTarget, o RestoreOptions) (gone []repo.BlobEntry, err error) {
	// Readers: r's connections, what --connections asks of the store (a
	// remote one hides its latency behind several requests; a local disk
	// read as fast with 2, 3 and 4 readers: medians of 5 cold 2 GiB
	// restores, 3.36, 3.39 and 3.39 s). Two writers per core: a direct
	// write waits for the device, and with fewer the decoders waited to
	// hand over their chunks.
	readers, decoders, writers := max(r.Connections(), 1), o.Cores, 2*o.Cores
	sealedBufs := newHugeList(readers + 2*decoders)
	sealed := make(chan sealedChunk, decoders)
	slots := newBufSlots(decoders + writers)
	jobs := make(chan writeJob)

	wg, wctx := errgroup.WithContext(ctx)
	for range writers {
		wg.Go(func() error {
			for j := range jobs {
				if wctx.Err() != nil {
					slots.put(j.buf)
					continue // another writer failed: drain until the decoders stop
				}
				for _, t := range j.targets {
					if err := t.write(j, o.Progress); err != nil {
						return err
					}
				}
				slots.put(j.buf)
			}
			return nil
		})
	}

	dg, dctx := errgroup.WithContext(wctx)
	for range decoders {
		dg.Go(func() error {
			for c := range sealed {
				if dctx.Err() != nil {
					sealedBufs.put(c.buf)
					continue // another decoder failed: drain until the readers stop
				}
				j, err := decodeChunk(dctx, r, c, targets[c.e.ID], slots)
				sealedBufs.put(c.buf)
				if err != nil {
					return err
				}
				select {
				case jobs <- j:
				case <-dctx.Done():
					slots.put(j.buf)
					return context.Cause(dctx)
				}
			}
			return nil
		})
	}

	var goneMu sync.Mutex
	rg, rctx := errgroup.WithContext(dctx)
	rg.SetLimit(readers)
	for _, p := range packs {
		var entries []repo.BlobEntry
		for _, e := range dedupEntries(byPack[p]) {
			if len(targets[e.ID]) > 0 { // not CURRENT's, which is written at the end
				entries = append(entries, e)
			}
		}
		rg.Go(func() error {
			var buf *directio.Huge // the one into handed out last, until fn takes it
			read := 0              // entries handed to the decoders
			err := r.ReadBlobs(rctx, p, entries,
				func(e repo.BlobEntry) ([]byte, error) {
					if buf != nil {
						sealedBufs.put(buf)
					}
					buf = sealedBufs.get(repo.PlacedLen(int(e.Offset%directio.Align) + int(e.Length)))
					return buf.B, nil
				},
				func(e repo.BlobEntry, b []byte) error {
					select {
					case sealed <- sealedChunk{pack: p, e: e, sealed: b, buf: buf}:
						buf = nil
						read++
						return nil
					case <-rctx.Done():
						return context.Cause(rctx)
					}
				})
			if buf != nil {
				sealedBufs.put(buf)
			}
			if errors.Is(err, repo.ErrNotFound) && rctx.Err() == nil {
				// ReadBlobs hands blobs over in offset order.
				sorted := slices.SortedFunc(slices.Values(entries), func(a, b repo.BlobEntry) int { return cmp.Compare(a.Offset, b.Offset) })
				goneMu.Lock()
				gone = append(gone, sorted[read:]...)
				goneMu.Unlock()
				return nil
			}
			return err
		})
	}
	rerr := rg.Wait()
	close(sealed)
	derr := dg.Wait()
	close(jobs)
	werr := wg.Wait()
	slots.free()
	sealedBufs.freeAll()
	switch {
	case werr != nil:
		return nil, werr // the cause when a writer stopped the decoders
	case derr != nil:
		return nil, derr // the cause when a decoder stopped the readers
	case rerr != nil:
		return nil, rerr
	}
	return gone, nil
}

// sealedChunk is a chunk as read from its pack, on its way to a decoder.
type sealedChunk struct {
	pack   repo.ID
	e      repo.BlobEntry
	sealed []byte
	buf    *directio.Huge // which sealed lies in
}

// decodeChunk decodes c into a slot, where the first of its places in the
// files wants it (placement), so that its pages are written without a
// copy.
func decodeChunk(ctx context.Context, r BlobReader, c sealedChunk, t []blobTarget, slots bufSlots) (writeJob, error) {
	pad := placement(t[0].offset)
	buf, err := slots.get(ctx, pad+int(c.e.RawLength))
	if err != nil {
		return writeJob{}, err
	}
	plain, err := r.OpenBlob(c.pack, c.e, c.sealed, buf.B[pad:pad])
	if err != nil {
		slots.put(buf)
		return writeJob{}, err
	}
	j := writeJob{buf: buf, placed: plain, targets: t}
	if len(plain) > 0 && &buf.B[pad] == &plain[0] {
		j.placed, j.pad = buf.B[:pad+len(plain)], pad
	}
	return j, nil
}

// hugeList keeps buffers of huge pages (directio.AllocHuge) for reuse:
// those readers read sealed chunks into, straight from a local disk in
// few requests (repo.PlacedReader), and the slots. A fresh one costs a
// fault and the zeroing of every page; unlike a sync.Pool's, the kept
// ones survive garbage collections, which a restore of a few gigabytes
// runs a dozen of. A buffer is only taken out and put back: how many are
// in use at once is bounded by the stages, and the list keeps at most
// max, one of them larger than a huge page.
type hugeList struct {
	mu   sync.Mutex
	free []*directio.Huge
	max  int
}

func newHugeList(max int) *hugeList { return &hugeList{max: max} }

// get returns a buffer with room for n bytes in B[:cap(B)]. One it has
// to make replaces one of those kept, which are all too small, so that
// the buffers kept and in use stay as many as the stages hold.
func (l *hugeList) get(n int) *directio.Huge {
	l.mu.Lock()
	for i, b := range l.free {
		if cap(b.B) >= n {
			l.free = slices.Delete(l.free, i, i+1)
			l.mu.Unlock()
			b.B = b.B[:cap(b.B)]
			return b
		}
	}
	var old *directio.Huge
	if len(l.free) > 0 {
		old, l.free = l.free[0], l.free[1:]
	}
	l.mu.Unlock()
	if old != nil {
		old.Free()
	}
	b := directio.AllocHuge(n)
	b.B = b.B[:cap(b.B)]
	return b
}

func (l *hugeList) put(b *directio.Huge) {
	l.mu.Lock()
	keep := len(l.free) < l.max
	if keep && cap(b.B) > directio.HugePage {
		keep = !slices.ContainsFunc(l.free, func(f *directio.Huge) bool { return cap(f.B) > directio.HugePage })
	}
	if keep {
		l.free = append(l.free, b)
	}
	l.mu.Unlock()
	if !keep {
		b.Free()
	}
}

// freeAll unmaps the buffers kept.
func (l *hugeList) freeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, b := range l.free {
		b.Free()
	}
	l.free = nil
}

// bufSlots hands out the buffers chunks are decoded into, at most n at a
// time. They are huge pages (directio.AllocHuge): their direct writes go
// to the device in a fraction of the requests of heap memory's. A
// hugeList keeps them, so the one larger than a huge page that a large
// chunk needs is kept too (before, it was unmapped each time: 36 maps of 4
// MiB, and as many of 2 MiB to replace it, zeroed afresh in a 2 GiB
// restore), and the slots do not all end up as large as the largest
// chunk.
type bufSlots struct {
	taken chan struct{}
	bufs  *hugeList
}

func newBufSlots(n int) bufSlots {
	return bufSlots{taken: make(chan struct{}, n), bufs: newHugeList(n)}
}

// get waits for a free slot and returns a buffer with room for n bytes in
// B[:cap(B)]; the caller hands it back to put once done with the bytes.
func (s bufSlots) get(ctx context.Context, n int) (*directio.Huge, error) {
	select {
	case s.taken <- struct{}{}:
		return s.bufs.get(n), nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (s bufSlots) put(b *directio.Huge) {
	s.bufs.put(b)
	<-s.taken
}

// free unmaps the buffers kept, once no decoder or writer is left. (One
// that a failed decoder or writer did not hand back is unmapped when the
// garbage collector finds it.)
func (s bufSlots) free() { s.bufs.freeAll() }
