//go:build !unix

package source

import "os"

// readLock cannot tell a live store here: no fcntl locks.
func readLock(*os.File) (int, error) { return 0, nil }
