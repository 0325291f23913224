package snapshot

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
)

// restoreFile is a file being written. Chunks arrive in pack order, from
// several writers at once, and each is written where it belongs. The
// writer that writes the file's last byte fsyncs it, so flushing overlaps
// the rest of the restore instead of following it.
//
// Where the file system allows, the file is written with direct I/O: the
// page cache would cost a copy and a fresh page per 4 KiB in the kernel,
// on the benchmark's machine more than half of what decompressing costs.
// Direct writes need whole, aligned pages, and a chunk starts and ends
// anywhere, so a chunk is written from where the repository decoded it
// (repo.LoadBlobsInto, into a buffer placed for its offset), and a partial
// page at its ends waits in edges for the chunk that completes it, which
// writes it in one request with its own pages. While it is written the
// file is its length rounded up to a page, so the last page is written
// whole too; it is cut to its length before the fsync.
type restoreFile struct {
	fh     *directio.File
	name   string
	size   int64
	padded bool         // sized up to whole pages until finish
	left   atomic.Int64 // bytes not yet written
	synced atomic.Bool
	// requests and bytes of the writes to the file, so tests can tell
	// that each page is written once, in one request per chunk
	requests, wroteBytes atomic.Int64

	mu sync.Mutex
	// edges holds, by file offset, the partial pages being filled in; nil
	// when the file is written through the page cache.
	edges map[int64]*edgePage
}

// edgePage is a page some of whose bytes have arrived.
type edgePage struct {
	buf    []byte // one aligned page
	filled int    // bytes of it that arrived
}

var pagePool = sync.Pool{New: func() any { return directio.Alloc(directio.Align) }}

// createRestoreFile creates (or truncates) path for a file of size bytes
// and reserves its blocks.
func createRestoreFile(path string, size int64) (*restoreFile, error) {
	fh, err := directio.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	return newRestoreFile(fh, path, size)
}

// newRestoreFile sizes fh, opened for writing, for a file of size bytes.
func newRestoreFile(fh *directio.File, path string, size int64) (*restoreFile, error) {
	f := &restoreFile{fh: fh, name: path, size: size}
	f.left.Store(size)
	alloc := size
	if fh.Direct() {
		alloc = roundUp(size)
		f.padded = alloc != size
		f.edges = map[int64]*edgePage{}
	}
	if err := fh.Truncate(alloc); err != nil {
		fh.Close()
		return nil, err
	}
	// Allocated up front, a file stays in few extents although its chunks
	// arrive out of order (the 40 SSTs of the benchmark: 40 extents
	// instead of 249).
	if err := allocate(fh.File, alloc); err != nil {
		fh.Close()
		return nil, err
	}
	return f, nil
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
	return nil
}

// writeBuffered writes p at off through the page cache, and starts writing
// its whole pages to the device. Without that, the kernel starts writeback
// only when gigabytes are dirty or after 30 s, so the fsync after a file's
// last byte wrote all of the file while its worker waited. The partial
// pages at p's ends are left to fsync: the neighbouring chunks may still
// write into them.
func (f *restoreFile) writeBuffered(p []byte, off int64) error {
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
	if err := f.fh.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.name, err)
	}
	f.synced.Store(true)
	return nil
}

type blobTarget struct {
	file   *restoreFile
	offset int64
}

// writeJob is a decoded chunk on its way to its places in the files.
type writeJob struct {
	buf     *directio.Huge // the slot's buffer
	placed  []byte         // buf.B up to plain's end: plain is placed[pad:]
	pad     int
	plain   []byte
	targets []blobTarget
}

