package directio

import (
	"errors"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Resident reports whether every page of the length bytes of f at off is
// in the page cache, so that reading them buffered costs one copy and no
// I/O. It reports false when the kernel cannot tell, and for an empty
// range.
func Resident(f *os.File, off, length int64) bool {
	if off < 0 || length <= 0 {
		return false
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	// Whole pages: the first and last may hold bytes outside the range.
	page := int64(os.Getpagesize())
	start := off &^ (page - 1)
	var n int64
	cerr := rc.Control(func(fd uintptr) {
		n, err = residentAt(int(fd), start, off+length-start)
	})
	return cerr == nil && err == nil && n >= off+length-start
}

// ResidentBytes counts the bytes of fd's first size bytes whose pages are
// in the page cache: by cachestat(2) (Linux 6.5), else by mincore(2) over a
// read-only map. Neither reads the file.
func ResidentBytes(fd int, size int64) (int64, error) { return residentAt(fd, 0, size) }

// residentAt is ResidentBytes from off, a multiple of the page size.
func residentAt(fd int, off, size int64) (int64, error) {
	if size <= 0 {
		return 0, nil
	}
	page := int64(os.Getpagesize())
	var st unix.Cachestat_t
	err := unix.Cachestat(uint(fd), &unix.CachestatRange{Off: uint64(off), Len: uint64(size)}, &st, 0)
	if err == nil {
		return min(int64(st.Cache)*page, size), nil
	}
	if !errors.Is(err, unix.ENOSYS) {
		return 0, err
	}
	return residentMincore(fd, off, size)
}

// residentMincore is residentAt for kernels before cachestat(2). A page
// counts whole but for the range's last, partial one.
func residentMincore(fd int, off, size int64) (int64, error) {
	if size != int64(int(size)) {
		return 0, errors.New("range too large to map")
	}
	m, err := unix.Mmap(fd, off, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, err
	}
	defer unix.Munmap(m)
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	// x/sys/unix has no wrapper for mincore.
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return 0, e
	}
	var n int64
	for i, v := range vec {
		if v&1 != 0 {
			n += min(page, size-int64(i)*page)
		}
	}
	return n, nil
}

// Evict writes name's dirty pages out and drops its pages from the page
// cache (posix_fadvise DONTNEED), and reports whether they went: a file
// system may keep them (tmpfs), as may another process' map of the file.
func Evict(name string) (bool, error) {
	f, err := os.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	fd := int(f.Fd())
	if err := unix.Fdatasync(fd); err != nil {
		return false, err
	}
	if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return false, err
	}
	n, err := ResidentBytes(fd, fi.Size())
	return err == nil && n == 0, err
}
