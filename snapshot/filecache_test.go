package snapshot

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapbackup/snap/internal/directio"
)

// WatchFDs counts, until the returned function is called, the files under
// dir that this process has open, and that function returns the most it
// saw at once. It skips the test where /proc/self/fd is missing.
// Exported for the tests of package snapshot_test.
func WatchFDs(t *testing.T, dir string) (stop func() int) {
	t.Helper()
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skipf("cannot count open files: %v", err)
	}
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		t.Fatal(err)
	}
	var peak atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			n := int64(fdsUnder(dir))
			if n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-done:
				return
			case <-time.After(50 * time.Microsecond):
			}
		}
	})
	return func() int {
		close(done)
		wg.Wait()
		return int(peak.Load())
	}
}

// fdsUnder counts the files under dir that this process has open, each
// once however many descriptors it has open on it. One pass over
// /proc/self/fd is not a moment: while it reads, a file can be closed and
// another opened under a number not read yet, and both would count. So
// it reads every descriptor twice, and counts a file only where both
// reads agree: each then was open before the second pass began and after
// the first ended, so all were open together at the first pass's end.
func fdsUnder(dir string) int {
	entries, _ := os.ReadDir("/proc/self/fd")
	first := make(map[string]string, len(entries))
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err == nil && strings.HasPrefix(target, dir+string(filepath.Separator)) {
			first[e.Name()] = target
		}
	}
	files := map[string]bool{}
	for fd, target := range first {
		if again, err := os.Readlink(filepath.Join("/proc/self/fd", fd)); err == nil && again == target {
			files[target] = true
		}
	}
	return len(files)
}

// Writers that take turns on more files than the cache may keep open
// write every file exactly, direct or not, partial pages waiting in edges
// across evictions, with never more than the window's descriptors open.
// With a window that holds every file, nothing is opened twice.
func TestFileCacheWrites(t *testing.T) {
	const pg = directio.Align
	for _, tc := range []struct {
		window, writers int
	}{
		{5, 8}, // writers wait for descriptors
		{1, 3},
		{41, 8}, // every file fits
	} {
		dir := t.TempDir()
		rng := rand.New(rand.NewPCG(uint64(tc.window), 7))
		c := newFileCache(tc.window)
		type chunk struct {
			f      *restoreFile
			off, n int
		}
		var chunks []chunk
		var files []*restoreFile
		want := map[*restoreFile][]byte{}
		for i := range 40 {
			size := []int{0, 1, pg - 1, pg + 1, 3*pg + 5, 40<<10 + 3}[i%6] + rng.IntN(3)
			f := c.add(filepath.Join(dir, fmt.Sprintf("%06d.sst", i)), int64(size))
			files = append(files, f)
			data := make([]byte, size)
			for k := range data {
				data[k] = byte(rng.Uint32())
			}
			want[f] = data
			for off := 0; off < size; {
				n := min(size-off, 1+rng.IntN(2*pg))
				chunks = append(chunks, chunk{f, off, n})
				off += n
			}
		}
		rng.Shuffle(len(chunks), func(i, j int) { chunks[i], chunks[j] = chunks[j], chunks[i] })
		stop := WatchFDs(t, dir)
		var wg sync.WaitGroup
		errs := make(chan error, tc.writers+1)
		// A creator goes through the files as Restore's does, while the
		// writers create those it has not reached yet.
		rng.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
		wg.Go(func() {
			for _, f := range files {
				if err := c.precreate(f); err != nil {
					errs <- err
					return
				}
			}
		})
		for w := range tc.writers {
			wg.Go(func() {
				for i := w; i < len(chunks); i += tc.writers {
					ch := chunks[i]
					pad := placement(int64(ch.off))
					b := directio.Alloc(pad + ch.n)
					copy(b[pad:], want[ch.f][ch.off:ch.off+ch.n])
					err := blobTarget{file: ch.f, offset: int64(ch.off)}.write(writeJob{placed: b, pad: pad}, &Progress{})
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		peak := stop()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if peak > tc.window {
			t.Errorf("window %d: %d files open at once", tc.window, peak)
		}
		if tc.window > 40 && c.reopens != 0 {
			t.Errorf("window %d for 40 files: %d files opened again", tc.window, c.reopens)
		}
		if tc.window < 40 && c.reopens == 0 {
			t.Errorf("window %d for 40 files: none opened again; the test did not evict", tc.window)
		}
		t.Logf("window %d, %d writers: at most %d open, %d opened again", tc.window, tc.writers, peak, c.reopens)
		for f, data := range want {
			if !f.created {
				t.Fatalf("%s: not created", f.name)
			}
			if len(data) > 0 && !f.synced.Load() || len(f.edges) != 0 {
				t.Fatalf("%s: synced %v, %d partial pages left", f.name, f.synced.Load(), len(f.edges))
			}
			if f.refs.Load() > 1 {
				t.Fatalf("%s: %d users left", f.name, f.refs.Load()-1)
			}
		}
		if err := c.closeAll(); err != nil {
			t.Fatal(err)
		}
		if n := fdsUnder(dir); n != 0 {
			t.Fatalf("%d files open after closeAll", n)
		}
		for f, data := range want {
			got, err := os.ReadFile(f.name)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("window %d: %s: %d bytes differ from the %d written", tc.window, f.name, len(got), len(data))
			}
		}
	}
}

// A descriptor in use is never closed: with room for one, a second file
// waits until the first is released, and then takes its place. A file
// opened again gets direct I/O again where it had it.
func TestFileCacheInUse(t *testing.T) {
	dir := t.TempDir()
	c := newFileCache(1)
	a, b := c.add(filepath.Join(dir, "a"), 3*directio.Align), c.add(filepath.Join(dir, "b"), 10)
	for _, f := range []*restoreFile{a, b} {
		if err := c.precreate(f); err != nil {
			t.Fatal(err)
		}
	}
	direct := a.edges != nil
	t.Logf("direct: %v", direct)
	if a.refs.Load() != 0 || b.refs.Load() != 1 {
		t.Fatalf("a cache with room for one: a's refs %d, b's %d; want b's idle descriptor in place of a's", a.refs.Load(), b.refs.Load())
	}
	if err := a.acquire(); err != nil {
		t.Fatal(err)
	}
	if a.fh.Direct() != direct {
		t.Fatalf("opened again, direct %v; created direct %v", a.fh.Direct(), direct)
	}
	got := make(chan error, 1)
	go func() { got <- b.acquire() }()
	select {
	case err := <-got:
		t.Fatalf("acquired a second file with room for one while the first is in use (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	page := directio.Alloc(directio.Align)
	page[0] = 'x'
	if err := a.write(page, directio.Align); err != nil {
		t.Fatalf("write to the file in use while another waits: %v", err)
	}
	a.release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the waiting acquire did not get the released descriptor")
	}
	if a.refs.Load() != 0 || a.fh != nil {
		t.Fatal("the idle file kept its descriptor with a file waiting for room")
	}
	b.release()
	if err := a.acquire(); err != nil {
		t.Fatal(err)
	}
	if a.fh.Direct() != direct {
		t.Fatalf("opened a second time, direct %v; created direct %v", a.fh.Direct(), direct)
	}
	a.release()
	if c.reopens != 3 {
		t.Errorf("%d files opened again, want 3", c.reopens)
	}
	if err := c.closeAll(); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(a.name)
	if err != nil || len(data) != 3*directio.Align || data[directio.Align] != 'x' {
		t.Fatalf("a: %d bytes, %v", len(data), err)
	}
}
