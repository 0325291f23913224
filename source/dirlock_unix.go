//go:build unix

package source

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// readLock takes a read lock (fcntl F_SETLK, the whole file) on f. It
// conflicts with the write lock RocksDB and Pebble take on their LOCK
// file. When another process holds one, it returns errInUse and, where
// the system says, the holder's pid.
func readLock(f *os.File) (pid int, err error) {
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0}
	err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
	if err == nil {
		return 0, nil
	}
	if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
		return 0, err
	}
	q := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0}
	if unix.FcntlFlock(f.Fd(), unix.F_GETLK, &q) == nil && q.Type != unix.F_UNLCK {
		return int(q.Pid), errInUse
	}
	return 0, errInUse
}
