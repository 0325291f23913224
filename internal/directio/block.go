package directio

import "sync"

// blockPool is a pool of blocks of one size for BlockReaders.
type blockPool struct {
	size int
	pool sync.Pool
}

func (p *blockPool) get() *Huge  { return p.pool.Get().(*Huge) }
func (p *blockPool) put(b *Huge) { p.pool.Put(b) }

// A BlockReader made by NewBlockReader reads 1 MiB at a time into heap
// memory: it serves a backup's reads of tables, which wait on the
// compressor, not the disk. One made by NewBlockReaderAhead serves reads
// that the disk bounds (a restore's reads of packs): it reads a huge page
// at a time into huge pages, which the device takes in one request (see
// AllocHuge). Huge blocks for tables cost a backup 7 MiB more peak memory
// and no time.
var (
	heapBlocks = &blockPool{size: 1 << 20, pool: sync.Pool{New: func() any { return &Huge{B: Alloc(1 << 20)} }}}
	hugeBlocks = &blockPool{size: HugePage, pool: sync.Pool{New: func() any { return AllocHuge(HugePage) }}}
)

// BlockReader serves reads of any size at any offset from a file through
// one aligned block, which it fills with one read per block: what
// direct I/O needs to serve callers whose buffers and offsets are not
// aligned, and what keeps sequential small reads from costing a system
// call each. Its blocks come from a pool and go back on Release. A
// BlockReader is not safe for concurrent use.
//
// Direct reads get no read-ahead from the kernel. A BlockReader made with
// NewBlockReaderAhead does its own: while the caller works through one
// block, it reads the next in the background, so a reader that decodes
// or hashes what it reads does not wait for the disk at every block.
type BlockReader struct {
	f     *File
	bp    *blockPool
	block *Huge
	off   int64 // file offset of block.B[0]
	n     int   // valid bytes in block.B
	end   int64 // read ahead below this offset; 0: no read-ahead
	ahead *aheadRead
}

// aheadRead is a block being read in the background.
type aheadRead struct {
	block *Huge
	off   int64
	n     int
	err   error
	done  chan struct{}
}

// NewBlockReader reads f, which may be direct or not.
func NewBlockReader(f *File) *BlockReader { return &BlockReader{f: f, bp: heapBlocks} }

// NewBlockReaderAhead reads f like NewBlockReader, for a caller that reads
// front to back up to end, and reads a block ahead of it.
func NewBlockReaderAhead(f *File, end int64) *BlockReader {
	return &BlockReader{f: f, bp: hugeBlocks, end: end}
}

// ReadAt fills p from the file at off. It returns fewer than len(p) bytes,
// and no error, only where the file ends.
func (r *BlockReader) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		if r.block == nil || pos < r.off || pos >= r.off+int64(r.n) {
			if err := r.load(pos &^ (Align - 1)); err != nil {
				return done, err
			}
			if pos >= r.off+int64(r.n) {
				return done, nil // the file ends before pos
			}
		}
		done += copy(p[done:], r.block.B[pos-r.off:r.n])
	}
	return done, nil
}

// load makes the block at off the current one: the one read ahead if it
// is that, else read now. Then it starts reading the next.
func (r *BlockReader) load(off int64) error {
	if a := r.ahead; a != nil {
		r.ahead = nil
		<-a.done
		if a.off == off {
			r.drop()
			r.block, r.off, r.n = a.block, a.off, a.n
			if a.err != nil {
				r.n = 0
				return a.err
			}
			r.readAhead()
			return nil
		}
		r.bp.put(a.block)
	}
	if r.block == nil {
		r.block = r.bp.get()
	}
	r.off = off
	n, err := r.f.ReadUpTo(r.block.B, r.off)
	if err != nil {
		r.n = 0
		return err
	}
	r.n = n
	r.readAhead()
	return nil
}

// readAhead starts reading the block after the current one, if the
// caller will want it: the current block is full and ends before end.
func (r *BlockReader) readAhead() {
	next := r.off + int64(r.n)
	if r.end == 0 || r.n < r.bp.size || next >= r.end {
		return
	}
	a := &aheadRead{block: r.bp.get(), off: next, done: make(chan struct{})}
	// Only as much as the caller will read, in whole aligned pieces.
	want := min(int64(r.bp.size), (r.end-next+Align-1)&^(Align-1))
	r.ahead = a
	go func() {
		defer close(a.done)
		a.n, a.err = r.f.ReadUpTo(a.block.B[:want], a.off)
	}()
}

// drop returns the current block to the pool.
func (r *BlockReader) drop() {
	if r.block != nil {
		r.bp.put(r.block)
		r.block, r.n = nil, 0
	}
}

// Release returns the blocks to the pool, after waiting for a read ahead
// to end. The reader may be used again; it then takes other blocks.
func (r *BlockReader) Release() {
	if a := r.ahead; a != nil {
		r.ahead = nil
		<-a.done
		r.bp.put(a.block)
	}
	r.drop()
}
