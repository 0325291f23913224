package local

import (
	"fmt"
	"io"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
)

// directMin is the smallest range Load reads with direct I/O. Smaller
// reads (pack headers, index files, snapshots) stay in the page cache,
// where the next command finds them again.
const directMin = 1 << 20

// directReader reads the range [off, end) of a direct file. A request that
// starts at an aligned offset with an aligned buffer is read from the
// device straight into the caller's buffer; the rest goes through an
// aligned block.
type directReader struct {
	f        *directio.File
	br       *directio.BlockReader
	off, end int64
}

func newDirectReader(f *directio.File, off, end int64) *directReader {
	return &directReader{f: f, br: directio.NewBlockReaderAhead(f, end), off: off, end: end}
}

func (r *directReader) Read(p []byte) (int, error) {
	if r.off >= r.end {
		return 0, io.EOF
	}
	if int64(len(p)) > r.end-r.off {
		p = p[:r.end-r.off]
	}
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var err error
	if r.off&(directio.Align-1) == 0 && directio.Aligned(p) && len(p) >= directio.Align {
		n, err = r.f.ReadUpTo(p[:len(p)&^(directio.Align-1)], r.off)
	} else {
		n, err = r.br.ReadAt(p, r.off)
	}
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, io.ErrUnexpectedEOF // the object shrank: it is immutable, so this is damage
	}
	r.off += int64(n)
	return n, nil
}

// ReadPlaced reads with one direct read the whole pages around the n bytes
// after the next skip into b (repo.PlacedReader): no block, no copy.
func (r *directReader) ReadPlaced(b []byte, skip int64, n int) (int, error) {
	off := r.off + skip
	if skip < 0 || n < 0 || off+int64(n) > r.end {
		return 0, io.ErrUnexpectedEOF
	}
	start := off &^ (directio.Align - 1)
	pad := int(off - start)
	want := repo.PlacedLen(pad + n)
	if len(b) < want {
		return 0, fmt.Errorf("read into %d bytes, need %d", len(b), want)
	}
	got, err := r.f.ReadUpTo(b[:want], start)
	if err != nil {
		return 0, err
	}
	if got < pad+n {
		return 0, io.ErrUnexpectedEOF // the object shrank: it is immutable, so this is damage
	}
	r.off = off + int64(n)
	return pad, nil
}

// release returns the block; the reader must not be used after.
func (r *directReader) release() { r.br.Release() }
