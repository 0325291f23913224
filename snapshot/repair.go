package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
)

// RepairOptions configure RepairSnapshots.
type RepairOptions struct {
	DryRun    bool // say what would change; change nothing, take no lock
	RetryLock time.Duration
	Now       func() time.Time
	Log       *slog.Logger
}

// DroppedFile is an entry a repair drops, and why.
type DroppedFile struct {
	Name string `json:"name"`
	Why  string `json:"why"`
}

// RepairedSnapshot is one snapshot whose data was partly or wholly lost.
type RepairedSnapshot struct {
	ID   repo.ID   `json:"id"` // the damaged snapshot
	Time time.Time `json:"time"`
	Host string    `json:"host"`
	// NewID is the replacement written (zero when dry, or when nothing
	// was left to keep).
	NewID repo.ID `json:"new_id,omitzero"`
	// TreeLost: the tree blob itself is gone, so every entry is.
	TreeLost bool          `json:"tree_lost"`
	Dropped  []DroppedFile `json:"dropped"`
	Kept     int           `json:"kept"` // entries the replacement holds
	// Removed: the damaged snapshot is removed (or, dry, would be); with
	// Kept zero there is no replacement, since an empty snapshot would
	// restore as if the database had been empty.
	Removed bool `json:"removed"`
}

// RepairResult says what RepairSnapshots found and did.
type RepairResult struct {
	DryRun    bool               `json:"dry_run"`
	Snapshots int                `json:"snapshots"` // checked
	Repaired  []RepairedSnapshot `json:"repaired"`
	// MissingPacks counts packs the index names that are not stored: their
	// blobs count as lost, and snap check fails until snap repair index
	// drops them from the index.
	MissingPacks int `json:"missing_packs"`
}

