package directio

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapHuge maps size bytes, a multiple of HugePage, aligned to HugePage,
// and asks for huge pages for them; nil if the system refuses.
func mapHuge(size uintptr) unsafe.Pointer {
	// Map a huge page more and unmap what lies outside the aligned part:
	// mmap only promises page alignment.
	raw, err := unix.MmapPtr(-1, 0, nil, size+HugePage, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil
	}
	head := (HugePage - uintptr(raw)%HugePage) % HugePage
	base := unsafe.Add(raw, head)
	if head > 0 {
		unix.MunmapPtr(raw, head)
	}
	if tail := HugePage - head; tail > 0 {
		unix.MunmapPtr(unsafe.Add(base, size), tail)
	}
	// Best effort: the memory works without.
	unix.Madvise(unsafe.Slice((*byte)(base), size), unix.MADV_HUGEPAGE)
	return base
}

func unmap(base unsafe.Pointer, size uintptr) { unix.MunmapPtr(base, size) }
