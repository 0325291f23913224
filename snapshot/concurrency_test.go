package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/gcs"
	"github.com/snapbackup/snap/repo/local"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// smallFixture is a data directory of a few small tables, a WAL and the
// rest, for tests that make many backups.
func smallFixture(t *testing.T, rng *rand.Rand) *fixture {
	dir := t.TempDir()
	fx := &fixture{dir: dir, files: map[string][]byte{}, src: &dirSource{dir: dir}}
	for i := range 3 {
		fx.put(t, fmt.Sprintf("%06d.sst", 10+i), randBytes(rng, 40<<10+rng.IntN(80<<10)))
	}
	fx.put(t, "000100.log", compressible(rng, 30<<10))
	fx.put(t, "MANIFEST-000005", randBytes(rng, 300))
	fx.put(t, "CURRENT", []byte("MANIFEST-000005\n"))
	fx.relist()
	return fx
}

func (fx *fixture) put(t *testing.T, name string, data []byte) {
	writeFile(t, fx.dir, name, data)
	fx.files[name] = data
}

// step changes the data directory as a server would between backups: a
// table goes, a new one comes (sometimes with the content of one that went
// earlier, so a backup may want blobs a prune is collecting), the WAL
// grows.
func (fx *fixture) step(t *testing.T, rng *rand.Rand, round int, old [][]byte) [][]byte {
	var tables []string
	for name := range fx.files {
		if filepath.Ext(name) == ".sst" {
			tables = append(tables, name)
		}
	}
	slices.Sort(tables)
	gone := tables[rng.IntN(len(tables))]
	old = append(old, fx.files[gone])
	os.Remove(filepath.Join(fx.dir, gone))
	delete(fx.files, gone)
	data := randBytes(rng, 30<<10+rng.IntN(60<<10))
	if rng.IntN(2) == 0 && len(old) > 1 {
		data = old[rng.IntN(len(old)-1)]
	}
	fx.put(t, fmt.Sprintf("%06d.sst", 100+round), data)
	wal := append(append([]byte{}, fx.files["000100.log"]...), compressible(rng, 8<<10)...)
	fx.put(t, "000100.log", wal)
	fx.relist()
	return old
}

func newGCSBackend(t *testing.T) repo.Backend {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{NoListener: true, Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.HTTPHandler())
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		srv.Stop()
	})
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: "snap-concurrency"})
	be, err := gcs.Open(context.Background(), "snap-concurrency", "repo", gcs.Options{ClientOptions: []option.ClientOption{
		option.WithEndpoint(hs.URL + "/storage/v1/"), option.WithoutAuthentication(),
	}})
	if err != nil {
		t.Fatal(err)
	}
	return be
}

