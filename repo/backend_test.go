package repo_test

import (
	"testing"

	"github.com/snapbackup/snap/repo"
)

func TestHandleValidate(t *testing.T) {
	const id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for _, tc := range []struct {
		h  repo.Handle
		ok bool
	}{
		{repo.Handle{Type: repo.ConfigFile}, true},
		{repo.Handle{Type: repo.KeyFile, Name: id}, true},
		{repo.Handle{Type: repo.PackFile, Name: id}, true},
		{repo.Handle{Type: repo.PackFile, Name: "ab"}, true},
		{repo.Handle{Type: repo.IndexFile, Name: id}, true},
		{repo.Handle{Type: repo.SnapshotFile, Name: id}, true},
		{repo.Handle{Type: repo.LockFile, Name: "host-1234.lock"}, true},
		{repo.Handle{Type: repo.IndexFile, Name: "not-hex"}, true}, // only packs must be hex

		{repo.Handle{Type: repo.ConfigFile, Name: "x"}, false},
		{repo.Handle{Type: "bogus", Name: id}, false},
		{repo.Handle{Type: "", Name: id}, false},
		{repo.Handle{Type: "Data", Name: id}, false},
		{repo.Handle{Type: repo.IndexFile}, false},
		{repo.Handle{Type: repo.IndexFile, Name: "."}, false},
		{repo.Handle{Type: repo.IndexFile, Name: ".."}, false},
		{repo.Handle{Type: repo.IndexFile, Name: "a..b"}, false},
		{repo.Handle{Type: repo.SnapshotFile, Name: "../config"}, false},
		{repo.Handle{Type: repo.KeyFile, Name: "/etc"}, false},
		{repo.Handle{Type: repo.IndexFile, Name: "a/b"}, false},
		{repo.Handle{Type: repo.IndexFile, Name: `a\b`}, false},
		{repo.Handle{Type: repo.IndexFile, Name: "ab\x00"}, false},
		{repo.Handle{Type: repo.LockFile, Name: ".tmp-1234"}, false},
		{repo.Handle{Type: repo.IndexFile, Name: repo.TempPrefix}, false},
		{repo.Handle{Type: repo.PackFile, Name: "a"}, false},
		{repo.Handle{Type: repo.PackFile, Name: "zz01"}, false},
		{repo.Handle{Type: repo.PackFile, Name: "AB01"}, false},
		{repo.Handle{Type: repo.PackFile, Name: "aG"}, false},
	} {
		err := tc.h.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("%#v.Validate() = %v, want ok=%v", tc.h, err, tc.ok)
		}
	}
}
