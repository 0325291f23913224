package source

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/snapbackup/snap/internal/directio"
)

// ErrShortFile is wrapped by every error about a file on disk that ends
// before the bytes a snapshot needs from it. It is never survivable: storing
// the shorter file would make a database that silently lost writes.
var ErrShortFile = errors.New("file shorter than listed")

// ShortFileError reports a listed file that is shorter on disk than the
// snapshot needs. errors.Is(err, ErrShortFile) holds for it.
type ShortFileError struct {
	Name  string
	Dir   string
	Want  int64 // bytes the snapshot needs
	Found int64 // size on disk
	// Listed is true when Want is the length the server listed, false when
	// it is the size the file had when it was opened.
	Listed bool
}

func (e *ShortFileError) Error() string {
	if e.Listed {
		return fmt.Sprintf("file %s in %s is %d bytes, shorter than the %d bytes the server listed", e.Name, e.Dir, e.Found, e.Want)
	}
	return fmt.Sprintf("file %s in %s is %d bytes, shorter than the %d bytes it had when opened", e.Name, e.Dir, e.Found, e.Want)
}

func (e *ShortFileError) Unwrap() error { return ErrShortFile }

// Identity is the stat identity used to skip unchanged files.
type Identity struct {
	Size    int64
	MtimeNs int64
	Inode   uint64
	CtimeNs int64 // compared by the dir kind only: a server's files keep theirs from the freeze
}

// Reader reads exactly the snapshot bytes of one listed file. ReadAt may be
// called concurrently.
type Reader struct {
	name    string
	dir     string
	f       *os.File // nil for synthesized content
	direct  *directReader
	content []byte
	length  int64
	listed  bool // length came from the listing, not from a stat
	id      Identity
}

// ErrFileChanged is wrapped by the error about a listed file that, opened
// to be read, is not the file Frozen.Stat saw: replaced by another (a new
// inode), or an immutable file rewritten. The freeze rules this out, so it
// means something else writes to the data directory; reading on would store
// bytes that never belonged to the frozen database.
var ErrFileChanged = errors.New("listed file changed after it was planned")

// FileStat is what Frozen.Stat found of a listed file: what a backup needs
// to plan, without keeping the file open.
type FileStat struct {
	Length   int64    // bytes that belong to the snapshot, as Reader.Length
	Identity Identity // zero for synthesized files
	listed   bool     // Length is the listed length, not the size found
}

// statFile describes file in dir; see Frozen.Stat.
func statFile(dir string, file File) (FileStat, error) {
	if err := checkFile(file); err != nil {
		return FileStat{}, err
	}
	if file.Content != nil {
		return FileStat{Length: int64(len(file.Content))}, nil
	}
	fi, err := os.Stat(filepath.Join(dir, file.Name))
	if err != nil {
		return FileStat{}, statError(dir, file, err)
	}
	return fileStat(dir, file, fi)
}

// checkFile checks what the listing says of file.
func checkFile(file File) error {
	// ValidPath: a directory backup lists nested names; a FREEZE listing
	// never has a '/' (ParseFreezeReply refuses it).
	if err := ValidPath(file.Name); err != nil {
		return fmt.Errorf("open listed file %s: %w", quote(file.Name), err)
	}
	if file.Content == nil && file.Length < -1 {
		return fmt.Errorf("open listed file %s: invalid length %d", file.Name, file.Length)
	}
	return nil
}

func statError(dir string, file File, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file %s is listed but missing from %s (is that the server's data directory?): %w",
			file.Name, dir, fs.ErrNotExist)
	}
	return fmt.Errorf("open listed file: %w", err)
}

// fileStat checks fi, the file on disk, against the listing.
func fileStat(dir string, file File, fi fs.FileInfo) (FileStat, error) {
	if !fi.Mode().IsRegular() {
		return FileStat{}, fmt.Errorf("listed file %s in %s is not a regular file (%s)", file.Name, dir, fi.Mode().Type())
	}
	st := FileStat{Length: file.Length, Identity: identityOf(fi), listed: true}
	if file.Length < 0 {
		st.Length, st.listed = fi.Size(), false
	} else if fi.Size() < file.Length {
		return FileStat{}, &ShortFileError{Name: file.Name, Dir: dir, Want: file.Length, Found: fi.Size(), Listed: true}
	}
	return st, nil
}

