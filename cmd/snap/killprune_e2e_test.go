//go:build linux

package main_test

import (
	"bytes"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"

	"github.com/snapbackup/snap/internal/testserver"
)

// TestKilledPruneNeverBlocks kills `snap prune` with SIGKILL at ten
// moments spread over its run: after it wrote its lock, while it removes
// snapshots, while it repacks (packs and their index files appear), when
// it writes the new index, while it deletes packs and old index files. The
// moments are the Nth change the prune makes to the repository, watched
// with inotify on a fresh copy of the same repository each time. After
// each kill, at once:
//
//   - `snap restore --latest` succeeds and the database holds every key of
//     the last backup (restore takes no lock);
//   - `snap backup` succeeds without waiting (the dead prune's lock is of
//     this machine and its process is gone, so the backup removes it);
//   - a rerun of prune succeeds, and `snap check --read-data` passes.
func TestKilledPruneNeverBlocks(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	bin := testserver.Binary(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	srv := testserver.Start(t, bin, data, "--write_buffer_size", "1048576", "--level0_file_num_compaction_trigger", "50")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	rng := mrand.New(mrand.NewPCG(14, 14))

	e := newEnv(t)
	e.vars = append(e.vars, "SNAP_SERVER="+srv.Addr, "SNAP_DATA="+data)
	// Small packs, so prune has many to repack and delete.
	e.ok(nil, "init", "--pack-size", "1", "--chunk-min", "64", "--chunk-avg", "128", "--chunk-max", "512")
	// Each backup stores a new table and the WAL's unflushed tail, which
	// later snapshots no longer have: packs then mix chunks that the kept
	// snapshot uses with chunks it does not, and prune must repack them.
	// The compaction in round 2 leaves whole packs unused, to delete.
	want := map[string]string{}
	for round := range 6 {
		writeKeys(t, c, rng, want, "k", round*3000, 6000)
		command(t, c, "FLUSH")
		if round == 2 {
			command(t, c, "COMPACT")
		}
		writeKeys(t, c, rng, want, "w", round*1500, 1500) // stays in the WAL
		e.ok(nil, "backup")
	}
	base := e.repo

	// A reference run on a copy: how many changes an uninterrupted prune
	// makes.
	ref := e.copyRepo(t, base)
	n, seq, code := ref.pruneKilledAt(t, 0)
	if code != 0 || n < 20 {
		t.Fatalf("the reference prune exited %d after %d changes to the repository; want a prune with work to do", code, n)
	}
	t.Logf("an uninterrupted prune makes %d changes to the repository", n)
	// The moments: the first change of each kind, then others spread
	// evenly, ten in all, never the very last change.
	var moments []int
	firstOf := map[string]bool{}
	for i, what := range strings.Split(seq, ",") {
		if !firstOf[what] && i+1 < n {
			firstOf[what] = true
			moments = append(moments, i+1)
		}
	}
	for i := 0; len(moments) < 10 && i < 10; i++ {
		if k := 1 + i*(n-2)/9; !slices.Contains(moments, k) {
			moments = append(moments, k)
		}
	}
	slices.Sort(moments)

	kinds := map[string]bool{}
	for i, k := range moments {
		x := e.copyRepo(t, base)
		_, seen, code := x.pruneKilledAt(t, k)
		kinds[seen] = true
		if code == 0 {
			t.Fatalf("moment %d (change %d of %d): prune finished before it was killed", i+1, k, n)
		}
		start := time.Now()
		target := filepath.Join(t.TempDir(), "restored")
		x.ok(nil, "restore", "--latest", "--target", target)
		restoreTime := time.Since(start)
		checkConsistency(t, target)
		got := ldbScan(t, target)
		for key, v := range want {
			if got[key] != v {
				t.Fatalf("moment %d: key %s restored as %q after a killed prune", i+1, key, got[key])
			}
		}
		start = time.Now()
		r := x.ok(nil, "backup", "--log-level", "info")
		backupTime := time.Since(start)
		if !strings.Contains(r.stderr, "removed the lock of a process that no longer runs") && x.hasLocks(t) {
			t.Fatalf("moment %d: the backup neither removed the dead prune's lock nor found none:\n%s", i+1, r.stderr)
		}
		var pr pruneStatsJSON
		x.ok(&pr, "prune", "--keep-last", "1", "--json")
		var ck checkJSON
		x.ok(&ck, "check", "--read-data", "--json")
		if ck.ErrorCount != 0 || ck.PacksRead != ck.Packs {
			t.Fatalf("moment %d: check --read-data after the rerun: %+v", i+1, ck)
		}
		t.Logf("killed at change %d/%d (%s): restore %v, backup %v (no wait), rerun removed %d snapshots and %d packs; check --read-data read %d packs, 0 errors",
			k, n, seen, restoreTime.Round(time.Millisecond), backupTime.Round(time.Millisecond), pr.Stats.SnapshotsRemoved, pr.Stats.PacksDeleted, ck.PacksRead)
	}
	// The moments cover every phase: the lock, forgetting snapshots,
	// repacking (new packs and their index files), the new index, and
	// deleting packs and old index files. (The reference run's order; a
	// killed run's kth change may be another of the same moment.)
	for _, k := range []string{"locks created", "snapshots removed", "data created", "index created", "data removed", "index removed"} {
		if !firstOf[k] {
			t.Errorf("the reference prune made no change of kind %q (%s)", k, seq)
		}
	}
	t.Logf("kinds of the changes the kills followed: %v", kinds)
}

// copyRepo returns an env like e on a copy of the repository at dir.
func (e *env) copyRepo(t *testing.T, dir string) *env {
	t.Helper()
	x := &env{t: t, repo: filepath.Join(t.TempDir(), "repo"), vars: append([]string{}, e.vars...)}
	if out, err := exec.Command("cp", "-a", dir, x.repo).CombinedOutput(); err != nil {
		t.Fatalf("copy the repository: %v\n%s", err, out)
	}
	x.vars = append(x.vars, "SNAP_REPO="+x.repo) // the last one wins
	return x
}

func (e *env) hasLocks(t *testing.T) bool {
	entries, err := os.ReadDir(filepath.Join(e.repo, "locks"))
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if !strings.HasPrefix(en.Name(), ".") {
			return true
		}
	}
	return false
}

