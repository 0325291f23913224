package snapshot_test

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// TestStats checks every figure against hand-made snapshots of known
// chunks (random, so stored as they are: sealed = plain + 40):
//
//	s1 (host a): f1 = A B, f2 = C
//	s2 (host b): f1 = A B, f3 = D, f4 = A
//	s3 (host b): the same tree as s2
//
// and a blob E no snapshot references. What s1 alone holds (C and its
// tree) is what a prune after forgetting s1 finds unused, besides E.
func TestStats(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(50, 50))
	c := chunks(rng, 20000, 30000, 10000, 15000, 5000)
	A, B, C, D, E := c[0], c[1], c[2], c[3], c[4]
	s1, _ := handSnapshot(t, r, t0, "a", nil, handFile{"f1", [][]byte{A, B}}, handFile{"f2", [][]byte{C}})
	same := []handFile{{"f1", [][]byte{A, B}}, {"f3", [][]byte{D}}, {"f4", [][]byte{A}}}
	s2, _ := handSnapshot(t, r, t0.Add(time.Hour), "b", nil, same...)
	s3, _ := handSnapshot(t, r, t0.Add(2*time.Hour), "b", nil, same...)
	if s2.Tree != s3.Tree {
		t.Fatal("s2 and s3 have different trees")
	}
	if _, err := r.SaveBlob(t.Context(), repo.DataBlob, r.BlobID(E), E); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	const ov = repo.Overhead

	stats := func(target *snapshot.Snapshot) *snapshot.Stats {
		t.Helper()
		rr := reopen(t, be)
		snaps, err := snapshot.List(t.Context(), rr)
		if err != nil {
			t.Fatal(err)
		}
		if target != nil {
			if target, err = snapshot.Find(snaps, target.ID.String()); err != nil {
				t.Fatal(err)
			}
		}
		st, err := snapshot.ComputeStats(t.Context(), rr, snaps, target)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	st := stats(s1)
	packs := objects(t, be, repo.PackFile)
	want := snapshot.Stats{
		Snapshots: 3, Hosts: 2, Files: 2 + 3 + 3,
		LogicalBytes: 60000 + 2*(20000+30000+15000+20000),
		Packs:        len(packs), StoredBytes: sumSizes(packs),
		Blobs:            5 + 2,
		Data:             snapshot.BlobCount{Blobs: 4, Bytes: 75000, StoredBytes: 75000 + 4*ov},
		Trees:            st.Trees, // their sizes are JSON's; the count is checked below
		NotInSnapshots:   snapshot.BlobCount{Blobs: 1, StoredBytes: 5000 + ov},
		DedupRatio:       230000.0 / 75000,
		CompressionRatio: 75000.0 / (75000 + 4*ov),
	}
	if st.Trees.Blobs != 2 || st.Trees.Bytes <= 0 || st.Trees.StoredBytes <= ov*2 {
		t.Errorf("trees: %+v, want 2", st.Trees)
	}
	got := *st
	got.Snapshot = nil
	if got != want {
		t.Errorf("stats:\n got %+v\nwant %+v", got, want)
	}
	s1Tree, _ := reopen(t, be).Index().Lookup(s1.Tree)
	wantS1 := snapshot.SnapshotStats{
		ID: s1.ID.String(), Files: 2, LogicalBytes: 60000,
		Data:             snapshot.BlobCount{Blobs: 3, Bytes: 60000, StoredBytes: 60000 + 3*ov},
		Trees:            snapshot.BlobCount{Blobs: 1, Bytes: int64(s1Tree.RawLength), StoredBytes: int64(s1Tree.Length)},
		OwnData:          snapshot.BlobCount{Blobs: 1, Bytes: 10000, StoredBytes: 10000 + ov},
		OwnTrees:         snapshot.BlobCount{Blobs: 1, Bytes: int64(s1Tree.RawLength), StoredBytes: int64(s1Tree.Length)},
		FreedStoredBytes: 10000 + ov + int64(s1Tree.Length),
	}
	if *st.Snapshot != wantS1 {
		t.Errorf("stats of s1:\n got %+v\nwant %+v", *st.Snapshot, wantS1)
	}
	// s2 shares everything with s3.
	if ss := stats(s2).Snapshot; ss.OwnData != (snapshot.BlobCount{}) || ss.OwnTrees != (snapshot.BlobCount{}) || ss.FreedStoredBytes != 0 ||
		ss.Data.Blobs != 3 || ss.Files != 3 || ss.LogicalBytes != 85000 {
		t.Errorf("stats of s2: %+v, want nothing of its own", ss)
	}

	// Prune's own accounting agrees: forgetting s1 leaves its own blobs
	// and E unused.
	pr, err := snapshot.Prune(t.Context(), reopen(t, be), snapshot.PruneOptions{DryRun: true, Policy: snapshot.Policy{Last: 2}, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	if pr.Stats.SnapshotsRemoved != 1 || pr.Stats.BytesUnused != wantS1.FreedStoredBytes+5000+ov || pr.Stats.BlobsUnused != 3 {
		t.Errorf("prune --dry-run forgetting s1: %+v; stats said it frees %d bytes besides E's", pr.Stats, wantS1.FreedStoredBytes)
	}

	// Once s3 is forgotten, D and the shared tree are s2's own.
	if _, err := snapshot.ForgetSnapshots(t.Context(), reopen(t, be), snapshot.ForgetOptions{IDs: []string{s3.ID.String()}}); err != nil {
		t.Fatal(err)
	}
	st = stats(s2)
	if ss := st.Snapshot; ss.OwnData != (snapshot.BlobCount{Blobs: 1, Bytes: 15000, StoredBytes: 15000 + ov}) || ss.OwnTrees.Blobs != 1 {
		t.Errorf("stats of s2 once s3 is gone: %+v", ss)
	}
	if st.Snapshots != 2 || st.LogicalBytes != 60000+85000 || st.Data.Bytes != 75000 {
		t.Errorf("stats once s3 is gone: %+v", st)
	}
}

// An empty repository has no ratios to divide by zero for.
func TestStatsEmpty(t *testing.T) {
	be := mem.New()
	newRepo(t, be)
	st, err := snapshot.ComputeStats(t.Context(), reopen(t, be), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if *st != (snapshot.Stats{}) {
		t.Errorf("stats of an empty repository: %+v", st)
	}
}
