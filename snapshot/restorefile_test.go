package snapshot

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
)

// A restoreFile takes chunks of any size in any order from several
// goroutines at once, decoded at the right placement or not, and ends up
// with exactly the file's bytes, direct or through the page cache.
func TestRestoreFileChunks(t *testing.T) {
	const pg = directio.Align
	for _, direct := range []bool{true, false} {
		for _, size := range []int{1, pg - 1, pg, pg + 1, 5*pg + 123, 64 * pg, 300<<10 + 7} {
			rng := rand.New(rand.NewPCG(uint64(size), 1))
			want := make([]byte, size)
			for i := range want {
				want[i] = byte(rng.Uint32())
			}
			path := filepath.Join(t.TempDir(), "f")
			var fh *directio.File
			var err error
			if direct {
				fh, err = directio.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
			} else {
				var osf *os.File
				osf, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
				fh = &directio.File{File: osf}
			}
			if err != nil {
				t.Fatal(err)
			}
			if direct && !fh.Direct() {
				t.Log("the file system does not do direct I/O; both runs are buffered")
			}
			f, err := newRestoreFile(fh, path, int64(size))
			if err != nil {
				t.Fatal(err)
			}
			// Chunks of 1 byte to a few pages, cut anywhere.
			type chunk struct{ off, n int }
			var chunks []chunk
			for off := 0; off < size; {
				n := min(size-off, 1+rng.IntN(3*pg))
				chunks = append(chunks, chunk{off, n})
				off += n
			}
			rng.Shuffle(len(chunks), func(i, j int) { chunks[i], chunks[j] = chunks[j], chunks[i] })
			var wg sync.WaitGroup
			errs := make(chan error, len(chunks))
			for k := range 4 {
				wg.Go(func() {
					for i := k; i < len(chunks); i += 4 {
						c := chunks[i]
						pad := placement(int64(c.off))
						b := directio.Alloc(pad + c.n)
						switch i % 4 {
						case 1: // decoded for another place
							pad = (pad + 1) % pg
							b = directio.Alloc(pad + c.n)
						case 2: // in memory not page-aligned
							b = directio.Alloc(pad + c.n + 1)[1:]
						}
						copy(b[pad:], want[c.off:c.off+c.n])
						if err := f.writeAt(b, pad, int64(c.off)); err != nil {
							errs <- err
							return
						}
						if err := f.wrote(c.n); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if !f.synced.Load() {
				t.Fatalf("size %d: not synced after the last byte", size)
			}
			if len(f.edges) != 0 {
				t.Fatalf("size %d: %d partial pages left unwritten", size, len(f.edges))
			}
			if direct {
				// Every page once, edge pages inside the chunks' writes.
				if got, want := f.wroteBytes.Load(), roundUp(int64(size)); got != want {
					t.Errorf("size %d: wrote %d bytes for %d bytes of pages", size, got, want)
				}
				if got := f.requests.Load(); got > int64(len(chunks)) {
					t.Errorf("size %d: %d write requests for %d chunks", size, got, len(chunks))
				}
			}
			fh.Close()
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("direct %v, size %d: restored %d bytes differ from the original", direct, size, len(got))
			}
		}
	}
}

// A file system that takes O_DIRECT at open but refuses a direct write
// (EINVAL, here provoked with a misaligned buffer) gets that write and
// the rest through the page cache, partial pages waiting in edges too.
func TestRestoreFileDirectRefused(t *testing.T) {
	const pg = directio.Align
	size := 5*pg + 100
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*7 + i>>9)
	}
	path := filepath.Join(t.TempDir(), "f")
	fh, err := directio.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if !fh.Direct() {
		t.Skip("the file system does not do direct I/O")
	}
	f, err := newRestoreFile(fh, path, int64(size))
	if err != nil {
		t.Fatal(err)
	}
	put := func(off, end int) {
		t.Helper()
		pad := placement(int64(off))
		b := directio.Alloc(pad + end - off)
		copy(b[pad:], want[off:end])
		if err := f.writeAt(b, pad, int64(off)); err != nil {
			t.Fatal(err)
		}
		if err := f.wrote(end - off); err != nil {
			t.Fatal(err)
		}
	}
	put(0, 2*pg+10) // leaves page 2 partly filled
	misaligned := directio.Alloc(pg + 1)[1:]
	copy(misaligned, want[3*pg:4*pg])
	if err := f.write(misaligned, 3*pg); err != nil {
		t.Fatalf("write after the file system refused direct I/O: %v", err)
	}
	if fh.Direct() {
		t.Fatal("still direct after a refused write")
	}
	if err := f.wrote(pg); err != nil {
		t.Fatal(err)
	}
	put(2*pg+10, 3*pg)
	put(4*pg, size)
	if !f.synced.Load() || len(f.edges) != 0 {
		t.Fatalf("synced %v, %d partial pages left", f.synced.Load(), len(f.edges))
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("restored bytes differ from the original")
	}
}

// A write that fails ends restoreChunks with that error; the decoders
// waiting to hand over their chunks, and the other writers, stop.
func TestRestoreChunksWriteError(t *testing.T) {
	r, err := repo.Init(t.Context(), mem.New(), "pw", repo.InitOptions{
		PackSize: 1 << 20, KDF: repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
	}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rng := rand.New(rand.NewPCG(3, 4))
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	osf, err := os.Open(path) // read-only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	defer osf.Close()
	f := &restoreFile{fh: &directio.File{File: osf}, name: path, size: 1 << 30}
	f.left.Store(f.size)
	keepOpen(newFileCache(4), f)
	targets := map[repo.ID][]blobTarget{}
	byPack := map[repo.ID][]repo.BlobEntry{}
	for i := range 200 { // many more chunks than buffers in flight
		p := make([]byte, 20<<10)
		for k := range p {
			p[k] = byte(rng.Uint32())
		}
		id := r.BlobID(p)
		if _, err := r.SaveBlob(t.Context(), repo.DataBlob, id, p); err != nil {
			t.Fatal(err)
		}
		targets[id] = []blobTarget{{file: f, offset: int64(i) * int64(len(p))}}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for id := range targets {
		loc, _ := r.Index().Lookup(id)
		byPack[loc.Pack] = append(byPack[loc.Pack], loc.BlobEntry)
	}
	var packs []repo.ID
	for p := range byPack {
		packs = append(packs, p)
	}
	done := make(chan error, 1)
	go func() {
		_, err := restoreChunks(t.Context(), r, packs, byPack, targets, RestoreOptions{Cores: 2, Progress: &Progress{}})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "write "+path) {
			t.Fatalf("restoreChunks with failing writes: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("restoreChunks hangs after a failed write")
	}
}

// The slots hand out at most their number of buffers, wait for one to
// come back (or the context to end), and free what they keep at the end.
func TestBufSlots(t *testing.T) {
	ctx := context.Background()
	s := newBufSlots(2)
	a, err := s.get(ctx, 100)
	if err != nil || len(a.B) != directio.HugePage || !directio.Aligned(a.B) {
		t.Fatalf("get(100) = %d bytes, aligned %v, %v", len(a.B), directio.Aligned(a.B), err)
	}
	big, err := s.get(ctx, directio.HugePage+1)
	if err != nil || len(big.B) != 2*directio.HugePage {
		t.Fatalf("get(HugePage+1) = %d bytes, %v", len(big.B), err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.get(cctx, 10); err == nil {
		t.Fatal("get with no free slot and a cancelled context returned")
	}
	s.put(a)
	if b, err := s.get(ctx, 10); err != nil || b != a {
		t.Fatalf("the buffer put back was not handed out again (%v)", err)
	}
	s.put(a)
	s.put(big)
	s.free()
	if a.B != nil || big.B != nil {
		t.Fatal("free left a buffer mapped")
	}
}

// The list of huge buffers hands back a kept buffer that is large enough,
// keeps at most its maximum, and of those at most one larger than a huge
// page; a buffer it has to make replaces a kept one; the rest it unmaps.
func TestHugeList(t *testing.T) {
	l := newHugeList(3)
	a := l.get(1000)
	if len(a.B) < 1000 || !directio.Aligned(a.B) {
		t.Fatalf("get(1000): %d bytes, aligned %v", len(a.B), directio.Aligned(a.B))
	}
	l.put(a)
	if b := l.get(900); b != a {
		t.Fatal("a kept buffer that is large enough was not reused")
	}
	b := l.get(900)
	if b == a {
		t.Fatal("a buffer was handed out twice")
	}
	l.put(a)
	l.put(b)
	big := l.get(directio.HugePage + 1) // replaces a kept one
	if cap(big.B) < directio.HugePage+1 || len(l.free) != 1 || a.B != nil && b.B != nil {
		t.Fatalf("a large buffer: %d bytes, %d kept (want 1), one of the small ones unmapped", cap(big.B), len(l.free))
	}
	big2 := l.get(directio.HugePage + 1) // replaces the other small one
	l.put(big)
	l.put(big2) // a second large one is not kept
	if len(l.free) != 1 || big2.B != nil {
		t.Fatalf("%d buffers kept, want 1; the second large one unmapped: %v", len(l.free), big2.B == nil)
	}
	c, d, e := directio.AllocHuge(10), directio.AllocHuge(10), directio.AllocHuge(10)
	l.put(c)
	l.put(d)
	l.put(e) // over the maximum
	if len(l.free) != 3 || e.B != nil {
		t.Fatalf("%d buffers kept, want 3; the one over the maximum unmapped: %v", len(l.free), e.B == nil)
	}
	l.freeAll()
	if len(l.free) != 0 || big.B != nil || c.B != nil {
		t.Fatal("freeAll left buffers mapped")
	}
}

// keepOpen puts f, created, with its descriptor f.fh and no users, into
// c, which must have room for it.
func keepOpen(c *fileCache, f *restoreFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f.cache = c
	f.created = true
	f.refs.Store(1)
	c.ring = append(c.ring, f)
}
