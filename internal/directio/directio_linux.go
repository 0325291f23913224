package directio

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

func openFile(name string, flag int, perm os.FileMode) (*File, error) {
	fh, err := os.OpenFile(name, flag|unix.O_DIRECT, perm)
	if err == nil {
		f := &File{File: fh}
		f.direct.Store(true)
		return f, nil
	}
	// tmpfs before Linux 6.6 and some other file systems refuse O_DIRECT
	// with EINVAL, after creating the file: the second open must not
	// insist on creating it.
	if !errors.Is(err, unix.EINVAL) {
		return nil, err
	}
	fh, err = os.OpenFile(name, flag&^os.O_EXCL, perm)
	if err != nil {
		return nil, err
	}
	return &File{File: fh}, nil
}

func (f *File) setDirect(on bool) error {
	fd := int(f.File.Fd())
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return err
	}
	if on {
		fl |= unix.O_DIRECT
	} else {
		fl &^= unix.O_DIRECT
	}
	_, err = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl)
	return err
}

// pread is one pread(2), retried on EINTR; 0 bytes means end of file.
func pread(f *os.File, p []byte, off int64) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Pread(int(fd), p, off)
			if rerr != unix.EINTR {
				return true
			}
		}
	})
	if err != nil {
		return 0, err
	}
	if rerr != nil {
		return 0, &os.PathError{Op: "read", Path: f.Name(), Err: rerr}
	}
	return n, nil
}
