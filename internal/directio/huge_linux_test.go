package directio

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
	"unsafe"
)

// mapped reports whether addr lies in a mapping of /proc/self/maps.
func mapped(t *testing.T, addr uintptr) bool {
	t.Helper()
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		var start, end uintptr
		if _, err := fmt.Sscanf(s.Text(), "%x-%x", &start, &end); err == nil && start <= addr && addr < end {
			return true
		}
	}
	return false
}

// Free unmaps at once; a buffer dropped without Free is unmapped once the
// garbage collector finds it.
func TestAllocHugeUnmaps(t *testing.T) {
	h := AllocHuge(HugePage)
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(h.B)))
	if addr%HugePage != 0 {
		t.Fatalf("address %#x is not aligned to a huge page", addr)
	}
	if !mapped(t, addr) {
		t.Fatalf("no mapping at %#x", addr)
	}
	h.Free()
	if mapped(t, addr) {
		t.Fatal("still mapped after Free")
	}

	addr = uintptr(unsafe.Pointer(unsafe.SliceData(AllocHuge(HugePage).B)))
	for deadline := time.Now().Add(10 * time.Second); mapped(t, addr); {
		if time.Now().After(deadline) {
			t.Fatal("a dropped buffer is still mapped after garbage collections")
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}
