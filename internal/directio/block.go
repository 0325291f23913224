package directio

import "sync"

// BlockSize is how much a BlockReader reads per system call.
const BlockSize = 1 << 20

var blocks = sync.Pool{New: func() any { b := Alloc(BlockSize); return &b }}

// BlockReader serves reads of any size at any offset from a file through
// one aligned block, which it fills with one read per BlockSize bytes: what
// direct I/O needs to serve callers whose buffers and offsets are not
// aligned, and what keeps sequential small reads from costing a system
// call each. Its block comes from a pool and goes back on Release. A
// BlockReader is not safe for concurrent use.
type BlockReader struct {
	f     *File
	block *[]byte
	off   int64 // file offset of (*block)[0]
	n     int   // valid bytes in *block
}

// NewBlockReader reads f, which may be direct or not.
func NewBlockReader(f *File) *BlockReader { return &BlockReader{f: f} }

// ReadAt fills p from the file at off. It returns fewer than len(p) bytes,
// and no error, only where the file ends.
func (r *BlockReader) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		if r.block == nil || pos < r.off || pos >= r.off+int64(r.n) {
			if r.block == nil {
				r.block = blocks.Get().(*[]byte)
			}
			r.off = pos &^ (Align - 1)
			n, err := r.f.ReadUpTo(*r.block, r.off)
			if err != nil {
				r.n = 0
				return done, err
			}
			r.n = n
			if pos >= r.off+int64(n) {
				return done, nil // the file ends before pos
			}
		}
		done += copy(p[done:], (*r.block)[pos-r.off:r.n])
	}
	return done, nil
}

// Release returns the block to the pool. The reader may be used again; it
// then takes another block.
func (r *BlockReader) Release() {
	if r.block != nil {
		blocks.Put(r.block)
		r.block, r.n = nil, 0
	}
}
