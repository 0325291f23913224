package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/mem"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func lockOpts(c *clock, exclusive bool) repo.LockOptions {
	return repo.LockOptions{Exclusive: exclusive, Command: "test", Now: c.Now, RefreshEvery: -1}
}

func mustLock(t *testing.T, r *repo.Repository, o repo.LockOptions) *repo.Lock {
	t.Helper()
	lk, err := r.Lock(t.Context(), o)
	if err != nil {
		t.Fatalf("lock (exclusive=%v): %v", o.Exclusive, err)
	}
	return lk
}

func lockNames(t *testing.T, be repo.Backend) []string {
	var names []string
	for n := range list(t, be, repo.LockFile) {
		names = append(names, n)
	}
	return names
}

func TestLockConflicts(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	c := newClock()
	ctx := t.Context()

	s1 := mustLock(t, r, lockOpts(c, false))
	s2 := mustLock(t, r, lockOpts(c, false)) // shared locks coexist
	_, err := r.Lock(ctx, lockOpts(c, true))
	if !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "shared lock by test") {
		t.Fatalf("exclusive lock while shared ones are held: %v", err)
	}
	if n := len(lockNames(t, be)); n != 2 {
		t.Fatalf("%d lock objects after a refused lock, want the 2 held (the refused one removes its own)", n)
	}
	s1.Unlock(ctx)
	s2.Unlock(ctx)
	if n := len(lockNames(t, be)); n != 0 {
		t.Fatalf("%d lock objects after unlock", n)
	}

	x := mustLock(t, r, lockOpts(c, true))
	for _, excl := range []bool{false, true} {
		_, err := r.Lock(ctx, lockOpts(c, excl))
		if !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "exclusive lock by test") {
			t.Fatalf("lock (exclusive=%v) while an exclusive one is held: %v", excl, err)
		}
	}
	for _, n := range lockNames(t, be) {
		if !strings.HasPrefix(n, "exclusive-") {
			t.Fatalf("lock object %q, want exclusive-<hash>", n)
		}
	}
	x.Unlock(ctx)
	mustLock(t, r, lockOpts(c, true)).Unlock(ctx)
}

// TestLockStale: a lock not refreshed for 30 minutes is ignored, one a
// second younger is not.
func TestLockStale(t *testing.T) {
	c := newClock()
	be := mem.NewClocked(c.Now)
	r := initRepo(t, be, smallOptions())
	old := mustLock(t, r, lockOpts(c, true))
	c.Add(repo.LockStaleAfter)
	if _, err := r.Lock(t.Context(), lockOpts(c, false)); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("lock exactly %v old must still count: %v", repo.LockStaleAfter, err)
	}
	c.Add(time.Second)
	lk := mustLock(t, r, lockOpts(c, true))
	lk.Unlock(t.Context())
	if err := old.Err(); !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("the holder of a stale lock must see it lost: %v", err)
	}
}

func TestLockRetry(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	c := newClock()
	s := mustLock(t, r, lockOpts(c, false))
	go func() {
		time.Sleep(300 * time.Millisecond)
		s.Unlock(context.Background())
	}()
	o := lockOpts(c, true)
	o.RetryFor = 10 * time.Second
	start := time.Now()
	x := mustLock(t, r, o)
	x.Unlock(t.Context())
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("got the exclusive lock after %v, before the shared one went", d)
	}

	// Without a release, it gives up after RetryFor.
	s = mustLock(t, r, lockOpts(c, false))
	defer s.Unlock(t.Context())
	o.RetryFor = 700 * time.Millisecond
	start = time.Now()
	_, err := r.Lock(t.Context(), o)
	if !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "gave up after waiting") {
		t.Fatalf("lock with retry against a held lock: %v", err)
	}
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Fatalf("gave up after %v, before the retry time", d)
	}
}

