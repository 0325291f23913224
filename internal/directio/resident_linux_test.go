package directio

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestResident writes a file (its pages stay cached), then evicts its
// tail and expects cachestat, mincore and Resident to agree on it.
func TestResident(t *testing.T) {
	name := filepath.Join(t.TempDir(), "table")
	data := make([]byte, 3<<20+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(name, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	size := int64(len(data))
	fd := int(f.Fd())
	check := func(want int64) {
		t.Helper()
		if n, err := ResidentBytes(fd, size); err != nil || n != want {
			t.Errorf("cachestat: %d resident bytes, %v; want %d", n, err, want)
		}
		if n, err := residentMincore(fd, 0, size); err != nil || n != want {
			t.Errorf("mincore: %d resident bytes, %v; want %d", n, err, want)
		}
		if got := Resident(f, 0, size); got != (want == size) {
			t.Errorf("Resident = %v with %d of %d bytes cached", got, want, size)
		}
	}
	check(size)
	if Resident(f, 0, 0) {
		t.Error("an empty range is resident")
	}
	if err := unix.Fdatasync(fd); err != nil {
		t.Fatal(err)
	}
	// Evict from 2 MiB to the end. The cache holds folios of up to 2 MiB,
	// and only those wholly in the range go.
	const cut = 2 << 20
	if err := unix.Fadvise(fd, cut, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if n, _ := ResidentBytes(fd, size); n == size {
		t.Skip("this file system kept the evicted pages (tmpfs?)")
	}
	kept, err := residentMincore(fd, cut, size-cut)
	if err != nil {
		t.Fatal(err)
	}
	first, err := residentMincore(fd, 0, cut)
	if err != nil {
		t.Fatal(err)
	}
	check(first + kept)
	if kept != 0 {
		t.Skipf("%d bytes after %d stayed (folios larger than the range)", kept, cut)
	}
	if first == cut && (!Resident(f, 0, cut) || !Resident(f, 4096, 5000) || !Resident(f, 100, cut-100)) {
		t.Error("a range still cached is not resident")
	}
	if Resident(f, cut+4095, 2) || Resident(f, cut+100, 10) || Resident(f, cut-1, 2) {
		t.Error("a range with a byte in the evicted part is resident")
	}
}
