package chain

import (
	"context"
	"fmt"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// CheckExtra is snapshot.CheckOptions.Extra for redis chains: every tail
// object loads and is what its name says; the maximal ones of each chain
// continue each other from its oldest base's position, each ending
// between two commands (inline bytes are scanned; chunked ones are read
// by check --read-data with their packs); every chunk is indexed in a
// stored pack.
func CheckExtra(r *repo.Repository) func(ctx context.Context, snaps []*snapshot.Snapshot, have func(repo.ID) bool) ([]snapshot.Problem, error) {
	return func(ctx context.Context, snaps []*snapshot.Snapshot, have func(repo.ID) bool) ([]snapshot.Problem, error) {
		chains, err := LoadChains(ctx, r, snaps)
		if err != nil {
			return nil, err
		}
		var probs []snapshot.Problem
		fail := func(c *Chain, ref Ref, format string, args ...any) {
			msg := fmt.Sprintf(format, args...)
			if len(c.Bases) > 0 {
				msg = c.Describe() + ": " + msg
			} else {
				msg = "chain " + c.ID + ": " + msg
			}
			probs = append(probs, snapshot.Problem{Kind: "tail", File: ref.Name, Message: msg})
		}
		for _, c := range chains {
			for _, ref := range c.Overlapping {
				fail(c, ref, "overlaps another tail object without being contained in it")
			}
			if len(c.Bases) == 0 {
				// Left by a prune that was interrupted; the next one
				// removes them.
				continue
			}
			first := c.Bases[0]
			var prev *Ref
			var sc *source.AOFScanner
			for i := range c.Tails {
				ref := c.Tails[i]
				if !needs(first, ref) {
					continue
				}
				t, err := Load(ctx, r, ref)
				if err != nil {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					fail(c, ref, "%v", err)
					prev, sc = nil, nil
					continue
				}
				want := int64(-1)
				switch in, inPoint := first.Redis.Incr(ref.Seq); {
				case prev != nil && ref.Seq == prev.Seq:
					want = prev.End
				case inPoint:
					want = in.Length
				case prev == nil || ref.Seq == prev.Seq+1:
					want = 0
				default:
					fail(c, ref, "is of seq %d, but the object before is of seq %d: an incr file is missing", ref.Seq, prev.Seq)
				}
				if want >= 0 && ref.Offset != want {
					fail(c, ref, "starts at byte %d of seq %d, but the bytes before end at %d", ref.Offset, ref.Seq, want)
				}
				for _, id := range t.Chunks {
					if !have(id) {
						fail(c, ref, "chunk %s is not indexed in a stored pack", id)
					}
				}
				if prev == nil || ref.Seq != prev.Seq || sc == nil {
					sc = nil
					if len(t.Chunks) == 0 {
						sc = source.NewAOFScanner(ref.Offset)
					}
				}
				if sc != nil {
					if len(t.Chunks) > 0 {
						sc = nil
					} else if n, err := sc.Scan(t.Data, nil); err != nil {
						fail(c, ref, "%v", err)
						sc = nil
					} else if n != len(t.Data) {
						fail(c, ref, "ends inside a command (%d bytes of it)", len(t.Data)-n)
						sc = nil
					}
				}
				prev = &c.Tails[i]
			}
		}
		return probs, nil
	}
}
