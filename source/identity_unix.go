//go:build unix

package source

import (
	"io/fs"
	"syscall"
)

// IdentityOf is the stat identity of fi.
func IdentityOf(fi fs.FileInfo) Identity { return identityOf(fi) }

func identityOf(fi fs.FileInfo) Identity {
	// ModTime is built from Stat_t.Mtim to the nanosecond.
	id := Identity{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.Inode = uint64(st.Ino)
		id.CtimeNs = ctimeNs(st)
	}
	return id
}
