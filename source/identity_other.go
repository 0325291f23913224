//go:build !unix

package source

import "io/fs"

// IdentityOf is the stat identity of fi.
func IdentityOf(fi fs.FileInfo) Identity { return identityOf(fi) }

// identityOf has no inode off unix; size and mtime still catch most changes.
func identityOf(fi fs.FileInfo) Identity {
	return Identity{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
}
