// Package local stores a repository in a directory on a local filesystem.
//
// Layout (see docs/design.md, "Layout"):
//
//	DIR/config
//	DIR/keys/<name>
//	DIR/data/<first two characters of name>/<name>
//	DIR/index/<name>
//	DIR/snapshots/<name>
//	DIR/tails/<prefix>-<hash>
//	DIR/locks/<name>
//
// Writes go to a temp file named ".tmp-*" in the final directory and are
// hard-linked into place, so an object is either whole under its name or
// absent. The filesystem must support hard links.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
)

const (
	dirMode    = 0o700
	tempPrefix = repo.TempPrefix
	// listBatch bounds how many directory entries List holds at once.
	listBatch = 1000
)

// Backend is a repository in a local directory. It holds no open files
// between calls and is safe for concurrent use, also by several processes.
type Backend struct {
	dir string
}

var (
	_ repo.Backend      = (*Backend)(nil)
	_ repo.PrefixLister = (*Backend)(nil)
)

// Create makes the directory layout of a new repository at dir. It does not
// write the config; the caller saves it through the Backend. It fails if dir
// already holds a repository.
func Create(dir string) (*Backend, error) {
	dir = filepath.Clean(dir)
	cfg := filepath.Join(dir, string(repo.ConfigFile))
	if _, err := os.Lstat(cfg); err == nil {
		return nil, fmt.Errorf("create repository at %s: a repository already exists there", dir)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("create repository at %s: %w", dir, err)
	}
	dirs := []string{dir}
	for _, t := range repo.AllFileTypes {
		if t != repo.ConfigFile {
			dirs = append(dirs, filepath.Join(dir, string(t)))
		}
	}
	for i := range 256 {
		dirs = append(dirs, filepath.Join(dir, string(repo.PackFile), fmt.Sprintf("%02x", i)))
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return nil, fmt.Errorf("create repository at %s: %w", dir, err)
		}
	}
	// Make the new directories durable: each is an entry in its parent.
	for _, d := range []string{filepath.Dir(dir), dir, filepath.Join(dir, string(repo.PackFile))} {
		if err := syncDir(d); err != nil {
			return nil, fmt.Errorf("create repository at %s: %w", dir, err)
		}
	}
	return &Backend{dir: dir}, nil
}

