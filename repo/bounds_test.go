package repo_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
)

// tripwire is how far a bloated object may be read before the read fails:
// further than any bound but the index's, which is never streamed without
// a size.
const tripwire = 32 << 20

// bloated is the in-memory backend with some objects larger than their
// bounds: each listed and stat'ed at a size of its own and streamed as
// that many bytes, but failing past the tripwire. It counts what was read
// of them.
type bloated struct {
	*mem.Backend
	mu      sync.Mutex
	objects map[repo.Handle]bloat
	read    map[repo.Handle]int64
	loads   map[repo.Handle]int
}

type bloat struct{ listed, streamed int64 }

func newBloated() *bloated {
	return &bloated{Backend: mem.New(), objects: map[repo.Handle]bloat{}, read: map[repo.Handle]int64{}, loads: map[repo.Handle]int{}}
}

// add makes h a bloated object; a placeholder in the inner backend makes
// it listed.
func (b *bloated) add(t *testing.T, h repo.Handle, o bloat) {
	t.Helper()
	if err := b.Backend.Save(t.Context(), h, []byte("placeholder")); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.objects[h] = o
}

func (b *bloated) bloat(h repo.Handle) (bloat, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	o, ok := b.objects[h]
	return o, ok
}

func (b *bloated) Stat(ctx context.Context, h repo.Handle) (repo.FileInfo, error) {
	fi, err := b.Backend.Stat(ctx, h)
	if o, ok := b.bloat(h); ok && err == nil {
		fi.Size = o.listed
	}
	return fi, err
}

func (b *bloated) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	return b.Backend.List(ctx, t, func(fi repo.FileInfo) error {
		if o, ok := b.bloat(repo.Handle{Type: t, Name: fi.Name}); ok {
			fi.Size = o.listed
		}
		return fn(fi)
	})
}

func (b *bloated) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(io.Reader) error) error {
	o, ok := b.bloat(h)
	if !ok {
		return b.Backend.Load(ctx, h, offset, length, fn)
	}
	b.mu.Lock()
	b.loads[h]++
	b.mu.Unlock()
	if offset != 0 || length != 0 {
		return fmt.Errorf("load %s: a bloated object is read whole only", h)
	}
	return fn(&bloatReader{b: b, h: h, left: o.streamed})
}

// readOf reports how many bytes of h were read, in how many loads.
func (b *bloated) readOf(h repo.Handle) (int64, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.read[h], b.loads[h]
}

type bloatReader struct {
	b    *bloated
	h    repo.Handle
	left int64
}

var errTripwire = errors.New("read past the tripwire")

func (r *bloatReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	r.b.mu.Lock()
	defer r.b.mu.Unlock()
	if r.b.read[r.h] >= tripwire {
		return 0, errTripwire
	}
	n := int(min(int64(len(p)), r.left, tripwire-r.b.read[r.h]))
	clear(p[:n])
	r.left -= int64(n)
	r.b.read[r.h] += int64(n)
	return n, nil
}

// wantBounded checks err is a corrupt-object error that names h and says
// its bound.
func wantBounded(t *testing.T, err error, h repo.Handle, bound string) {
	t.Helper()
	if !errors.Is(err, repo.ErrCorrupt) || errors.Is(err, errTripwire) ||
		!strings.Contains(err.Error(), h.String()) || !strings.Contains(err.Error(), bound) {
		t.Errorf("got %v; want ErrCorrupt naming %s and the bound %s", err, h, bound)
	}
}

