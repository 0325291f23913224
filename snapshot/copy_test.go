package snapshot_test

import (
	"context"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// packReads counts the reads of packs, to tell what a copy read from its
// source.
type packReads struct {
	repo.Backend
	n atomic.Int64
}

func (b *packReads) Load(ctx context.Context, h repo.Handle, off, n int64, fn func(io.Reader) error) error {
	if h.Type == repo.PackFile {
		b.n.Add(1)
	}
	return b.Backend.Load(ctx, h, off, n, fn)
}

func all(snaps []*snapshot.Snapshot) ([]*snapshot.Snapshot, error) { return snaps, nil }

func copyAll(t *testing.T, dst, src *repo.Repository) *snapshot.CopyResult {
	t.Helper()
	res, err := snapshot.Copy(context.Background(), dst, src, all, snapshot.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TestCopy copies between repositories with other keys and other chunker
// sizes: the copies restore byte for byte with their fields, a second
// copy reads no pack, a third reads only what is new, and copying back
// copies nothing.
func TestCopy(t *testing.T) {
	ctx := context.Background()
	fx := newFixture(t, 7)
	sbe := &packReads{Backend: mem.New()}
	src := newRepo(t, sbe)
	s1, err := snapshot.Backup(ctx, src, fx.src, snapshot.BackupOptions{Host: "db-7", Tags: []string{"nightly", "x"}, Program: "snap test"})
	if err != nil {
		t.Fatal(err)
	}
	want1 := cloneFiles(fx.files)
	rng := rand.New(rand.NewPCG(7, 8))
	wal := compressible(rng, 300<<10)
	appendFile(t, fx.dir, "000013.log", wal) // the WAL grows: all of it is listed now
	grown, err := os.ReadFile(filepath.Join(fx.dir, "000013.log"))
	if err != nil {
		t.Fatal(err)
	}
	fx.files["000013.log"] = grown
	fx.files["000014.sst"] = randBytes(rng, 1<<20)
	writeFile(t, fx.dir, "000014.sst", fx.files["000014.sst"])
	fx.relist()
	if _, err := snapshot.Backup(ctx, src, fx.src, snapshot.BackupOptions{Host: "db-7"}); err != nil {
		t.Fatal(err)
	}
	want2 := cloneFiles(fx.files)

	dbe := mem.New()
	o := testInit
	o.ChunkerAvg, o.ChunkerMax = 128<<10, 512<<10
	dst, err := repo.Init(ctx, dbe, "other pw", o, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()

	res := copyAll(t, dst, src)
	if len(res.Copied) != 2 || len(res.Skipped) != 0 || res.BlobsRead == 0 || res.BlobsNew == 0 {
		t.Fatalf("first copy: %+v", res)
	}
	dsnaps, err := snapshot.List(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	if len(dsnaps) != 2 {
		t.Fatalf("%d snapshots in the destination", len(dsnaps))
	}
	ssnaps, err := snapshot.List(ctx, src) // as stored: times without monotonic readings
	if err != nil {
		t.Fatal(err)
	}
	if ssnaps[0].ID != s1.ID || ssnaps[1].Parent == nil || *ssnaps[1].Parent != s1.ID {
		t.Fatalf("source snapshots %v", ssnaps)
	}
	for i, pair := range []struct {
		src  *snapshot.Snapshot
		want map[string][]byte
	}{{ssnaps[0], want1}, {ssnaps[1], want2}} {
		d := dsnaps[i]
		if d.Original == nil || *d.Original != pair.src.ID {
			t.Errorf("copy %d: original %v, want %s", i, d.Original, pair.src.ID)
		}
		if !d.Time.Equal(pair.src.Time) || d.Host != pair.src.Host || !slices.Equal(d.Tags, pair.src.Tags) ||
			d.Source != pair.src.Source || d.Summary != pair.src.Summary || d.Program != pair.src.Program {
			t.Errorf("copy %d differs from its original:\n%+v\n%+v", i, d, pair.src)
		}
		if d.Tree == pair.src.Tree {
			t.Errorf("copy %d has the source's tree id: ids are keyed per repository", i)
		}
		checkRestore(t, reopenPw(t, dbe, "other pw"), d, pair.want)
	}
	if dsnaps[1].Parent == nil || *dsnaps[1].Parent != dsnaps[0].ID {
		t.Errorf("the second copy's parent is %v, want the first copy %s", dsnaps[1].Parent, dsnaps[0].ID.Str())
	}
	mustCheckPw(t, dbe, "other pw")

	// Again: nothing to copy, no pack of the source read.
	sbe.n.Store(0)
	res = copyAll(t, reopenPw(t, dbe, "other pw"), reopen(t, sbe))
	if len(res.Copied) != 0 || len(res.Skipped) != 2 || res.BlobsRead != 0 || res.BlobsNew != 0 {
		t.Errorf("second copy: %+v", res)
	}
	if n := sbe.n.Load(); n != 0 {
		t.Errorf("second copy read %d packs of the source", n)
	}

	// A third backup that adds a table: the copy reads the new chunks
	// (and the WAL's last), not the old tables.
	fx.files["000015.sst"] = randBytes(rng, 512<<10)
	writeFile(t, fx.dir, "000015.sst", fx.files["000015.sst"])
	fx.relist()
	s3, err := snapshot.Backup(ctx, src, fx.src, snapshot.BackupOptions{Host: "db-7"})
	if err != nil {
		t.Fatal(err)
	}
	res = copyAll(t, reopenPw(t, dbe, "other pw"), reopen(t, sbe))
	if len(res.Copied) != 1 || res.Copied[0].Source != s3.ID || res.BlobsKnown == 0 {
		t.Fatalf("third copy: %+v", res)
	}
	if res.BlobsRead > 12 { // 512 KiB in 64 KiB chunks, at most 256 KiB each
		t.Errorf("third copy read %d chunks, more than the new table has: %+v", res.BlobsRead, res)
	}
	d3, err := snapshot.List(ctx, reopenPw(t, dbe, "other pw"))
	if err != nil {
		t.Fatal(err)
	}
	checkRestore(t, reopenPw(t, dbe, "other pw"), d3[2], fx.files)

	// Back the other way: every snapshot is there already.
	res = copyAll(t, reopen(t, sbe), reopenPw(t, dbe, "other pw"))
	if len(res.Copied) != 0 || len(res.Skipped) != 3 {
		t.Errorf("copy back: %+v", res)
	}
}

// TestCopyMissingChunk: a source whose index lacks a chunk fails the copy
// before the destination gets a snapshot.
func TestCopyMissingChunk(t *testing.T) {
	ctx := context.Background()
	src := newRepo(t, mem.New())
	rng := rand.New(rand.NewPCG(3, 3))
	handSnapshot(t, src, t0, "h", nil, handFile{"a.sst", chunks(rng, 1000, 2000)})
	ghost := randBytes(rng, 100)
	tree := &snapshot.Tree{Files: []snapshot.File{{Name: "b.sst", Role: "table", Length: 100, Chunks: []repo.ID{src.BlobID(ghost)}, Sizes: []uint32{100}}}}
	tid, err := snapshot.SaveTree(ctx, src, tree)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := snapshot.Save(ctx, src, &snapshot.Snapshot{Time: t0.Add(1), Host: "h", Tree: tid, Source: snapshot.Source{Kind: source.KindFreeze}}); err != nil {
		t.Fatal(err)
	}
	dbe := mem.New()
	dst := newRepo(t, dbe)
	_, err = snapshot.Copy(ctx, dst, src, all, snapshot.CopyOptions{})
	if err == nil {
		t.Fatal("copy of a snapshot with a chunk the source lacks: no error")
	}
	t.Log(err)
	if n := len(objects(t, dbe, repo.SnapshotFile)); n != 1 {
		t.Errorf("%d snapshots in the destination, want the one whole one copied first", n)
	}
}

func cloneFiles(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = slices.Clone(v)
	}
	return out
}

func reopenPw(t *testing.T, be repo.Backend, pw string) *repo.Repository {
	t.Helper()
	ctx := context.Background()
	r, err := repo.Open(ctx, be, pw, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func mustCheckPw(t *testing.T, be repo.Backend, pw string) {
	t.Helper()
	ctx := context.Background()
	r, err := repo.Open(ctx, be, pw, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res, err := snapshot.Check(ctx, r, snapshot.CheckOptions{ReadData: true, UnreferencedMargin: snapshot.DefaultUnreferencedMargin, NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range res.Errors {
		t.Errorf("check: %s", p)
	}
}
