package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// TestBackupLockedOutByPrune: while an exclusive lock is held, a backup
// fails before it freezes the server, and succeeds once it is gone.
func TestBackupLockedOutByPrune(t *testing.T) {
	fx := newFixture(t, 70)
	be := mem.New()
	r := newRepo(t, be)
	lk, err := r.Lock(context.Background(), repo.LockOptions{Exclusive: true, Command: "prune"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = snapshot.Backup(context.Background(), reopen(t, be), fx.src, snapshot.BackupOptions{Host: "h"})
	if !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("backup under an exclusive lock: %v", err)
	}
	if fx.src.freezes.Load() != 0 {
		t.Fatal("a backup that could not lock froze the server")
	}
	lk.Unlock(context.Background())
	sn := backup(t, reopen(t, be), fx.src, false)
	checkRestore(t, reopen(t, be), sn, fx.files)
	if n := len(objects(t, be, repo.LockFile)); n != 0 {
		t.Fatalf("%d lock objects left after the backup", n)
	}
}

// TestRestoreTakesNoLock: a restore goes ahead while a prune holds the
// exclusive lock (or a dead prune left it), and leaves no lock object.
func TestRestoreTakesNoLock(t *testing.T) {
	fx := newFixture(t, 71)
	be := mem.New()
	r := newRepo(t, be)
	sn := backup(t, r, fx.src, false)
	lk, err := r.Lock(context.Background(), repo.LockOptions{Exclusive: true, Command: "prune", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock(context.Background())
	checkRestore(t, reopen(t, be), sn, fx.files)
	if n := len(objects(t, be, repo.LockFile)); n != 1 {
		t.Fatalf("%d lock objects after the restore, want only the prune's", n)
	}
}

// pruneMidRestore runs prune once, when a restore reads from its second
// pack (the first is its tree's), after the restore loaded its index and
// the tree: the prune then removes packs the restore is reading.
type pruneMidRestore struct {
	repo.Backend
	loads atomic.Int32
	once  sync.Once
	prune func()
}

// openPruneMid opens the repository in be as a restore would, through a
// pruneMidRestore that runs prune, with its index loaded.
func openPruneMid(t *testing.T, be repo.Backend, prune func()) *repo.Repository {
	t.Helper()
	r, err := repo.Open(context.Background(), &pruneMidRestore{Backend: be, prune: prune}, "pw", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.LoadIndex(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

func (b *pruneMidRestore) Load(ctx context.Context, h repo.Handle, off, n int64, fn func(io.Reader) error) error {
	// Every later load waits in Do until the prune is done.
	if h.Type == repo.PackFile && b.loads.Add(1) >= 2 {
		b.once.Do(b.prune)
	}
	return b.Backend.Load(ctx, h, off, n, fn)
}

// TestRestoreWhilePruneRepacks: a prune that repacks and deletes the
// packs of the snapshot being restored runs in the middle of the restore.
// The restore loads the index again and reads the blobs from their new
// packs. (Before, the restore's shared lock kept the prune out, and a
// dead process's lock kept the restore out.)
func TestRestoreWhilePruneRepacks(t *testing.T) {
	fx := newFixture(t, 73)
	be := mem.New()
	backup(t, newRepo(t, be), fx.src, false)
	// The second snapshot lacks the largest table, so the packs it shares
	// with the first are mostly unused once the first is forgotten.
	delete(fx.files, "000010.sst")
	fx.relist()
	sn := backup(t, reopen(t, be), fx.src, false)

	var res *snapshot.PruneResult
	r := openPruneMid(t, be, func() { res = prune(t, be, pruneOpts(time.Now, snapshot.Policy{Last: 1})) })
	var logs bytes.Buffer
	target := filepath.Join(t.TempDir(), "restored")
	err := snapshot.Restore(context.Background(), r, sn, snapshot.RestoreOptions{Target: target, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatalf("restore while a prune repacked: %v", err)
	}
	if res == nil || res.Stats.PacksRepacked+res.Stats.PacksDeleted == 0 {
		t.Fatalf("the prune moved nothing: %+v", res)
	}
	if !strings.Contains(logs.String(), "packs were removed while restoring") {
		t.Fatalf("the restore never needed the new index; the test proves nothing:\n%s", logs.String())
	}
	compareDir(t, target, fx.files)
}

// TestRestoreOfForgottenSnapshot: a prune that forgets the snapshot being
// restored and removes all its data makes the restore fail, naming the
// snapshot, with nothing left that looks like a database.
func TestRestoreOfForgottenSnapshot(t *testing.T) {
	fx := newFixture(t, 74)
	be := mem.New()
	sn := backup(t, newRepo(t, be), fx.src, false)
	r := openPruneMid(t, be, func() { prune(t, be, pruneOpts(time.Now, snapshot.Policy{Tags: []string{"none-has-it"}})) })
	target := filepath.Join(t.TempDir(), "restored")
	err := snapshot.Restore(context.Background(), r, sn, snapshot.RestoreOptions{Target: target})
	if err == nil || !strings.Contains(err.Error(), "snapshot "+sn.ID.Str()) {
		t.Fatalf("restore of a snapshot pruned away: %v", err)
	}
	if _, err := os.Stat(filepath.Join(target, "CURRENT")); !os.IsNotExist(err) {
		t.Fatalf("CURRENT after a failed restore: %v", err)
	}
	t.Log(err)
}

// clockSource advances a clock while the server is frozen, as a backup
// that stalls for half an hour would see.
type clockSource struct {
	*dirSource
	clock *testClock
	jump  time.Duration
}

func (c *clockSource) Freeze(ctx context.Context) (*source.Frozen, error) {
	c.clock.Add(c.jump)
	return c.dirSource.Freeze(ctx)
}

// TestBackupLockLostSavesNoSnapshot: a backup whose lock went unrefreshed
// long enough that a prune may have taken it for stale does not save its
// snapshot; it still ends the freeze.
func TestBackupLockLostSavesNoSnapshot(t *testing.T) {
	fx := newFixture(t, 71)
	be := mem.New()
	r := newRepo(t, be)
	clk := newTestClock(time.Now())
	src := &clockSource{dirSource: fx.src, clock: clk, jump: repo.LockStaleAfter - repo.LockRefreshInterval + time.Second}
	_, err := snapshot.Backup(context.Background(), r, src, snapshot.BackupOptions{Host: "h", Now: clk.Now})
	if !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("backup with a lost lock: %v", err)
	}
	fx.src.balanced(t)
	assertNoSnapshots(t, be)

	src.jump = repo.LockRefreshInterval // a refresh interval is fine
	if _, err := snapshot.Backup(context.Background(), r, src, snapshot.BackupOptions{Host: "h", Now: clk.Now}); err != nil {
		t.Fatal(err)
	}
}

// TestBackupReloadsIndexAfterPrune: the caller loaded the index, then a
// prune removed every pack it names; the backup must not reuse those
// blobs (its snapshot would reference deleted data) but store them again.
func TestBackupReloadsIndexAfterPrune(t *testing.T) {
	fx := newFixture(t, 72)
	be := mem.New()
	first := backup(t, newRepo(t, be), fx.src, false)
	stale := reopen(t, be) // index loaded: it knows every blob of first

	// Forget every snapshot (none has the tag) and collect everything.
	res := prune(t, be, pruneOpts(time.Now, snapshot.Policy{Tags: []string{"none-has-it"}}))
	if res.Stats.SnapshotsRemoved != 1 || len(objects(t, be, repo.PackFile)) != 0 {
		t.Fatalf("prune left packs: %+v", res.Stats)
	}
	sn := backup(t, stale, fx.src, false)
	if sn.Summary.BlobsNew == 0 {
		t.Fatal("the backup stored no blob: it reused blobs of the pruned snapshot")
	}
	checkRestore(t, reopen(t, be), sn, fx.files)
	mustCheck(t, be, time.Now)
	_ = first
}

// TestRestoreRefusesTreeIndexMismatch: a tree whose chunk lengths disagree
// with the index (sizes swapped between two chunks, so the file's length
// still adds up) is refused before anything is written. Before, the
// chunks were written at offsets the tree's sizes gave: a file of the
// right length with the wrong bytes, or a late length error.
func TestRestoreRefusesTreeIndexMismatch(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(75, 75))
	a, b := randBytes(rng, 3000), randBytes(rng, 5000)
	ids := []repo.ID{r.BlobID(a), r.BlobID(b)}
	for i, c := range [][]byte{a, b} {
		if _, err := r.SaveBlob(ctx, repo.DataBlob, ids[i], c); err != nil {
			t.Fatal(err)
		}
	}
	tree := &snapshot.Tree{Files: []snapshot.File{{Name: "000001.sst", Role: "table", Length: 8000, Chunks: ids, Sizes: []uint32{5000, 3000}}}}
	tid, err := snapshot.SaveTree(ctx, r, tree)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: time.Now(), Host: "h", Tree: tid, Source: snapshot.Source{Kind: "rocksdb-freeze"}}
	if err := snapshot.Save(ctx, r, sn); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(t.TempDir(), "restored")
	err = snapshot.Restore(ctx, reopen(t, be), sn, snapshot.RestoreOptions{Target: target})
	if err == nil || !strings.Contains(err.Error(), "the tree and the index disagree") || !strings.Contains(err.Error(), sn.ID.Str()) {
		t.Fatalf("restore of a tree that disagrees with the index: %v", err)
	}
	if entries, _ := os.ReadDir(target); len(entries) != 0 {
		t.Fatalf("the refused restore wrote %d files", len(entries))
	}
}
