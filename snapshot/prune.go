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

// mark is a used blob's state (the low 2 bits) and, in version 2, its
// owner: an index into prunePlan.owners (0: none, 1: shared, then host
// tags). One map of 36-byte entries for every used blob of a fleet.
type mark uint32

func (m mark) state() uint8      { return uint8(m & 3) }
func (m mark) owner() uint32     { return uint32(m >> 2) }
func (m mark) with(s uint8) mark { return m&^3 | mark(s) }

const sharedOwnerIndex = 1

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
	if len(p.copyBlobs) > 0 {
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

	names := make([]string, 0, len(forgotten))
	for _, sn := range forgotten {
		names = append(names, sn.Name)
	}
	if err := removeObjects(ctx, r, lk, repo.SnapshotFile, names); err != nil {
		return nil, err
	}
	if extraRemove != nil {
		if err := extraRemove(ctx); err != nil {
			return nil, err
		}
	}

	// 5. The new index, before anything the old one names is deleted:
	// one file per owner, the one that supersedes every old file last.
	var oldIndex []string
	if p.needIndex() {
		if err := lk.Err(); err != nil {
			return nil, fmt.Errorf("not writing the new index: %w", err)
		}
		written, err := p.writeIndex(ctx, r, o.Log)
		if err != nil {
			return nil, err
		}
		st.IndexFilesWritten = written
		for _, f := range p.idx.Files {
			oldIndex = append(oldIndex, f.Name)
		}
		oldIndex = append(oldIndex, p.repackIndexes...)
	}
	// 6. The packs, then the index files the new one supersedes. While a
	// superseded file remains, the packs it names that no effective index
	// does are known to be prune's to delete, so a prune killed here is
	// finished by the next without waiting for the margin.
	var packs []string
	for _, ids := range [][]repo.ID{p.delete, p.repack, p.unindexedOld} {
		for _, id := range ids {
			packs = append(packs, id.String())
		}
	}
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
	used   map[repo.ID]mark

	keep, repack, delete, missing []repo.ID
	copyBlobs                     map[repo.ID][]copyBlob // per pack to copy from
	unindexedOld, unindexedYoung  []repo.ID

	// Version 2 (host-scoped): the owner of every used blob (a host tag,
	// or repo.SharedOwner when several hosts use it), the owner of the
	// index file each pack that stays goes into, and of the file each
	// pack is in now. In version 1 every owner is "".
	owners      []string // mark.owner's names; nil in version 1
	dest, owner map[repo.ID]string
	ownerFiles  map[string]int // index files per owner

	newPacks      []ownedPack
	newBytes      int64
	repackIndexes []string   // an index file for each new pack, superseded by the final index
	keptForNew    int        // packs reconcile moved to keep
	st            PruneStats // counts filled while planning
}

// copyBlob is a used blob that repacking copies into a new pack of owner.
type copyBlob struct {
	repo.BlobEntry
	owner string
}

// ownedPack is a new pack and the owner of the index file that names it.
type ownedPack struct {
	repo.PackBlobs
	owner string
}

