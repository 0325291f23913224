package directio

import (
	"runtime"
	"unsafe"
)

// HugePage is the size of the huge pages AllocHuge asks for: 2 MiB on
// x86-64, and on arm64 with 4 KiB pages.
const HugePage = 2 << 20

// Huge is memory for direct I/O outside the Go heap, from AllocHuge.
type Huge struct {
	B []byte

	base    unsafe.Pointer // the mapping; nil once freed or when B is heap memory
	size    uintptr
	cleanup runtime.Cleanup
}

// AllocHuge returns h.B of length n, aligned to HugePage, with capacity n
// rounded up to a multiple of HugePage, in memory of its own that the
// kernel is asked to back with huge pages (on Linux; elsewhere it is heap
// memory, aligned to Align).
//
// Direct I/O hands the device the buffer's physical pages. The Go heap's
// are 4 KiB pages scattered in memory, so a 1 MiB read is 256 segments,
// more than one request may carry, and the kernel splits it; a virtual
// disk then pays per segment and per request. On the benchmark machine's
// virtio disk, 1 MiB direct reads into heap buffers ran at 0.9-1.0 GB/s,
// into huge pages at 2.2-2.5 GB/s, in half the requests. Where the kernel
// gives no huge page (transparent huge pages off, or none free), the
// memory works as any other.
//
// The memory is unmapped by Free, or else when h becomes garbage, so
// buffers can live in a sync.Pool; whoever uses h.B must hold h until
// done with it. Off-heap memory does not make the garbage collector run,
// so a buffer that is done with should be freed, not dropped.
func AllocHuge(n int) *Huge {
	size := uintptr(max(n, 1)+HugePage-1) &^ (HugePage - 1)
	base := mapHuge(size)
	if base == nil {
		return &Huge{B: Alloc(int(size))[:n]}
	}
	h := &Huge{B: unsafe.Slice((*byte)(base), size)[:n], base: base, size: size}
	h.cleanup = runtime.AddCleanup(h, func(m mapping) { unmap(m.base, m.size) }, mapping{base, size})
	return h
}

type mapping struct {
	base unsafe.Pointer
	size uintptr
}

// Free unmaps h's memory now. h.B must not be used after.
func (h *Huge) Free() {
	if h.base != nil {
		h.cleanup.Stop()
		unmap(h.base, h.size)
		h.base = nil
	}
	h.B = nil
}
