package snapshot

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

var pageSize = os.Getpagesize()

// allocate reserves the blocks of f's first length bytes, where the file
// system can.
func allocate(f *os.File, length int64) error {
	if length == 0 {
		return nil
	}
	err := unix.Fallocate(int(f.Fd()), 0, 0, length)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		return nil // the writes allocate
	}
	return err
}

// startWriteback starts writing the dirty pages of f in [off, off+n) to
// the device and does not wait for them.
func startWriteback(f *os.File, off, n int64) {
	_ = unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
