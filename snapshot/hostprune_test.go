package snapshot_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// TestPruneOwnersVersion2: hosts a and b each back up a file they have in
// common beside their own, scoped, so each stores the common chunks in
// its own pack, and a file each of a pool an unscoped writer stored in
// one shared pack. Prune moves the common chunks into one shared pack
// (stored once), each host's own chunks and pool file into packs its own
// index file names (the shared files keep only what several hosts use),
// and writes one index file per host and the shared one;
// then a reader scoped to either host knows every chunk of its snapshot
// from those files alone, and check passes.
func TestPruneOwnersVersion2(t *testing.T) {
	be := mem.New()
	newRepo(t, be)
	rng := rand.New(rand.NewPCG(18, 2))
	common := chunks(rng, 20000, 21000, 22000)
	pool := map[string][][]byte{"a": chunks(rng, 10000, 11000), "b": chunks(rng, 12000, 13000)}
	sw := reopen(t, be) // unscoped: its index files are shared
	for _, host := range []string{"a", "b"} {
		for _, c := range pool[host] {
			if _, err := sw.SaveBlob(context.Background(), repo.DataBlob, sw.BlobID(c), c); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := sw.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	wants := map[string]map[string][]byte{}
	snaps := map[string]*snapshot.Snapshot{}
	for i, host := range []string{"a", "b"} {
		w := reopenScoped(t, be, host)
		sn, want := handSnapshot(t, w, t0.Add(time.Duration(i)*time.Hour), host, nil,
			handFile{"common.sst", common}, handFile{host + ".sst", chunks(rng, 30000, 31000)}, handFile{"pool.sst", pool[host]})
		wants[host], snaps[host] = want, sn
	}
	r := reopen(t, be)
	tags := map[string]string{r.HostTag("a"): "a", r.HostTag("b"): "b", repo.SharedOwner: "shared"}
	commonIDs := map[repo.ID]bool{}
	for _, c := range common {
		commonIDs[r.BlobID(c)] = true
	}
	copiesOfCommon := func() int {
		n := 0
		for _, blobs := range packsOf(t, be) {
			for _, id := range blobs {
				if commonIDs[id] {
					n++
				}
			}
		}
		return n
	}
	if n := copiesOfCommon(); n != 2*len(common) {
		t.Fatalf("before prune the common chunks are stored %d times, want twice each (%d)", n, 2*len(common))
	}

	res := prune(t, be, pruneOpts(time.Now, snapshot.Policy{Last: 1}))
	if res.Stats.SnapshotsRemoved != 0 {
		t.Fatalf("prune removed %d snapshots", res.Stats.SnapshotsRemoved)
	}
	if n := copiesOfCommon(); n != len(common) {
		t.Errorf("after prune the common chunks are stored %d times, want once each (%d)", n, len(common))
	}
	mustCheck(t, be, time.Now)

	// One index file per owner, each naming only packs its owner uses.
	owners := map[string]int{}
	rr := reopen(t, be)
	set, err := rr.LoadIndexFiles(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range set.Files {
		name, ok := tags[f.Owner]
		if !ok {
			t.Fatalf("index file %s: owner %q is neither host's tag nor shared", f.Name, f.Owner)
		}
		owners[name]++
		for _, p := range f.Data.Packs {
			for _, e := range p.Blobs {
				if commonIDs[e.ID] != (name == "shared") {
					t.Errorf("index file of %s names pack %s with blob %s (common: %v)", name, p.PackID.Str(), e.ID.Str(), commonIDs[e.ID])
				}
			}
		}
	}
	if owners["a"] != 1 || owners["b"] != 1 || owners["shared"] != 1 {
		t.Errorf("index files per owner %v, want one each of a, b and shared", owners)
	}

	// A reader scoped to a host finds its snapshot, and every chunk of
	// it, from the shared files and its own, and restores it.
	for _, host := range []string{"a", "b"} {
		sr := reopenScoped(t, be, host)
		list, err := snapshot.ListHost(context.Background(), sr, host)
		if err != nil || len(list) != 1 || list[0].ID != snaps[host].ID {
			t.Fatalf("ListHost(%s): %v, %v; want its one snapshot", host, list, err)
		}
		if !strings.HasPrefix(list[0].Name, sr.HostTag(host)+"-") {
			t.Errorf("snapshot of %s stored as %s, want its tag's prefix", host, list[0].Name)
		}
		tree, err := snapshot.LoadTree(context.Background(), sr, list[0].Tree)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range tree.Files {
			for _, c := range f.Chunks {
				if !sr.Known(c) {
					t.Errorf("host %s: chunk %s of %s is not in its scope's index files", host, c.Str(), f.Name)
				}
			}
		}
		checkRestore(t, sr, list[0], wants[host])
	}

	// A second prune has nothing to do.
	res = prune(t, be, pruneOpts(time.Now, snapshot.Policy{Last: 1}))
	if s := res.Stats; s.PacksRepacked+s.PacksDeleted+s.IndexFilesWritten != 0 {
		t.Errorf("a second prune did work: %+v", s)
	}
}

// reopenScoped opens the repository as a process working for host does:
// scoped, then its index loaded.
func reopenScoped(t *testing.T, be repo.Backend, host string) *repo.Repository {
	t.Helper()
	r, err := repo.Open(context.Background(), be, "pw", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	r.ScopeTo(host)
	if err := r.LoadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestCheckSnapshotTag: check fails a snapshot stored under another
// host's tag (its host's scoped readers would never find it), and
// ListHost of either host leaves it out.
func TestCheckSnapshotTag(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(18, 3))
	sn, _ := handSnapshot(t, r, time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "a", nil, handFile{"f.sst", chunks(rng, 5000)})
	data := loadObject(t, be, repo.Handle{Type: repo.SnapshotFile, Name: sn.Name})
	if err := be.Remove(context.Background(), repo.Handle{Type: repo.SnapshotFile, Name: sn.Name}); err != nil {
		t.Fatal(err)
	}
	misnamed := r.HostTag("b") + "-" + sn.ID.String()
	if err := be.Save(context.Background(), repo.Handle{Type: repo.SnapshotFile, Name: misnamed}, data); err != nil {
		t.Fatal(err)
	}
	res, err := snapshot.Check(context.Background(), reopen(t, be), snapshot.CheckOptions{Now: time.Now, NoLock: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Errors) != 1 || !strings.Contains(res.Errors[0].Message, "tag of its host") {
		t.Errorf("check of a misnamed snapshot: %+v, want one error about its tag", res.Errors)
	}
	for _, host := range []string{"a", "b"} {
		if list, err := snapshot.ListHost(context.Background(), reopen(t, be), host); err != nil || len(list) != 0 {
			t.Errorf("ListHost(%s) = %v, %v; want none", host, list, err)
		}
	}
}
