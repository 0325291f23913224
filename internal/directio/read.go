package directio

import (
	"errors"
	"fmt"
	"io"
	"os"
)

var errShort = fmt.Errorf("short read: %w", io.ErrUnexpectedEOF)

var errUnaligned = errors.New("directio: unaligned buffer or offset")

// readSome reads into p at off until p is full, the file ends or an error.
func readSome(f *os.File, p []byte, off int64) (int, error) {
	n := 0
	for n < len(p) {
		m, err := pread(f, p[n:], off+int64(n))
		if err != nil {
			return n, err
		}
		if m == 0 {
			return n, nil // end of file
		}
		n += m
		if m&(Align-1) != 0 {
			// A direct read that stops inside a block stopped at the end of
			// the file; reading on from an unaligned offset would fail.
			return n, nil
		}
	}
	return n, nil
}

func readFull(f *os.File, p []byte, off int64) error {
	n, err := readSome(f, p, off)
	if err != nil {
		return err
	}
	if n < len(p) {
		return errShort
	}
	return nil
}
