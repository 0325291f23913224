package snapshot_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// TestRepairSnapshots loses the pack of one file and the pack of one
// snapshot's tree: repair drops that file (and a hard link to it), writes
// a replacement marked repaired with the original's fields, removes the
// snapshot whose tree is gone, and leaves the whole snapshot alone.
func TestRepairSnapshots(t *testing.T) {
	ctx := context.Background()
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(11, 11))
	// 900 KiB chunks in 1 MiB packs: one pack each.
	a, b := randBytes(rng, 900<<10), randBytes(rng, 900<<10)
	ida, idb := r.BlobID(a), r.BlobID(b)
	for _, c := range [][]byte{a, b} {
		if _, err := r.SaveBlob(ctx, repo.DataBlob, r.BlobID(c), c); err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(at int, tags []string, files ...snapshot.File) *snapshot.Snapshot {
		tid, err := snapshot.SaveTree(ctx, r, &snapshot.Tree{Files: files})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		sn := &snapshot.Snapshot{Time: t0.Add(time.Duration(at) * time.Hour), Host: "h", Tags: tags, Tree: tid, Program: "test",
			Source: snapshot.Source{Kind: "dir", DataDir: "/d"}, Summary: snapshot.Summary{Files: len(files)}}
		if err := snapshot.Save(ctx, r, sn); err != nil {
			t.Fatal(err)
		}
		return sn
	}
	fa := snapshot.File{Name: "a", Role: "other", Length: int64(len(a)), Chunks: []repo.ID{ida}, Sizes: []uint32{uint32(len(a))}, Mode: 0o644}
	fb := snapshot.File{Name: "sub/b", Role: "other", Length: int64(len(b)), Chunks: []repo.ID{idb}, Sizes: []uint32{uint32(len(b))}, Mode: 0o600}
	dir := snapshot.File{Name: "sub", Type: snapshot.TypeDir, Role: "other", Mode: 0o755, Chunks: []repo.ID{}, Sizes: []uint32{}}
	link := snapshot.File{Name: "sub/b2", Type: snapshot.TypeHardlink, Role: "other", Target: "sub/b", Chunks: []repo.ID{}, Sizes: []uint32{}}
	whole := mk(1, nil, fa)
	damaged := mk(2, []string{"nightly"}, fa, dir, fb, link)
	fa2 := fa
	fa2.Mode = 0o640 // another tree than whole's
	treeLost := mk(3, nil, fa2)

	packOf := func(id repo.ID) repo.Handle {
		loc, ok := r.Index().Lookup(id)
		if !ok {
			t.Fatalf("blob %s not indexed", id.Str())
		}
		return repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()}
	}
	for _, h := range []repo.Handle{packOf(idb), packOf(treeLost.Tree)} {
		if err := be.Remove(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	before := snapshotIDs(t, be)

	dry, err := snapshot.RepairSnapshots(ctx, reopen(t, be), snapshot.RepairOptions{DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(snapshotIDs(t, be), before) {
		t.Fatal("a dry run changed the snapshots")
	}
	if dry.MissingPacks != 2 || len(dry.Repaired) != 2 {
		t.Fatalf("dry run: %+v", dry)
	}
	d := dry.Repaired[0]
	if d.ID != damaged.ID || d.Kept != 2 || len(d.Dropped) != 2 || d.Dropped[0].Name != "sub/b" || d.Dropped[1].Name != "sub/b2" || !d.NewID.IsNull() {
		t.Errorf("dry run, damaged snapshot: %+v", d)
	}
	if l := dry.Repaired[1]; l.ID != treeLost.ID || !l.TreeLost || l.Kept != 0 {
		t.Errorf("dry run, snapshot whose tree is gone: %+v", l)
	}

	// repair index first, so the index names no missing pack and check
	// can pass.
	if _, err := reopen(t, be).RepairIndex(ctx, repo.RepairIndexOptions{}); err != nil {
		t.Fatal(err)
	}
	res, err := snapshot.RepairSnapshots(ctx, reopen(t, be), snapshot.RepairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.MissingPacks != 0 || len(res.Repaired) != 2 || res.Repaired[0].NewID.IsNull() || !res.Repaired[1].NewID.IsNull() {
		t.Fatalf("repair: %+v", res)
	}
	r2 := reopen(t, be)
	snaps, err := snapshot.List(ctx, r2)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2 || snaps[0].ID != whole.ID || snaps[1].ID != res.Repaired[0].NewID {
		t.Fatalf("snapshots after repair: %v, want %s and the replacement", snaps, whole.ID.Str())
	}
	rep := snaps[1]
	if !rep.Repaired || snaps[0].Repaired || !rep.Time.Equal(damaged.Time) || rep.Host != damaged.Host || !slices.Equal(rep.Tags, damaged.Tags) ||
		rep.Source != damaged.Source || rep.Program != damaged.Program || rep.Summary.Files != 2 || rep.Summary.Bytes != int64(len(a)) {
		t.Errorf("replacement %+v of %+v", rep, damaged)
	}
	if raw, _ := json.Marshal(rep); !bytes.Contains(raw, []byte(`"repaired":true`)) {
		t.Errorf("stored as %s: no repaired field", raw)
	}
	mustCheck(t, be, nil)
	target := t.TempDir() + "/out"
	if err := snapshot.Restore(ctx, r2, rep, snapshot.RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(target, "a")); err != nil || !bytes.Equal(got, a) {
		t.Errorf("restored a: %v", err)
	}
	if es, err := os.ReadDir(filepath.Join(target, "sub")); err != nil || len(es) != 0 {
		t.Errorf("restored sub/: %v, %v; want an empty directory", es, err)
	}

	// Nothing left to repair.
	res, err = snapshot.RepairSnapshots(ctx, reopen(t, be), snapshot.RepairOptions{})
	if err != nil || len(res.Repaired) != 0 {
		t.Errorf("second repair: %+v, %v", res, err)
	}
}