// Open opens the existing repository at dir.
func Open(dir string) (*Backend, error) {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(filepath.Join(dir, string(repo.ConfigFile)))
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
		return nil, fmt.Errorf("%w at %s (run snap init)", repo.ErrNoRepository, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("open repository at %s: %w", dir, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("open repository at %s: config is not a regular file", dir)
	}
	return &Backend{dir: dir}, nil
}

// Location returns the repository directory.
func (b *Backend) Location() string { return b.dir }

// Path returns the file that holds h, or "" if h is not a valid handle.
func (b *Backend) Path(h repo.Handle) string {
	p, err := b.path(h)
	if err != nil {
		return ""
	}
	return p
}

func (b *Backend) path(h repo.Handle) (string, error) {
	if err := h.Validate(); err != nil {
		return "", err
	}
	switch h.Type {
	case repo.ConfigFile:
		return filepath.Join(b.dir, string(repo.ConfigFile)), nil
	case repo.PackFile:
		return filepath.Join(b.dir, string(h.Type), h.Name[:2], h.Name), nil
	default:
		return filepath.Join(b.dir, string(h.Type), h.Name), nil
	}
}

// Save stores data under h. It writes a temp file in the final directory,
// syncs it and hard-links it to the final name: unlike rename, link fails
// if the name exists, so Save never overwrites.
func (b *Backend) Save(ctx context.Context, h repo.Handle, data []byte) error {
	if err := b.save(ctx, h, data); err != nil {
		return fmt.Errorf("save %s in %s: %w", h, b.dir, err)
	}
	return nil
}

func (b *Backend) save(ctx context.Context, h repo.Handle, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	final, err := b.path(h)
	if err != nil {
		return err
	}
	dir := filepath.Dir(final)
	f, tmp, err := b.createTemp(h.Type, dir)
	if err != nil {
		return err
	}
	if err := writeSync(f, data); err != nil {
		os.Remove(tmp)
		return err
	}
	err = os.Link(tmp, final)
	// After a successful link the temp is a second name for the object and
	// only garbage; a crash before this Remove leaves a ".tmp-" file that
	// List ignores, so a failure to remove it is not Save's failure.
	os.Remove(tmp)
	if errors.Is(err, fs.ErrExist) {
		return repo.ErrExists
	}
	if err != nil {
		return err
	}
	return syncDir(dir)
}

// addedLater reports whether t came after the first repositories were
// made, so that a repository may have no directory for it: List takes the
// missing directory for an empty one and Save makes it.
func addedLater(t repo.FileType) bool { return t == repo.TailFile || t == repo.ClusterFile }

// createTemp creates a temp file in dir, the directory of objects of type
// t, making dir first where t was added later and it is missing. Only dir
// itself is made: a repository directory that vanished stays an error.
func (b *Backend) createTemp(t repo.FileType, dir string) (*directio.File, string, error) {
	f, tmp, err := directio.CreateTemp(dir, tempPrefix)
	if err == nil || !addedLater(t) || !errors.Is(err, fs.ErrNotExist) {
		return f, tmp, err
	}
	if err := os.Mkdir(dir, dirMode); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, "", err
	}
	if err := syncDir(filepath.Dir(dir)); err != nil {
		return nil, "", err
	}
	return directio.CreateTemp(dir, tempPrefix)
}

