package directio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestAlloc(t *testing.T) {
	for _, n := range []int{0, 1, Align - 1, Align, Align + 1, 1 << 20} {
		b := Alloc(n)
		if len(b) != n || cap(b)%Align != 0 || cap(b) < n {
			t.Fatalf("Alloc(%d): len %d cap %d", n, len(b), cap(b))
		}
		if cap(b) > 0 && !Aligned(b) {
			t.Fatalf("Alloc(%d) is not aligned", n)
		}
	}
	if Aligned(Alloc(2 * Align)[1:]) {
		t.Fatal("Aligned says yes to a slice one byte past a boundary")
	}
}

// TestWriteRead writes files of awkward lengths the way the pack spooler
// does (aligned pieces, then a tail) and reads every kind of range back.
func TestWriteRead(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 100, Align - 1, Align, Align + 1, 3*Align + 17, 1<<20 + 5} {
		want := make([]byte, size)
		for i := range want {
			want[i] = byte(rng.Uint32())
		}
		name := filepath.Join(dir, "f")
		os.Remove(name)
		f, err := Create(name, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("size %d: direct %v", size, f.Direct())
		// Aligned full blocks in pieces, then whatever is left.
		rest := want
		for len(rest) >= 2*Align {
			b := Alloc(2 * Align)
			copy(b, rest)
			if err := f.WriteFull(b); err != nil {
				t.Fatal(err)
			}
			rest = rest[2*Align:]
		}
		b := Alloc(len(rest))
		copy(b, rest)
		if err := f.WriteFull(b); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		if got, _ := os.ReadFile(name); !bytes.Equal(got, want) {
			t.Fatalf("size %d: file differs from what was written", size)
		}

		r, err := Open(name)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 50; i++ {
			off := rng.IntN(size + 1)
			n := rng.IntN(size - off + 1)
			p := make([]byte, n)
			if i%2 == 0 {
				p = Alloc(n)
			}
			if err := r.ReadFullAt(p, int64(off)); err != nil {
				t.Fatalf("size %d: read %d at %d: %v", size, n, off, err)
			}
			if !bytes.Equal(p, want[off:off+n]) {
				t.Fatalf("size %d: read %d at %d: wrong bytes", size, n, off)
			}
		}
		// Past the end is an error, never a short success.
		if err := r.ReadFullAt(make([]byte, 10), int64(max(size-5, 0))); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("size %d: read past the end: %v", size, err)
		}
		r.Close()
	}
}