// pruneKilledAt runs `snap prune --keep-last 1` and sends it SIGKILL as
// soon as it has made the kth change to the repository (an object created
// or removed; k = 0: never). It returns how many changes it saw, what the
// kth was (with k = 0, every change in order, comma-separated), and the
// exit code (-1 when killed).
func (e *env) pruneKilledAt(t *testing.T, k int) (int, string, int) {
	t.Helper()
	w := watchRepo(t, e.repo)
	defer w.close()
	cmd := exec.Command(snapBin, "prune", "--keep-last", "1")
	cmd.Env = append(os.Environ(), e.vars...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	var what atomic.Value
	what.Store("")
	var seq []string // with k = 0: every change, in order
	consumed := make(chan struct{})
	go func() {
		defer close(consumed)
		for ev := range w.events {
			seq = append(seq, ev.what)
			if k > 0 && ev.n == k {
				cmd.Process.Signal(syscall.SIGKILL)
				what.Store(ev.what)
			}
		}
	}()
	err := <-exited
	time.Sleep(100 * time.Millisecond) // the last events of a finished prune
	w.close()
	<-consumed
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if k == 0 && code != 0 {
		t.Fatalf("reference prune: exit %d\n%s", code, errb.String())
	}
	if k == 0 {
		return int(w.count.Load()), strings.Join(seq, ","), code
	}
	return int(w.count.Load()), what.Load().(string), code
}

type repoEvent struct {
	n    int
	what string
}

// repoWatch reports every object created or removed in a local
// repository (temp files left out), in order.
type repoWatch struct {
	fd     int
	dirs   map[int]string
	events chan repoEvent
	count  atomic.Int32
	done   chan struct{}
	closed atomic.Bool
}

func watchRepo(t *testing.T, repo string) *repoWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	w := &repoWatch{fd: fd, dirs: map[int]string{}, events: make(chan repoEvent, 4096), done: make(chan struct{})}
	const mask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_TO
	add := func(dir string) {
		wd, err := unix.InotifyAddWatch(fd, dir, mask)
		if err != nil {
			t.Fatalf("watch %s: %v", dir, err)
		}
		w.dirs[wd] = dir
	}
	for _, d := range []string{"snapshots", "index", "locks", "data"} {
		add(filepath.Join(repo, d))
	}
	subs, _ := filepath.Glob(filepath.Join(repo, "data", "*"))
	for _, s := range subs {
		if fi, err := os.Stat(s); err == nil && fi.IsDir() {
			add(s)
		}
	}
	go func() {
		defer close(w.done)
		defer close(w.events)
		buf := make([]byte, 64<<10)
		for !w.closed.Load() {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if n, err := unix.Poll(pfd, 50); err != nil && err != unix.EINTR {
				return
			} else if n <= 0 {
				continue
			}
			n, err := unix.Read(fd, buf)
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			if err != nil || n <= 0 {
				return
			}
			for off := 0; off+unix.SizeofInotifyEvent <= n; {
				ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
				name := string(bytes.TrimRight(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)], "\x00"))
				off += unix.SizeofInotifyEvent + int(ev.Len)
				dir := w.dirs[int(ev.Wd)]
				if ev.Mask&unix.IN_ISDIR != 0 {
					if ev.Mask&unix.IN_CREATE != 0 {
						if wd, err := unix.InotifyAddWatch(fd, filepath.Join(dir, name), mask); err == nil {
							w.dirs[wd] = filepath.Join(dir, name)
						}
					}
					continue
				}
				if strings.HasPrefix(name, ".") || name == "" {
					continue // temp files
				}
				op := "created"
				if ev.Mask&unix.IN_DELETE != 0 {
					op = "removed"
				}
				rel, _ := filepath.Rel(repo, filepath.Join(dir, name))
				kind, _, _ := strings.Cut(rel, "/")
				num := int(w.count.Add(1))
				select {
				case w.events <- repoEvent{n: num, what: fmt.Sprintf("%s %s", kind, op)}:
				default:
				}
			}
		}
	}()
	return w
}

// close stops the watch; events still queued are dropped.
func (w *repoWatch) close() {
	if w.closed.Swap(true) {
		return
	}
	<-w.done
	unix.Close(w.fd)
}
