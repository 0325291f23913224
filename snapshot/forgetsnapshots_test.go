package snapshot_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// TestForgetSnapshots: by id (and prefix), by policy, dry: exactly the
// snapshot objects named go, no pack or index file changes; an id that
// names no snapshot, or several, removes nothing.
func TestForgetSnapshots(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(40, 40))
	var snaps []*snapshot.Snapshot
	for i := range 4 {
		sn, _ := handSnapshot(t, r, t0.Add(time.Duration(i)*time.Hour), "db", nil, handFile{"f.sst", chunks(rng, 20000)})
		snaps = append(snaps, sn)
	}
	packs, index := objects(t, be, repo.PackFile), objects(t, be, repo.IndexFile)
	forget := func(o snapshot.ForgetOptions) (*snapshot.ForgetResult, error) {
		t.Helper()
		o.Location = time.UTC
		return snapshot.ForgetSnapshots(t.Context(), reopen(t, be), o)
	}
	unchanged := func(step string, want ...*snapshot.Snapshot) {
		t.Helper()
		if got := snapshotIDs(t, be); !slices.Equal(got, shortIDs(want...)) {
			t.Errorf("%s: snapshots %v, want %v", step, got, shortIDs(want...))
		}
		if got := objects(t, be, repo.PackFile); len(diffNames(packs, got)) != 0 || len(got) != len(packs) {
			t.Errorf("%s: packs changed", step)
		}
		if got := objects(t, be, repo.IndexFile); len(diffNames(index, got)) != 0 || len(got) != len(index) {
			t.Errorf("%s: index files changed", step)
		}
		if n := len(objects(t, be, repo.LockFile)); n != 0 {
			t.Errorf("%s: %d lock objects left", step, n)
		}
	}

	// Bad ids, each beside a good one: nothing removed.
	for _, bad := range []string{"0000000000", "zz", snaps[0].ID.String()[:3]} {
		_, err := forget(snapshot.ForgetOptions{IDs: []string{snaps[1].ID.String(), bad}})
		if err == nil {
			t.Errorf("forget %q: no error", bad)
		}
		unchanged("forget "+bad, snaps...)
	}
	if _, err := forget(snapshot.ForgetOptions{IDs: []string{"0000000000"}}); !errors.Is(err, snapshot.ErrNoSnapshot) {
		t.Errorf("forget an unknown id: %v, want ErrNoSnapshot", err)
	}
	if _, err := forget(snapshot.ForgetOptions{}); err == nil {
		t.Error("forget with neither ids nor policy: no error")
	}
	if _, err := forget(snapshot.ForgetOptions{IDs: []string{snaps[0].ID.String()}, Policy: snapshot.Policy{Last: 1}}); err == nil {
		t.Error("forget with ids and a policy: no error")
	}

	// Dry: says, changes nothing.
	res, err := forget(snapshot.ForgetOptions{IDs: []string{snaps[1].ID.String()[:8]}, DryRun: true})
	if err != nil || len(res.Removed) != 1 || res.Removed[0].ID != snaps[1].ID || res.Kept != 3 {
		t.Fatalf("dry forget: %+v, %v", res, err)
	}
	unchanged("dry forget", snaps...)

	// By id, the same one twice (once by prefix).
	res, err = forget(snapshot.ForgetOptions{IDs: []string{snaps[1].ID.String()[:8], snaps[1].ID.String(), snaps[2].ID.String()}})
	if err != nil || len(res.Removed) != 2 || res.Kept != 2 {
		t.Fatalf("forget by id: %+v, %v", res, err)
	}
	unchanged("forget by id", snaps[0], snaps[3])

	// By policy: keep the newest; dry first.
	res, err = forget(snapshot.ForgetOptions{Policy: snapshot.Policy{Last: 1}, DryRun: true})
	if err != nil || len(res.Removed) != 1 || res.Removed[0].ID != snaps[0].ID || len(res.Groups) != 1 {
		t.Fatalf("dry forget --keep-last 1: %+v, %v", res, err)
	}
	unchanged("dry forget --keep-last 1", snaps[0], snaps[3])
	res, err = forget(snapshot.ForgetOptions{Policy: snapshot.Policy{Last: 1}})
	if err != nil || len(res.Removed) != 1 || res.Removed[0].ID != snaps[0].ID || res.Kept != 1 {
		t.Fatalf("forget --keep-last 1: %+v, %v", res, err)
	}
	unchanged("forget --keep-last 1", snaps[3])

	// The data waits for prune, which then finds it unused.
	pr, err := snapshot.Prune(t.Context(), reopen(t, be), snapshot.PruneOptions{MaxUnused: 0.05, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	if pr.Stats.SnapshotsRemoved != 0 || pr.Stats.BlobsUnused != 6 {
		t.Errorf("prune after forget: %+v, want 6 unused blobs (3 chunks, 3 trees)", pr.Stats)
	}
	mustCheck(t, be, time.Now)
}

// TestForgetWaitsForLock: forget takes the exclusive lock, so it fails
// beside a backup's shared lock, and with RetryLock goes on once it is
// gone.
func TestForgetWaitsForLock(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(41, 41))
	a, _ := handSnapshot(t, r, t0, "db", nil, handFile{"f.sst", chunks(rng, 1000)})
	lk, err := reopen(t, be).Lock(t.Context(), repo.LockOptions{Command: "backup", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = snapshot.ForgetSnapshots(t.Context(), reopen(t, be), snapshot.ForgetOptions{IDs: []string{a.ID.String()}})
	if !errors.Is(err, repo.ErrLocked) {
		t.Errorf("forget beside a shared lock: %v, want ErrLocked", err)
	}
	if len(snapshotIDs(t, be)) != 1 {
		t.Fatal("a locked-out forget removed a snapshot")
	}
	go func() {
		time.Sleep(300 * time.Millisecond)
		lk.Unlock(t.Context())
	}()
	res, err := snapshot.ForgetSnapshots(t.Context(), reopen(t, be), snapshot.ForgetOptions{IDs: []string{a.ID.String()}, RetryLock: time.Minute})
	if err != nil || len(res.Removed) != 1 || len(snapshotIDs(t, be)) != 0 {
		t.Errorf("forget with RetryLock: %+v, %v", res, err)
	}
}

// TestForgetGroups: forget --keep-* keeps or forgets a cluster group's
// snapshots together, by the groups' states, as prune does.
func TestForgetGroups(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	tree, err := snapshot.SaveTree(t.Context(), r, &snapshot.Tree{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	states := map[string]snapshot.GroupState{}
	var uuids []string
	for g := range 3 {
		id := fmt.Sprintf("3f3a291c-9d6a-4427-9a91-cb1219d6081%d", g)
		uuids = append(uuids, id)
		states[id] = snapshot.GroupState{Completed: true, Finished: true}
		at := t0.Add(time.Duration(g) * time.Hour)
		for _, node := range []string{"a", "b"} {
			sn := &snapshot.Snapshot{Time: at.Add(time.Millisecond), Host: node, Tree: tree,
				Source: snapshot.Source{Kind: "freeze", DataDir: "/data"},
				Group:  &snapshot.GroupRef{Cluster: "shop", UUID: id, Node: node, FreezeAt: at}}
			if err := snapshot.Save(t.Context(), r, sn); err != nil {
				t.Fatal(err)
			}
		}
	}
	res, err := snapshot.ForgetSnapshots(t.Context(), reopen(t, be), snapshot.ForgetOptions{Policy: snapshot.Policy{Last: 1}, Groups: states, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Removed) != 4 || res.Kept != 2 {
		t.Fatalf("removed %d, kept %d; want 4 and 2", len(res.Removed), res.Kept)
	}
	for _, sn := range res.Removed {
		if sn.Group.UUID == uuids[2] {
			t.Fatalf("forgot %s of the newest group", sn.Group.Node)
		}
	}
}