// TestConcurrentBackupsAndPrunes runs backups from several hosts (each
// its own Repository scoped to its host, loading its index before it
// locks, as snap backup does) and prunes with no time margin, so that
// only the locks keep them apart, for many rounds. Then every snapshot left restores exactly as it
// was backed up and check --read-data passes.
func TestConcurrentBackupsAndPrunes(t *testing.T) {
	backends := map[string]func(t *testing.T) repo.Backend{
		"mem": func(*testing.T) repo.Backend { return mem.New() },
		"local": func(t *testing.T) repo.Backend {
			l, err := local.Create(filepath.Join(t.TempDir(), "repo"))
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
		"gcs-emulator": newGCSBackend,
	}
	for _, name := range []string{"mem", "local", "gcs-emulator"} {
		t.Run(name, func(t *testing.T) { concurrentRounds(t, backends[name](t), 3, 2*time.Second) })
	}
}

// TestEightBackupsWhilePruneRepacks: eight hosts back up again and again
// while prune, given time to wait (--retry-lock), plans and repacks beside
// their shared locks and then drains them for the exclusive lock. Every
// snapshot a backup reported must restore exactly, and prunes must have
// repacked beside running backups and taken in snapshots written
// meanwhile (otherwise the test did not test that).
func TestEightBackupsWhilePruneRepacks(t *testing.T) {
	be, err := local.Create(filepath.Join(t.TempDir(), "repo"))
	if err != nil {
		t.Fatal(err)
	}
	st := concurrentRounds(t, be, 8, 30*time.Second)
	if t.Failed() {
		return
	}
	t.Logf("prunes beside backups: %d, of which repacked: %d; snapshots taken in: %d; packs kept for them: %d",
		st.beside, st.besideRepacked, st.appeared, st.keptForNew)
	if st.besideRepacked == 0 {
		t.Fatal("no prune repacked beside running backups")
	}
	if st.appeared == 0 {
		t.Fatal("no snapshot was written while a prune planned: the phases never overlapped")
	}
}

type concurrentStats struct {
	beside, besideRepacked, appeared, keptForNew int
}

func concurrentRounds(t *testing.T, be repo.Backend, hosts int, pruneRetry time.Duration) concurrentStats {
	rounds := 10
	if testing.Short() {
		rounds = 3
	}
	var cst concurrentStats
	var cmu sync.Mutex
	newRepo(t, be)
	ctx := context.Background()
	var (
		mu       sync.Mutex
		made     = map[string]map[string][]byte{} // snapshot id -> files
		locked   atomic.Int32
		prunes   atomic.Int32
		removed  atomic.Int32
		backupWG sync.WaitGroup
		done     = make(chan struct{})
	)
	for h := range hosts {
		backupWG.Add(1)
		go func() {
			defer backupWG.Done()
			rng := rand.New(rand.NewPCG(uint64(h), 80))
			fx := smallFixture(t, rng)
			var old [][]byte
			for round := range rounds {
				if round > 0 {
					old = fx.step(t, rng, round, old)
				}
				r, err := repo.Open(ctx, be, "pw", repo.Options{})
				if err != nil {
					t.Error(err)
					return
				}
				// As snap backup: scoped to the host, the index is loaded
				// before the lock, and a prune may run in between (the
				// scoped reader must see it: docs/design.md, "Prune").
				r.ScopeTo(fmt.Sprintf("db-%d", h))
				err = r.LoadIndex(ctx)
				time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
				var sn *snapshot.Snapshot
				if err == nil {
					sn, err = snapshot.Backup(ctx, r, fx.src, snapshot.BackupOptions{Host: fmt.Sprintf("db-%d", h), RetryLock: 20 * time.Second})
				}
				r.Close()
				if errors.Is(err, repo.ErrLocked) {
					locked.Add(1)
					continue
				}
				if err != nil {
					t.Errorf("host %d round %d: %v", h, round, err)
					return
				}
				mu.Lock()
				made[sn.ID.String()] = copyFiles(fx.files)
				mu.Unlock()
				time.Sleep(time.Duration(rng.IntN(40)) * time.Millisecond)
			}
		}()
	}
	var pruneWG sync.WaitGroup
	pruneWG.Add(1)
	go func() {
		defer pruneWG.Done()
		o := pruneOpts(time.Now, snapshot.Policy{Last: 2})
		o.UnreferencedMargin = 0 // only the locks protect the backups
		o.MaxUnused = 0
		o.RetryLock = pruneRetry
		for {
			select {
			case <-done:
				return
			default:
			}
			r, err := repo.Open(ctx, be, "pw", repo.Options{})
			if err != nil {
				t.Error(err)
				return
			}
			res, err := snapshot.Prune(ctx, r, o)
			r.Close()
			switch {
			case errors.Is(err, repo.ErrLocked):
				locked.Add(1)
			case err != nil:
				t.Errorf("prune: %v", err)
				return
			default:
				prunes.Add(1)
				removed.Add(int32(res.Stats.SnapshotsRemoved))
				cmu.Lock()
				if res.Stats.Beside {
					cst.beside++
					if res.Stats.PacksRepacked > 0 {
						cst.besideRepacked++
					}
				}
				cst.appeared += res.Stats.SnapshotsAppeared
				cst.keptForNew += res.Stats.PacksKeptForNew
				cmu.Unlock()
			}
			time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
		}
	}()
	backupWG.Wait()
	close(done)
	pruneWG.Wait()
	if t.Failed() {
		return cst
	}
	// One more prune, alone, then everything must be whole.
	o := pruneOpts(time.Now, snapshot.Policy{Last: 2})
	o.UnreferencedMargin = 0
	prune(t, be, o)
	t.Logf("%d snapshots made, %d prunes ran while backups did (removing %d snapshots), %d lock refusals",
		len(made), prunes.Load(), removed.Load(), locked.Load())
	if prunes.Load() == 0 {
		t.Fatal("no prune ran while the backups did")
	}
	r := reopen(t, be)
	snaps, err := snapshot.List(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) != 2*hosts {
		t.Fatalf("%d snapshots left, want the last 2 of each of %d hosts", len(snaps), hosts)
	}
	for _, sn := range snaps {
		want, ok := made[sn.ID.String()]
		if !ok {
			t.Fatalf("snapshot %s is not one a backup reported", sn.ID.Str())
		}
		checkRestore(t, r, sn, want)
	}
	res := mustCheck(t, be, time.Now)
	if res.Snapshots != len(snaps) {
		t.Fatalf("check saw %d snapshots", res.Snapshots)
	}
	return cst
}
