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
// (cachestat(2), or mincore(2) before Linux 6.5) and prints them, so the
// report can say how cold it was.
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

	"golang.org/x/sys/unix"

	"github.com/snapbackup/snap/internal/directio"
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
	check := fl.Bool("check", false, "afterwards, count the bytes still in the page cache")
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
		n, err := directio.ResidentBytes(fd, fi.Size())
		if err != nil {
			return fmt.Errorf("count resident pages of %s: %w", path, err)
		}
		st.resident += n
		if n > 0 && st.verbose {
			fmt.Fprintf(st.out, "resident %d %s\n", n, path)
		}
	}
	return nil
}