// RepairSnapshots drops from every snapshot the entries whose data is
// gone for good: a regular file with a chunk that no stored pack holds
// (by the index and a listing of the packs; blobs are not read), and a
// hard link to such a file. A snapshot that lost entries is replaced by
// one marked Repaired, with the same time, host, tags and other fields
// and a tree without them, and then removed (docs/design.md, "Repair").
// A snapshot whose tree blob is gone, or that would keep no entry, is
// removed with no replacement. Under the exclusive lock, unless dry.
func RepairSnapshots(ctx context.Context, r *repo.Repository, o RepairOptions) (*RepairResult, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	res := &RepairResult{DryRun: o.DryRun, Repaired: []RepairedSnapshot{}}
	lk, unlock, err := lockUnlessDry(ctx, r, o.DryRun, "repair snapshots", o.Now, o.RetryLock, o.Log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	snaps, err := List(ctx, r)
	if err != nil {
		return nil, err
	}
	res.Snapshots = len(snaps)
	if _, err := r.LoadIndexFiles(ctx, nil); err != nil {
		return nil, fmt.Errorf("%w (run snap repair index first)", err)
	}
	stored := map[repo.ID]bool{}
	if err := r.List(ctx, repo.PackFile, func(id repo.ID, _ int64) error {
		stored[id] = true
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}
	for _, id := range r.Index().Packs() {
		if !stored[id] {
			res.MissingPacks++
		}
	}
	idx := r.Index()
	have := func(id repo.ID, t repo.BlobType) bool {
		loc, ok := idx.Lookup(id)
		return ok && loc.Type == t && stored[loc.Pack]
	}

	// Plan: which snapshots lose what. Trees load in parallel.
	plans := make([]*repairPlan, len(snaps))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.Connections())
	for i, sn := range snaps {
		g.Go(func() error {
			p, err := planRepair(gctx, r, sn, have)
			plans[i] = p
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	byTree := map[repo.ID][]*Snapshot{} // repaired snapshots already there (an earlier run killed before it removed the damaged one)
	for _, sn := range snaps {
		if sn.Repaired {
			byTree[sn.Tree] = append(byTree[sn.Tree], sn)
		}
	}
	for _, p := range plans {
		if p == nil {
			continue
		}
		rs := p.result
		if !o.DryRun {
			if err := p.apply(ctx, r, lk, byTree, &rs); err != nil {
				return res, err
			}
			o.Log.Info("repaired snapshot", "snapshot", rs.ID.Str(), "dropped", len(rs.Dropped), "replacement", rs.NewID.Str())
		}
		rs.Removed = true
		res.Repaired = append(res.Repaired, rs)
	}
	return res, nil
}

// repairPlan is what one damaged snapshot loses.
type repairPlan struct {
	sn     *Snapshot
	kept   []File
	result RepairedSnapshot
}

// planRepair returns what sn loses, or nil when it is whole.
func planRepair(ctx context.Context, r *repo.Repository, sn *Snapshot, have func(repo.ID, repo.BlobType) bool) (*repairPlan, error) {
	p := &repairPlan{sn: sn, result: RepairedSnapshot{ID: sn.ID, Time: sn.Time, Host: sn.Host, Dropped: []DroppedFile{}}}
	if !have(sn.Tree, repo.TreeBlob) {
		p.result.TreeLost = true
		return p, nil
	}
	t, err := LoadTree(ctx, r, sn.Tree)
	if errors.Is(err, repo.ErrCorrupt) {
		p.result.TreeLost = true
		return p, nil
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", sn.ID.Str(), err)
	}
	dropped := map[string]bool{}
	for _, f := range t.Files {
		why := ""
		switch f.Type {
		case TypeFile:
			lost := 0
			first := -1
			for i, c := range f.Chunks {
				if !have(c, repo.DataBlob) {
					lost++
					if first < 0 {
						first = i
					}
				}
			}
			if lost > 0 {
				why = fmt.Sprintf("%d of its %d chunks are in no stored pack (the first is chunk %d, %s)", lost, len(f.Chunks), first, f.Chunks[first].Str())
			}
		case TypeHardlink:
			if dropped[f.Target] {
				why = fmt.Sprintf("a hard link to %s, which is dropped", f.Target)
			}
		}
		if why != "" {
			dropped[f.Name] = true
			p.result.Dropped = append(p.result.Dropped, DroppedFile{Name: f.Name, Why: why})
			continue
		}
		p.kept = append(p.kept, f)
	}
	if len(p.result.Dropped) == 0 {
		return nil, nil
	}
	p.result.Kept = len(p.kept)
	return p, nil
}

// apply writes the replacement (unless nothing is kept), then removes the
// damaged snapshot: snapshot before removal, so a repair killed between
// leaves both, and the next run removes the damaged one.
func (p *repairPlan) apply(ctx context.Context, r *repo.Repository, lk *repo.Lock, byTree map[repo.ID][]*Snapshot, rs *RepairedSnapshot) error {
	sn := p.sn
	if len(p.kept) > 0 {
		tid, err := SaveTree(ctx, r, &Tree{Files: p.kept})
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", sn.ID.Str(), err)
		}
		if err := r.Flush(ctx); err != nil {
			return fmt.Errorf("snapshot %s: save its new tree: %w", sn.ID.Str(), err)
		}
		for _, e := range byTree[tid] {
			if e.Time.Equal(sn.Time) && e.Host == sn.Host {
				rs.NewID = e.ID
			}
		}
		if rs.NewID.IsNull() {
			c := *sn
			c.Tree, c.Repaired = tid, true
			c.Summary.Files, c.Summary.Bytes = len(p.kept), 0
			for _, f := range p.kept {
				c.Summary.Bytes += f.Length
			}
			if err := lk.Err(); err != nil {
				return fmt.Errorf("snapshot %s: replacement not saved: %w", sn.ID.Str(), err)
			}
			if err := Save(ctx, r, &c); err != nil {
				return fmt.Errorf("snapshot %s: save its replacement: %w", sn.ID.Str(), err)
			}
			rs.NewID = c.ID
		}
	}
	h := repo.Handle{Type: repo.SnapshotFile, Name: sn.Name}
	if err := lk.Err(); err != nil {
		return fmt.Errorf("not removing %s: %w", h, err)
	}
	if err := r.Backend().Remove(ctx, h); err != nil && !errors.Is(err, repo.ErrNotFound) {
		return fmt.Errorf("remove %s: %w", h, err)
	}
	return nil
}
