package repo_test

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/mem"
)

// TestRepairIndex loses one index file, damages another and a pack's
// header: repair indexes every other pack from what is stored, reports
// the damaged pack, and leaves one index file.
func TestRepairIndex(t *testing.T) {
	ctx := t.Context()
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	var all []testBlob
	// names: the index file of each round, in order, so that the first
	// (lost below) names the pack of all[0], which is damaged: one no
	// intact index file vouches for.
	var names []string
	for range 3 { // three index files
		blobs := makeBlobs(rng, r, 12, 200<<10)
		saveBlobs(t, r, blobs)
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		all = append(all, blobs...)
		for n := range list(t, be, repo.IndexFile) {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	if len(names) != 3 {
		t.Fatalf("%d index files, want 3", len(names))
	}
	if err := be.Remove(ctx, repo.Handle{Type: repo.IndexFile, Name: names[0]}); err != nil {
		t.Fatal(err)
	}
	rewrite(t, be, repo.Handle{Type: repo.IndexFile, Name: names[1]}, func(b []byte) []byte { b[len(b)/2] ^= 1; return b })

	// Damage the header of the pack holding all[0].
	loc, _ := r.Index().Lookup(all[0].id)
	ph := repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()}
	rewrite(t, be, ph, func(b []byte) []byte { b[len(b)-10] ^= 1; return b })
	lost := map[repo.ID]bool{}
	for _, b := range all {
		if l, _ := r.Index().Lookup(b.id); l.Pack == loc.Pack {
			lost[b.id] = true
		}
	}

	r2 := openRepo(t, be)
	res, err := r2.RepairIndex(ctx, repo.RepairIndexOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.DamagedPacks) != 1 || res.DamagedPacks[0].ID != loc.Pack {
		t.Errorf("damaged packs %+v, want %s", res.DamagedPacks, loc.Pack)
	}
	if len(res.DamagedIndex) != 1 || res.DamagedIndex[0].Name != names[1] {
		t.Errorf("damaged index files %+v, want %s", res.DamagedIndex, names[1])
	}
	if res.IndexesRemoved != 2 || res.IndexesWritten != 1 {
		t.Errorf("index files removed %d, written %d; want 2, 1", res.IndexesRemoved, res.IndexesWritten)
	}
	if res.HeadersRead == 0 || res.HeadersRead == res.Packs+1 {
		// The intact index file's packs come from it, the rest from headers.
		t.Errorf("%d pack headers read of %d packs", res.HeadersRead, res.Packs+1)
	}
	if got := list(t, be, repo.IndexFile); len(got) != 1 {
		t.Errorf("%d index files after repair, want 1", len(got))
	}
	if got := list(t, be, repo.PackFile); got[loc.Pack.String()] == 0 {
		t.Errorf("the damaged pack was removed; repair leaves it alone")
	}

	r3 := openRepo(t, be)
	if err := r3.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for _, b := range all {
		got, err := r3.LoadBlob(ctx, b.id, nil)
		if lost[b.id] {
			if !errors.Is(err, repo.ErrNotIndexed) {
				t.Errorf("blob of the damaged pack: %v, want not indexed", err)
			}
			continue
		}
		if err != nil || !bytes.Equal(got, b.plain) {
			t.Errorf("blob %s after repair: %v", b.id.Str(), err)
		}
	}
	if r3.Index().Len() != len(all)-len(lost) {
		t.Errorf("index has %d blobs, want %d", r3.Index().Len(), len(all)-len(lost))
	}

	// Again, reading every header: the same index, and nothing damaged
	// but the pack.
	res, err = r3.RepairIndex(ctx, repo.RepairIndexOptions{ReadAllPacks: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.HeadersRead != res.Packs+1 || len(res.DamagedIndex) != 0 || res.Blobs != len(all)-len(lost) {
		t.Errorf("second repair: %+v", res)
	}
}

// TestRepairIndexLocked: under another process's lock repair changes
// nothing.
func TestRepairIndexLocked(t *testing.T) {
	ctx := t.Context()
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	saveBlobs(t, r, makeBlobs(rng, r, 4, 100<<10))
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	lk, err := r.Lock(ctx, repo.LockOptions{Command: "backup", RefreshEvery: -1, Host: "elsewhere"})
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock(ctx)
	before := list(t, be, repo.IndexFile)
	r2 := openRepo(t, be)
	_, err = r2.RepairIndex(ctx, repo.RepairIndexOptions{RetryLock: 10 * time.Millisecond})
	if !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("repair under a shared lock: %v, want ErrLocked", err)
	}
	after := list(t, be, repo.IndexFile)
	if len(after) != len(before) {
		t.Errorf("index files %v, want %v", after, before)
	}
	for n := range before {
		if _, ok := after[n]; !ok {
			t.Errorf("index file %s removed", n)
		}
	}
}

// FuzzRepairIndexPack stores arbitrary bytes as a pack: repair never
// panics, and indexes it only if its header authenticates and tiles it.
func FuzzRepairIndexPack(f *testing.F) {
	be := mem.New()
	r := initRepo(f, be, smallOptions())
	if _, err := r.SaveBlob(f.Context(), repo.DataBlob, r.BlobID([]byte("hello")), []byte("hello")); err != nil {
		f.Fatal(err)
	}
	if err := r.Flush(f.Context()); err != nil {
		f.Fatal(err)
	}
	for name := range list(f, be, repo.PackFile) {
		h := repo.Handle{Type: repo.PackFile, Name: name}
		pack := backendtest.LoadAll(f, be, h)
		f.Add(pack)
		f.Add(pack[:len(pack)-1])
		f.Add(pack[len(pack)-50:])
		if err := be.Remove(f.Context(), h); err != nil {
			f.Fatal(err)
		}
	}
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		h := repo.Handle{Type: repo.PackFile, Name: repo.Hash(data).String()}
		if err := be.Save(t.Context(), h, data); err != nil {
			t.Fatal(err)
		}
		defer be.Remove(t.Context(), h)
		res, err := r.RepairIndex(t.Context(), repo.RepairIndexOptions{ReadAllPacks: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Packs+len(res.DamagedPacks) != 1 {
			t.Fatalf("one pack stored: %+v", res)
		}
		if res.Packs == 1 {
			// Its header authenticated: every blob it lists loads, or
			// is refused as corrupt, never anything else.
			if res.Blobs != r.Index().Len() {
				t.Fatalf("repair says %d blobs, the index has %d", res.Blobs, r.Index().Len())
			}
			for _, p := range r.Index().Packs() {
				if p.String() != h.Name {
					t.Fatalf("indexed pack %s, stored %s", p, h.Name)
				}
			}
			if _, err := r.LoadBlob(t.Context(), r.BlobID([]byte("hello")), nil); err != nil && !errors.Is(err, repo.ErrCorrupt) {
				t.Fatalf("load the blob of an indexed pack: %v", err)
			}
		}
	})
}