// Every object read whole has a bound: one over it is refused before it
// is read when a listing or a stat gives its size, and after the bound's
// worth of bytes when the stream is longer than either says, so a reader
// never holds more than the bound.
func TestObjectBounds(t *testing.T) {
	const giB = 1 << 30
	t.Run("config", func(t *testing.T) {
		be := newBloated()
		initRepo(t, be, smallOptions())
		h := repo.Handle{Type: repo.ConfigFile}
		if err := be.Backend.Remove(t.Context(), h); err != nil {
			t.Fatal(err)
		}
		be.add(t, h, bloat{listed: 100, streamed: giB})
		_, err := repo.Open(t.Context(), be, password, repo.Options{})
		wantBounded(t, err, h, "65536")
		if n, _ := be.readOf(h); n > 64<<10+1 {
			t.Errorf("read %d bytes of the config", n)
		}
	})
	t.Run("key file", func(t *testing.T) {
		be := newBloated()
		initRepo(t, be, smallOptions())
		big := repo.Handle{Type: repo.KeyFile, Name: strings.Repeat("ab", 32)}
		be.add(t, big, bloat{listed: giB, streamed: giB})
		// Beside a key that opens, it is never read at all.
		openRepo(t, be)
		// Alone, it is the error, named, and still not read.
		for name := range list(t, be.Backend, repo.KeyFile) {
			if name != big.Name {
				if err := be.Backend.Remove(t.Context(), repo.Handle{Type: repo.KeyFile, Name: name}); err != nil {
					t.Fatal(err)
				}
			}
		}
		_, err := repo.Open(t.Context(), be, password, repo.Options{})
		wantBounded(t, err, big, "65536")
		if n, loads := be.readOf(big); n != 0 || loads != 0 {
			t.Errorf("read %d bytes of a key file listed at 1 GiB, in %d loads", n, loads)
		}
	})
	t.Run("index", func(t *testing.T) {
		be := newBloated()
		r := initRepo(t, be, smallOptions())
		big := repo.Handle{Type: repo.IndexFile, Name: strings.Repeat("cd", 32)}
		be.add(t, big, bloat{listed: 2 * giB, streamed: 2 * giB})
		wantBounded(t, r.LoadIndex(t.Context()), big, "1073741824")
		var seen error
		_, err := r.LoadIndexFiles(t.Context(), func(_ repo.StoredIndex, err error) error { seen = err; return nil })
		if err != nil {
			t.Fatal(err)
		}
		wantBounded(t, seen, big, "1073741824")
		// Without a listing it is stat'ed first.
		_, err = r.LoadUnpacked(t.Context(), repo.IndexFile, mustParseID(t, big.Name))
		wantBounded(t, err, big, "1073741824")
		if n, loads := be.readOf(big); n != 0 || loads != 0 {
			t.Errorf("read %d bytes of an index file listed at 2 GiB, in %d loads", n, loads)
		}
	})
	t.Run("listing lies", func(t *testing.T) {
		be := newBloated()
		r := initRepo(t, be, smallOptions())
		h := repo.Handle{Type: repo.IndexFile, Name: strings.Repeat("ef", 32)}
		be.add(t, h, bloat{listed: 1000, streamed: giB})
		err := r.LoadIndex(t.Context())
		wantBounded(t, err, h, "1000 bytes its listing says")
		if n, _ := be.readOf(h); n > 1001 {
			t.Errorf("read %d bytes of an index file listed at 1000", n)
		}
	})
	t.Run("snapshot", func(t *testing.T) {
		be := newBloated()
		r := initRepo(t, be, smallOptions())
		h := repo.Handle{Type: repo.SnapshotFile, Name: strings.Repeat("01", 32)}
		be.add(t, h, bloat{listed: 100, streamed: giB})
		_, err := r.LoadUnpacked(t.Context(), repo.SnapshotFile, mustParseID(t, h.Name))
		wantBounded(t, err, h, "4194304")
		if n, _ := be.readOf(h); n > 4<<20+1 {
			t.Errorf("read %d bytes of a snapshot", n)
		}
	})
	t.Run("tail", func(t *testing.T) {
		be := newBloated()
		r := initRepo(t, be, smallOptions())
		h := repo.Handle{Type: repo.TailFile, Name: "ab-1-" + strings.Repeat("45", 32)}
		be.add(t, h, bloat{listed: giB, streamed: giB})
		var listed []int64
		if err := r.ListNamed(t.Context(), repo.TailFile, func(_ string, size int64) error {
			listed = append(listed, size)
			return nil
		}); err != nil || len(listed) != 1 {
			t.Fatalf("list tails: %v, %v", listed, err)
		}
		_, err := r.LoadNamed(t.Context(), repo.TailFile, h.Name, listed[0])
		wantBounded(t, err, h, "16777216")
		if n, loads := be.readOf(h); n != 0 || loads != 0 {
			t.Errorf("read %d bytes of a tail listed at 1 GiB, in %d loads", n, loads)
		}
		// Without a listing it is read up to the bound.
		_, err = r.LoadNamed(t.Context(), repo.TailFile, h.Name, -1)
		wantBounded(t, err, h, "16777216")
		if n, _ := be.readOf(h); n > 16<<20+1 {
			t.Errorf("read %d bytes of a tail", n)
		}
	})
	t.Run("lock", func(t *testing.T) {
		be := newBloated()
		r := initRepo(t, be, smallOptions())
		h := repo.Handle{Type: repo.LockFile, Name: "shared-" + strings.Repeat("23", 32)}
		be.add(t, h, bloat{listed: 100, streamed: giB})
		locks, err := r.ListLocks(t.Context())
		if err != nil || len(locks) != 1 {
			t.Fatalf("list locks: %v, %v", locks, err)
		}
		wantBounded(t, locks[0].Err, h, "65536")
		if n, _ := be.readOf(h); n > 64<<10+1 {
			t.Errorf("read %d bytes of a lock object", n)
		}
	})
}

