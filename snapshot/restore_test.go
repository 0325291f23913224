package snapshot

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWholePages(t *testing.T) {
	const pg = 4096
	for _, tc := range []struct {
		off       int64
		n         int
		start, ln int64
	}{
		{0, 0, 0, 0},
		{0, 1, 0, 0},
		{0, pg - 1, 0, 0},
		{0, pg, 0, pg},
		{0, pg + 1, 0, pg},
		{1, pg, pg, 0},           // inside two pages, neither whole
		{1, 2*pg - 1, pg, pg},    // ends at a boundary
		{pg - 1, 2, pg, 0},       // straddles a boundary
		{pg - 1, pg + 1, pg, pg}, // starts one byte before a page
		{pg, 3 * pg, pg, 3 * pg},
		{10, 10, pg, 0}, // inside one page
		{5*pg + 7, 10 * pg, 6 * pg, 9 * pg},
	} {
		start, ln := wholePages(tc.off, tc.n, pg)
		if start != tc.start || ln != tc.ln {
			t.Errorf("wholePages(%d, %d) = %d, %d; want %d, %d", tc.off, tc.n, start, ln, tc.start, tc.ln)
		}
		if ln > 0 && (start < tc.off || start+ln > tc.off+int64(tc.n)) {
			t.Errorf("wholePages(%d, %d) = %d, %d reaches outside the range", tc.off, tc.n, start, ln)
		}
	}
}

// allocate reserves the blocks and leaves the size alone.
func TestAllocate(t *testing.T) {
	for _, size := range []int64{0, 1, 4095, 1 << 20} {
		name := filepath.Join(t.TempDir(), "f")
		f, err := os.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		if err := allocate(f, size); err != nil {
			t.Fatal(err)
		}
		fi, err := f.Stat()
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() != size {
			t.Fatalf("size %d after allocate, want %d", fi.Size(), size)
		}
		if blocks := allocatedBytes(fi); blocks >= 0 && blocks < size {
			t.Fatalf("%d bytes allocated for a file of %d", blocks, size)
		}
	}
}