// TestLockDrain: an exclusive locker waiting for shared locks keeps its
// object, so a shared locker that comes meanwhile waits for it (and one
// that does not wait is refused) instead of starving it; once the shared
// locks are gone it holds the lock, and a drain it gives up on leaves no
// object behind.
func TestLockDrain(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	c := newClock()
	ctx := t.Context()
	s := mustLock(t, r, lockOpts(c, false))
	o := lockOpts(c, true)
	o.RetryFor = 20 * time.Second
	got := make(chan *repo.Lock, 1)
	go func() {
		x, err := r.Lock(ctx, o)
		if err != nil {
			t.Error(err)
		}
		got <- x
	}()
	// Wait until the exclusive object stands beside the shared one.
	for deadline := time.Now().Add(10 * time.Second); ; {
		n := 0
		for _, name := range lockNames(t, be) {
			if strings.HasPrefix(name, "exclusive-") {
				n++
			}
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the waiting exclusive locker never left its object")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A new shared locker now meets it: refused at once without a retry.
	if _, err := r.Lock(ctx, lockOpts(c, false)); !errors.Is(err, repo.ErrLocked) || !strings.Contains(err.Error(), "exclusive lock by test") {
		t.Fatalf("shared lock while an exclusive one drains: %v", err)
	}
	// With a retry it waits, and gets its lock after the exclusive one.
	sharedAfter := make(chan time.Time, 1)
	go func() {
		so := lockOpts(c, false)
		so.RetryFor = 20 * time.Second
		l, err := r.Lock(ctx, so)
		if err != nil {
			t.Error(err)
			sharedAfter <- time.Time{}
			return
		}
		sharedAfter <- time.Now()
		l.Unlock(ctx)
	}()
	time.Sleep(200 * time.Millisecond)
	s.Unlock(ctx)
	x := <-got
	if x == nil {
		t.FailNow()
	}
	held := time.Now()
	time.Sleep(100 * time.Millisecond)
	x.Unlock(ctx)
	if at := <-sharedAfter; at.IsZero() || at.Before(held) {
		t.Fatalf("the waiting shared locker got its lock at %v, before the exclusive one (held at %v) ended", at, held)
	}

	// A drain that gives up removes its object.
	s = mustLock(t, r, lockOpts(c, false))
	defer s.Unlock(ctx)
	o.RetryFor = 600 * time.Millisecond
	if _, err := r.Lock(ctx, o); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("drain against a shared lock that stays: %v", err)
	}
	if names := lockNames(t, be); len(names) != 1 {
		t.Fatalf("lock objects after a drain gave up: %v, want only the shared one", names)
	}
}

// TestLockRefresh: a refresh writes a new object and removes the old; a
// lock not refreshed in time is lost for good; a failed refresh makes Err
// report it until a refresh succeeds.
func TestLockRefresh(t *testing.T) {
	inner := mem.New()
	fb := faulty.New(inner)
	r := initRepo(t, fb, smallOptions())
	c := newClock()
	ctx := t.Context()
	lk := mustLock(t, r, lockOpts(c, false))
	first := lk.Name()
	c.Add(repo.LockRefreshInterval)
	if err := lk.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	names := lockNames(t, inner)
	if len(names) != 1 || names[0] == first || names[0] != lk.Name() {
		t.Fatalf("after refresh: objects %v, held %s, first %s", names, lk.Name(), first)
	}
	if err := lk.Err(); err != nil {
		t.Fatal(err)
	}

	// A refresh that fails: Err says so until one succeeds.
	fb.FailOn(func(op string, h repo.Handle) error {
		if op == faulty.OpSave && h.Type == repo.LockFile {
			return errors.New("injected")
		}
		return nil
	})
	c.Add(repo.LockRefreshInterval)
	if err := lk.Refresh(ctx); err == nil {
		t.Fatal("refresh with failing saves succeeded")
	}
	if err := lk.Err(); !errors.Is(err, repo.ErrLockLost) || !strings.Contains(err.Error(), "refresh failed") {
		t.Fatalf("Err after a failed refresh: %v", err)
	}
	fb.FailOn(nil)
	if err := lk.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := lk.Err(); err != nil {
		t.Fatalf("Err after a good refresh: %v", err)
	}

	// 25 minutes without a write: lost, and a refresh cannot revive it.
	c.Add(repo.LockStaleAfter - repo.LockRefreshInterval + time.Second)
	if err := lk.Err(); !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("Err after %v without refresh: %v", repo.LockStaleAfter-repo.LockRefreshInterval, err)
	}
	if err := lk.Refresh(ctx); !errors.Is(err, repo.ErrLockLost) {
		t.Fatalf("refresh of a lost lock: %v", err)
	}
	lk.Unlock(ctx)
	if n := len(lockNames(t, inner)); n != 0 {
		t.Fatalf("%d lock objects after unlock", n)
	}
}