// restoreChunks fetches the packs, o.Workers at a time, and writes every
// chunk to its places. Decoding and writing are separate stages: decoders
// decode chunks into buffers, writers write them out, so a decoder does
// not wait for the disk to take its last chunk, and the disk does not wait
// for a decoder. A fixed number of buffers travel between them, which
// bounds the memory.
func restoreChunks(ctx context.Context, r *repo.Repository, packs []repo.ID, byPack map[repo.ID][]repo.BlobEntry, targets map[repo.ID][]blobTarget, o RestoreOptions) error {
	// As many writers as decoders: direct writes wait for the device, and
	// with half as many the decoders waited to hand over their chunks for
	// longer than they decoded (a cold 2 GiB restore: 3.9-4.2 s with 2
	// writers to 4 decoders, 3.2-3.5 s with 4, no faster with 6 or 8).
	writers := o.Workers
	slots := newBufSlots(o.Workers + writers)
	jobs := make(chan writeJob)

	wg, wctx := errgroup.WithContext(ctx)
	for range writers {
		wg.Go(func() error {
			for j := range jobs {
				if wctx.Err() != nil {
					continue // another writer failed: drain until the decoders stop
				}
				for _, t := range j.targets {
					if err := t.file.writeAt(j.placed, j.pad, t.offset); err != nil {
						return err
					}
					o.Progress.BytesDone.Add(int64(len(j.plain)))
					if err := t.file.wrote(len(j.plain)); err != nil {
						return err
					}
				}
				slots.put(j.buf)
			}
			return nil
		})
	}

	dg, dctx := errgroup.WithContext(wctx)
	dg.SetLimit(o.Workers)
	for _, p := range packs {
		entries := dedupEntries(byPack[p])
		dg.Go(func() error {
			var buf *directio.Huge // the slot into handed out for the chunk being decoded
			var pad int            // where in buf.B into placed it
			into := func(e repo.BlobEntry) ([]byte, error) {
				t := targets[e.ID]
				if len(t) == 0 {
					return nil, nil // CURRENT's, written at the end
				}
				// Decoded where its first place in a file wants it, the
				// chunk is written without a copy.
				pad = placement(t[0].offset)
				var err error
				if buf, err = slots.get(dctx, pad+int(e.RawLength)); err != nil {
					return nil, err
				}
				return buf.B[pad:pad], nil
			}
			return r.LoadBlobsInto(dctx, p, entries, into, func(e repo.BlobEntry, plain []byte) error {
				t := targets[e.ID]
				if len(t) == 0 {
					return nil
				}
				j := writeJob{buf: buf, plain: plain, placed: plain, targets: t}
				if buf != nil && len(plain) > 0 && &buf.B[pad] == &plain[0] {
					j.placed, j.pad = buf.B[:pad+len(plain)], pad
				}
				buf = nil
				select {
				case jobs <- j:
					return nil
				case <-dctx.Done():
					return context.Cause(dctx)
				}
			})
		})
	}
	derr := dg.Wait()
	close(jobs)
	werr := wg.Wait()
	slots.free()
	if werr != nil {
		return werr // the cause when a writer stopped the decoders
	}
	return derr
}

// bufSlots hands out the buffers chunks are decoded into. They are huge
// pages (directio.AllocHuge): their direct writes go to the device in a
// fraction of the requests of heap memory's. One that grew past
// maxKeptBuf for a large chunk is freed when it comes back, so the slots
// do not all end up as large as the largest chunk.
type bufSlots chan *directio.Huge

// maxKeptBuf is one huge page: room for all but 1.4% of the chunks of
// the benchmark's data (24 of 1714, default chunker). Keeping two pages
// for those cost a cold 2 GiB restore 12 MiB more peak memory and no time.
const maxKeptBuf = directio.HugePage

func newBufSlots(n int) bufSlots {
	s := make(bufSlots, n)
	for range n {
		s <- nil
	}
	return s
}

// get waits for a free slot and returns its buffer, with room for n bytes
// in B[:cap(B)]; the caller hands it back to put once done with the bytes.
func (s bufSlots) get(ctx context.Context, n int) (*directio.Huge, error) {
	select {
	case b := <-s:
		if b == nil || cap(b.B) < n {
			if b != nil {
				b.Free()
			}
			b = directio.AllocHuge(n)
		}
		b.B = b.B[:cap(b.B)]
		return b, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

func (s bufSlots) put(b *directio.Huge) {
	if b != nil && cap(b.B) > maxKeptBuf {
		b.Free()
		b = nil
	}
	s <- b
}

// free unmaps the buffers in the slots, once no decoder or writer is left.
// (One that a failed decoder or writer did not hand back is unmapped when
// the garbage collector finds it.)
func (s bufSlots) free() {
	for {
		select {
		case b := <-s:
			if b != nil {
				b.Free()
			}
		default:
			return
		}
	}
}
