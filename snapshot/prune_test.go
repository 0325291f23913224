package snapshot_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/local"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

var t0 = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

func pruneOpts(now func() time.Time, p snapshot.Policy) snapshot.PruneOptions {
	return snapshot.PruneOptions{Policy: p, GroupBy: snapshot.GroupBy{Host: true, Source: true}, Location: time.UTC,
		MaxUnused: 0.05, UnreferencedMargin: snapshot.DefaultUnreferencedMargin, Now: now}
}

func prune(t *testing.T, be repo.Backend, o snapshot.PruneOptions) *snapshot.PruneResult {
	t.Helper()
	r, err := repo.Open(context.Background(), be, "pw", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	res, err := snapshot.Prune(context.Background(), r, o)
	if err != nil {
		t.Fatalf("prune: %v", err)
	}
	return res
}

func backupAt(t *testing.T, r *repo.Repository, src *dirSource, at time.Time, tags ...string) *snapshot.Snapshot {
	t.Helper()
	sn, err := snapshot.Backup(context.Background(), r, src, snapshot.BackupOptions{Host: "h", Tags: tags, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

func copyFiles(m map[string][]byte) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestPruneRemovesExactlyForgottenData: three backups A, B, C where only B
// has a table of its own. Forgetting B removes exactly the packs B's
// backup wrote, nothing else is rewritten, the repository shrinks by
// exactly their size, and A and C restore byte for byte.
func TestPruneRemovesExactlyForgottenData(t *testing.T) {
	for _, backend := range []string{"mem", "local"} {
		t.Run(backend, func(t *testing.T) {
			var be repo.Backend = mem.New()
			if backend == "local" {
				l, err := local.Create(filepath.Join(t.TempDir(), "repo"))
				if err != nil {
					t.Fatal(err)
				}
				be = l
			}
			fx := newFixture(t, 20)
			r := newRepo(t, be)
			rng := rand.New(rand.NewPCG(21, 21))

			a := backupAt(t, r, fx.src, t0, "base")
			filesA := copyFiles(fx.files)
			packsA := objects(t, be, repo.PackFile)

			own := randBytes(rng, 2<<20) // only B has it
			writeFile(t, fx.dir, "000030.sst", own)
			fx.files["000030.sst"] = own
			fx.relist()
			b := backupAt(t, r, fx.src, t0.Add(time.Hour))
			packsB := objects(t, be, repo.PackFile)

			os.Remove(filepath.Join(fx.dir, "000030.sst"))
			delete(fx.files, "000030.sst")
			next := randBytes(rng, 1<<20)
			writeFile(t, fx.dir, "000031.sst", next)
			fx.files["000031.sst"] = next
			fx.relist()
			c := backupAt(t, r, fx.src, t0.Add(2*time.Hour))
			filesC := copyFiles(fx.files)

			// B's own packs: what its backup added.
			onlyB := diffNames(packsB, packsA)
			var bBytes int64
			for _, n := range onlyB {
				bBytes += packsB[n]
			}
			before := objects(t, be, repo.PackFile)
			sizeBefore := repoSize(t, be)

			// Keep the tagged A and the last one, C.
			res := prune(t, be, pruneOpts(time.Now, snapshot.Policy{Last: 1, Tags: []string{"base"}}))
			st := res.Stats
			after := objects(t, be, repo.PackFile)
			removed := diffNames(before, after)
			if !slices.Equal(removed, onlyB) {
				t.Fatalf("prune removed packs %v, want exactly B's %v", removed, onlyB)
			}
			if added := diffNames(after, before); len(added) != 0 || st.PacksRepacked != 0 || st.PacksWritten != 0 {
				t.Fatalf("prune wrote packs %v (repacked %d): nothing but B's data was unused", added, st.PacksRepacked)
			}
			if got := sumSizes(before) - sumSizes(after); got != bBytes || st.PackBytesDeleted != bBytes {
				t.Fatalf("pack bytes dropped by %d (stats %d), want B's %d", got, st.PackBytesDeleted, bBytes)
			}
			if st.PackBytesBefore != sumSizes(before) || st.PackBytesAfter != sumSizes(after) {
				t.Fatalf("stats before/after %d/%d, stored %d/%d", st.PackBytesBefore, st.PackBytesAfter, sumSizes(before), sumSizes(after))
			}
			if got, want := snapshotIDs(t, be), shortIDs(a, c); !slices.Equal(got, want) {
				t.Fatalf("snapshots after prune %v, want A and C %v", got, want)
			}
			if n, want := len(objects(t, be, repo.IndexFile)), indexOwners(t, be); n != want {
				t.Fatalf("%d index files after prune, want %d consolidated: one per owner", n, want)
			}
			t.Logf("%s: packs %d -> %d; pack bytes %s -> %s (B held %s in %d packs); whole repository %s -> %s",
				backend, len(before), len(after), fmtBytes(sumSizes(before)), fmtBytes(sumSizes(after)),
				fmtBytes(bBytes), len(onlyB), fmtBytes(sizeBefore), fmtBytes(repoSize(t, be)))
			_ = b

			r2 := reopen(t, be)
			checkRestore(t, r2, a, filesA)
			checkRestore(t, r2, c, filesC)
			mustCheck(t, be, time.Now)

			// A second prune has nothing to do.
			res = prune(t, be, pruneOpts(time.Now, snapshot.Policy{Last: 1, Tags: []string{"base"}}))
			if s := res.Stats; s.PacksDeleted+s.PacksRepacked+s.UnindexedDeleted+s.SnapshotsRemoved+s.IndexFilesWritten != 0 {
				t.Fatalf("second prune changed things: %+v", s)
			}
		})
	}
}

// TestPruneRepack builds packs by hand so that forgetting one snapshot
// leaves a pack half used: it is repacked, a fully unused pack is deleted,
// a blob stored twice is copied once, and the kept snapshots restore.
func TestPruneRepack(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(30, 30))
	ctx := context.Background()

	// One pack holds the chunks of old.sst (forgotten) and keep.sst (kept).
	oldChunks := chunks(rng, 40000, 30000, 50000)
	keepChunks := chunks(rng, 20000, 25000)
	s1, _ := handSnapshot(t, r, t0, "db", nil,
		handFile{"old.sst", oldChunks}, handFile{"keep.sst", keepChunks})
	// A pack only the forgotten snapshot uses.
	s2, _ := handSnapshot(t, r, t0.Add(time.Hour), "db", nil, handFile{"gone.sst", chunks(rng, 60000)})
	// The same blob stored by two writers that did not know of each other,
	// each next to a blob nobody will need.
	dup := randBytes(rng, 33000)
	writers := []*repo.Repository{reopen(t, be), reopen(t, be)}
	for _, w := range writers {
		for _, c := range [][]byte{randBytes(rng, 30000), dup} {
			if _, err := w.SaveBlob(ctx, repo.DataBlob, w.BlobID(c), c); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r3 := reopen(t, be)
	s3, want3 := handSnapshot(t, r3, t0.Add(2*time.Hour), "db", nil,
		handFile{"keep.sst", keepChunks}, handFile{"dup.sst", [][]byte{dup}})

	before := packsOf(t, be)
	dupID := r.BlobID(dup)
	dupPacks := 0
	for _, blobs := range before {
		if slices.Contains(blobs, dupID) {
			dupPacks++
		}
	}
	if dupPacks != 2 {
		t.Fatalf("the duplicate blob is in %d packs, want 2", dupPacks)
	}

	res := prune(t, be, pruneOpts(time.Now, snapshot.Policy{Last: 1}))
	st := res.Stats
	if st.SnapshotsRemoved != 2 {
		t.Fatalf("removed %d snapshots, want 2", st.SnapshotsRemoved)
	}
	// Deleted: s2's pack and both trees' packs of s1 and s2. Repacked: the
	// mixed pack of s1 and both packs holding dup.
	if st.PacksRepacked != 3 || st.BlobsRepacked != len(keepChunks)+1 {
		t.Fatalf("repacked %d packs, %d blobs; want 3 packs and %d blobs", st.PacksRepacked, st.BlobsRepacked, len(keepChunks)+1)
	}
	if st.PacksDeleted != 3 {
		t.Fatalf("deleted %d packs, want 3 (gone.sst's, and the two forgotten trees')", st.PacksDeleted)
	}
	after := packsOf(t, be)
	count := map[repo.ID]int{}
	for _, blobs := range after {
		for _, b := range blobs {
			count[b]++
		}
	}
	if count[dupID] != 1 {
		t.Fatalf("the duplicated blob is stored %d times after prune, want once", count[dupID])
	}
	for _, c := range oldChunks {
		if count[r.BlobID(c)] != 0 {
			t.Fatal("a chunk only the forgotten snapshot used is still stored")
		}
	}
	r4 := reopen(t, be)
	checkRestore(t, r4, s3, want3)
	mustCheck(t, be, time.Now)
	_, _ = s1, s2
}

// slowPackSaves is a backend whose pack saves take a while once delay is
// set, and fail if their context ends first.
type slowPackSaves struct {
	repo.Backend
	delay atomic.Bool
}

func (b *slowPackSaves) Save(ctx context.Context, h repo.Handle, data []byte) error {
	if h.Type == repo.PackFile && b.delay.Load() {
		select {
		case <-time.After(200 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return b.Backend.Save(ctx, h, data)
}

// TestPruneRepackUploadsOutliveLoads: a pack the repack fills while it
// still loads blobs is stored in the background, and its upload must not
// end with the loads (it once ran on the loads' errgroup context, which
// ends when they do: "save ...: context canceled").
func TestPruneRepackUploadsOutliveLoads(t *testing.T) {
	be := &slowPackSaves{Backend: mem.New()}
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(31, 31))
	// Kept and forgotten chunks alternate, so every pack is half unused,
	// and the kept half (2 MiB) fills more than one new pack of 1 MiB.
	var mixed, kept [][]byte
	for i := range 20 {
		c := randBytes(rng, 200<<10)
		mixed = append(mixed, c)
		if i%2 == 0 {
			kept = append(kept, c)
		}
	}
	handSnapshot(t, r, t0, "db", nil, handFile{"mixed.sst", mixed})
	s2, want := handSnapshot(t, reopen(t, be), t0.Add(time.Hour), "db", nil, handFile{"kept.sst", kept})
	be.delay.Store(true)
	res := prune(t, be, pruneOpts(time.Now, snapshot.Policy{Last: 1}))
	if res.Stats.PacksRepacked == 0 || res.Stats.PacksWritten < 2 {
		t.Fatalf("repacked %d packs into %d: the test wants a repack that fills a pack", res.Stats.PacksRepacked, res.Stats.PacksWritten)
	}
	be.delay.Store(false)
	checkRestore(t, reopen(t, be), s2, want)
	mustCheck(t, be, time.Now)
}

// TestPruneUnreferencedMargin: a pack no index names is kept while it is
// younger than the margin and deleted after.
func TestPruneUnreferencedMargin(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(40, 40))
	ctx := context.Background()
	sn, want := handSnapshot(t, r, t0, "db", nil, handFile{"a.sst", chunks(rng, 10000, 20000)})
	// An upload nobody indexed: a crashed backup, or one still running.
	w := r.NewSaver(repo.SaverOptions{Repack: true, NoIndex: true})
	orphan := randBytes(rng, 5000)
	if _, err := w.Save(ctx, repo.DataBlob, r.BlobID(orphan), orphan); err != nil {
		t.Fatal(err)
	}
	err := w.Flush(ctx)
	packs, _ := w.Packs()
	if err != nil || len(packs) != 1 {
		t.Fatal(packs, err)
	}
	orphanPack := packs[0].PackID.String()

	res := mustCheck(t, be, time.Now)
	if res.UnindexedPacks != 1 || res.UnindexedOld != 0 {
		t.Fatalf("check: %d unindexed packs (%d old), want 1 young", res.UnindexedPacks, res.UnindexedOld)
	}
	pr := prune(t, be, pruneOpts(time.Now, snapshot.Policy{}))
	if pr.Stats.UnindexedKept != 1 || pr.Stats.UnindexedDeleted != 0 {
		t.Fatalf("prune within the margin: %+v", pr.Stats)
	}
	if _, ok := objects(t, be, repo.PackFile)[orphanPack]; !ok {
		t.Fatal("prune deleted a pack younger than the margin")
	}

	later := func() time.Time { return time.Now().Add(snapshot.DefaultUnreferencedMargin + time.Hour) }
	res = mustCheck(t, be, later)
	if res.UnindexedOld != 1 {
		t.Fatalf("check a day later: %d old unindexed packs, want 1", res.UnindexedOld)
	}
	pr = prune(t, be, pruneOpts(later, snapshot.Policy{}))
	if pr.Stats.UnindexedDeleted != 1 {
		t.Fatalf("prune after the margin: %+v", pr.Stats)
	}
	if _, ok := objects(t, be, repo.PackFile)[orphanPack]; ok {
		t.Fatal("prune kept an unindexed pack older than the margin")
	}
	checkRestore(t, reopen(t, be), sn, want)
	mustCheck(t, be, later)
}

func TestPruneDryRunChangesNothing(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(41, 41))
	for i := range 4 {
		handSnapshot(t, r, t0.Add(time.Duration(i)*24*time.Hour), "db", nil, handFile{"a.sst", chunks(rng, 10000)})
	}
	var before []map[string]int64
	for _, typ := range repo.AllFileTypes {
		before = append(before, objects(t, be, typ))
	}
	o := pruneOpts(time.Now, snapshot.Policy{Daily: 2})
	o.DryRun = true
	res := prune(t, be, o)
	if res.Stats.SnapshotsRemoved != 2 || res.Stats.PacksDeleted == 0 {
		t.Fatalf("dry run plan: %+v", res.Stats)
	}
	for i, typ := range repo.AllFileTypes {
		if got := objects(t, be, typ); !equalSizes(got, before[i]) {
			t.Fatalf("dry run changed %s", typ)
		}
	}
	reasons := 0
	for _, g := range res.Groups {
		for _, d := range g.Decisions {
			if d.Keep && len(d.Reasons) == 0 || !d.Keep && len(d.Reasons) != 0 {
				t.Fatalf("decision %+v", d)
			}
			reasons += len(d.Reasons)
		}
	}
	if reasons != 2 {
		t.Fatalf("%d reasons for 2 kept snapshots", reasons)
	}
}

func equalSizes(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestPruneRefusesDamagedRepository: a pack a kept snapshot needs is
// missing; prune says so and changes nothing.
func TestPruneRefusesDamagedRepository(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(42, 42))
	handSnapshot(t, r, t0, "db", nil, handFile{"a.sst", chunks(rng, 10000)})
	handSnapshot(t, r, t0.Add(time.Hour), "db", nil, handFile{"b.sst", chunks(rng, 10000)})
	// Remove the data pack of the newest snapshot.
	sn := snapshotsOf(t, be)
	tree, err := snapshot.LoadTree(context.Background(), reopen(t, be), sn[1].Tree)
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := reopen(t, be).Index().Lookup(tree.Files[0].Chunks[0])
	victim := loc.Pack.String()
	if err := be.Remove(context.Background(), repo.Handle{Type: repo.PackFile, Name: victim}); err != nil {
		t.Fatal(err)
	}
	before := repoSize(t, be)
	rr := reopen(t, be)
	_, err = snapshot.Prune(context.Background(), rr, pruneOpts(time.Now, snapshot.Policy{Last: 1}))
	if err == nil || !strings.Contains(err.Error(), victim) || !strings.Contains(err.Error(), "snap check") {
		t.Fatalf("prune of a damaged repository: %v", err)
	}
	if got := repoSize(t, be); got != before || len(snapshotIDs(t, be)) != 2 {
		t.Fatalf("a refused prune changed the repository (%d -> %d bytes)", before, got)
	}
}

func snapshotsOf(t *testing.T, be repo.Backend) []*snapshot.Snapshot {
	t.Helper()
	snaps, err := snapshot.List(context.Background(), reopen(t, be))
	if err != nil {
		t.Fatal(err)
	}
	return snaps
}

// crashBase builds a repository on which prune has every kind of work:
// snapshots to forget on two hosts, a pack to repack, packs to delete,
// several index files and an old pack no index names.
func crashBase(t *testing.T) (*mem.Backend, map[string]map[string][]byte) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(50, 50))
	wants := map[string]map[string][]byte{}
	shared := chunks(rng, 12000, 9000)
	for i := range 6 {
		host := []string{"db-1", "db-2"}[i%2]
		sn, want := handSnapshot(t, r, t0.Add(time.Duration(i)*time.Hour), host, nil,
			handFile{"shared.sst", shared}, handFile{"own.sst", chunks(rng, 8000+1000*i, 7000)})
		wants[sn.ID.String()] = want
	}
	w := r.NewSaver(repo.SaverOptions{Repack: true, NoIndex: true})
	orphan := randBytes(rng, 4000)
	if _, err := w.Save(context.Background(), repo.DataBlob, r.BlobID(orphan), orphan); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return be, wants
}

// TestPruneKilledAtEveryStep fails prune's Nth storage call, for N = 0,
// 1, 2, ... until prune succeeds, each time on a fresh copy of the same
// repository. After every failure check (with --read-data) passes and
// every snapshot still listed restores; then a prune without faults
// finishes the job, and the result is the same as an uninterrupted
// prune's.
func TestPruneKilledAtEveryStep(t *testing.T) {
	base, wants := crashBase(t)
	policy := snapshot.Policy{Last: 1}
	// A day later the orphan pack is past the margin.
	day := time.Now().Add(snapshot.DefaultUnreferencedMargin + time.Hour)

	ref := cloneBackend(t, base)
	refRes := prune(t, ref, pruneOpts(func() time.Time { return day }, policy))
	refSnaps := snapshotIDs(t, ref)
	if refRes.Stats.PacksRepacked == 0 || refRes.Stats.PacksDeleted == 0 || refRes.Stats.UnindexedDeleted != 1 || refRes.Stats.IndexFilesRemoved < 2 {
		t.Fatalf("the base repository does not give prune every kind of work: %+v", refRes.Stats)
	}
	refPacks := len(objects(t, ref, repo.PackFile))
	injected := errors.New("injected: killed")
	for n := 0; ; n++ {
		if n > 1000 {
			t.Fatal("prune never succeeded")
		}
		storage := newTestClock(time.Now())
		be := cloneBackendClocked(t, base, storage.Now)
		fb := faulty.New(be)
		r, err := repo.Open(context.Background(), fb, "pw", repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		now := day
		fb.FailAfter(n, injected)
		_, err = snapshot.Prune(context.Background(), r, pruneOpts(func() time.Time { return now }, policy))
		fb.FailAfter(-1, nil)
		r.Close()
		if err == nil {
			t.Logf("prune succeeded when its first %d storage calls were allowed", n)
			if got := snapshotIDs(t, be); !slices.Equal(got, refSnaps) {
				t.Fatalf("snapshots %v, want %v", got, refSnaps)
			}
			break
		}
		if !errors.Is(err, injected) {
			t.Fatalf("n=%d: %v", n, err)
		}
		// The repository is whole: check passes, every listed snapshot
		// restores as it was made.
		mustCheck(t, be, func() time.Time { return now })
		r2 := reopen(t, be)
		snaps, err := snapshot.List(context.Background(), r2)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		for _, sn := range snaps {
			checkRestore(t, r2, sn, wants[sn.ID.String()])
		}
		// The next prune (the killed one's lock is stale by then) finishes
		// the job: the same snapshots as an uninterrupted prune, no
		// leftovers, one index.
		later := now.Add(repo.LockStaleAfter + time.Minute)
		storage.Add(repo.LockStaleAfter + time.Minute)
		prune(t, be, pruneOpts(func() time.Time { return later }, policy))
		if got := snapshotIDs(t, be); !slices.Equal(got, refSnaps) {
			t.Fatalf("n=%d: after the next prune snapshots %v, want %v", n, got, refSnaps)
		}
		res := mustCheck(t, be, func() time.Time { return later })
		if res.UnindexedPacks != 0 || res.IndexFiles != indexOwners(t, be) || res.SupersededFiles != 0 {
			t.Fatalf("n=%d: after the next prune %d unindexed packs, %d index files (%d superseded)", n, res.UnindexedPacks, res.IndexFiles, res.SupersededFiles)
		}
		if got := len(objects(t, be, repo.PackFile)); got != refPacks {
			t.Fatalf("n=%d: %d packs after the next prune, an uninterrupted prune leaves %d", n, got, refPacks)
		}
		r3 := reopen(t, be)
		for _, sn := range snapshotsOf(t, be) {
			checkRestore(t, r3, sn, wants[sn.ID.String()])
		}
	}
}

// TestPruneRerunFinishesAtOnce: a prune killed after its repacked packs
// were indexed, or after its new index was written, is finished by the
// next prune at once, although everything it wrote is far younger than
// the margin: the rerun copies no blob the killed one copied and deletes
// the packs it had replaced. Before, the replaced packs waited out the
// margin (a day) and a killed repack was done again.
func TestPruneRerunFinishesAtOnce(t *testing.T) {
	base, wants := crashBase(t)
	policy := snapshot.Policy{Last: 1}
	day := time.Now().Add(snapshot.DefaultUnreferencedMargin + time.Hour)
	refRes := prune(t, cloneBackend(t, base), pruneOpts(func() time.Time { return day }, policy))
	if refRes.Stats.PacksWritten == 0 || refRes.Stats.PacksDeleted == 0 {
		t.Fatalf("the base repository gives prune no repacking and deleting to do: %+v", refRes.Stats)
	}
	injected := errors.New("injected: killed")
	for _, c := range []struct {
		name string
		fail func(op string, h repo.Handle, indexSaves int) bool
	}{
		// Every repacked pack and its own index are stored; the final
		// index is not.
		{"before the final index", func(op string, h repo.Handle, indexSaves int) bool {
			return op == faulty.OpSave && h.Type == repo.IndexFile && indexSaves > refRes.Stats.PacksWritten
		}},
		// The final index is written; no pack is deleted yet.
		{"before deleting packs", func(op string, h repo.Handle, _ int) bool {
			return op == faulty.OpRemove && h.Type == repo.PackFile
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			storage := newTestClock(time.Now())
			be := cloneBackendClocked(t, base, storage.Now)
			storage.Add(snapshot.DefaultUnreferencedMargin + time.Hour) // what the killed prune writes is new
			fb := faulty.New(be)
			var indexSaves int
			fb.FailOn(func(op string, h repo.Handle) error {
				if op == faulty.OpSave && h.Type == repo.IndexFile {
					indexSaves++
				}
				if c.fail(op, h, indexSaves) {
					return injected
				}
				return nil
			})
			r, err := repo.Open(context.Background(), fb, "pw", repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := snapshot.Prune(context.Background(), r, pruneOpts(func() time.Time { return day }, policy)); !errors.Is(err, injected) {
				t.Fatalf("killed prune: %v", err)
			}
			r.Close()
			// The killed prune's lock is of this live process: it is
			// stale once the storage has not seen it refreshed for 30
			// minutes. Everything the killed prune wrote is 31 minutes
			// old then, far younger than the margin.
			later := day.Add(repo.LockStaleAfter + time.Minute)
			storage.Add(repo.LockStaleAfter + time.Minute)
			res := prune(t, be, pruneOpts(func() time.Time { return later }, policy))
			if res.Stats.BlobsRepacked != 0 {
				t.Errorf("the rerun copied %d blobs again", res.Stats.BlobsRepacked)
			}
			ck := mustCheck(t, be, func() time.Time { return later })
			if ck.UnindexedPacks != 0 || ck.IndexFiles != indexOwners(t, be) || ck.SupersededFiles != 0 {
				t.Fatalf("after the rerun: %d unindexed packs, %d index files (%d superseded); rerun stats %+v",
					ck.UnindexedPacks, ck.IndexFiles, ck.SupersededFiles, res.Stats)
			}
			r3 := reopen(t, be)
			for _, sn := range snapshotsOf(t, be) {
				checkRestore(t, r3, sn, wants[sn.ID.String()])
			}
		})
	}
}