// A writer stores nothing a reader would refuse.
func TestSaveUnpackedBound(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	if _, err := r.SaveUnpacked(t.Context(), repo.SnapshotFile, make([]byte, 4<<20)); err == nil || !strings.Contains(err.Error(), "4194304") {
		t.Errorf("save a 4 MiB snapshot: %v, want an error naming the bound", err)
	}
	if n := len(list(t, be, repo.SnapshotFile)); n != 0 {
		t.Errorf("%d snapshots stored", n)
	}
	if _, err := r.SaveUnpacked(t.Context(), repo.SnapshotFile, make([]byte, 4<<20-repo.Overhead)); err != nil {
		t.Errorf("save a snapshot at the bound: %v", err)
	}
}

// An index entry longer than the blob limit is refused before a buffer is
// sized by it or the pack is read: a tree (or any blob) is at most 64 MiB.
func TestLoadBlobBound(t *testing.T) {
	be := newBloated()
	r := initRepo(t, be, smallOptions())
	pack := repo.Handle{Type: repo.PackFile, Name: strings.Repeat("45", 32)}
	be.add(t, pack, bloat{listed: 1 << 30, streamed: 1 << 30})
	for _, e := range []repo.BlobEntry{
		{ID: repo.ID{1}, Type: repo.TreeBlob, Length: 200<<20 + repo.Overhead, RawLength: 200 << 20},
		{ID: repo.ID{2}, Type: repo.TreeBlob, Compression: repo.CompressionZstd, Length: 1000, RawLength: 64<<20 + 1},
		{ID: repo.ID{3}, Type: repo.DataBlob, Compression: repo.CompressionZstd, Length: 64<<20 + repo.Overhead + 1, RawLength: 1000},
	} {
		r.Index().AddPack(repo.PackBlobs{PackID: mustParseID(t, pack.Name), Blobs: []repo.BlobEntry{e}})
		_, err := r.LoadBlob(t.Context(), e.ID, nil)
		if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "blob limit") || !strings.Contains(err.Error(), pack.Name) {
			t.Errorf("load blob %+v: %v; want ErrCorrupt over the blob limit, naming the pack", e, err)
		}
	}
	if n, loads := be.readOf(pack); n != 0 || loads != 0 {
		t.Errorf("read %d bytes of the pack in %d loads", n, loads)
	}
}

// A pack trailer that claims a header longer than any pack can have is
// refused before the header is read.
func TestPackHeaderBound(t *testing.T) {
	inner := mem.New()
	initRepo(t, inner, smallOptions())
	id := repo.ID{6}
	// A 1 GiB pack whose last 64 KiB end in a header length of 256 MiB.
	tail := make([]byte, 64<<10)
	tail[len(tail)-1] = 0x10
	be := &tailBackend{Backend: inner, h: repo.Handle{Type: repo.PackFile, Name: id.String()}, size: 1 << 30, tail: tail}
	r := openRepo(t, be)
	_, err := r.ReadPackHeader(t.Context(), id, be.size)
	if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "header length") {
		t.Errorf("read pack header: %v, want ErrCorrupt about the header length", err)
	}
	if be.loads != 1 {
		t.Errorf("%d loads, want the tail's only", be.loads)
	}
}

