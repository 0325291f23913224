package source

import (
	"sync"

	"github.com/snapbackup/snap/internal/directio"
)

// directMin is the smallest table read around the page cache.
const directMin = 1 << 20

// directReader reads an immutable table around the page cache, through an
// aligned block (directio.BlockReader): a backup reads every table once,
// sequentially, and through the page cache that would cost a kernel copy
// per byte and evict the pages the live server serves from (and on a cold
// cache, allocate a page per 4 KiB read).
type directReader struct {
	f  *directio.File
	mu sync.Mutex
	br *directio.BlockReader
}

func newDirectReader(f *directio.File) *directReader {
	return &directReader{f: f, br: directio.NewBlockReader(f)}
}

// readAt fills p from off, within the file's first length bytes (which the
// caller checked), and returns how many bytes the file really had there:
// fewer than len(p) only when the file now ends before off+len(p).
func (d *directReader) readAt(p []byte, off, length int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, err := d.br.ReadAt(p, off)
	if off+int64(n) >= length {
		d.br.Release() // read to the end: the block is not needed again
	}
	return n, err
}

func (d *directReader) close() error {
	d.mu.Lock()
	d.br.Release()
	d.mu.Unlock()
	return d.f.Close()
}
