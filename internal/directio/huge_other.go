//go:build !linux

package directio

import "unsafe"

func mapHuge(uintptr) unsafe.Pointer { return nil }

func unmap(unsafe.Pointer, uintptr) {}
