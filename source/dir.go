package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// DefaultLockFile is the file RocksDB and Pebble hold a lock on while a
// database is open.
const DefaultLockFile = "LOCK"

// DirOptions configure a directory source.
type DirOptions struct {
	// LockFile names the file, relative to the directory, whose lock the
	// store takes while it has the directory open; empty: no lock.
	LockFile string
	// Before runs (sh -c) before the directory is read, After once it was,
	// also when the backup failed: they may make a checkpoint and remove it.
	Before, After string
	Log           *slog.Logger
}

// Dir is the dir kind: a directory no one writes while it is read, a closed
// database or a checkpoint. Its listing is every entry under it: regular
// files (their bytes), directories, symlinks (never followed) and hard
// links (a later name of a listed file), each with its permissions and
// mtime. Special files are left out with a warning.
//
// While it reads, it holds a read lock (fcntl) on the store's lock file,
// which conflicts with the write lock an open RocksDB or Pebble holds on
// it: a live database is refused, and none can open the directory until
// the backup ends.
type Dir struct {
	path string
	o    DirOptions
}

// errInUse says another process holds a conflicting lock (readLock).
var errInUse = errors.New("the file is locked by another process")

var _ Source = (*Dir)(nil)

// NewDir returns the source for the directory at path.
func NewDir(path string, o DirOptions) *Dir {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return &Dir{path: filepath.Clean(path), o: o}
}

// Info names the kind and the directory.
func (d *Dir) Info() Info { return Info{Kind: KindDir, DataDir: d.path} }

// Freeze runs the before hook, takes the lock and lists the directory. The
// lock is held, and the after hook runs, until Release.
func (d *Dir) Freeze(ctx context.Context) (_ *Frozen, err error) {
	if d.o.Before != "" {
		if err := runHook(ctx, "--before", d.o.Before, d.path); err != nil {
			return nil, err
		}
	}
	after := func(ctx context.Context) error {
		if d.o.After == "" {
			return nil
		}
		return runHook(ctx, "--after", d.o.After, d.path)
	}
	defer func() {
		if err != nil {
			if aerr := after(context.WithoutCancel(ctx)); aerr != nil {
				err = errors.Join(err, aerr)
			}
		}
	}()
	fi, err := os.Stat(d.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("directory %s does not exist", d.path)
	case err != nil:
		return nil, fmt.Errorf("directory %s: %w", d.path, err)
	case !fi.IsDir():
		return nil, fmt.Errorf("%s is not a directory (%s); --source dir backs up a directory", d.path, fi.Mode().Type())
	}
	lock, lockContent, err := d.lock()
	if err != nil {
		return nil, err
	}
	release := func(ctx context.Context) error {
		var errs []error
		if lock != nil {
			errs = append(errs, lock.Close())
		}
		errs = append(errs, after(ctx))
		return errors.Join(errs...)
	}
	files, err := d.walk(lockContent)
	if err != nil {
		if lock != nil {
			lock.Close()
		}
		return nil, err
	}
	return NewFrozen(Listing{Files: files}, d.path, release), nil
}

// lock takes a read lock on the store's lock file, if there is one, and
// returns it open with its content. Closing any descriptor of the file
// drops a process's fcntl locks, so the file is read through this one
// and never opened again while the lock is held.
func (d *Dir) lock() (*os.File, []byte, error) {
	if d.o.LockFile == "" {
		return nil, nil, nil
	}
	name := filepath.Join(d.path, d.o.LockFile)
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		d.o.Log.Debug("no lock file; reading without a lock", "file", name)
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("open the store's lock file %s: %w", name, err)
	}
	pid, err := readLock(f)
	if err != nil {
		f.Close()
		switch {
		case errors.Is(err, errInUse) && pid > 0:
			return nil, nil, fmt.Errorf("%s is in use by process %d (it holds %s): stop it or back up a checkpoint", d.path, pid, name)
		case errors.Is(err, errInUse):
			return nil, nil, fmt.Errorf("%s is in use by another process (it holds %s): stop it or back up a checkpoint", d.path, name)
		}
		return nil, nil, fmt.Errorf("lock %s: %w", name, err)
	}
	content, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("read %s: %w", name, err)
	}
	return f, content, nil
}

// walk lists every entry under d.path, parents before what they hold. The
// store's lock file, held open, is served from lockContent.
func (d *Dir) walk(lockContent []byte) ([]File, error) {
	var files []File
	inodes := map[uint64]string{} // of regular files with more than one link
	err := filepath.WalkDir(d.path, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("read directory: %w", err)
		}
		if p == d.path {
			return nil
		}
		rel, err := filepath.Rel(d.path, p)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if err := ValidPath(name); err != nil {
			return fmt.Errorf("%s: %w; snap stores only names it can restore safely", p, err)
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return fmt.Errorf("stat %s: %w", p, err)
		}
		f := File{Name: name, Role: RoleFile, Mode: fi.Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), MtimeNs: fi.ModTime().UnixNano()}
		switch {
		case fi.IsDir():
			f.Type = EntryDir
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("read symlink %s: %w", p, err)
			}
			f.Type, f.Target = EntrySymlink, target
		case fi.Mode().IsRegular():
			id := identityOf(fi)
			if first, ok := inodes[id.Inode]; ok && id.Inode != 0 {
				f.Type, f.Target = EntryHardlink, first
				break
			}
			if nlink(fi) > 1 {
				inodes[id.Inode] = name
			}
			f.Length, f.Walked = fi.Size(), &id
			if lockContent != nil && name == d.o.LockFile {
				f.Content, f.Length, f.Walked = lockContent, int64(len(lockContent)), nil
			}
		default:
			d.o.Log.Warn("skipping a special file", "file", p, "type", fi.Mode().Type().String())
			return nil
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

func nlink(fi fs.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Nlink)
	}
	return 1
}

// hookTimeout bounds a --before or --after command.
const hookTimeout = 30 * time.Minute

// runHook runs cmd with sh -c, SNAP_PATH set to the directory. A failure
// shows the end of what it wrote to stderr.
func runHook(ctx context.Context, flag, cmd, dir string) error {
	ctx, cancel := context.WithTimeout(ctx, hookTimeout)
	defer cancel()
	c := exec.CommandContext(ctx, "sh", "-c", cmd)
	c.Env = append(os.Environ(), "SNAP_PATH="+dir)
	var stderr bytes.Buffer
	c.Stderr = &stderr
	c.Stdout = os.Stderr // a hook's chatter is for the log, not for --json's stdout
	if err := c.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 2000 {
			msg = "..." + msg[len(msg)-2000:]
		}
		if msg != "" {
			msg = ": " + msg
		}
		// %v: an *exec.ExitError is a cli.ExitCoder, and snap would exit
		// with the hook's status and lose this message.
		return fmt.Errorf("%s %q failed (%v)%s", flag, cmd, err, msg)
	}
	return nil
}
