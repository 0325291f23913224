package chain

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// Chain is one chain as the repository holds it.
type Chain struct {
	ID     string
	Host   string
	Source snapshot.Source
	// Bases are the chain's base snapshots, oldest first.
	Bases []*snapshot.Snapshot
	// Tails are its maximal tail objects in stream order: by seq, then
	// offset, then time. Redundant are the others (contained in one of
	// Tails, left by a compaction), Overlapping those that overlap a
	// maximal one without being contained in it (never written by snap).
	Tails       []Ref
	Redundant   []Ref
	Overlapping []Ref
}

// Chains groups snaps' redis snapshots and refs into chains, ordered by
// their first base's time (chains whose bases are all gone, with only
// tail objects left, come first, with no host).
func Chains(snaps []*snapshot.Snapshot, refs []Ref) []*Chain {
	by := map[string]*Chain{}
	get := func(id string) *Chain {
		c := by[id]
		if c == nil {
			c = &Chain{ID: id}
			by[id] = c
		}
		return c
	}
	for _, sn := range snaps {
		if sn.Redis == nil {
			continue
		}
		c := get(sn.Redis.Chain)
		c.Bases = append(c.Bases, sn)
	}
	tails := map[string][]Ref{}
	for _, r := range refs {
		get(r.Chain)
		tails[r.Chain] = append(tails[r.Chain], r)
	}
	out := make([]*Chain, 0, len(by))
	for _, c := range by {
		slices.SortFunc(c.Bases, func(a, b *snapshot.Snapshot) int { return a.Time.Compare(b.Time) })
		if len(c.Bases) > 0 {
			c.Host, c.Source = c.Bases[0].Host, c.Bases[0].Source
		}
		c.Tails, c.Redundant, c.Overlapping = maximal(tails[c.ID])
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Chain) int {
		if c := cmp.Compare(min(len(a.Bases), 1), min(len(b.Bases), 1)); c != 0 {
			return c
		}
		if len(a.Bases) > 0 {
			if c := a.Bases[0].Time.Compare(b.Bases[0].Time); c != 0 {
				return c
			}
		}
		// Chains without bases (or with bases of one time) by id, so the
		// order does not depend on the map's.
		return cmp.Compare(a.ID, b.ID)
	})
	return out
}

// streamOrder sorts refs by seq, offset and first time; of refs that
// start alike, the larger first, so a container precedes what it contains.
func streamOrder(a, b Ref) int {
	return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Offset, b.Offset), cmp.Compare(a.T0, b.T0),
		-cmp.Compare(a.End, b.End), -cmp.Compare(a.T1, b.T1), cmp.Compare(a.Name, b.Name))
}

// maximal splits refs of one chain into the maximal ones, in stream
// order, and the rest. Compaction merges aligned windows, so two refs are
// nested or disjoint; one that is neither is set aside.
func maximal(refs []Ref) (max, redundant, overlapping []Ref) {
	refs = slices.Clone(refs)
	slices.SortFunc(refs, streamOrder)
	for _, r := range refs {
		if len(max) == 0 {
			max = append(max, r)
			continue
		}
		k := max[len(max)-1]
		switch {
		case k.contains(r):
			redundant = append(redundant, r)
		case r.Seq > k.Seq || r.Offset >= k.End && r.T0 >= k.T1:
			max = append(max, r)
		default:
			overlapping = append(overlapping, r)
		}
	}
	return max, redundant, overlapping
}

// LoadChains lists the repository's tail objects and returns its chains.
func LoadChains(ctx context.Context, r *repo.Repository, snaps []*snapshot.Snapshot) ([]*Chain, error) {
	refs, err := List(ctx, r)
	if err != nil {
		return nil, err
	}
	return Chains(snaps, refs), nil
}

// position is where a base's tail objects start.
type position struct{ seq, off int64 }

func basePosition(sn *snapshot.Snapshot) position {
	s, o := sn.Redis.Position()
	return position{s, o}
}

// needs reports whether the base sn needs the tail object r: it
// continues one of the base's incr files past the base's length for it
// (a mark with no bytes at that length too), or holds a later one.
func needs(sn *snapshot.Snapshot, r Ref) bool {
	pt := sn.Redis
	if r.Seq < pt.Incrs[0].Seq {
		return false
	}
	if in, ok := pt.Incr(r.Seq); ok {
		return r.End > in.Length || r.Offset == r.End && r.Offset == in.Length
	}
	return true
}

// From is the chain's first restorable moment: its oldest base's time.
func (c *Chain) From() (time.Time, bool) {
	if len(c.Bases) == 0 {
		return time.Time{}, false
	}
	return c.Bases[0].Time, true
}

// To is the chain's last restorable moment: its newest mark's or base's
// time.
func (c *Chain) To() time.Time {
	var t time.Time
	if len(c.Bases) > 0 {
		t = c.Bases[len(c.Bases)-1].Time
	}
	for _, r := range c.Tails {
		if r.Time().After(t) {
			t = r.Time()
		}
	}
	return t
}

// Gap is a window of a chain in which follow did not watch the server, so
// no second inside it can be restored.
type Gap struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Gaps loads the chain's tail objects that hold a gap and returns the
// gaps, in order.
func (c *Chain) Gaps(ctx context.Context, r *repo.Repository) ([]Gap, error) {
	var gaps []Gap
	for _, ref := range c.Tails {
		if !ref.Gap {
			continue
		}
		t, err := Load(ctx, r, ref)
		if err != nil {
			return nil, err
		}
		for _, i := range t.Gaps {
			gaps = append(gaps, Gap{From: time.UnixMilli(t.Sinces[i]), To: time.UnixMilli(t.Times[i])})
		}
	}
	return gaps, nil
}

// Newest returns the newest chain of host whose bases have source src
// (kind, address, data directory), or nil.
func Newest(chains []*Chain, host string, src snapshot.Source) *Chain {
	var best *Chain
	for _, c := range chains {
		if len(c.Bases) == 0 || c.Host != host || c.Source != src {
			continue
		}
		if best == nil || c.To().After(best.To()) {
			best = c
		}
	}
	return best
}

// Position is the end of the chain's stream: after its last tail object,
// or its newest base's position.
func (c *Chain) Position() (seq, off int64) {
	p := position{}
	if len(c.Bases) > 0 {
		p = basePosition(c.Bases[len(c.Bases)-1])
	}
	for _, r := range c.Tails {
		if r.Seq > p.seq || r.Seq == p.seq && r.End >= p.off {
			p = position{r.Seq, r.End}
		}
	}
	return p.seq, p.off
}

// Describe is a one-line description of the chain for messages.
func (c *Chain) Describe() string {
	from, _ := c.From()
	return fmt.Sprintf("chain %s of %s (%s to %s)", c.ID[:8], c.Host, from.UTC().Format(time.RFC3339), c.To().UTC().Format(time.RFC3339))
}

// IsRedis reports whether sn is a redis snapshot.
func IsRedis(sn *snapshot.Snapshot) bool {
	return sn.Source.Kind == source.KindRedis && sn.Redis != nil
}
