package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/snapbackup/snap/repo"
)

// ForgetOptions say which snapshots ForgetSnapshots removes: those IDs
// name, or, with no IDs, those Policy does not keep.
type ForgetOptions struct {
	IDs     []string // snapshot ids or unique prefixes of at least 4 hex digits
	Policy  Policy
	GroupBy GroupBy
	// Groups are the states of the cluster groups, by UUID, as for
	// PruneOptions.Groups: a group's snapshots go or stay together.
	Groups   map[string]GroupState
	Location *time.Location // calendar buckets; nil: time.Local
	DryRun   bool
	// RetryLock is how long to wait for other locks to go.
	RetryLock time.Duration
	Now       func() time.Time
	Log       *slog.Logger
}

// ForgetResult is what ForgetSnapshots removed (or, dry, would remove).
type ForgetResult struct {
	DryRun  bool
	Groups  []Group     // the policy's decisions; nil when IDs were given
	Removed []*Snapshot // oldest first
	Kept    int         // snapshots left
}

// ForgetSnapshots removes snapshot objects and nothing else: the data
// they alone use stays until prune collects it. It is prune's first two
// steps (docs/design.md, "Prune") under the same exclusive lock, and
// applies the policy as prune does (ApplyPolicy). Ids are resolved after
// the lock is taken, all of them before anything is removed: one that
// names no snapshot, or several, fails the call with nothing removed. A
// dry run takes no lock and changes nothing.
func ForgetSnapshots(ctx context.Context, r *repo.Repository, o ForgetOptions) (*ForgetResult, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Location == nil {
		o.Location = time.Local
	}
	if len(o.IDs) == 0 && o.Policy.Empty() {
		return nil, errors.New("forget: give snapshot ids or a --keep-* rule (an empty policy keeps every snapshot)")
	}
	if len(o.IDs) > 0 && !o.Policy.Empty() {
		return nil, errors.New("forget: give snapshot ids or a policy, not both")
	}
	res := &ForgetResult{DryRun: o.DryRun}
	lk, unlock, err := lockUnlessDry(ctx, r, o.DryRun, "forget", o.Now, o.RetryLock, o.Log)
	if err != nil {
		return nil, err
	}
	defer unlock()
	snaps, err := List(ctx, r)
	if err != nil {
		return nil, err
	}
	if len(o.IDs) > 0 {
		if res.Removed, err = findAll(snaps, o.IDs); err != nil {
			return nil, err
		}
	} else {
		res.Groups = ApplyPolicyGroups(snaps, o.Policy, o.GroupBy, o.Location, o.Now(), o.Groups)
		gone := map[repo.ID]bool{}
		for _, g := range res.Groups {
			for _, d := range g.Decisions {
				if !d.Keep {
					gone[d.Snapshot.ID] = true
				}
			}
		}
		for _, sn := range snaps {
			if gone[sn.ID] {
				res.Removed = append(res.Removed, sn)
			}
		}
	}
	res.Kept = len(snaps) - len(res.Removed)
	o.Log.Info("forget", "snapshots_removed", len(res.Removed), "snapshots_kept", res.Kept, "dry_run", o.DryRun)
	if o.DryRun || len(res.Removed) == 0 {
		return res, nil
	}
	names := make([]string, len(res.Removed))
	for i, sn := range res.Removed {
		names[i] = sn.Name
	}
	if err := removeObjects(ctx, r, lk, repo.SnapshotFile, names); err != nil {
		return nil, err
	}
	return res, nil
}

// findAll resolves every id among snaps, oldest first and each once; it
// fails naming every id that does not resolve.
func findAll(snaps []*Snapshot, ids []string) ([]*Snapshot, error) {
	want := map[repo.ID]bool{}
	var errs []error
	for _, id := range ids {
		sn, err := Find(snaps, id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		want[sn.ID] = true
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("%w; nothing removed", errors.Join(errs...))
	}
	var out []*Snapshot
	for _, sn := range snaps {
		if want[sn.ID] {
			out = append(out, sn)
		}
	}
	return out, nil
}
