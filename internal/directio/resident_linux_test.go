package directio

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestResident writes a file (its pages stay cached), then evicts one page
// and expects both ways of asking to see the difference.
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
		if n, err := residentMincore(fd, size); err != nil || n != want {
			t.Errorf("mincore: %d resident bytes, %v; want %d", n, err, want)
		}
		if got := Resident(f, size); got != (want == size) {
			t.Errorf("Resident = %v with %d of %d bytes cached", got, want, size)
		}
	}
	check(size)
	if Resident(f, 0) {
		t.Error("an empty range is resident")
	}
	if err := unix.Fdatasync(fd); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(fd, 1<<20, 4096, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	if n, _ := ResidentBytes(fd, size); n == size {
		t.Skip("this file system keeps evicted pages (tmpfs?)")
	}
	check(size - 4096)
	if !Resident(f, 1<<20) {
		t.Error("the first MiB, still cached, is not resident")
	}
}
