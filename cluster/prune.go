package cluster

import (
	"context"
	"log/slog"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

// Extra is snapshot.PruneOptions.Extra's type.
type Extra = func(ctx context.Context, snaps, kept []*snapshot.Snapshot, dry bool) ([]repo.ID, func(context.Context) error, error)

// Retention prepares a prune of r for cluster groups: the states of every
// group, for PruneOptions.Groups, and an Extra that wraps next (the
// chains' own, or nil) and also removes the objects of the groups
// retention forgot: finished groups none of whose snapshots is kept, and
// groups without snapshots (every member missing or failed before it
// wrote one) older than their cluster's newest completed group.
func Retention(ctx context.Context, r *repo.Repository, now func() time.Time, log *slog.Logger, next Extra) (map[string]snapshot.GroupState, Extra, error) {
	clusters, err := clusterNames(ctx, r)
	if err != nil {
		return nil, nil, err
	}
	type loaded struct {
		s  *Store
		st *State
	}
	var all []loaded
	states := map[string]snapshot.GroupState{}
	for _, c := range clusters {
		s, err := NewStore(r, c, now)
		if err != nil {
			return nil, nil, err
		}
		st, err := s.Load(ctx)
		if err != nil {
			return nil, nil, err
		}
		all = append(all, loaded{s, st})
		for _, g := range st.Groups() {
			states[g.UUID] = snapshot.GroupState{Completed: g.Status == Completed, Finished: g.Status != Processing}
		}
	}
	extra := func(ctx context.Context, snaps, kept []*snapshot.Snapshot, dry bool) ([]repo.ID, func(context.Context) error, error) {
		var used []repo.ID
		var remove func(context.Context) error
		if next != nil {
			var err error
			if used, remove, err = next(ctx, snaps, kept, dry); err != nil {
				return nil, nil, err
			}
		}
		has, keeps := map[string]bool{}, map[string]bool{}
		for _, sn := range snaps {
			if sn.Group != nil {
				has[sn.Group.UUID] = true
			}
		}
		for _, sn := range kept {
			if sn.Group != nil {
				keeps[sn.Group.UUID] = true
			}
		}
		type doomed struct {
			l    loaded
			uuid string
		}
		var drop []doomed
		for _, l := range all {
			groups := l.st.Groups()
			var newest time.Time
			for _, g := range groups {
				if g.Status == Completed && g.FreezeAt.After(newest) {
					newest = g.FreezeAt
				}
			}
			for _, g := range groups {
				if g.Status == Processing || keeps[g.UUID] || (!has[g.UUID] && !g.FreezeAt.Before(newest)) {
					continue
				}
				drop = append(drop, doomed{l, g.UUID})
			}
		}
		if dry || len(drop) == 0 {
			return used, remove, nil
		}
		return used, func(ctx context.Context) error {
			if remove != nil {
				if err := remove(ctx); err != nil {
					return err
				}
			}
			for _, d := range drop {
				if err := d.l.s.RemoveGroup(ctx, d.l.st, d.uuid); err != nil {
					return err
				}
				log.Info("removed a forgotten cluster group", "cluster", d.l.s.cluster, "group", d.uuid)
			}
			return nil
		}, nil
	}
	return states, extra, nil
}

// clusterNames lists the clusters r holds objects of.
func clusterNames(ctx context.Context, r *repo.Repository) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	err := r.ListAs(ctx, repo.ClusterFile, func(fi repo.FileInfo) error {
		if n, ok := parseName(fi.Name); ok && !seen[n.cluster] {
			seen[n.cluster] = true
			out = append(out, n.cluster)
		}
		return nil
	})
	return out, err
}