// TestLockBackgroundRefresh runs the refresh goroutine with a short
// interval.
func TestLockBackgroundRefresh(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	lk, err := r.Lock(t.Context(), repo.LockOptions{RefreshEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	first := lk.Name()
	deadline := time.Now().Add(5 * time.Second)
	for lk.Name() == first && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if lk.Name() == first {
		t.Fatal("the lock was not refreshed in the background")
	}
	lk.Unlock(t.Context())
	lk.Unlock(t.Context()) // twice is fine
	if n := len(lockNames(t, be)); n != 0 {
		t.Fatalf("%d lock objects after unlock", n)
	}
}

// TestLockMutualExclusion: many lockers race; an exclusive holder is
// never together with any other holder.
func TestLockMutualExclusion(t *testing.T) {
	be := mem.New()
	initRepo(t, be, smallOptions())
	var shared, exclusive, grants atomic.Int32
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each worker opens its own Repository, as another process would.
			rw := openRepo(t, be)
			for i := range 30 {
				excl := (w+i)%3 == 0
				lk, err := rw.Lock(context.Background(), repo.LockOptions{Exclusive: excl, RefreshEvery: -1})
				if errors.Is(err, repo.ErrLocked) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				grants.Add(1)
				if excl {
					if exclusive.Add(1) != 1 || shared.Load() != 0 {
						t.Error("an exclusive lock was granted while another lock was held")
					}
					time.Sleep(time.Millisecond)
					exclusive.Add(-1)
				} else {
					shared.Add(1)
					if exclusive.Load() != 0 {
						t.Error("a shared lock was granted while an exclusive one was held")
					}
					time.Sleep(time.Millisecond)
					shared.Add(-1)
				}
				lk.Unlock(context.Background())
			}
		}()
	}
	wg.Wait()
	if grants.Load() == 0 {
		t.Fatal("no lock was ever granted")
	}
	t.Logf("%d of 240 lock attempts granted", grants.Load())
}

// TestRemoveLocks: unlock removes stale and unreadable locks only, or with
// all every lock.
func TestRemoveLocks(t *testing.T) {
	c := newClock()
	be := mem.NewClocked(c.Now)
	r := initRepo(t, be, smallOptions())
	ctx := t.Context()
	stale := mustLock(t, r, lockOpts(c, true)) // written at t0, never refreshed
	c.Add(repo.LockStaleAfter + time.Minute)
	live := mustLock(t, r, lockOpts(c, false)) // at t0+31m: the exclusive one is stale
	junk := "shared-" + strings.Repeat("ab", 32)
	if err := be.Save(ctx, repo.Handle{Type: repo.LockFile, Name: junk}, []byte("not a lock")); err != nil {
		t.Fatal(err)
	}
	c.Add(29 * time.Minute) // the shared lock is 29 minutes old: live

	removed, left, err := r.RemoveLocks(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]repo.LockState{}
	for _, lk := range removed {
		got[lk.Name] = lk.State
	}
	if len(removed) != 2 || got[stale.Name()] != repo.LockStale || got[junk] != repo.LockUnreadable {
		t.Fatalf("removed %v, want the stale lock %s and the unreadable %s", got, stale.Name(), junk)
	}
	if len(left) != 1 || left[0].Name != live.Name() || left[0].State != repo.LockLive {
		t.Fatalf("left %+v, want only the live lock %s", left, live.Name())
	}
	if names := lockNames(t, be); len(names) != 1 || names[0] != live.Name() {
		t.Fatalf("lock objects %v, want only the live lock %s (and not unlock's own)", names, live.Name())
	}
	removed, _, err = r.RemoveLocks(ctx, true)
	if err != nil || len(removed) != 1 {
		t.Fatalf("remove all: %v, %v", removed, err)
	}
	if n := len(lockNames(t, be)); n != 0 {
		t.Fatalf("%d lock objects after removing all", n)
	}
}

