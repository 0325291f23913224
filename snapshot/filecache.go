package snapshot

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/snapbackup/snap/internal/directio"
)

// fileCache keeps at most max of a restore's files open. Chunks arrive in
// pack order, for any file at any time, and a database can have more
// files than the process may open (thousands of tables under ulimit -n
// 1024), so a writer acquires a file's descriptor for each write and
// releases it after; a file without one is opened again, in place of the
// idle descriptor a clock takes for the least recently used.
//
// The hot path is two atomic operations on the file: a reference count
// that is 0 while the file has no descriptor and 1 + its users while it
// has one, and a use bit for the clock. Only a file without a descriptor
// takes the mutex. An exact LRU list would be a shared list to update,
// under a lock, for every chunk; the clock (second chance) evicts almost
// the same files without one. A descriptor with users is never closed;
// when every one is in use, an acquire waits for a release.
type fileCache struct {
	max     int
	batch   *syncBatch   // nil: every file is fsynced when finished
	waiting atomic.Int32 // acquires looking for a free descriptor; releases wake them
	mu      sync.Mutex
	idle    *sync.Cond     // on mu: a descriptor lost its last user, or a file was opened
	ring    []*restoreFile // the files with a descriptor; nil: a free slot
	hand    int            // where the clock looks next
	reopens int            // descriptors opened after a file was created; under mu
}

func newFileCache(n int) *fileCache {
	c := &fileCache{max: max(n, 1)}
	c.idle = sync.NewCond(&c.mu)
	return c
}

// add makes the restoreFile for path, a file of size bytes. It is created
// (or truncated) and sized by its first acquire, or ahead of it by
// precreate, whichever comes first.
func (c *fileCache) add(path string, size int64) *restoreFile {
	f := &restoreFile{name: path, size: size, cache: c}
	f.left.Store(size)
	return f
}

// precreate creates f before a writer needs it, unless one did already,
// and leaves its descriptor idle in the cache, first in line to be closed
// (an acquire of a file created since does not count as its use).
// Creating a file is the costly step of a restore of many small ones:
// creates in one directory take turns in the kernel (the directory's
// lock), 250-400 us each on the benchmark's machine, 0.6-0.9 s for 2,228
// files, and made one after the other before the first chunk was read
// they came on top of the rest. Run beside the writers, in the order the
// packs need the files, they overlap reading and decoding.
func (c *fileCache) precreate(f *restoreFile) error {
	c.mu.Lock()
	done := f.created || f.opening
	c.mu.Unlock()
	if done {
		return nil
	}
	if err := f.acquire(); err != nil {
		return err
	}
	f.used.Store(false)
	f.release()
	return nil
}

// acquire makes sure f has a descriptor, f.fh, that stays open until the
// matching release.
func (f *restoreFile) acquire() error {
	for {
		v := f.refs.Load()
		if v == 0 {
			return f.cache.acquireSlow(f)
		}
		if f.refs.CompareAndSwap(v, v+1) {
			if !f.used.Load() {
				f.used.Store(true)
			}
			return nil
		}
	}
}

// release ends a use of f.fh begun by acquire.
func (f *restoreFile) release() {
	c := f.cache
	if f.refs.Add(-1) == 1 && c.waiting.Load() > 0 {
		c.mu.Lock()
		c.idle.Broadcast()
		c.mu.Unlock()
	}
}

// acquireSlow opens f, which had no descriptor when acquire looked: it
// creates f if no one did yet, else opens it again. A file gets a
// descriptor or loses one only under c.mu; the system calls are made
// outside it, so that writers open their files at the same time.
func (c *fileCache) acquireSlow(f *restoreFile) error {
	c.mu.Lock()
	for {
		if f.refs.Load() > 0 { // another writer opened it meanwhile
			f.refs.Add(1)
			f.used.Store(true)
			c.mu.Unlock()
			return nil
		}
		if f.opening {
			c.idle.Wait()
			continue
		}
		// Counted before the look for an idle descriptor: a release after
		// the look sees it and wakes this acquire.
		c.waiting.Add(1)
		evicted, old, ok := c.slot(f)
		if !ok {
			c.idle.Wait()
			c.waiting.Add(-1)
			continue
		}
		c.waiting.Add(-1)
		f.opening = true
		create := !f.created
		c.mu.Unlock()
		// The evicted descriptor is closed first, so that no more than max
		// are ever open.
		var err error
		if old != nil {
			if cerr := old.Close(); cerr != nil {
				err = fmt.Errorf("close %s: %w", evicted, cerr)
			}
		}
		var fh *directio.File
		var oerr error
		if create {
			if fh, oerr = f.create(); oerr != nil {
				err = errors.Join(err, fmt.Errorf("create %s: %w", f.name, oerr))
			}
		} else if fh, oerr = f.reopen(); oerr != nil {
			err = errors.Join(err, fmt.Errorf("open %s again: %w", f.name, oerr))
		}
		c.mu.Lock()
		f.opening = false
		c.idle.Broadcast() // for the acquires of f that wait for it
		if oerr != nil {
			c.free(f)
			c.mu.Unlock()
			return err
		}
		if create {
			f.created = true
		} else {
			c.reopens++
		}
		f.fh = fh
		f.used.Store(true)
		if err != nil {
			f.refs.Store(1) // open, but the caller does not use it
		} else {
			f.refs.Store(2)
		}
		c.mu.Unlock()
		return err
	}
}

// slot gives f a place in c.ring: a free one, or that of an idle file
// whose descriptor it takes away: the first the clock finds unused since
// it last passed, or on its second round any idle one. It returns the
// descriptor taken away, for the caller to close, and the file's name; ok
// is false if every descriptor is in use. c.mu is held.
func (c *fileCache) slot(f *restoreFile) (evicted string, old *directio.File, ok bool) {
	if len(c.ring) < c.max {
		c.ring = append(c.ring, f)
		return "", nil, true
	}
	n := len(c.ring)
	for k := range 2 * n {
		i := c.hand
		c.hand = (c.hand + 1) % n
		g := c.ring[i]
		if g == nil {
			c.ring[i] = f
			return "", nil, true
		}
		if k < n && g.used.Load() {
			g.used.Store(false)
			continue
		}
		if g.refs.CompareAndSwap(1, 0) {
			c.ring[i] = f
			old, g.fh = g.fh, nil
			return g.name, old, true
		}
	}
	return "", nil, false
}

// free gives up f's place in c.ring, which f failed to open. c.mu is held.
func (c *fileCache) free(f *restoreFile) {
	for i, g := range c.ring {
		if g == f {
			c.ring[i] = nil
		}
	}
}

// closeAll closes every descriptor, once no writer is left, and reports
// the errors.
func (c *fileCache) closeAll() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var errs []error
	for _, g := range c.ring {
		if g == nil || g.fh == nil {
			continue
		}
		g.refs.Store(0)
		if err := g.fh.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", g.name, err))
		}
		g.fh = nil
	}
	c.ring = c.ring[:0]
	return errors.Join(errs...)
}

// reopen opens f again the way it was created: with direct I/O where the
// file was made for it and the file system still allows it (else it is
// written through the page cache, as directio.File falls back), through
// the page cache where it was not.
func (f *restoreFile) reopen() (*directio.File, error) {
	if f.edges != nil {
		return directio.OpenFile(f.name, os.O_RDWR, 0)
	}
	fh, err := os.OpenFile(f.name, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	return &directio.File{File: fh}, nil
}
