package snapshot

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

// What a restore does for the entries of a version 2 tree (the dir kind)
// besides writing bytes: directories before what they hold, files under a
// temporary name until durable, links once their files are in place, and
// modes and mtimes last, directories deepest first (writing into a
// directory changes its mtime).

// tempPrefix starts the name a regular file is written under until it is
// whole and durable.
const tempPrefix = ".snap-tmp-"

func tempName(path string) string {
	return filepath.Join(filepath.Dir(path), tempPrefix+filepath.Base(path))
}

// makeDirs creates the tree's directories, parents first (Validate
// guarantees the order), owner-writable until finishEntries gives them
// their modes.
func makeDirs(dir string, files []File) error {
	for _, f := range files {
		if f.Type != TypeDir {
			continue
		}
		if err := os.Mkdir(filepath.Join(dir, filepath.FromSlash(f.Name)), 0o700); err != nil {
			return fmt.Errorf("create directory %s: %w", f.Name, err)
		}
	}
	return nil
}

// finishEntries puts every entry in its final state once the regular
// files' bytes are durable: with temp names, each file gets its mode and
// mtime and is renamed to its name; then hard links and symlinks are
// made, then the directories get their modes and mtimes, and each is
// fsynced, deepest first.
func finishEntries(dir string, files []File, written map[string]*restoreFile, temp bool) error {
	path := func(name string) string { return filepath.Join(dir, filepath.FromSlash(name)) }
	var dirs []File
	for _, f := range files {
		p := path(f.Name)
		switch f.Type {
		case TypeFile:
			rf := written[f.Name]
			if rf == nil || !temp {
				continue // written last (CURRENT), or a freeze kind's file in place
			}
			if err := setMeta(rf.name, f, false); err != nil {
				return err
			}
			if err := os.Rename(rf.name, p); err != nil {
				return fmt.Errorf("rename %s into place: %w", f.Name, err)
			}
		case TypeHardlink:
			if err := os.Link(path(f.Target), p); err != nil {
				return fmt.Errorf("hard link %s to %s: %w", f.Name, f.Target, err)
			}
		case TypeSymlink:
			if err := os.Symlink(f.Target, p); err != nil {
				return fmt.Errorf("symlink %s: %w", f.Name, err)
			}
			if err := setMeta(p, f, true); err != nil {
				return err
			}
		case TypeDir:
			dirs = append(dirs, f)
		}
	}
	// Deepest first: a directory's mtime is set after everything in it.
	slices.Reverse(dirs)
	for _, d := range dirs {
		if err := SyncDir(path(d.Name)); err != nil {
			return err
		}
		if err := setMeta(path(d.Name), d, false); err != nil {
			return err
		}
	}
	return nil
}

// setMeta gives p the entry's mode and mtime (a symlink: only its own
// mtime, never its target's).
func setMeta(p string, f File, symlink bool) error {
	mt := time.Unix(0, f.MtimeNs)
	if symlink {
		ts := []unix.Timespec{unix.NsecToTimespec(f.MtimeNs), unix.NsecToTimespec(f.MtimeNs)}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set the mtime of %s: %w", f.Name, err)
		}
		return nil
	}
	if err := os.Chmod(p, fileMode(f.Mode)); err != nil {
		return fmt.Errorf("set the mode of %s: %w", f.Name, err)
	}
	if err := os.Chtimes(p, mt, mt); err != nil {
		return fmt.Errorf("set the mtime of %s: %w", f.Name, err)
	}
	return nil
}

// fileMode turns a tree's mode bits (Unix layout) into an os.FileMode.
func fileMode(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}