// TestLockOfDeadProcess: a lock whose process ran on this machine and is
// gone blocks nobody: the next locker removes it at once and says so.
// Before, it blocked every backup and restore for 30 minutes.
func TestLockOfDeadProcess(t *testing.T) {
	if _, err := os.Stat("/proc/self/ns/pid"); err != nil {
		t.Skip("no /proc: dead processes are told by the time rule alone")
	}
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	ctx := t.Context()
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	o := repo.LockOptions{Exclusive: true, Command: "prune", PID: child.Process.Pid, RefreshEvery: -1}
	if _, err := r.Lock(ctx, o); err != nil {
		t.Fatal(err)
	}
	// While the process runs, its lock holds.
	if _, err := r.Lock(ctx, repo.LockOptions{RefreshEvery: -1}); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("lock while the prune's process runs: %v", err)
	}
	child.Process.Kill()
	child.Wait()

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	lk, err := r.Lock(ctx, repo.LockOptions{Command: "restore", RefreshEvery: -1, Log: log})
	if err != nil {
		t.Fatalf("lock after the prune's process died: %v", err)
	}
	lk.Unlock(ctx)
	if !strings.Contains(logs.String(), "removed the lock of a process that no longer runs") || !strings.Contains(logs.String(), fmt.Sprintf("pid %d", child.Process.Pid)) {
		t.Fatalf("no log line about the removed lock:\n%s", logs.String())
	}
	if n := len(lockNames(t, be)); n != 0 {
		t.Fatalf("%d lock objects left; the dead process's lock should be gone", n)
	}

	// Another host's lock with the same pid is left to the time rule.
	far := repo.LockOptions{Exclusive: true, Host: "db-far", PID: child.Process.Pid, RefreshEvery: -1}
	if _, err := r.Lock(ctx, far); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Lock(ctx, repo.LockOptions{RefreshEvery: -1}); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("another host's lock with a pid that is not running here must hold: %v", err)
	}
}

// TestLockClockSkew: staleness is the storage's age of a lock object, not
// the writer's time in it. A holder whose clock is hours slow keeps its
// lock; a dead host whose clock was hours fast does not keep its lock
// alive. Before, both were judged by the writer's time.
func TestLockClockSkew(t *testing.T) {
	storage := newClock()
	be := mem.NewClocked(storage.Now)
	r := initRepo(t, be, smallOptions())
	ctx := t.Context()
	slow := func() time.Time { return storage.Now().Add(-3 * time.Hour) }
	fast := func() time.Time { return storage.Now().Add(3 * time.Hour) }
	right := repo.LockOptions{Exclusive: true, Now: storage.Now, RefreshEvery: -1}

	held := mustLock(t, r, repo.LockOptions{Exclusive: true, Host: "db-slow", Now: slow, RefreshEvery: -1})
	storage.Add(time.Minute)
	if _, err := r.Lock(ctx, right); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("a minute-old lock written by a host 3 hours slow was taken for stale: %v", err)
	}
	held.Unlock(ctx)

	mustLock(t, r, repo.LockOptions{Exclusive: true, Host: "db-fast", Now: fast, RefreshEvery: -1}) // never refreshed: its host died
	storage.Add(repo.LockStaleAfter - time.Minute)
	if _, err := r.Lock(ctx, right); !errors.Is(err, repo.ErrLocked) {
		t.Fatalf("a lock the storage saw 29 minutes ago must hold: %v", err)
	}
	storage.Add(2 * time.Minute)
	lk, err := r.Lock(ctx, right)
	if err != nil {
		t.Fatalf("a lock the storage saw 31 minutes ago, written by a host 3 hours fast, must be stale: %v", err)
	}
	lk.Unlock(ctx)
}

