//go:build !linux

package source

import "testing"

// dropCache is a no-op outside Linux, where tables are read buffered.
func dropCache(*testing.T, string) bool { return false }
