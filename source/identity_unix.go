//go:build unix

package source

import (
	"io/fs"
	"syscall"
)

func identityOf(fi fs.FileInfo) Identity {
	// ModTime is built from Stat_t.Mtim to the nanosecond.
	id := Identity{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.Inode = uint64(st.Ino)
	}
	return id
}
