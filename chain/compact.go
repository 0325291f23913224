package chain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

// windows are the compaction levels: a tail object of level i+1 holds the
// objects of one aligned window of windows[i] (docs/design.md,
// "Compaction"). Each divides the next, so two merged objects are nested
// or disjoint.
var windows = []time.Duration{10 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour}

// CompactOptions configure Compact.
type CompactOptions struct {
	Now time.Time
	// Grace is how long after a window ended its objects are merged:
	// follow may still be shipping into it.
	Grace time.Duration
	Log   *slog.Logger
}

// CompactStats says what a compaction did.
type CompactStats struct {
	Written int // merged objects stored
	Merged  int // objects merged into them and removed
	Removed int // redundant objects removed
}

// group is a planned merged object: the sources it replaces.
type group struct {
	ref     Ref
	level   int
	sources []Ref
}

// planCompaction groups c's maximal objects by closed windows, smallest
// first, and returns the groups of more than one original object.
func planCompaction(tails []Ref, levels []int, now time.Time, grace time.Duration) []group {
	cur := make([]group, len(tails))
	for i, t := range tails {
		cur[i] = group{ref: t, level: levels[i], sources: []Ref{t}}
	}
	for li, w := range windows {
		wms := w.Milliseconds()
		closed := func(t1 int64) bool {
			end := (t1/wms + 1) * wms
			return time.UnixMilli(end).Add(grace).Before(now)
		}
		var next []group
		for i := 0; i < len(cur); {
			g := cur[i]
			j := i + 1
			if closed(g.ref.T1) {
				bucket := g.ref.T1 / wms
				for j < len(cur) {
					n := cur[j]
					last := cur[j-1].ref
					if n.ref.Seq != last.Seq || n.ref.Offset != last.End || n.ref.T1/wms != bucket {
						break
					}
					j++
				}
			}
			if j-i == 1 {
				next = append(next, g)
				i = j
				continue
			}
			m := group{ref: g.ref, level: li + 1}
			for _, x := range cur[i:j] {
				m.sources = append(m.sources, x.sources...)
				m.level = max(m.level, x.level)
			}
			m.ref.End, m.ref.T1 = cur[j-1].ref.End, cur[j-1].ref.T1
			m.ref.Gap = false
			for _, x := range cur[i:j] {
				m.ref.Gap = m.ref.Gap || x.ref.Gap
			}
			m.ref.Name = ""
			next = append(next, m)
			i = j
		}
		cur = next
	}
	var out []group
	for _, g := range cur {
		if len(g.sources) > 1 {
			out = append(out, g)
		}
	}
	return out
}

// Compact merges c's tail objects whose windows have closed and removes
// the objects that merged ones contain. The caller holds a lock that
// keeps prune out (merged objects may hold new data blobs).
func Compact(ctx context.Context, r *repo.Repository, c *Chain, o CompactOptions) (CompactStats, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	var st CompactStats
	for _, ref := range c.Redundant {
		if err := removeTail(ctx, r, ref); err != nil {
			return st, err
		}
		st.Removed++
	}
	// Levels are in the headers; a source of a merge is loaded anyway,
	// and a lone object's level does not matter, so assume 0.
	groups := planCompaction(c.Tails, make([]int, len(c.Tails)), o.Now, o.Grace)
	// The merged objects of a run share packs: their new blobs are
	// flushed once (every batchInline bytes of inline objects held at
	// most), and then the objects stored and their sources removed.
	var batch []merged
	held, saved := 0, false
	store := func() error {
		if saved {
			// Packs and index before the objects that name their blobs.
			if err := r.Flush(ctx); err != nil {
				return err
			}
		}
		for _, m := range batch {
			if _, err := Save(ctx, r, m.t); err != nil {
				return err
			}
			for _, ref := range m.g.sources {
				if err := removeTail(ctx, r, ref); err != nil {
					return err
				}
			}
			st.Written++
			st.Merged += len(m.g.sources)
		}
		batch, held, saved = batch[:0], 0, false
		return nil
	}
	for _, g := range groups {
		if err := ctx.Err(); err != nil {
			return st, err
		}
		t, newBlobs, err := merge(ctx, r, g)
		if err != nil {
			if errors.Is(err, errTooManyMarks) {
				continue
			}
			if errors.Is(err, repo.ErrNotFound) {
				// A source is gone since c was listed: another
				// compaction merged it (and stored its object first).
				o.Log.Debug("tail objects merged meanwhile", "chain", c.ID, "err", err)
				continue
			}
			return st, fmt.Errorf("compact %s: %w", c.Describe(), err)
		}
		batch = append(batch, merged{t, g})
		held += len(t.Data)
		saved = saved || newBlobs
		if held >= batchInline {
			if err := store(); err != nil {
				return st, fmt.Errorf("compact %s: %w", c.Describe(), err)
			}
		}
	}
	if err := store(); err != nil {
		return st, fmt.Errorf("compact %s: %w", c.Describe(), err)
	}
	if st.Written+st.Removed > 0 {
		o.Log.Debug("compacted tail objects", "chain", c.ID, "written", st.Written, "merged", st.Merged, "removed", st.Removed)
	}
	return st, nil
}

var errTooManyMarks = errors.New("too many marks and chunks to merge")

// batchInline bounds the inline bytes of merged objects a compaction
// holds before it stores them.
const batchInline = 32 << 20

// merged is a merged object not yet stored, and its group.
type merged struct {
	t *Tail
	g group
}

