package snapshot

import (
	"io/fs"
	"syscall"
)

// allocatedBytes is the space the file system holds for a file.
func allocatedBytes(fi fs.FileInfo) int64 {
	return fi.Sys().(*syscall.Stat_t).Blocks * 512
}
