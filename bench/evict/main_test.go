//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestEvictCountsEveryFile(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "a", "b"), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, size := range map[string]int{"x": 5000, "a/y": 1, "a/b/z": 0} {
		if err := os.WriteFile(filepath.Join(dir, name), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("x", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"-check", dir}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "evicted 3 files, 5001 bytes; ") {
		t.Errorf("output %q, want 3 files (the symlink skipped) and 5001 bytes", out.String())
	}
}

func TestEvictMissingPath(t *testing.T) {
	err := run([]string{filepath.Join(t.TempDir(), "nope")}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("err = %v, want one naming the missing path", err)
	}
}

func TestEvictNeedsAPath(t *testing.T) {
	if err := run(nil, &bytes.Buffer{}); err == nil {
		t.Fatal("no error without a path")
	}
}

// On a disk file system the pages of a written, synced file leave the
// page cache; tmpfs keeps them (it has nowhere else), so there the test
// has nothing to show.
func TestEvictDropsPages(t *testing.T) {
	dir := os.Getenv("EVICT_TEST_DIR")
	if dir == "" {
		dir = "/var/tmp"
	}
	var sfs unixStatfs
	if statfs(dir, &sfs) != nil || sfs.isTmpfs() {
		t.Skipf("%s is not on a disk file system", dir)
	}
	d, err := os.MkdirTemp(dir, "evict-test")
	if err != nil {
		t.Skip(err)
	}
	defer os.RemoveAll(d)
	name := filepath.Join(d, "f")
	if err := os.WriteFile(name, bytes.Repeat([]byte("x"), 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(name); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run([]string{"-check", d}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(out.String(), "; 0 bytes still resident\n") {
		t.Errorf("output %q: pages stayed in the page cache", out.String())
	}
}

// Pages another mapping holds cannot be dropped: -check -v names the file.
func TestEvictNamesWhatStayed(t *testing.T) {
	name := filepath.Join(t.TempDir(), "mapped")
	if err := os.WriteFile(name, bytes.Repeat([]byte("y"), 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, 64<<10, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	var sum byte
	for i := 0; i < len(m); i += 4096 {
		sum += m[i] // fault every page in
	}
	_ = sum
	if err := unix.Mlock(m); err != nil {
		t.Skipf("mlock: %v", err)
	}
	defer unix.Munlock(m)
	var out bytes.Buffer
	if err := run([]string{"-check", "-v", filepath.Dir(name)}, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "resident 65536 "+name+"\n") {
		t.Errorf("output %q, want the locked file named with 65536 bytes", out.String())
	}
}
