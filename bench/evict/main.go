//go:build linux

// Command evict drops the page cache of every regular file under the given
// paths, without root: sync, then posix_fadvise(POSIX_FADV_DONTNEED) over
// each whole file. bench/run.sh runs it before each command of a cold-cache
// measurement (on the data, the repository and the tool's own caches) when
// it cannot write /proc/sys/vm/drop_caches, so "cold" never quietly means
// warm.
//
// DONTNEED drops clean pages only, hence the sync first. What it cannot
// drop (pages another process keeps mapped or locked, directory and inode
// caches) stays; -check counts the file pages still resident afterwards
// with mincore(2) and prints them, so the report can say how cold it was.
//
// Usage: evict [-check [-v]] [-q] PATH...
//
// Linux only, as bench/run.sh is.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "evict:", err)
		os.Exit(1)
	}
}

// stats is what one run did.
type stats struct {
	files, bytes int64
	resident     int64 // bytes still in the page cache afterwards (-check)
	verbose      bool  // name the files that kept pages
	out          io.Writer
}

func run(args []string, stdout io.Writer) error {
	fl := flag.NewFlagSet("evict", flag.ContinueOnError)
	check := fl.Bool("check", false, "afterwards, count the bytes still in the page cache (mincore)")
	quiet := fl.Bool("q", false, "print nothing")
	verbose := fl.Bool("v", false, "with -check, also name each file that kept pages in the cache, with how many bytes")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() == 0 {
		return errors.New("usage: evict [-check [-v]] [-q] PATH...")
	}
	unix.Sync() // dirty pages cannot be dropped
	st := stats{verbose: *verbose && *check, out: stdout}
	for _, root := range fl.Args() {
		if err := evictTree(root, *check, &st); err != nil {
			return err
		}
	}
	if !*quiet {
		fmt.Fprintf(stdout, "evicted %d files, %d bytes", st.files, st.bytes)
		if *check {
			fmt.Fprintf(stdout, "; %d bytes still resident", st.resident)
		}
		fmt.Fprintln(stdout)
	}
	return nil
}

func evictTree(root string, check bool, st *stats) error {
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("walk %s: %w", path, err)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		return evictFile(path, check, st)
	})
}

func evictFile(path string, check bool, st *stats) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	fd := int(f.Fd())
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", path, err)
	}
	st.files++
	st.bytes += fi.Size()
	if check && fi.Size() > 0 {
		n, err := residentBytes(fd, fi.Size())
		if err != nil {
			return fmt.Errorf("mincore %s: %w", path, err)
		}
		st.resident += n
		if n > 0 && st.verbose {
			fmt.Fprintf(st.out, "resident %d %s\n", n, path)
		}
	}
	return nil
}

// residentBytes counts the file's pages that are in the page cache.
func residentBytes(fd int, size int64) (int64, error) {
	m, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	// x/sys/unix has no wrapper for mincore.
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return 0, e
	}
	var n int64
	for i, v := range vec {
		if v&1 != 0 {
			n += min(page, size-int64(i)*page)
		}
	}
	return n, nil
}
