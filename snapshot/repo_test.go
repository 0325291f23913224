package snapshot_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// hidingReader is a snapshot.BlobReader over a real repository that
// does not find one blob until LoadMissing is called (as a scoped
// reader misses a chunk only another host's index file names), or never
// when reveal is false.
type hidingReader struct {
	snapshot.BlobReader
	hide    repo.ID
	reveal  bool
	missing atomic.Int32 // LoadMissing calls
}

func (h *hidingReader) Lookup(id repo.ID) (repo.Location, bool) {
	if id == h.hide && (!h.reveal || h.missing.Load() == 0) {
		return repo.Location{}, false
	}
	return h.BlobReader.Lookup(id)
}

func (h *hidingReader) LoadMissing(ctx context.Context) error {
	h.missing.Add(1)
	return h.BlobReader.LoadMissing(ctx)
}

// TestRestoreThroughBlobReader: Restore needs nothing of a repository but
// a BlobReader. A chunk the reader does not find makes it call
// LoadMissing once and try again; one still missing then fails the
// restore with ErrNotIndexed.
func TestRestoreThroughBlobReader(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	fx := smallFixture(t, rand.New(rand.NewPCG(7, 8)))
	sn := backup(t, r, fx.src, false)
	tree, err := snapshot.LoadTree(t.Context(), r, sn.Tree)
	if err != nil {
		t.Fatal(err)
	}
	var hide repo.ID
	for _, f := range tree.Files {
		if len(f.Chunks) > 0 {
			hide = f.Chunks[len(f.Chunks)-1]
		}
	}

	found := &hidingReader{BlobReader: r, hide: hide, reveal: true}
	target := filepath.Join(t.TempDir(), "restored")
	if err := snapshot.Restore(t.Context(), found, sn, snapshot.RestoreOptions{Target: target}); err != nil {
		t.Fatalf("restore through a reader that finds the chunk after LoadMissing: %v", err)
	}
	if n := found.missing.Load(); n != 1 {
		t.Fatalf("LoadMissing called %d times, want 1", n)
	}
	compareDir(t, target, fx.files)

	lost := &hidingReader{BlobReader: r, hide: hide}
	err = snapshot.Restore(t.Context(), lost, sn, snapshot.RestoreOptions{Target: filepath.Join(t.TempDir(), "restored")})
	if !errors.Is(err, repo.ErrNotIndexed) {
		t.Fatalf("restore of a chunk the reader never finds: %v, want ErrNotIndexed", err)
	}
}
