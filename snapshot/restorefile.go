package snapshot

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"unsafe"

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
// anywhere, so the whole pages inside a chunk are written from where the
// repository decoded it (repo.LoadBlobsInto, into a buffer placed for its
// offset), and the partial pages at its ends wait in edges until the
// neighbouring chunks have filled them in. While it is written the file is
// its length rounded up to a page, so the last page is written whole too;
// it is cut to its length before the fsync.
type restoreFile struct {
	fh     *directio.File
	name   string
	size   int64
	padded bool         // sized up to whole pages until finish
	left   atomic.Int64 // bytes not yet written
	synced atomic.Bool

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

// writeAt writes p, a whole chunk, at off.
func (f *restoreFile) writeAt(p []byte, off int64) error {
	if f.edges == nil {
		return f.writeBuffered(p, off)
	}
	// Pages are written whole from here on, also if the file system
	// turns out to refuse direct writes after all (see write).
	if f.fh.Direct() && len(p) > 0 && int(uintptr(unsafe.Pointer(unsafe.SliceData(p)))&(directio.Align-1)) != placement(off) {
		// Decoded for another place (a chunk that occurs twice): move it.
		q := directio.Alloc(placement(off) + len(p))[placement(off):]
		copy(q, p)
		p = q
	}
	end := off + int64(len(p))
	for off < end {
		var n int64
		if off == roundDown(off) && end-off >= directio.Align {
			n = roundDown(end) - off
			if err := f.write(p[:n], off); err != nil {
				return err
			}
		} else {
			n = min(roundDown(off)+directio.Align, end) - off
			if err := f.fill(off, p[:n]); err != nil {
				return err
			}
		}
		p, off = p[n:], off+n
	}
	return nil
}

// fill copies b, which lies within one page, to its place at off, and
// writes the page once all of its bytes have arrived.
func (f *restoreFile) fill(off int64, b []byte) error {
	pg := roundDown(off)
	f.mu.Lock()
	e := f.edges[pg]
	if e == nil {
		e = &edgePage{buf: pagePool.Get().([]byte)}
		clear(e.buf)
		f.edges[pg] = e
	}
	copy(e.buf[off-pg:], b)
	e.filled += len(b)
	full := e.filled == int(min(directio.Align, f.size-pg))
	if full {
		delete(f.edges, pg)
	}
	f.mu.Unlock()
	if !full {
		return nil
	}
	defer pagePool.Put(e.buf)
	return f.write(e.buf, pg)
}

// write writes whole pages with direct I/O (or through the page cache,
// where the file system refuses it: directio.File.WriteAt).
func (f *restoreFile) write(b []byte, off int64) error {
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
	buf     *directio.Huge // the slot's buffer, which plain lies in
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
					if err := t.file.writeAt(j.plain, t.offset); err != nil {
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
			into := func(e repo.BlobEntry) ([]byte, error) {
				t := targets[e.ID]
				if len(t) == 0 {
					return nil, nil // CURRENT's, written at the end
				}
				// Decoded where its first place in a file wants it, the
				// chunk's whole pages are written without a copy.
				pad := placement(t[0].offset)
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
				j := writeJob{buf: buf, plain: plain, targets: t}
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