// merge builds the object of g, saving the data blobs it needs (not yet
// flushed: newBlobs says whether there were any).
func merge(ctx context.Context, r *repo.Repository, g group) (_ *Tail, newBlobs bool, _ error) {
	var m *Tail
	inline := true
	var parts []*Tail
	for _, ref := range g.sources {
		t, err := Load(ctx, r, ref)
		if err != nil {
			return nil, false, err
		}
		parts = append(parts, t)
		if len(t.Chunks) > 0 {
			inline = false
		}
	}
	// A header is about 45 bytes a mark and 80 a chunk: one that would
	// near the bound a reader takes is not made, and the sources stay as
	// they are (a day of a busy incr file at sub-second ticks).
	est := 1024
	for _, t := range parts {
		est += 45*len(t.Ends) + 80*len(t.Chunks)
		if len(t.Chunks) == 0 && len(t.Data) > 0 {
			est += 80
		}
	}
	if est > maxHeader*7/8 {
		return nil, false, errTooManyMarks
	}
	first := parts[0]
	m = &Tail{Chain: first.Chain, Host: first.Host, File: first.File, Seq: first.Seq, Offset: first.Offset,
		End: parts[len(parts)-1].End, Level: g.level, Timestamps: true, PrevEnd: first.PrevEnd}
	level := 0
	for _, t := range parts {
		level = max(level, t.Level)
	}
	m.Level = max(g.level, level)
	if m.End-m.Offset > MaxInline {
		inline = false
	}
	saved := false
	for _, t := range parts {
		if t.File != m.File {
			return nil, false, fmt.Errorf("%w: tail objects of seq %d name files %s and %s", repo.ErrCorrupt, m.Seq, m.File, t.File)
		}
		m.Timestamps = m.Timestamps && t.Timestamps
		if m.PrevEnd == 0 && t.Offset == 0 {
			m.PrevEnd = t.PrevEnd
		}
		for _, gi := range t.Gaps {
			m.Gaps = append(m.Gaps, len(m.Ends)+gi)
		}
		m.Ends = append(m.Ends, t.Ends...)
		m.Times = append(m.Times, t.Times...)
		m.Sinces = append(m.Sinces, t.Sinces...)
		switch {
		case inline:
			m.Data = append(m.Data, t.Data...)
		case len(t.Chunks) > 0:
			m.Chunks = append(m.Chunks, t.Chunks...)
			m.Sizes = append(m.Sizes, t.Sizes...)
		case len(t.Data) > 0:
			id := r.BlobID(t.Data)
			if _, err := r.SaveBlob(ctx, repo.DataBlob, id, t.Data); err != nil {
				return nil, false, err
			}
			saved = true
			m.Chunks = append(m.Chunks, id)
			m.Sizes = append(m.Sizes, uint32(len(t.Data)))
		}
	}
	return m, saved, nil
}

func removeTail(ctx context.Context, r *repo.Repository, ref Ref) error {
	if err := r.RemoveNamed(ctx, repo.TailFile, ref.Name); err != nil && !errors.Is(err, repo.ErrNotFound) {
		return fmt.Errorf("remove tails/%s: %w", ref.Name, err)
	}
	return nil
}

// PruneExtra is snapshot.PruneOptions.Extra for redis chains: it compacts
// every chain, keeps the tail objects at or after each chain's oldest kept
// base, returns the blobs they use, and removes the others (all of a
// chain none of whose bases is kept).
func PruneExtra(r *repo.Repository, now time.Time, log *slog.Logger) func(ctx context.Context, snaps, kept []*snapshot.Snapshot, dry bool) ([]repo.ID, func(context.Context) error, error) {
	return func(ctx context.Context, snaps, kept []*snapshot.Snapshot, dry bool) ([]repo.ID, func(context.Context) error, error) {
		chains, err := LoadChains(ctx, r, snaps)
		if err != nil {
			return nil, nil, err
		}
		if !dry {
			for _, c := range chains {
				if len(c.Bases) == 0 {
					continue
				}
				if _, err := Compact(ctx, r, c, CompactOptions{Now: now, Grace: time.Minute, Log: log}); err != nil {
					return nil, nil, err
				}
			}
			if chains, err = LoadChains(ctx, r, snaps); err != nil {
				return nil, nil, err
			}
		}
		keptSet := map[repo.ID]bool{}
		for _, sn := range kept {
			keptSet[sn.ID] = true
		}
		var used []repo.ID
		var drop []Ref
		for _, c := range chains {
			var oldest *snapshot.Snapshot
			for _, b := range c.Bases {
				if keptSet[b.ID] {
					oldest = b
					break
				}
			}
			all := append(append(append([]Ref(nil), c.Tails...), c.Redundant...), c.Overlapping...)
			if oldest == nil {
				drop = append(drop, all...)
				continue
			}
			for _, ref := range all {
				// The oldest kept base needs everything a later one does:
				// later bases only start later incr files.
				if !needs(oldest, ref) {
					drop = append(drop, ref)
					continue
				}
				t, err := Load(ctx, r, ref)
				if err != nil {
					return nil, nil, fmt.Errorf("%s: %w; run snap check (prune changes nothing while a kept chain is damaged)", c.Describe(), err)
				}
				used = append(used, t.Chunks...)
			}
		}
		if log != nil && len(drop) > 0 {
			log.Info("tail objects no kept base needs", "count", len(drop))
		}
		remove := func(ctx context.Context) error {
			for _, ref := range drop {
				if err := removeTail(ctx, r, ref); err != nil {
					return err
				}
			}
			return nil
		}
		return used, remove, nil
	}
}