// tailBackend serves one object of size bytes of which only the last ones,
// tail, may be read.
type tailBackend struct {
	*mem.Backend
	h     repo.Handle
	size  int64
	tail  []byte
	loads int
}

func (b *tailBackend) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(io.Reader) error) error {
	if h != b.h {
		return b.Backend.Load(ctx, h, offset, length, fn)
	}
	b.loads++
	start := b.size - int64(len(b.tail))
	if offset < start || length == 0 || offset+length > b.size {
		return fmt.Errorf("load %s: offset %d length %d outside the tail", h, offset, length)
	}
	return fn(bytes.NewReader(b.tail[offset-start : offset-start+length]))
}

// A pack header entry longer than the blob limit makes that blob bad in
// check --read-data, without a buffer of its length: the blob's bytes are
// hashed for the pack's name and dropped.
func TestCheckPackBlobBound(t *testing.T) {
	inner := mem.New()
	initRepo(t, inner, smallOptions())
	k := specUnwrap(t, inner, password)
	const dataLen = 64<<20 + repo.Overhead + 1
	hdr := []byte{byte(repo.DataBlob), byte(repo.CompressionZstd)}
	hdr = binary.LittleEndian.AppendUint32(hdr, dataLen)
	hdr = binary.LittleEndian.AppendUint32(hdr, 1000)
	hdr = append(hdr, make([]byte, repo.IDSize)...)
	tail := specSeal(t, k.enc[:], hdr)
	tail = binary.LittleEndian.AppendUint32(tail, uint32(len(tail)))
	pack := &virtualPack{dataLen: dataLen, tail: tail}
	hasher := blake3.New()
	if _, err := io.Copy(hasher, io.NewSectionReader(pack, 0, pack.size())); err != nil {
		t.Fatal(err)
	}
	var id repo.ID
	hasher.Sum(id[:0])
	be := &packBackend{Backend: inner, h: repo.Handle{Type: repo.PackFile, Name: id.String()}, pack: pack}
	r := openRepo(t, be)

	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	entries, bad, err := r.CheckPack(t.Context(), id, pack.size())
	runtime.ReadMemStats(&m1)
	if err != nil || len(entries) != 1 {
		t.Fatalf("check pack: %d entries, %v", len(entries), err)
	}
	if len(bad) != 1 || !errors.Is(bad[0].Err, repo.ErrCorrupt) || !strings.Contains(bad[0].Err.Error(), "blob limit") {
		t.Errorf("bad blobs %v; want the one over the blob limit", bad)
	}
	if n := m1.TotalAlloc - m0.TotalAlloc; n > 16<<20 {
		t.Errorf("checking the pack allocated %d bytes", n)
	}
}

// virtualPack is a pack of dataLen zero bytes followed by tail, made up
// as it is read.
type virtualPack struct {
	dataLen int64
	tail    []byte
}

func (p *virtualPack) size() int64 { return p.dataLen + int64(len(p.tail)) }

func (p *virtualPack) ReadAt(b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) && off < p.size() {
		if off < p.dataLen {
			m := int(min(int64(len(b)-n), p.dataLen-off))
			clear(b[n : n+m])
			n += m
			off += int64(m)
			continue
		}
		m := copy(b[n:], p.tail[off-p.dataLen:])
		n += m
		off += int64(m)
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// packBackend serves one virtual pack beside the objects of a mem.Backend.
type packBackend struct {
	*mem.Backend
	h    repo.Handle
	pack *virtualPack
}

func (b *packBackend) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(io.Reader) error) error {
	if h != b.h {
		return b.Backend.Load(ctx, h, offset, length, fn)
	}
	if length == 0 {
		length = b.pack.size() - offset
	}
	if offset < 0 || offset+length > b.pack.size() {
		return fmt.Errorf("load %s: range past the end: %w", h, io.ErrUnexpectedEOF)
	}
	return fn(io.NewSectionReader(b.pack, offset, length))
}
