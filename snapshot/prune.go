package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
)

// DefaultUnreferencedMargin is how old a pack that no index names must be
// before prune deletes it. Such a pack is a crashed writer's leftover, or
// the latest packs of a backup still running: a backup indexes its packs
// every 16 packs and at its end, and even a backup of a large database
// over a slow link finishes within hours. A day is far longer than that,
// longer than any clock skew, and costs only a day's delay in reclaiming
// a crashed writer's few packs.
const DefaultUnreferencedMargin = 24 * time.Hour

// PruneOptions configure one prune.
type PruneOptions struct {
	Policy  Policy
	GroupBy GroupBy
	// Groups are the states of the cluster groups, by UUID, for keeping
	// or forgetting a group's snapshots together (ApplyPolicyGroups).
	Groups   map[string]GroupState
	Location *time.Location // calendar buckets; nil: time.Local
	// MaxUnused is the share of a pack's blob bytes that may be unused
	// before the pack is repacked (0.05: 5%). Packs with no used blob are
	// deleted whatever it is; 1 never repacks.
	MaxUnused float64
	// UnreferencedMargin: packs no index names are deleted only when
	// older than this (by their storage time); zero deletes them at once.
	UnreferencedMargin time.Duration
	DryRun             bool
	RetryLock          time.Duration // wait this long for other locks to go
	// Extra covers the objects other than snapshots that use blobs (the
	// tail objects of redis chains). Called under the lock with every
	// snapshot and those kept, it returns the blobs the kept ones need
	// beyond their trees, and what removes the objects they no longer
	// need, which prune calls after the forgotten snapshots are removed
	// and before any pack is. It changes nothing when dry.
	Extra func(ctx context.Context, snaps, kept []*Snapshot, dry bool) (used []repo.ID, remove func(context.Context) error, err error)
	Now   func() time.Time
	Log   *slog.Logger
}

// PruneStats says what a prune did (or, dry, would do). Sizes are stored
// bytes.
type PruneStats struct {
	SnapshotsKept    int `json:"snapshots_kept"`
	SnapshotsRemoved int `json:"snapshots_removed"`

	IndexFilesBefore  int `json:"index_files_before"`
	IndexFilesRemoved int `json:"index_files_removed"`
	IndexFilesWritten int `json:"index_files_written"`

	PacksBefore     int   `json:"packs_before"`
	PackBytesBefore int64 `json:"pack_bytes_before"`
	PacksAfter      int   `json:"packs_after"`
	PackBytesAfter  int64 `json:"pack_bytes_after"`

	BlobsUsed   int   `json:"blobs_used"`
	BlobsUnused int   `json:"blobs_unused"`
	BytesUnused int64 `json:"bytes_unused"` // sealed bytes of unused blobs in indexed packs

	PacksDeleted      int   `json:"packs_deleted"` // indexed, no blob used
	PackBytesDeleted  int64 `json:"pack_bytes_deleted"`
	PacksRepacked     int   `json:"packs_repacked"` // rewritten without their unused blobs
	PackBytesRepacked int64 `json:"pack_bytes_repacked"`
	BlobsRepacked     int   `json:"blobs_repacked"`
	BytesRepacked     int64 `json:"bytes_repacked"` // sealed bytes of the blobs copied
	PacksWritten      int   `json:"packs_written"`
	PackBytesWritten  int64 `json:"pack_bytes_written"`

	UnindexedDeleted   int   `json:"unindexed_packs_deleted"`
	UnindexedBytes     int64 `json:"unindexed_bytes_deleted"`
	ReplacedDeleted    int   `json:"replaced_packs_deleted"` // of those, packs an interrupted prune had replaced (deleted whatever their age)
	UnindexedKept      int   `json:"unindexed_packs_kept"`   // younger than the margin, or of unknown age
	UnindexedKeptBytes int64 `json:"unindexed_bytes_kept"`
	MissingPacks       int   `json:"missing_packs_dropped"` // indexed, absent, no blob used

	TempFilesDeleted int   `json:"temp_files_deleted"` // left by killed writers, older than the margin
	TempBytesDeleted int64 `json:"temp_bytes_deleted"`

	// Beside: prune planned and repacked under a shared lock, beside
	// other processes' locks, then took the exclusive one to remove.
	Beside bool `json:"planned_beside_others"`
	// What was stored meanwhile and taken in under the exclusive lock:
	// snapshots (kept), and packs the plan would have deleted or
	// repacked that one of them uses (kept whole).
	SnapshotsAppeared int `json:"snapshots_appeared"`
	PacksKeptForNew   int `json:"packs_kept_for_new"`
}

