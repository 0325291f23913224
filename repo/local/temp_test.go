package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
)

// TestRemoveTemp: only temp files older than the cutoff go, from where
// backups and prunes write; objects, young temp files and those of lock and
// key writers (which run beside a prune) stay.
func TestRemoveTemp(t *testing.T) {
	dir := t.TempDir()
	be, err := Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	h := repo.Handle{Type: repo.PackFile, Name: "ab01"}
	if err := be.Save(ctx, h, []byte("pack")); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	old := now.Add(-48 * time.Hour)
	files := map[string]time.Time{
		"data/.tmp-spooled":  old,
		"data/ab/.tmp-saved": old,
		"index/.tmp-idx":     old,
		"tails/.tmp-tail":    old,
		"data/.tmp-live":     now,
		"snapshots/.tmp-new": now.Add(-time.Hour),
		"locks/.tmp-lock":    old,
		"keys/.tmp-key":      old,
	}
	for name, mtime := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, make([]byte, 1000), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	n, size, err := be.RemoveTemp(ctx, now.Add(-24*time.Hour))
	if err != nil || n != 4 || size != 4000 {
		t.Fatalf("RemoveTemp: %d files, %d bytes, %v; want 4, 4000", n, size, err)
	}
	for name, mtime := range files {
		_, err := os.Stat(filepath.Join(dir, name))
		want := mtime.Equal(old) && !strings.HasPrefix(name, "locks/") && !strings.HasPrefix(name, "keys/")
		if gone := os.IsNotExist(err); gone != want {
			t.Errorf("%s (modified %v ago): gone %v", name, now.Sub(mtime).Round(time.Hour), gone)
		}
	}
	if _, err := be.Stat(ctx, h); err != nil {
		t.Fatalf("the pack: %v", err)
	}
}
