// Package directio writes and reads files around the page cache where the
// system allows it (O_DIRECT on Linux), and falls back to ordinary I/O
// everywhere else.
//
// A backup tool runs beside a live database: writing gigabytes of packs
// through the page cache evicts the pages the database serves from, and
// costs a copy per byte in the kernel. Direct I/O moves the bytes between
// the caller's buffer and the device instead. It requires buffers, file
// offsets and lengths aligned to Align; the helpers here handle the
// unaligned tail of a file with an ordinary write.
package directio

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Align is the alignment direct I/O needs of buffers, offsets and lengths.
// 4096 covers the logical block size of every common device and file
// system.
const Align = 4096

// Alloc returns a zeroed slice of length n whose first byte is aligned to
// Align, with capacity rounded up to a multiple of Align.
func Alloc(n int) []byte {
	size := (n + Align - 1) &^ (Align - 1)
	b := make([]byte, size+Align)
	off := 0
	if rem := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (Align - 1)); rem != 0 {
		off = Align - rem
	}
	return b[off : off+n : off+size]
}

// Aligned reports whether b starts at an Align boundary.
func Aligned(b []byte) bool {
	return cap(b) > 0 && uintptr(unsafe.Pointer(unsafe.SliceData(b)))&(Align-1) == 0
}

// File is an open file that writes, where it can, with direct I/O.
type File struct {
	*os.File
	direct atomic.Bool // O_DIRECT is set on the descriptor
}

// Create creates (O_EXCL) name for writing with direct I/O when the file
// system supports it, else for ordinary writes.
func Create(name string, perm os.FileMode) (*File, error) {
	return openFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
}

// Open opens name for reading with direct I/O when the file system
// supports it.
func Open(name string) (*File, error) {
	return openFile(name, os.O_RDONLY, 0)
}

// CreateTemp creates a new file in dir (mode 0600) named prefix and random
// hex digits, for direct I/O where the file system allows it, and returns
// it with its path.
func CreateTemp(dir, prefix string) (*File, string, error) {
	for {
		var rnd [8]byte
		rand.Read(rnd[:])
		name := filepath.Join(dir, prefix+hex.EncodeToString(rnd[:]))
		f, err := Create(name, 0o600)
		if !errors.Is(err, fs.ErrExist) {
			return f, name, err
		}
	}
}

// OpenFile is os.OpenFile with direct I/O where the file system supports
// it. Writes to a direct file need aligned buffers, offsets and lengths.
func OpenFile(name string, flag int, perm os.FileMode) (*File, error) {
	return openFile(name, flag, perm)
}

// Direct reports whether the file's I/O bypasses the page cache.
func (f *File) Direct() bool { return f.direct.Load() }

// SetBuffered turns direct I/O off for the file's later reads and writes:
// for a file system that accepts O_DIRECT at open and then refuses the
// I/O (EINVAL), the caller can go on without it.
func (f *File) SetBuffered() error {
	if !f.direct.Load() {
		return nil
	}
	if err := f.setDirect(false); err != nil {
		return err
	}
	f.direct.Store(false)
	return nil
}

// WriteFull writes p at the file's current position. When the file is
// direct and p starts aligned, the aligned prefix of p goes directly to
// the device and the rest through the page cache (so any length works);
// after an unaligned tail the file is no longer direct, so a caller writes
// its tail last. Otherwise it is an ordinary write.
func (f *File) WriteFull(p []byte) error {
	if f.Direct() && Aligned(p) {
		n := len(p) &^ (Align - 1)
		if n > 0 {
			if _, err := f.File.Write(p[:n]); err == nil {
				p = p[n:]
			} else if !f.refused(err) {
				return err
			}
		}
		if len(p) == 0 {
			return nil
		}
	}
	if err := f.SetBuffered(); err != nil {
		return err
	}
	_, err := f.File.Write(p)
	return err
}

// WriteAt writes p at off. On a direct file p, off and len(p) must be
// aligned. A file system that took O_DIRECT at open but refuses the write
// (EINVAL; some FUSE and network file systems) gets this write and the
// later ones through the page cache.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	n, err := f.File.WriteAt(p, off)
	if err != nil && n == 0 && f.refused(err) {
		return f.File.WriteAt(p, off)
	}
	return n, err
}

// refused reports whether err is a direct write refused with EINVAL, and
// then turns direct I/O off for the file.
func (f *File) refused(err error) bool {
	return errors.Is(err, syscall.EINVAL) && f.Direct() && f.SetBuffered() == nil
}

// ReadFullAt reads len(p) bytes at off into p, or fails: a short read is an
// error wrapping io.ErrUnexpectedEOF. Reads whose buffer, offset and
// length are not aligned go through an aligned bounce buffer on a direct
// file, so callers may ask for any range.
func (f *File) ReadFullAt(p []byte, off int64) error {
	if !f.Direct() || (Aligned(p) && off&(Align-1) == 0 && len(p)&(Align-1) == 0) {
		return readFull(f.File, p, off)
	}
	start := off &^ (Align - 1)
	end := (off + int64(len(p)) + Align - 1) &^ (Align - 1)
	buf := Alloc(int(end - start))
	// A direct read may stop at the end of the file inside the last block.
	n, err := readSome(f.File, buf, start)
	n = min(n, len(buf))
	if n < int(off-start)+len(p) {
		if err == nil {
			err = errShort
		}
		return err
	}
	copy(p, buf[off-start:])
	return nil
}

// ReadUpTo reads into p at off until p is full or the file ends, and
// returns how many bytes it read; the end of the file is not an error. On
// a direct file p and off must be aligned (len(p) need not be).
func (f *File) ReadUpTo(p []byte, off int64) (int, error) {
	if f.Direct() && (!Aligned(p) || off&(Align-1) != 0) {
		return 0, errUnaligned
	}
	return readSome(f.File, p, off)
}