// openFile opens file in dir; see Frozen.Open and Frozen.OpenStat. With
// want nil the file is taken as it is now; else it must be the file that
// want describes, and the reader serves want.Length bytes.
func openFile(dir string, file File, want *FileStat) (*Reader, error) {
	if err := checkFile(file); err != nil {
		return nil, err
	}
	if file.Content != nil {
		return &Reader{name: file.Name, dir: dir, content: file.Content, length: int64(len(file.Content))}, nil
	}
	f, err := os.Open(filepath.Join(dir, file.Name))
	if err != nil {
		return nil, statError(dir, file, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat listed file: %w", err)
	}
	var st FileStat
	if want != nil {
		st, err = sameFile(dir, file, *want, fi)
	} else {
		st, err = fileStat(dir, file, fi)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	r := &Reader{name: file.Name, dir: dir, f: f, length: st.Length, listed: st.listed, id: st.Identity}
	// Tables are immutable: read them around the page cache where the file
	// system allows, unless every page is cached already (a table the
	// server has just written, the common case in an incremental), when a
	// buffered read is one copy and no I/O and evicts nothing. Append-only
	// files stay buffered: the server may be writing beyond their listed
	// length, and a direct read would first force its dirty pages out.
	if file.Role == RoleTable && r.length >= directMin && !directio.Resident(f, 0, r.length) {
		if df, err := directio.Open(filepath.Join(dir, file.Name)); err == nil {
			if df.Direct() {
				r.direct = newDirectReader(df)
			} else {
				df.Close()
			}
		}
	}
	return r, nil
}

// sameFile checks that fi, the file as opened, is the one want describes,
// and returns want with the identity found now. An append-only file may
// have grown since (the server appends past the listed length); any other
// must be unchanged, or its first want.Length bytes may not be the ones
// planned.
func sameFile(dir string, file File, want FileStat, fi fs.FileInfo) (FileStat, error) {
	w, n := want.Identity, identityOf(fi)
	switch {
	case w.Inode != n.Inode || !fi.Mode().IsRegular():
		return FileStat{}, fmt.Errorf("file %s in %s was replaced after it was planned (inode %d, now %d): %w",
			file.Name, dir, w.Inode, n.Inode, ErrFileChanged)
	case n.Size < want.Length:
		return FileStat{}, &ShortFileError{Name: file.Name, Dir: dir, Want: want.Length, Found: n.Size, Listed: want.listed}
	case !file.Role.AppendOnly() && (w.Size != n.Size || w.MtimeNs != n.MtimeNs):
		return FileStat{}, fmt.Errorf("file %s in %s changed after it was planned (size %d, mtime %d; now %d, %d): %w",
			file.Name, dir, w.Size, w.MtimeNs, n.Size, n.MtimeNs, ErrFileChanged)
	}
	want.Identity = n
	return want, nil
}

// Length is the number of bytes that belong to the snapshot: the listed
// length, the size at open for files listed without one, or len(Content) for
// synthesized files.
func (r *Reader) Length() int64 { return r.length }

// Identity is the file's stat identity at open; zero for synthesized files.
func (r *Reader) Identity() Identity { return r.id }

// ReadAt reads like io.ReaderAt within [0, Length()): reads past Length
// return io.EOF, never bytes the file gained after the freeze. If the file on
// disk ends before Length, it returns a *ShortFileError, never a silent short
// read.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s: negative offset %d", r.name, off)
	}
	if off >= r.length {
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := p
	if rem := r.length - off; int64(len(want)) > rem {
		want = want[:rem]
	}
	var n int
	if r.f == nil {
		n = copy(want, r.content[off:])
	} else {
		var err error
		if r.direct != nil {
			n, err = r.direct.readAt(want, off, r.length)
		} else {
			n, err = r.f.ReadAt(want, off)
		}
		if n < len(want) && (err == nil || errors.Is(err, io.EOF)) {
			return n, r.shortError(off + int64(n))
		}
		if err != nil {
			return n, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// shortError describes the file having shrunk below Length after open;
// reached is how far the read got, used if the file cannot be stat'ed.
func (r *Reader) shortError(reached int64) error {
	found := reached
	if fi, err := r.f.Stat(); err == nil {
		found = fi.Size()
	}
	return &ShortFileError{Name: r.name, Dir: r.dir, Want: r.length, Found: found, Listed: r.listed}
}

// Close closes the file.
func (r *Reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	if r.direct != nil {
		if derr := r.direct.close(); err == nil {
			err = derr
		}
	}
	return err
}
