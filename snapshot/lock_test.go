package snapshot_test

import (
	"context"
	"errors"
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

// TestRestoreLockedOutByPrune: a restore takes a shared lock, so it fails
// at once while a prune holds the exclusive one, and works after.
func TestRestoreLockedOutByPrune(t *testing.T) {
	fx := newFixture(t, 71)
	be := mem.New()
	r := newRepo(t, be)
	sn := backup(t, r, fx.src, false)
	lk, err := r.Lock(context.Background(), repo.LockOptions{Exclusive: true, Command: "prune"})
	if err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	err = snapshot.Restore(context.Background(), reopen(t, be), sn, snapshot.RestoreOptions{Target: target})
	if !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("restore under an exclusive lock: %v", err)
	}
	lk.Unlock(context.Background())
	if err := snapshot.Restore(context.Background(), reopen(t, be), sn, snapshot.RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	if n := len(objects(t, be, repo.LockFile)); n != 0 {
		t.Fatalf("%d lock objects left after the restore", n)
	}
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
