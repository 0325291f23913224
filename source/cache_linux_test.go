package source

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/snapbackup/snap/internal/directio"
)

// dropCache evicts name's pages from the page cache and reports whether
// they went (tmpfs keeps them).
func dropCache(t *testing.T, name string) bool {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	if err := unix.Fdatasync(fd); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return !directio.Resident(f, fi.Size())
}

// A table whose every page is cached is read buffered: one copy, no I/O.
// Once a page is evicted, the next open reads it around the cache again
// (where the file system allows direct I/O).
func TestReaderCachedTableBuffered(t *testing.T) {
	const size = 2<<20 + 77
	dir, contents := writeFiles(t, map[string]int{"000071.sst": size})
	open := func() *Reader {
		r, err := NewFrozen(Listing{}, dir, nil).Open(File{Name: "000071.sst", Role: RoleTable, Length: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		if got := readAll(t, r); string(got) != string(contents["000071.sst"]) {
			t.Fatal("read bytes differ from the file")
		}
		return r
	}
	if r := open(); r.direct != nil {
		t.Error("a table cached whole is read with direct I/O")
	}
	if !dropCache(t, filepath.Join(dir, "000071.sst")) {
		t.Skip("this file system keeps evicted pages")
	}
	probe, err := directio.Open(filepath.Join(dir, "000071.sst"))
	if err != nil {
		t.Fatal(err)
	}
	direct := probe.Direct()
	probe.Close()
	if r := open(); (r.direct != nil) != direct {
		t.Errorf("an evicted table: direct read %v, want %v (the file system's O_DIRECT)", r.direct != nil, direct)
	}
}
