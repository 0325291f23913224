package source

import (
	"sync"

	"github.com/snapbackup/snap/internal/directio"
)

// directMin is the smallest table read around the page cache.
const directMin = 1 << 20

// directBlock is what one direct read fetches: reads of the backup's size
// (a chunk's first Min bytes, then 256 KiB blocks) are served from it.
const directBlock = 1 << 20

var directBlocks = sync.Pool{New: func() any { b := directio.Alloc(directBlock); return &b }}

// directReader reads an immutable table around the page cache, through an
// aligned block: a backup reads every table once, sequentially, and through
// the page cache that would cost a kernel copy per byte and evict the pages
// the live server serves from (and on a cold cache, allocate a page per 4
// KiB read).
type directReader struct {
	f *directio.File

	mu    sync.Mutex
	block *[]byte // nil between uses; holds file bytes [off, off+n)
	off   int64
	n     int
}

// readAt fills p from off, within the file's first length bytes (which the
// caller checked), and returns how many bytes the file really had there:
// fewer than len(p) only when the file now ends before off+len(p).
func (d *directReader) readAt(p []byte, off, length int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		if d.block == nil || pos < d.off || pos >= d.off+int64(d.n) {
			if d.block == nil {
				d.block = directBlocks.Get().(*[]byte)
			}
			d.off = pos &^ (directio.Align - 1)
			n, err := d.f.ReadUpTo(*d.block, d.off)
			d.n = n
			if err != nil {
				d.n = 0
				return done, err
			}
			if pos >= d.off+int64(n) {
				return done, nil // the file ends before pos
			}
		}
		done += copy(p[done:], (*d.block)[pos-d.off:d.n])
	}
	if off+int64(done) >= length {
		d.release() // read to the end: the block is not needed again
	}
	return done, nil
}

func (d *directReader) release() {
	if d.block != nil {
		directBlocks.Put(d.block)
		d.block, d.n = nil, 0
	}
}

func (d *directReader) close() error {
	d.mu.Lock()
	d.release()
	d.mu.Unlock()
	return d.f.Close()
}
