package source

import (
	"path/filepath"
	"testing"

	"github.com/snapbackup/snap/internal/directio"
)

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
	if gone, err := directio.Evict(filepath.Join(dir, "000071.sst")); err != nil || !gone {
		t.Skipf("the table's pages stayed in the page cache (%v)", err)
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
