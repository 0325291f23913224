package local

import (
	"io"
	"sync"

	"github.com/snapbackup/snap/internal/directio"
)

// directMin is the smallest range Load reads with direct I/O. Smaller
// reads (pack headers, index files, snapshots) stay in the page cache,
// where the next command finds them again.
const directMin = 1 << 20

// bounceSize is the direct read done for a request that is not aligned.
const bounceSize = 1 << 20

var bounces = sync.Pool{New: func() any { b := directio.Alloc(bounceSize); return &b }}

// directReader reads the range [off, end) of a direct file. A request that
// starts at an aligned offset with an aligned buffer is read from the
// device straight into the caller's buffer (whole packs for a restore);
// the rest goes through an aligned bounce buffer.
type directReader struct {
	f        *directio.File
	off, end int64
	bounce   *[]byte
	bOff     int64 // file offset of (*bounce)[0]
	bLen     int   // valid bytes in *bounce
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
	if r.bounce != nil && r.off >= r.bOff && r.off < r.bOff+int64(r.bLen) {
		n := copy(p, (*r.bounce)[r.off-r.bOff:r.bLen])
		r.off += int64(n)
		return n, nil
	}
	if r.off&(directio.Align-1) == 0 && directio.Aligned(p) && len(p) >= directio.Align {
		want := len(p) &^ (directio.Align - 1)
		n, err := r.f.ReadUpTo(p[:want], r.off)
		return r.advance(n, want, err)
	}
	if r.bounce == nil {
		r.bounce = bounces.Get().(*[]byte)
	}
	r.bOff = r.off &^ (directio.Align - 1)
	want := min(int64(bounceSize), r.end-r.bOff)
	// Whole blocks: the file's last block may be partial, which ReadUpTo
	// reports as fewer bytes.
	n, err := r.f.ReadUpTo((*r.bounce)[:(want+directio.Align-1)&^(directio.Align-1)], r.bOff)
	r.bLen = n
	if err != nil {
		r.bLen = 0
		return 0, err
	}
	if int64(n) < want {
		r.bLen = 0
		return 0, io.ErrUnexpectedEOF // the object shrank: it is immutable, so this is damage
	}
	m := copy(p, (*r.bounce)[r.off-r.bOff:r.bLen])
	r.off += int64(m)
	return m, nil
}

func (r *directReader) advance(n, want int, err error) (int, error) {
	if err != nil {
		return 0, err
	}
	if n < want {
		return 0, io.ErrUnexpectedEOF
	}
	r.off += int64(n)
	return n, nil
}

// release returns the bounce buffer; the reader must not be used after.
func (r *directReader) release() {
	if r.bounce != nil {
		bounces.Put(r.bounce)
		r.bounce = nil
	}
}