func planPrune(ctx context.Context, r *repo.Repository, kept []*Snapshot, extraUsed []repo.ID, o PruneOptions) (*prunePlan, error) {
	p := &prunePlan{packs: map[repo.ID]*repo.PackBlobs{}, stored: map[repo.ID]repo.FileInfo{}, copyBlobs: map[repo.ID][]copyBlob{},
		dest: map[repo.ID]string{}, owner: map[repo.ID]string{}, ownerFiles: map[string]int{}}
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
		p.ownerFiles[f.Owner]++
		for i := range f.Data.Packs {
			pb := &f.Data.Packs[i]
			if _, ok := p.packs[pb.PackID]; !ok {
				p.packs[pb.PackID] = pb
				p.owner[pb.PackID] = f.Owner
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

	if p.used, p.owners, err = markUsed(ctx, r, kept); err != nil {
		return nil, err
	}
	idx := r.Index()
	for _, id := range extraUsed {
		if !idx.Has(id) {
			return nil, fmt.Errorf("chunk %s of a tail object is not in the index; run snap check (prune changes nothing while a kept chain is damaged)", id)
		}
		m := mark(blobUsed)
		if p.owners != nil {
			m |= sharedOwnerIndex << 2 // a chain's: not tied to a host here
		}
		p.used[id] = m
	}

	ids := make([]repo.ID, 0, len(p.packs))
	for id := range p.packs {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b repo.ID) int { return compareID(a, b) })
	for _, id := range ids {
		pb := p.packs[id]
		dest := p.destOf(id)
		p.dest[id] = dest
		var usedN int
		var usedB, unusedB, misplacedB int64
		for _, e := range pb.Blobs {
			switch {
			case p.used[e.ID] == 0: // not used
				p.st.BlobsUnused++
				unusedB += int64(e.Length)
			case p.ownerOf(e.ID) != dest:
				// Needed, but not where its owner's readers alone would
				// look: a repack moves it to its owner's pack, so for the
				// decision it is as good as unused.
				usedN++
				misplacedB += int64(e.Length)
			default:
				usedN++
				usedB += int64(e.Length)
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
		case unusedB+misplacedB > 0 && float64(unusedB+misplacedB) > o.MaxUnused*float64(usedB+unusedB+misplacedB):
			p.repack = append(p.repack, id)
			p.st.PacksRepacked++
			p.st.PackBytesRepacked += fi.Size
		default:
			p.keep = append(p.keep, id)
		}
	}
	p.st.MissingPacks = len(p.missing)
	// A used blob stored twice is copied only if no kept pack has it
	// where its owner sees it.
	for _, id := range p.keep {
		for _, e := range p.packs[id].Blobs {
			if m := p.used[e.ID]; m != 0 && p.visible(e.ID, p.dest[id]) {
				p.used[e.ID] = m.with(blobSatisfied)
			}
		}
	}
	copyOut := func(id repo.ID, e repo.BlobEntry, owner string) {
		p.used[e.ID] = p.used[e.ID].with(blobSatisfied)
		p.copyBlobs[id] = append(p.copyBlobs[id], copyBlob{BlobEntry: e, owner: owner})
		p.st.BlobsRepacked++
		p.st.BytesRepacked += int64(e.Length)
	}
	// Every used blob of a pack to repack, and one left only in a kept
	// pack where its owner does not look, goes into a new pack of its
	// owner (a shared one, for a blob several hosts use): so prune merges
	// what two hosts stored twice, and moves what one host alone uses out
	// of the shared files every host reads.
	for _, ids := range [][]repo.ID{p.repack, p.keep} {
		for _, id := range ids {
			for _, e := range p.packs[id].Blobs {
				if p.used[e.ID].state() == blobUsed {
					copyOut(id, e, p.ownerOf(e.ID))
				}
			}
		}
	}
	for id, m := range p.used {
		if m.state() != blobSatisfied {
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

// destOf is the owner of the index file a pack that stays goes into. In
// version 1 it is "". In version 2: the one host whose kept snapshots use
// every used blob of it, or shared where they are all used by several
// hosts; a pack of mixed owners stays where it is (a host's, whose
// blobs of other owners are then misplaced, or shared).
func (p *prunePlan) destOf(pack repo.ID) string {
	if p.owners == nil {
		return ""
	}
	dest := ""
	for _, e := range p.packs[pack].Blobs {
		if p.used[e.ID] == 0 {
			continue
		}
		switch o := p.ownerOf(e.ID); {
		case dest == "":
			dest = o
		case dest != o:
			if cur := p.owner[pack]; cur != "" && cur != repo.SharedOwner {
				return cur
			}
			return repo.SharedOwner
		}
	}
	if dest == "" { // nothing used: deleted
		return repo.SharedOwner
	}
	return dest
}

// ownerOf is a used blob's owner: "" in version 1.
func (p *prunePlan) ownerOf(blob repo.ID) string {
	if p.owners == nil {
		return ""
	}
	return p.owners[p.used[blob].owner()]
}

// visible reports whether a used blob in a pack of dest's index file is
// where its owner's readers look: its own host's file, or a shared one.
func (p *prunePlan) visible(blob repo.ID, dest string) bool {
	return dest == repo.SharedOwner || p.ownerOf(blob) == dest
}

// needIndex reports whether the index must be rewritten: something it
// names goes or moves to another owner's file, or an owner has several
// index files to consolidate.
func (p *prunePlan) needIndex() bool {
	if len(p.delete) > 0 || len(p.repack) > 0 || len(p.missing) > 0 || len(p.newPacks) > 0 {
		return true
	}
	for _, n := range p.ownerFiles {
		if n > 1 {
			return true
		}
	}
	for _, f := range p.idx.Files {
		if p.idx.Superseded[f.ID] {
			return true // an interrupted prune's old files: remove them
		}
	}
	for _, id := range p.keep {
		if p.dest[id] != p.owner[id] {
			return true
		}
	}
	return false
}

// writeIndex writes the index that replaces every file prune read: in
// version 1 one file; in version 2 one per host that has packs, then the
// shared one, last, superseding every old file (the host files supersede
// nothing). A scoped reader, which reads the shared files and its own,
// so sees the supersedes as soon as the old files stop counting; until
// then old and new name the same packs alike. It returns how many files
// it wrote.
func (p *prunePlan) writeIndex(ctx context.Context, r *repo.Repository, log *slog.Logger) (int, error) {
	byOwner := map[string][]repo.PackBlobs{}
	for _, id := range p.keep {
		byOwner[p.dest[id]] = append(byOwner[p.dest[id]], *p.packs[id])
	}
	for _, np := range p.newPacks {
		byOwner[np.owner] = append(byOwner[np.owner], np.PackBlobs)
	}
	last := ""
	if r.HostScoped() {
		last = repo.SharedOwner
	}
	var supersedes []repo.ID
	for _, f := range p.idx.Files {
		supersedes = append(supersedes, f.ID)
	}
	for _, name := range p.repackIndexes {
		if _, id, ok := repo.ParseObjectName(repo.IndexFile, name); ok {
			supersedes = append(supersedes, id)
		}
	}
	owners := make([]string, 0, len(byOwner))
	for o := range byOwner {
		if o != last {
			owners = append(owners, o)
		}
	}
	slices.Sort(owners)
	written := 0
	for _, o := range owners {
		if _, err := r.SaveIndexAs(ctx, o, &repo.IndexData{Packs: byOwner[o]}); err != nil {
			return written, err
		}
		written++
	}
	d := &repo.IndexData{Packs: byOwner[last], Supersedes: supersedes}
	if _, err := r.SaveIndexAs(ctx, last, d); err != nil {
		return written, err
	}
	written++
	log.Info("wrote the new index", "files", written, "supersedes", len(supersedes))
	return written, nil
}

// markUsed loads the tree of every kept snapshot and returns the set of
// blobs they use: the trees and every chunk. Each must be in the index.
// In a version 2 repository each mark also holds the blob's owner, the
// tag of the one host whose kept snapshots use it or shared, as an index
// into the owner names it returns.
func markUsed(ctx context.Context, r *repo.Repository, kept []*Snapshot) (map[repo.ID]mark, []string, error) {
	used := map[repo.ID]mark{}
	var owners []string
	ownerIndex := map[string]uint32{}
	if r.HostScoped() {
		owners = []string{"", repo.SharedOwner}
	}
	trees := map[repo.ID]*Snapshot{}
	treeOwner := map[repo.ID]uint32{}
	for _, sn := range kept {
		if _, ok := trees[sn.Tree]; !ok {
			trees[sn.Tree] = sn
		}
		if owners != nil {
			tag := r.HostTag(sn.Host)
			i, ok := ownerIndex[tag]
			if !ok {
				i = uint32(len(owners))
				owners = append(owners, tag)
				ownerIndex[tag] = i
			}
			treeOwner[sn.Tree] = mergeOwner(treeOwner[sn.Tree], i)
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
			o := treeOwner[tid]
			use := func(id repo.ID) {
				used[id] = mark(blobUsed) | mark(mergeOwner(used[id].owner(), o))<<2
			}
			use(tid)
			for _, f := range t.Files {
				for _, c := range f.Chunks {
					use(c)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return used, owners, nil
}

// mergeOwner is the owner of a blob owned by a (0: none yet) and used by
// b's host too.
func mergeOwner(a, b uint32) uint32 {
	if a == 0 || a == b {
		return b
	}
	return sharedOwnerIndex
}

// runRepack copies the used blobs of the packs to repack, and blobs kept
// where their owner does not look, into new packs: one writer per owner,
// so that a new pack has one owner and goes into its index file. Owners
// are done r.Connections() at a time, each writer finished before the
// next starts, so a fleet's thousand owners cost no more memory than a
// few writers.
func (p *prunePlan) runRepack(ctx context.Context, r *repo.Repository, lk *repo.Lock) error {
	if err := lk.Err(); err != nil {
		return fmt.Errorf("not repacking: %w", err)
	}
	// owner -> source pack -> blobs
	work := map[string]map[repo.ID][]repo.BlobEntry{}
	for id, cbs := range p.copyBlobs {
		for _, cb := range cbs {
			if work[cb.owner] == nil {
				work[cb.owner] = map[repo.ID][]repo.BlobEntry{}
			}
			work[cb.owner][id] = append(work[cb.owner][id], cb.BlobEntry)
		}
	}
	owners := make([]string, 0, len(work))
	for o := range work {
		owners = append(owners, o)
	}
	slices.Sort(owners)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.Connections())
	for _, owner := range owners {
		g.Go(func() error {
			sources := make([]repo.ID, 0, len(work[owner]))
			for id := range work[owner] {
				sources = append(sources, id)
			}
			slices.SortFunc(sources, compareID)
			w := r.NewSaver(repo.SaverOptions{Repack: true, IndexEvery: 1, Owner: owner})
			var lerr error
			for _, id := range sources {
				// ctx, not gctx, for Save: it starts uploads that
				// Flush waits for.
				if lerr = r.LoadBlobs(gctx, id, work[owner][id], func(e repo.BlobEntry, plain []byte) error {
					_, err := w.Save(ctx, e.Type, e.ID, plain)
					return err
				}); lerr != nil {
					break
				}
			}
			err := w.Flush(ctx)
			packs, n := w.Packs()
			mu.Lock()
			defer mu.Unlock()
			for _, id := range w.Indexes() {
				p.repackIndexes = append(p.repackIndexes, r.IndexName(owner, id))
			}
			for _, pb := range packs {
				p.newPacks = append(p.newPacks, ownedPack{PackBlobs: pb, owner: owner})
			}
			p.newBytes += n
			return errors.Join(lerr, err)
		})
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("repack: %w", err)
	}
	slices.SortFunc(p.newPacks, func(a, b ownedPack) int { return compareID(a.PackID, b.PackID) })
	return nil
}

// removeObjects removes objects in parallel, each only while the lock
// holds. Objects already gone are fine: an earlier prune got that far.
func removeObjects(ctx context.Context, r *repo.Repository, lk *repo.Lock, t repo.FileType, names []string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.Connections())
	for _, name := range names {
		g.Go(func() error {
			h := repo.Handle{Type: t, Name: name}
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
	planned := make(map[string]bool, len(p.idx.Files)+len(p.repackIndexes))
	for _, f := range p.idx.Files {
		planned[f.Name] = true
	}
	repacked := make(map[string]bool, len(p.repackIndexes))
	for _, name := range p.repackIndexes {
		repacked[name] = true
	}
	var newFiles []repo.ObjectInfo
	if err := r.ListObjects(ctx, repo.IndexFile, func(f repo.ObjectInfo) error {
		switch {
		case planned[f.Name]:
			delete(planned, f.Name)
		case !repacked[f.Name]:
			newFiles = append(newFiles, f)
		}
		return nil
	}); err != nil {
		return nil, nil, nil, fmt.Errorf("list index: %w", err)
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
	used, _, err := markUsed(ctx, r, fresh)
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
	// Their owners are the next prune's to work out: until then they
	// count as shared, which every reader sees.
	taken := mark(blobSatisfied)
	if p.owners != nil {
		taken |= sharedOwnerIndex << 2
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
				p.used[e.ID] = taken
				hit = true
			}
		}
		return hit
	}
	for _, id := range p.keep {
		satisfy(p.packs[id])
	}
	for i := range p.newPacks {
		satisfy(&p.newPacks[i].PackBlobs)
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