// TestLockNoStorageTimes: where the storage reports no times, a lock is
// stale once the locker has seen the same object for the stale interval.
func TestLockNoStorageTimes(t *testing.T) {
	c := newClock()
	be := noTimes{mem.New()}
	r := initRepo(t, be, smallOptions())
	mustLock(t, r, repo.LockOptions{Exclusive: true, Host: "db-gone", Now: c.Now, RefreshEvery: -1})
	o := repo.LockOptions{Now: c.Now, RefreshEvery: -1, RetryFor: time.Hour}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	// Each pause of the retry loop moves the clock on by 10 minutes.
	go func() {
		for ctx.Err() == nil {
			time.Sleep(50 * time.Millisecond)
			c.Add(10 * time.Minute)
		}
	}()
	lk, err := r.Lock(ctx, o)
	if err != nil {
		t.Fatalf("a lock seen unrefreshed for over %v was not taken for stale: %v", repo.LockStaleAfter, err)
	}
	lk.Unlock(ctx)
}

// noTimes hides the storage's times, as a backend that does not report
// them would.
type noTimes struct{ *mem.Backend }

func (b noTimes) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	return b.Backend.List(ctx, t, func(fi repo.FileInfo) error {
		fi.ModTime = time.Time{}
		return fn(fi)
	})
}

// TestRefreshIndex: an index loaded before a prune is reloaded when an
// index file it read is gone or a new one supersedes others, and only
// extended otherwise.
func TestRefreshIndex(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	ctx := t.Context()
	rng := newRand(t)
	save := func(r *repo.Repository, n int) []repo.ID {
		var ids []repo.ID
		for range n {
			b := randomBytes(rng, 1000)
			id := r.BlobID(b)
			if _, err := r.SaveBlob(ctx, repo.DataBlob, id, b); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		if err := r.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	a := save(r, 3)
	reader := openRepo(t, be)
	if err := reader.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	b := save(openRepo(t, be), 2) // another writer
	if err := reader.RefreshIndex(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range append(a, b...) {
		if !reader.Index().Has(id) {
			t.Fatalf("blob %s missing after refresh", id.Str())
		}
	}
	// A prune-like rewrite: one index naming only b's packs supersedes
	// every file, then the old files go.
	var all []repo.ID
	var keep []repo.PackBlobs
	for name := range list(t, be, repo.IndexFile) {
		_, id, ok := repo.ParseObjectName(repo.IndexFile, name)
		if !ok {
			t.Fatalf("index file %s: not a name of the layout", name)
		}
		all = append(all, id)
		plain, err := r.LoadObject(ctx, repo.IndexFile, name, -1)
		if err != nil {
			t.Fatal(err)
		}
		d, err := repo.DecodeIndex(plain)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range d.Packs {
			if p.Blobs[0].ID == b[0] || p.Blobs[0].ID == b[1] {
				keep = append(keep, p)
			}
		}
	}
	if _, err := r.SaveIndex(ctx, &repo.IndexData{Supersedes: all, Packs: keep}); err != nil {
		t.Fatal(err)
	}
	if err := reader.RefreshIndex(ctx); err != nil {
		t.Fatal(err)
	}
	if reader.Index().Has(a[0]) {
		t.Fatal("after a superseding index appeared, the refreshed index still has a blob it dropped")
	}
	if !reader.Index().Has(b[0]) {
		t.Fatal("refreshed index lost a blob the new index names")
	}
}