// writeSync writes data to f, syncs and closes it. Data in an aligned
// buffer (a whole pack from the packer) goes around the page cache.
func writeSync(f *directio.File, data []byte) error {
	err := f.WriteFull(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Load hands fn a reader of length bytes of h from offset (length 0: to the
// end). A range that does not lie within the object is an error.
func (b *Backend) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	f, rd, err := b.openRange(ctx, h, offset, length)
	if err != nil {
		return fmt.Errorf("load %s in %s: %w", h, b.dir, err)
	}
	defer f.Close()
	if rd.Size() >= directMin && !directio.Resident(f, offset, rd.Size()) {
		// Large ranges (packs for restore and check) are read once: around
		// the page cache, where the system allows it, unless they are in
		// it already (one copy, no I/O).
		df, err := directio.Open(f.Name())
		if err == nil && df.Direct() {
			defer df.Close()
			dr := newDirectReader(df, offset, offset+rd.Size())
			defer dr.release()
			return fn(dr)
		}
		if err == nil {
			df.Close()
		}
	}
	// fn's error is the caller's own; return it as is.
	return fn(rd)
}

func (b *Backend) openRange(ctx context.Context, h repo.Handle, offset, length int64) (*os.File, *io.SectionReader, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if offset < 0 || length < 0 {
		return nil, nil, fmt.Errorf("invalid range offset %d length %d", offset, length)
	}
	p, err := b.path(h)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, repo.ErrNotFound
	}
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	size := fi.Size()
	if length == 0 {
		length = size - offset
	}
	// Objects are immutable, so checking the size once is enough. Written
	// so that offset+length cannot overflow.
	if offset > size || length > size-offset {
		f.Close()
		return nil, nil, fmt.Errorf("range offset %d length %d past end of %d-byte object: %w",
			offset, length, size, io.ErrUnexpectedEOF)
	}
	return f, io.NewSectionReader(f, offset, length), nil
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h repo.Handle) (repo.FileInfo, error) {
	fi, err := b.stat(ctx, h)
	if err != nil {
		return repo.FileInfo{}, fmt.Errorf("stat %s in %s: %w", h, b.dir, err)
	}
	return repo.FileInfo{Name: h.Name, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

func (b *Backend) stat(ctx context.Context, h repo.Handle) (fs.FileInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := b.path(h)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, repo.ErrNotFound
	}
	return fi, err
}

// List calls fn for every object of type t. Temp files are skipped.
func (b *Backend) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	return b.listWrapped(ctx, t, nil, fn)
}

func (b *Backend) listWrapped(ctx context.Context, t repo.FileType, match func(string) bool, fn func(repo.FileInfo) error) error {
	var fnErr error
	err := b.listMatching(ctx, t, match, func(fi repo.FileInfo) error {
		fnErr = fn(fi)
		return fnErr
	})
	if err != nil && err != fnErr {
		return fmt.Errorf("list %s in %s: %w", t, b.dir, err)
	}
	// fn's error is the caller's own; return it as is.
	return err
}

// ListPrefix lists the objects of type t whose names start with prefix.
// A directory has no cheaper way than to read every name; the filter
// saves the caller the rest.
func (b *Backend) ListPrefix(ctx context.Context, t repo.FileType, prefix string, fn func(repo.FileInfo) error) error {
	if t == repo.ConfigFile {
		return fmt.Errorf("list %s in %s: no prefix listing of the config", t, b.dir)
	}
	return b.listWrapped(ctx, t, func(name string) bool { return strings.HasPrefix(name, prefix) }, fn)
}

func (b *Backend) list(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	return b.listMatching(ctx, t, nil, fn)
}

// listMatching lists the objects of t whose names match (nil: all). The
// names are matched before each file is stat'ed, so a prefix listing of
// a fleet's index costs a read of the directory, not a stat of every
// host's files.
func (b *Backend) listMatching(ctx context.Context, t repo.FileType, match func(string) bool, fn func(repo.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	switch t {
	case repo.ConfigFile:
		fi, err := os.Stat(filepath.Join(b.dir, string(repo.ConfigFile)))
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(repo.FileInfo{Name: "", Size: fi.Size()})
	case repo.PackFile:
		for i := range 256 {
			if err := ctx.Err(); err != nil {
				return err
			}
			err := listDir(filepath.Join(b.dir, string(t), fmt.Sprintf("%02x", i)), match, fn)
			if err != nil {
				return err
			}
		}
		return nil
	case repo.KeyFile, repo.IndexFile, repo.SnapshotFile, repo.TailFile, repo.ClusterFile, repo.LockFile:
		dir := filepath.Join(b.dir, string(t))
		if addedLater(t) {
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				// Nothing of t saved yet, unless the repository is gone.
				_, err = os.Stat(b.dir)
				return err
			}
		}
		return listDir(dir, match, fn)
	default:
		return fmt.Errorf("invalid file type %q", t)
	}
}

// listDir calls fn for each regular file in dir that is not a temp file.
func listDir(dir string, match func(string) bool, fn func(repo.FileInfo) error) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	for {
		ents, err := d.ReadDir(listBatch)
		for _, e := range ents {
			if strings.HasPrefix(e.Name(), tempPrefix) || !e.Type().IsRegular() || match != nil && !match(e.Name()) {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed since ReadDir
			}
			if err != nil {
				return err
			}
			if err := fn(repo.FileInfo{Name: e.Name(), Size: fi.Size(), ModTime: fi.ModTime()}); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// Remove deletes h.
func (b *Backend) Remove(ctx context.Context, h repo.Handle) error {
	if err := b.remove(ctx, h); err != nil {
		return fmt.Errorf("remove %s in %s: %w", h, b.dir, err)
	}
	return nil
}

func (b *Backend) remove(ctx context.Context, h repo.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := b.path(h)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return repo.ErrNotFound
		}
		return err
	}
	return syncDir(filepath.Dir(p))
}

// Close does nothing: the Backend holds no resources between calls.
func (b *Backend) Close() error { return nil }

// syncDir makes changes to the entries of dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	// Some filesystems cannot sync a directory; there is nothing more to do
	// on those.
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}
