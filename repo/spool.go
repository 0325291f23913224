package repo

import (
	"sync"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/zeebo/blake3"
)

// spoolBlock is the unit a pack streams to a Spooler in: small enough that
// a pack in the making holds two of them instead of the whole pack, large
// enough that each write is one efficient direct I/O.
const spoolBlock = 1 << 20

var spoolBlocks = sync.Pool{New: func() any { return directio.Alloc(spoolBlock)[:0] }}

// spoolWriter streams one pack to a Spool. The builder fills one aligned
// block while a goroutine hashes and writes the previous one, so storage
// and hashing overlap with the workers packing blobs, and the pack's name
// (the hash of its bytes) is known when the last block is written.
type spoolWriter struct {
	sp   Spool
	cur  []byte
	full chan []byte
	free chan []byte
	done chan struct{}
	h    *blake3.Hasher
	err  error // the first write error; read after done
}

func newSpoolWriter(sp Spool) *spoolWriter {
	w := &spoolWriter{
		sp:   sp,
		cur:  spoolBlocks.Get().([]byte),
		full: make(chan []byte, 1),
		free: make(chan []byte, 2),
		done: make(chan struct{}),
		h:    blake3.New(),
	}
	w.free <- spoolBlocks.Get().([]byte)
	go w.run()
	return w
}

func (w *spoolWriter) run() {
	defer close(w.done)
	wrote := make(chan error, 1)
	for b := range w.full {
		if w.err == nil {
			// The block is hashed while it is written: a direct write
			// waits for the device, and one after the other they were the
			// slowest stage of a backup of data stored as it is.
			go func() { wrote <- w.sp.Write(b) }()
			w.h.Write(b)
			w.err = <-wrote
		}
		// After an error the blocks are still taken, so the builder never
		// blocks; close reports the error.
		w.free <- b[:0]
	}
}

func (w *spoolWriter) write(p []byte) {
	for len(p) > 0 {
		n := copy(w.cur[len(w.cur):cap(w.cur)], p)
		w.cur = w.cur[:len(w.cur)+n]
		p = p[n:]
		if len(w.cur) == cap(w.cur) {
			w.full <- w.cur
			w.cur = <-w.free
		}
	}
}

// close writes what is left and returns the pack's id. On error the spool
// is aborted.
func (w *spoolWriter) close() (ID, error) {
	if len(w.cur) > 0 {
		w.full <- w.cur
	} else {
		spoolBlocks.Put(w.cur)
	}
	w.cur = nil
	close(w.full)
	<-w.done
	for len(w.free) > 0 {
		spoolBlocks.Put(<-w.free)
	}
	if w.err != nil {
		w.sp.Abort()
		return ID{}, w.err
	}
	var id ID
	w.h.Sum(id[:0])
	return id, nil
}
