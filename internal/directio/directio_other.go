//go:build !linux

package directio

import (
	"io"
	"os"
)

func openFile(name string, flag int, perm os.FileMode) (*File, error) {
	fh, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &File{File: fh}, nil
}

func (f *File) setDirect(bool) error { return nil }

// pread reads at off; 0 bytes means end of file.
func pread(f *os.File, p []byte, off int64) (int, error) {
	n, err := f.ReadAt(p, off)
	if err == io.EOF {
		err = nil
	}
	return n, err
}