// PruneResult is the policy's decisions and what prune did.
type PruneResult struct {
	DryRun bool
	Groups []Group
	Stats  PruneStats
}

type packAction int

const (
	packKeep packAction = iota
	packRepack
	packDelete
	packMissing // named by the index, not stored, holds nothing used
)

// blob states in the mark set
const (
	blobUsed      = 1 // a kept snapshot needs it
	blobSatisfied = 2 // and a copy stays: in a kept pack or copied by repack
)

// Prune applies the retention policy and removes what no kept snapshot
// needs (docs/design.md, "Prune"). Under its first lock (the exclusive
// one if no other process holds a lock, else, when RetryLock lets it
// wait, a shared one beside running backups) it:
//
//  1. decides which snapshots to keep, loads the index and marks every
//     blob a kept snapshot uses, and plans: packs with no used blob are
//     deleted, packs with more than MaxUnused unused are repacked;
//  2. copies the used blobs of the packs to repack into new packs, each
//     indexed as soon as it is stored;
//
// then, under the exclusive lock:
//
//  3. takes in what was stored meanwhile (reconcile): new snapshots are
//     kept, and packs they use stay;
//  4. removes the forgotten snapshots (so no listed snapshot ever
//     references data that is gone);
//  5. writes one index naming every pack that stays and the new ones,
//     superseding every index file it read and those of step 2;
//  6. removes the packs, then the old index files.
//
// Killed at any point, it leaves a repository whose every snapshot is
// whole; the next prune finishes the job. r must be open; Prune loads the
// index itself.
func Prune(ctx context.Context, r *repo.Repository, o PruneOptions) (*PruneResult, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	res := &PruneResult{DryRun: o.DryRun}
	lk, unlock, err := pruneLock(ctx, r, o)
	if err != nil {
		return nil, err
	}
	defer func() { unlock() }()

	snaps, err := List(ctx, r)
	if err != nil {
		return nil, err
	}
	res.Groups = ApplyPolicyGroups(snaps, o.Policy, o.GroupBy, o.Location, o.Now(), o.Groups)
	var kept, forgotten []*Snapshot
	for _, g := range res.Groups {
		for _, d := range g.Decisions {
			if d.Keep {
				kept = append(kept, d.Snapshot)
			} else {
				forgotten = append(forgotten, d.Snapshot)
			}
		}
	}
	st := &res.Stats
	st.SnapshotsKept, st.SnapshotsRemoved = len(kept), len(forgotten)

	var extraUsed []repo.ID
	if o.Extra != nil {
		if extraUsed, _, err = o.Extra(ctx, snaps, kept, true); err != nil {
			return nil, err
		}
	}
	p, err := planPrune(ctx, r, kept, extraUsed, o)
	if err != nil {
		return nil, err
	}
	p.fillStats(st)
	o.Log.Info("prune plan", "snapshots_removed", len(forgotten), "packs_deleted", st.PacksDeleted,
		"packs_repacked", st.PacksRepacked, "unindexed_deleted", st.UnindexedDeleted, "unindexed_kept", st.UnindexedKept)
	if o.DryRun {
		return res, nil
	}

	// 2. Repack, under a shared lock when other writers held theirs:
	// their backups go on meanwhile.
	if len(p.repack) > 0 {
		if err := p.runRepack(ctx, r, lk); err != nil {
			return nil, err
		}
		st.PacksWritten = len(p.newPacks)
		st.PackBytesWritten = p.newBytes
		o.Log.Info("repacked", "packs_read", len(p.repack), "packs_written", len(p.newPacks), "blobs", st.BlobsRepacked)
	}

	// 3. Everything that removes data needs the exclusive lock. Once it
	// holds it, whatever the backups meanwhile stored and referenced is
	// taken in, so nothing they need is collected.
	if !lk.Exclusive() {
		st.Beside = true
		unlock()
		if lk, unlock, err = lockUnlessDry(ctx, r, false, "prune", o.Now, o.RetryLock, o.Log); err != nil {
			return nil, fmt.Errorf("after planning and repacking (which changed nothing that is not indexed): %w", err)
		}
	}
	var extraRemove func(context.Context) error
	before := len(kept)
	if snaps, kept, extraRemove, err = p.reconcile(ctx, r, snaps, kept, o); err != nil {
		return nil, err
	}
	st.SnapshotsKept, st.SnapshotsAppeared = len(kept), len(kept)-before
	st.PacksKeptForNew = p.keptForNew
	st.PacksDeleted, st.PackBytesDeleted = p.st.PacksDeleted, p.st.PackBytesDeleted
	st.PacksRepacked, st.PackBytesRepacked = p.st.PacksRepacked, p.st.PackBytesRepacked
	st.UnindexedDeleted, st.UnindexedBytes = p.st.UnindexedDeleted, p.st.UnindexedBytes

	ids := make([]repo.ID, 0, len(forgotten))
	for _, sn := range forgotten {
		ids = append(ids, sn.ID)
	}
	if err := removeObjects(ctx, r, lk, repo.SnapshotFile, ids); err != nil {
		return nil, err
	}
	if extraRemove != nil {
		if err := extraRemove(ctx); err != nil {
			return nil, err
		}
	}

	// 5. The new index, before anything the old one names is deleted.
	var oldIndex []repo.ID
	if p.needIndex() {
		if err := lk.Err(); err != nil {
			return nil, fmt.Errorf("not writing the new index: %w", err)
		}
		d := &repo.IndexData{Packs: make([]repo.PackBlobs, 0, len(p.keep)+len(p.newPacks))}
		for _, f := range p.idx.Files {
			d.Supersedes = append(d.Supersedes, f.ID)
		}
		d.Supersedes = append(d.Supersedes, p.repackIndexes...)
		for _, id := range p.keep {
			d.Packs = append(d.Packs, *p.packs[id])
		}
		d.Packs = append(d.Packs, p.newPacks...)
		if _, err := r.SaveIndex(ctx, d); err != nil {
			return nil, err
		}
		st.IndexFilesWritten = 1
		o.Log.Info("wrote the new index", "packs", len(d.Packs), "supersedes", len(d.Supersedes))
		oldIndex = d.Supersedes
	}
	// 6. The packs, then the index files the new one supersedes. While a
	// superseded file remains, the packs it names that no effective index
	// does are known to be prune's to delete, so a prune killed here is
	// finished by the next without waiting for the margin.
	var packs []repo.ID
	packs = append(packs, p.delete...)
	packs = append(packs, p.repack...)
	packs = append(packs, p.unindexedOld...)
	if err := removeObjects(ctx, r, lk, repo.PackFile, packs); err != nil {
		return nil, err
	}
	if err := removeObjects(ctx, r, lk, repo.IndexFile, oldIndex); err != nil {
		return nil, err
	}
	st.IndexFilesRemoved = len(oldIndex) - len(p.repackIndexes)
	// 7. Temp files killed writers left (local repositories), once they
	// are as old as the margin: no live writer is still on them.
	if tr, ok := repo.As[repo.TempRemover](r.Backend()); ok {
		if err := lk.Err(); err != nil {
			return nil, fmt.Errorf("not removing temp files: %w", err)
		}
		n, size, err := tr.RemoveTemp(ctx, o.Now().Add(-o.UnreferencedMargin))
		if err != nil {
			return nil, err
		}
		st.TempFilesDeleted, st.TempBytesDeleted = n, size
	}
	st.PacksAfter = st.PacksBefore - st.PacksDeleted - st.PacksRepacked - st.UnindexedDeleted + st.PacksWritten
	st.PackBytesAfter = st.PackBytesBefore - st.PackBytesDeleted - st.PackBytesRepacked - st.UnindexedBytes + st.PackBytesWritten
	o.Log.Info("prune done", "packs_before", st.PacksBefore, "packs_after", st.PacksAfter,
		"bytes_before", st.PackBytesBefore, "bytes_after", st.PackBytesAfter)
	return res, nil
}