// An unaligned buffer on a direct file still writes (through the page
// cache).
func TestWriteUnaligned(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	f, err := Create(name, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Repeat([]byte("snap"), 3000)
	if err := f.WriteFull(Alloc(len(want) + 1)[1:][:0]); err != nil {
		t.Fatal(err)
	}
	if err := f.WriteFull(want); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if got, _ := os.ReadFile(name); !bytes.Equal(got, want) {
		t.Fatal("file differs")
	}
	if _, err := Create(name, 0o600); !errors.Is(err, os.ErrExist) {
		t.Fatalf("Create over an existing file: %v", err)
	}
}

// TestBlockReader: reads of any size at any offset, in order and not,
// come back as the file has them; past the end they come back short, with
// no error; Release in between changes nothing.
func TestBlockReader(t *testing.T) {
	const size = 2*HugePage + 12345
	rng := rand.New(rand.NewPCG(5, 6))
	want, f := randomFile(t, rng, size)
	r := NewBlockReader(f)
	defer r.Release()
	for off := 0; off < size; {
		p := make([]byte, 1+rng.IntN(300<<10))
		n, err := r.ReadAt(p, int64(off))
		if err != nil || n != min(len(p), size-off) || !bytes.Equal(p[:n], want[off:off+n]) {
			t.Fatalf("ReadAt(%d at %d) = %d, %v", len(p), off, n, err)
		}
		off += n
	}
	readRandomly(t, r, rng, want, 300, 50, 3*HugePage, "")
}

// readRandomly reads n ranges of up to maxLen bytes at random offsets,
// some past the end, calling Release every releaseEvery reads, and checks
// each against want: the file's bytes, cut short only at its end.
func readRandomly(t *testing.T, r *BlockReader, rng *rand.Rand, want []byte, n, releaseEvery, maxLen int, what string) {
	t.Helper()
	size := len(want)
	for i := range n {
		if i%releaseEvery == 0 {
			r.Release()
		}
		off := rng.IntN(size + 10)
		p := make([]byte, rng.IntN(maxLen))
		got, err := r.ReadAt(p, int64(off))
		wantN := max(0, min(len(p), size-off))
		if err != nil || got != wantN || !bytes.Equal(p[:got], want[min(off, size):min(off, size)+got]) {
			t.Fatalf("%sReadAt(%d at %d) = %d, %v; want %d bytes", what, len(p), off, got, err, wantN)
		}
	}
}

// TestBlockReaderAhead: a reader that reads ahead serves the same bytes,
// front to back up to its end, past it, out of order and after Release;
// and it does read ahead while the caller is inside a range.
func TestBlockReaderAhead(t *testing.T) {
	const size = 3*HugePage + 54321
	rng := rand.New(rand.NewPCG(7, 8))
	want, f := randomFile(t, rng, size)
	for _, end := range []int64{HugePage / 2, HugePage, 2*HugePage + 777, size, size + 5*HugePage} {
		r := NewBlockReaderAhead(f, end)
		start := int64(rng.IntN(1000))
		for off := start; off < min(end, size); {
			p := make([]byte, min(int64(1+rng.IntN(400<<10)), end-off))
			n, err := r.ReadAt(p, off)
			if err != nil || n != int(min(int64(len(p)), size-off)) || !bytes.Equal(p[:n], want[off:off+int64(n)]) {
				t.Fatalf("end %d: ReadAt(%d at %d) = %d, %v", end, len(p), off, n, err)
			}
			if r.off+int64(r.n) < min(end, size) && r.n == r.bp.size && r.ahead == nil {
				t.Fatalf("end %d: at %d, no read ahead of the block at %d", end, off, r.off)
			}
			if r.ahead != nil && r.ahead.off >= end {
				t.Fatalf("end %d: reads ahead at %d, past the end", end, r.ahead.off)
			}
			off += int64(n)
		}
		readRandomly(t, r, rng, want, 50, 10, 2*HugePage, fmt.Sprintf("end %d: ", end))
		r.Release()
		if r.ahead != nil || r.block != nil {
			t.Fatal("Release kept a block")
		}
	}
}

// randomFile writes size random bytes to a new file and opens it for
// reading, direct where the file system allows.
func randomFile(t *testing.T, rng *rand.Rand, size int) ([]byte, *File) {
	t.Helper()
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(rng.Uint32())
	}
	name := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(name, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Open(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return want, f
}

// A direct write the file system refuses (EINVAL, provoked here with a
// misaligned buffer) is written through the page cache instead, and the
// file stays so.
func TestWriteAtRefused(t *testing.T) {
	want := bytes.Repeat([]byte("0123456789abcdef"), 2*Align/16)
	path := filepath.Join(t.TempDir(), "f")
	f, err := Create(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !f.Direct() {
		t.Skip("the file system does not do direct I/O")
	}
	p := Alloc(len(want) + 1)[1:] // misaligned
	copy(p, want)
	if n, err := f.WriteAt(p, 0); n != len(p) || err != nil {
		t.Fatalf("WriteAt of a misaligned buffer: %d, %v", n, err)
	}
	if f.Direct() {
		t.Error("still direct after a refused write")
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("file holds %d bytes (%v), want the %d written", len(got), err, len(want))
	}
}

func TestAllocHuge(t *testing.T) {
	for _, n := range []int{0, 1, Align, HugePage - 1, HugePage, HugePage + 1, 3*HugePage + 5} {
		h := AllocHuge(n)
		want := (max(n, 1) + HugePage - 1) &^ (HugePage - 1)
		if len(h.B) != n || cap(h.B) != want || !Aligned(h.B[:1]) {
			t.Fatalf("AllocHuge(%d): len %d cap %d, aligned %v", n, len(h.B), cap(h.B), Aligned(h.B[:1]))
		}
		b := h.B[:cap(h.B)]
		for i := range b {
			if b[i] != 0 {
				t.Fatalf("AllocHuge(%d): byte %d is %d, not zero", n, i, b[i])
			}
			b[i] = byte(i)
		}
		h.Free()
		h.Free() // twice is harmless
		if h.B != nil {
			t.Fatal("B is still set after Free")
		}
	}
}

// A direct read fills a huge buffer like any other.
func TestAllocHugeDirectRead(t *testing.T) {
	want, f := randomFile(t, rand.New(rand.NewPCG(9, 10)), HugePage+3*Align+100)
	h := AllocHuge(2 * HugePage)
	defer h.Free()
	n, err := f.ReadUpTo(h.B, 0)
	if err != nil || !bytes.Equal(h.B[:n], want) {
		t.Fatalf("read %d bytes (%v), want the file's %d", n, err, len(want))
	}
}
