package snapshot

import (
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/snapbackup/snap/internal/directio"
)

// allocatedBytes is the space the file system holds for a file.
func allocatedBytes(fi fs.FileInfo) int64 {
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestKernelAtLeast(t *testing.T) {
	for _, tc := range []struct {
		release string
		want    bool
	}{
		{"6.1.0-13-amd64", true},
		{"5.8.0", true},
		{"5.10.0-28-cloud-amd64", true},
		{"5.7.19", false},
		{"4.19.0-26-amd64", false},
		{"10.0", true},
		{"", false},
		{"linux", false},
	} {
		if got := kernelAtLeast(tc.release, 5, 8); got != tc.want {
			t.Errorf("kernelAtLeast(%q, 5, 8) = %v, want %v", tc.release, got, tc.want)
		}
	}
}

// A restore into a directory leaves the files of direct writes to one
// syncfs, and fsyncs those that went through the page cache.
func TestRestoreSyncBatch(t *testing.T) {
	dir := t.TempDir()
	b, err := openSyncBatch(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b == nil {
		t.Skip("syncfs does not report errors on this kernel")
	}
	defer b.close()
	c := newFileCache(4)
	c.batch = b
	f := c.add(filepath.Join(dir, "f"), 3*directio.Align)
	if err := f.acquire(); err != nil {
		t.Fatal(err)
	}
	defer f.release()
	page := directio.Alloc(3 * directio.Align)
	page[0] = 'x'
	if err := f.writeAt(page, 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.wrote(len(page)); err != nil {
		t.Fatal(err)
	}
	if !f.synced.Load() {
		t.Fatal("not finished after its last byte")
	}
	if f.fh.Direct() == f.buffered.Load() {
		t.Fatalf("direct %v, buffered %v", f.fh.Direct(), f.buffered.Load())
	}
	if err := b.sync(); err != nil {
		t.Fatal(err)
	}
	if err := c.closeAll(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(f.name)
	if err != nil || len(got) != len(page) || got[0] != 'x' {
		t.Fatalf("%d bytes, %v", len(got), err)
	}
}