// prunePlan is what prune decided about every pack.
type prunePlan struct {
	idx    *repo.IndexSet
	packs  map[repo.ID]*repo.PackBlobs // every pack the effective index names
	stored map[repo.ID]repo.FileInfo
	used   map[repo.ID]uint8

	keep, repack, delete, missing []repo.ID
	copyBlobs                     map[repo.ID][]repo.BlobEntry // per pack to repack
	unindexedOld, unindexedYoung  []repo.ID

	newPacks      []repo.PackBlobs
	newBytes      int64
	repackIndexes []repo.ID  // an index file for each new pack, superseded by the final index
	keptForNew    int        // packs reconcile moved to keep
	st            PruneStats // counts filled while planning
}

func planPrune(ctx context.Context, r *repo.Repository, kept []*Snapshot, extraUsed []repo.ID, o PruneOptions) (*prunePlan, error) {
	p := &prunePlan{packs: map[repo.ID]*repo.PackBlobs{}, stored: map[repo.ID]repo.FileInfo{}, copyBlobs: map[repo.ID][]repo.BlobEntry{}}
	var err error
	// Every index file must load: one left out would make its packs look
	// like garbage.
	if p.idx, err = r.LoadIndexFiles(ctx, nil); err != nil {
		return nil, err
	}
	for _, f := range p.idx.Files {
		if p.idx.Superseded[f.ID] {
			continue
		}
		for i := range f.Data.Packs {
			pb := &f.Data.Packs[i]
			if _, ok := p.packs[pb.PackID]; !ok {
				p.packs[pb.PackID] = pb
			}
		}
	}
	if err := r.Backend().List(ctx, repo.PackFile, func(fi repo.FileInfo) error {
		id, err := repo.ParseID(fi.Name)
		if err != nil {
			o.Log.Warn("ignoring stray object", "type", repo.PackFile, "name", fi.Name)
			return nil
		}
		p.stored[id] = fi
		p.st.PacksBefore++
		p.st.PackBytesBefore += fi.Size
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	p.st.IndexFilesBefore = len(p.idx.Files)

	if p.used, err = markUsed(ctx, r, kept); err != nil {
		return nil, err
	}
	idx := r.Index()
	for _, id := range extraUsed {
		if !idx.Has(id) {
			return nil, fmt.Errorf("chunk %s of a tail object is not in the index; run snap check (prune changes nothing while a kept chain is damaged)", id)
		}
		p.used[id] = blobUsed
	}

	ids := make([]repo.ID, 0, len(p.packs))
	for id := range p.packs {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b repo.ID) int { return compareID(a, b) })
	for _, id := range ids {
		pb := p.packs[id]
		var usedN int
		var usedB, unusedB int64
		for _, e := range pb.Blobs {
			if p.used[e.ID] != 0 {
				usedN++
				usedB += int64(e.Length)
			} else {
				p.st.BlobsUnused++
				unusedB += int64(e.Length)
			}
		}
		p.st.BytesUnused += unusedB
		fi, ok := p.stored[id]
		switch {
		case !ok && usedN > 0:
			return nil, fmt.Errorf("pack %s holds %d blobs kept snapshots need but is missing from storage; run snap check (prune changes nothing in a damaged repository)", id, usedN)
		case !ok:
			p.missing = append(p.missing, id)
		case usedN == 0:
			p.delete = append(p.delete, id)
			p.st.PacksDeleted++
			p.st.PackBytesDeleted += fi.Size
		case unusedB > 0 && float64(unusedB) > o.MaxUnused*float64(usedB+unusedB):
			p.repack = append(p.repack, id)
			p.st.PacksRepacked++
			p.st.PackBytesRepacked += fi.Size
		default:
			p.keep = append(p.keep, id)
		}
	}
	p.st.MissingPacks = len(p.missing)
	// A used blob stored twice is copied only if no kept pack has it.
	for _, id := range p.keep {
		for _, e := range p.packs[id].Blobs {
			if p.used[e.ID] != 0 {
				p.used[e.ID] = blobSatisfied
			}
		}
	}
	for _, id := range p.repack {
		for _, e := range p.packs[id].Blobs {
			if p.used[e.ID] == blobUsed {
				p.used[e.ID] = blobSatisfied
				p.copyBlobs[id] = append(p.copyBlobs[id], e)
				p.st.BlobsRepacked++
				p.st.BytesRepacked += int64(e.Length)
			}
		}
	}
	for id, s := range p.used {
		if s != blobSatisfied {
			return nil, fmt.Errorf("blob %s is used but no pack that stays holds it (internal error; nothing was changed)", id)
		}
	}
	p.st.BlobsUsed = len(p.used)

	// Packs that only superseded index files name: an earlier prune wrote
	// the index that dropped them and was killed before it deleted them.
	replaced := map[repo.ID]bool{}
	for _, f := range p.idx.Files {
		if !p.idx.Superseded[f.ID] {
			continue
		}
		for _, pb := range f.Data.Packs {
			if _, ok := p.packs[pb.PackID]; !ok {
				replaced[pb.PackID] = true
			}
		}
	}
	now := o.Now()
	unknownAge := 0
	for id, fi := range p.stored {
		if _, ok := p.packs[id]; ok {
			continue
		}
		switch {
		case replaced[id]:
			p.unindexedOld = append(p.unindexedOld, id)
			p.st.UnindexedDeleted++
			p.st.UnindexedBytes += fi.Size
			p.st.ReplacedDeleted++
			continue
		case fi.ModTime.IsZero():
			unknownAge++
			p.unindexedYoung = append(p.unindexedYoung, id)
		case now.Sub(fi.ModTime) > o.UnreferencedMargin:
			p.unindexedOld = append(p.unindexedOld, id)
			p.st.UnindexedDeleted++
			p.st.UnindexedBytes += fi.Size
			continue
		default:
			p.unindexedYoung = append(p.unindexedYoung, id)
		}
		p.st.UnindexedKept++
		p.st.UnindexedKeptBytes += fi.Size
	}
	slices.SortFunc(p.unindexedOld, func(a, b repo.ID) int { return compareID(a, b) })
	if unknownAge > 0 {
		o.Log.Warn("the storage does not report object times: packs no index names are kept", "packs", unknownAge)
	}
	return p, nil
}

// recount brings the plan's pack counts up to date after reconcile moved
// packs from the delete and repack lists.
func (p *prunePlan) recount() {
	st := &p.st
	st.PacksDeleted, st.PackBytesDeleted = len(p.delete), 0
	for _, id := range p.delete {
		st.PackBytesDeleted += p.stored[id].Size
	}
	st.PacksRepacked, st.PackBytesRepacked = len(p.repack), 0
	for _, id := range p.repack {
		st.PackBytesRepacked += p.stored[id].Size
	}
	st.UnindexedDeleted, st.UnindexedBytes = len(p.unindexedOld), 0
	for _, id := range p.unindexedOld {
		st.UnindexedBytes += p.stored[id].Size
	}
}

func (p *prunePlan) fillStats(st *PruneStats) {
	kept, removed := st.SnapshotsKept, st.SnapshotsRemoved
	*st = p.st
	st.SnapshotsKept, st.SnapshotsRemoved = kept, removed
	st.PacksAfter = st.PacksBefore - st.PacksDeleted - st.PacksRepacked - st.UnindexedDeleted
	st.PackBytesAfter = st.PackBytesBefore - st.PackBytesDeleted - st.PackBytesRepacked - st.UnindexedBytes
}

// needIndex reports whether the index must be rewritten: something it
// names goes, or there are several index files to consolidate.
func (p *prunePlan) needIndex() bool {
	return len(p.delete) > 0 || len(p.repack) > 0 || len(p.missing) > 0 || len(p.idx.Files) > 1
}

// markUsed loads the tree of every kept snapshot and returns the set of
// blobs they use: the trees and every chunk. Each must be in the index.
func markUsed(ctx context.Context, r *repo.Repository, kept []*Snapshot) (map[repo.ID]uint8, error) {
	used := map[repo.ID]uint8{}
	trees := map[repo.ID]*Snapshot{}
	for _, sn := range kept {
		if _, ok := trees[sn.Tree]; !ok {
			trees[sn.Tree] = sn
		}
	}
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.Connections())
	for tid, sn := range trees {
		g.Go(func() error {
			t, err := LoadTree(gctx, r, tid)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w; run snap check (prune changes nothing while a kept snapshot is damaged)", sn.ID.Str(), err)
			}
			idx := r.Index()
			for _, f := range t.Files {
				for _, c := range f.Chunks {
					if !idx.Has(c) {
						return fmt.Errorf("snapshot %s file %s: chunk %s is not in the index; run snap check (prune changes nothing while a kept snapshot is damaged)", sn.ID.Str(), f.Name, c)
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			used[tid] = blobUsed
			for _, f := range t.Files {
				for _, c := range f.Chunks {
					used[c] = blobUsed
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return used, nil
}

// runRepack copies the used blobs of the packs to repack into new packs.
func (p *prunePlan) runRepack(ctx context.Context, r *repo.Repository, lk *repo.Lock) error {
	if err := lk.Err(); err != nil {
		return fmt.Errorf("not repacking: %w", err)
	}
	w := r.NewSaver(repo.SaverOptions{Repack: true, IndexEvery: 1})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.Connections())
	for _, id := range p.repack {
		entries := p.copyBlobs[id]
		if len(entries) == 0 {
			continue
		}
		g.Go(func() error {
			return r.LoadBlobs(gctx, id, entries, func(e repo.BlobEntry, plain []byte) error {
				// ctx, not gctx: Save starts uploads that must outlive
				// the loads, and gctx ends when they do.
				_, err := w.Save(ctx, e.Type, e.ID, plain)
				return err
			})
		})
	}
	gerr := g.Wait()
	err := w.Flush(ctx)
	packs, n := w.Packs()
	p.repackIndexes = w.Indexes()
	if err := errors.Join(gerr, err); err != nil {
		return fmt.Errorf("repack: %w", err)
	}
	p.newPacks, p.newBytes = packs, n
	slices.SortFunc(p.newPacks, func(a, b repo.PackBlobs) int { return compareID(a.PackID, b.PackID) })
	return nil
}

// removeObjects removes objects in parallel, each only while the lock
// holds. Objects already gone are fine: an earlier prune got that far.
func removeObjects(ctx context.Context, r *repo.Repository, lk *repo.Lock, t repo.FileType, ids []repo.ID) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.Connections())
	for _, id := range ids {
		g.Go(func() error {
			h := repo.Handle{Type: t, Name: id.String()}
			if err := lk.Err(); err != nil {
				return fmt.Errorf("not removing %s: %w", h, err)
			}
			if err := r.Backend().Remove(gctx, h); err != nil && !errors.Is(err, repo.ErrNotFound) {
				return fmt.Errorf("remove %s: %w", h, err)
			}
			return nil
		})
	}
	return g.Wait()
}

func compareID(a, b repo.ID) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

// pruneLock takes prune's first lock: the exclusive one if no other
// process holds a lock, or, when others do and RetryLock allows waiting,
// a shared one, under which prune plans and repacks beside running
// backups before it waits for the exclusive lock (Prune).
func pruneLock(ctx context.Context, r *repo.Repository, o PruneOptions) (*repo.Lock, func(), error) {
	lk, unlock, err := lockUnlessDry(ctx, r, o.DryRun, "prune", o.Now, 0, o.Log)
	if err == nil || !errors.Is(err, repo.ErrLocked) || o.RetryLock <= 0 {
		return lk, unlock, err
	}
	o.Log.Info("other processes hold locks: planning and repacking beside them, then waiting for the exclusive lock")
	lk, err = r.Lock(ctx, repo.LockOptions{Command: "prune", Now: o.Now, RetryFor: o.RetryLock, Log: o.Log})
	if err != nil {
		return nil, nil, err
	}
	return lk, func() { lk.Unlock(ctx) }, nil
}

// reconcile runs under the exclusive lock, after the plan and the repack,
// which may have run under a shared lock beside backups. It takes in what
// those stored meanwhile, so that nothing a snapshot listed now needs is
// collected: snapshots that appeared are kept and their blobs marked; a
// pack the plan would delete or repack that holds such a blob is kept
// whole instead; packs the plan saw unindexed that a new index file now
// names are kept. An index file of the plan that is gone means another
// prune ran meanwhile: then nothing is removed. It calls Extra (not dry)
// now, under the exclusive lock, and returns the snapshots as they are,
// those kept, and what removes the objects Extra says go.
func (p *prunePlan) reconcile(ctx context.Context, r *repo.Repository, snaps, kept []*Snapshot, o PruneOptions) ([]*Snapshot, []*Snapshot, func(context.Context) error, error) {
	now, err := List(ctx, r)
	if err != nil {
		return nil, nil, nil, err
	}
	known := make(map[repo.ID]bool, len(snaps))
	for _, sn := range snaps {
		known[sn.ID] = true
	}
	var fresh []*Snapshot
	for _, sn := range now {
		if !known[sn.ID] {
			fresh = append(fresh, sn)
		}
		delete(known, sn.ID)
	}
	if len(known) > 0 {
		return nil, nil, nil, fmt.Errorf("%d snapshots were removed while prune planned (another prune or forget ran); nothing was collected: run prune again", len(known))
	}
	kept = append(slices.Clip(kept), fresh...)
	var extraUsed []repo.ID
	var extraRemove func(context.Context) error
	if o.Extra != nil {
		if extraUsed, extraRemove, err = o.Extra(ctx, now, kept, false); err != nil {
			return nil, nil, nil, err
		}
	}

	// Index files written meanwhile: backups', this prune's repack, Extra's.
	planned := make(map[repo.ID]bool, len(p.idx.Files)+len(p.repackIndexes))
	for _, f := range p.idx.Files {
		planned[f.ID] = true
	}
	for _, id := range p.repackIndexes {
		planned[id] = true
	}
	var newFiles []repo.ID
	if err := r.List(ctx, repo.IndexFile, func(id repo.ID, _ int64) error {
		if planned[id] {
			delete(planned, id)
		} else {
			newFiles = append(newFiles, id)
		}
		return nil
	}); err != nil {
		return nil, nil, nil, fmt.Errorf("list index: %w", err)
	}
	for _, id := range p.repackIndexes {
		delete(planned, id) // one killed before its index was written is no loss
	}
	if len(planned) > 0 {
		return nil, nil, nil, fmt.Errorf("%d index files prune read are gone (another prune ran meanwhile); nothing was collected: run prune again", len(planned))
	}
	stays := map[repo.ID]bool{} // packs the new index files name
	var newPacks []repo.PackBlobs
	if len(newFiles) > 0 {
		datas, err := r.LoadIndexData(ctx, newFiles)
		if err != nil {
			return nil, nil, nil, err
		}
		idx := r.Index()
		for _, d := range datas {
			if len(d.Supersedes) > 0 {
				return nil, nil, nil, errors.New("an index file that supersedes others appeared while prune planned (another prune ran meanwhile); nothing was collected: run prune again")
			}
			for _, pb := range d.Packs {
				stays[pb.PackID] = true
				idx.AddPack(pb)
				newPacks = append(newPacks, pb)
			}
		}
	}
	if len(fresh) == 0 && len(extraUsed) == 0 && len(stays) == 0 {
		return now, kept, extraRemove, nil
	}
	o.Log.Info("taking in what was stored while prune planned", "snapshots", len(fresh), "index_files", len(newFiles))

	// Blobs needed now that the plan did not count as used.
	used, err := markUsed(ctx, r, fresh)
	if err != nil {
		return nil, nil, nil, err
	}
	idx := r.Index()
	for _, id := range extraUsed {
		if !idx.Has(id) {
			return nil, nil, nil, fmt.Errorf("chunk %s of a tail object is not in the index; run snap check (prune changes nothing while a kept chain is damaged)", id)
		}
		used[id] = blobUsed
	}
	need := map[repo.ID]bool{}
	for id := range used {
		if p.used[id] == 0 {
			need[id] = true
		}
	}
	satisfy := func(pb *repo.PackBlobs) bool {
		hit := false
		for _, e := range pb.Blobs {
			if need[e.ID] {
				delete(need, e.ID)
				p.used[e.ID] = blobSatisfied
				hit = true
			}
		}
		return hit
	}
	for _, id := range p.keep {
		satisfy(p.packs[id])
	}
	for i := range p.newPacks {
		satisfy(&p.newPacks[i])
	}
	for i := range newPacks {
		satisfy(&newPacks[i])
	}
	// What is left lives only in packs the plan would remove: keep them.
	keepAlso := map[repo.ID]bool{}
	for _, list := range [][]repo.ID{p.delete, p.repack} {
		for _, id := range list {
			if len(need) > 0 && satisfy(p.packs[id]) {
				keepAlso[id] = true
			}
		}
	}
	for id := range need {
		return nil, nil, nil, fmt.Errorf("blob %s of a snapshot written while prune planned is in no pack that stays; run snap check (nothing was collected)", id)
	}
	p.keptForNew = len(keepAlso)
	if len(keepAlso) > 0 {
		o.Log.Info("keeping packs a backup started using while prune planned", "packs", len(keepAlso))
		p.keep = append(p.keep, slices.SortedFunc(maps.Keys(keepAlso), compareID)...)
		p.delete = slices.DeleteFunc(p.delete, func(id repo.ID) bool { return keepAlso[id] })
		p.repack = slices.DeleteFunc(p.repack, func(id repo.ID) bool { return keepAlso[id] })
	}
	if len(stays) > 0 {
		p.unindexedOld = slices.DeleteFunc(p.unindexedOld, func(id repo.ID) bool { return stays[id] })
	}
	p.recount()
	return now, kept, extraRemove, nil
}

// lockUnlessDry takes the exclusive lock for command (prune, forget,
// repair snapshots), waiting up to retry; a dry run takes none and gets a
// nil lock. unlock releases what was taken.
func lockUnlessDry(ctx context.Context, r *repo.Repository, dry bool, command string, now func() time.Time, retry time.Duration, log *slog.Logger) (lk *repo.Lock, unlock func(), err error) {
	if dry {
		return nil, func() {}, nil
	}
	lk, err = r.Lock(ctx, repo.LockOptions{Exclusive: true, Command: command, Now: now, RetryFor: retry, Log: log})
	if err != nil {
		return nil, nil, err
	}
	return lk, func() { lk.Unlock(ctx) }, nil
}
