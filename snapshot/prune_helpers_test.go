package snapshot_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// testClock is a settable time source for locks, margins and policies.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newTestClock(t time.Time) *testClock { return &testClock{t: t} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// objects returns name -> size of every object of type t.
func objects(t testing.TB, be repo.Backend, typ repo.FileType) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	if err := be.List(context.Background(), typ, func(fi repo.FileInfo) error {
		out[fi.Name] = fi.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func sumSizes(m map[string]int64) int64 {
	var n int64
	for _, s := range m {
		n += s
	}
	return n
}

// repoSize is the bytes stored in every object of the repository.
func repoSize(t testing.TB, be repo.Backend) int64 {
	var n int64
	for _, typ := range repo.AllFileTypes {
		n += sumSizes(objects(t, be, typ))
	}
	return n
}

// cloneBackend copies every object into a new in-memory backend.
func cloneBackend(t testing.TB, be repo.Backend) *mem.Backend {
	t.Helper()
	return cloneBackendClocked(t, be, time.Now)
}

// cloneBackendClocked is cloneBackend into a backend whose storage clock
// is now.
func cloneBackendClocked(t testing.TB, be repo.Backend, now func() time.Time) *mem.Backend {
	t.Helper()
	ctx := context.Background()
	out := mem.NewClocked(now)
	for _, typ := range repo.AllFileTypes {
		for name := range objects(t, be, typ) {
			h := repo.Handle{Type: typ, Name: name}
			var data []byte
			if err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
				var err error
				data, err = io.ReadAll(rd)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			if err := out.Save(ctx, h, data); err != nil {
				t.Fatal(err)
			}
		}
	}
	return out
}

// mustCheck runs check (with --read-data) and fails the test on any
// problem.
func mustCheck(t testing.TB, be repo.Backend, now func() time.Time) *snapshot.CheckResult {
	t.Helper()
	ctx := context.Background()
	r, err := repo.Open(ctx, be, "pw", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res, err := snapshot.Check(ctx, r, snapshot.CheckOptions{ReadData: true, Now: now, UnreferencedMargin: snapshot.DefaultUnreferencedMargin, NoLock: true})
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	if !res.OK() {
		for _, p := range res.Errors {
			t.Errorf("check: %s", p)
		}
		t.FailNow()
	}
	return res
}

// handFile is one file of a hand-made snapshot: its chunks' plaintexts.
type handFile struct {
	name   string
	chunks [][]byte
}

// handSnapshot stores the chunks (in order, so the test knows how they
// land in packs), a tree and a snapshot, and returns the snapshot and the
// files' bytes.
func handSnapshot(t testing.TB, r *repo.Repository, at time.Time, host string, tags []string, files ...handFile) (*snapshot.Snapshot, map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	tree := &snapshot.Tree{}
	want := map[string][]byte{}
	for _, f := range files {
		tf := snapshot.File{Name: f.name, Role: "table"}
		for _, c := range f.chunks {
			id := r.BlobID(c)
			if _, err := r.SaveBlob(ctx, repo.DataBlob, id, c); err != nil {
				t.Fatal(err)
			}
			tf.Chunks = append(tf.Chunks, id)
			tf.Sizes = append(tf.Sizes, uint32(len(c)))
			tf.Length += int64(len(c))
			want[f.name] = append(want[f.name], c...)
		}
		tree.Files = append(tree.Files, tf)
	}
	tid, err := snapshot.SaveTree(ctx, r, tree)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: at, Host: host, Tags: tags, Tree: tid,
		Source: snapshot.Source{Kind: "rocksdb-freeze", Address: "test", DataDir: "/data"}}
	if err := snapshot.Save(ctx, r, sn); err != nil {
		t.Fatal(err)
	}
	return sn, want
}

func chunks(rng *rand.Rand, sizes ...int) [][]byte {
	var out [][]byte
	for _, n := range sizes {
		out = append(out, randBytes(rng, n))
	}
	return out
}

// packsOf returns the packs the repository's effective index names, with
// the blobs in each.
func packsOf(t *testing.T, be repo.Backend) map[repo.ID][]repo.ID {
	t.Helper()
	r := reopen(t, be)
	set, err := r.LoadIndexFiles(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[repo.ID][]repo.ID{}
	for _, f := range set.Files {
		if set.Superseded[f.ID] {
			continue
		}
		for _, p := range f.Data.Packs {
			for _, e := range p.Blobs {
				out[p.PackID] = append(out[p.PackID], e.ID)
			}
		}
	}
	return out
}

func sortedNames(m map[string]int64) []string {
	var out []string
	for n := range m {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

func diffNames(a, b map[string]int64) []string {
	var out []string
	for n := range a {
		if _, ok := b[n]; !ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// snapshotIDs are the ids (hashes) of the stored snapshots, in either
// layout.
func snapshotIDs(t testing.TB, be repo.Backend) []string {
	var out []string
	for _, name := range sortedNames(objects(t, be, repo.SnapshotFile)) {
		_, id, ok := repo.ParseObjectName(repo.SnapshotFile, name)
		if !ok {
			t.Fatalf("snapshot %s: not a name of the layout", name)
		}
		out = append(out, id.String())
	}
	slices.Sort(out)
	return out
}

// indexOwners counts the owners of the stored index files: after a prune
// each has one file (version 1: one in all).
func indexOwners(t testing.TB, be repo.Backend) int {
	owners := map[string]bool{}
	for name := range objects(t, be, repo.IndexFile) {
		o, _, ok := repo.ParseObjectName(repo.IndexFile, name)
		if !ok {
			t.Fatalf("index file %s: not a name of the layout", name)
		}
		owners[o] = true
	}
	return len(owners)
}

func shortIDs(sns ...*snapshot.Snapshot) []string {
	var out []string
	for _, sn := range sns {
		out = append(out, sn.ID.String())
	}
	slices.Sort(out)
	return out
}

func fmtBytes(n int64) string { return fmt.Sprintf("%d bytes (%.2f MiB)", n, float64(n)/(1<<20)) }
