//go:build !linux

package directio

import "os"

// Resident reports whether every page of the length bytes of f at off is
// in the page cache. Outside Linux reads are always buffered, and it
// reports false.
func Resident(*os.File, int64, int64) bool { return false }

// Evict drops name's pages from the page cache where the system can;
// outside Linux it does nothing and reports false.
func Evict(string) (bool, error) { return false, nil }
