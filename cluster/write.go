package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/snapbackup/snap/repo"
)

// groupNamespace derives the UUIDs of scheduled groups (version 5): every
// member computes the same one for the same cluster, schedule and moment.
var groupNamespace = uuid.MustParse("5b0e1c2a-9d3f-4e67-8a41-2f6c7d8e9a10")

// ScheduledUUID is the UUID of the group of cluster c at moment at of
// schedule every.
func ScheduledUUID(c string, every time.Duration, at time.Time) string {
	return uuid.NewSHA1(groupNamespace, []byte(c+"\x00"+every.String()+"\x00"+strconv.FormatInt(at.Unix(), 10))).String()
}

// Join registers m (its Cluster is the store's) as a member, or renews
// its membership after a restart: the first record keeps its Joined, a
// node that left joins again now. It removes the node's older records and
// returns the record as written and its name, for Heartbeat.
func (s *Store) Join(ctx context.Context, st *State, m Member) (Member, string, error) {
	m.Version, m.Cluster, m.Heartbeat = recordVersion, s.cluster, s.now()
	m.Joined = m.Heartbeat
	if old := st.Member(m.Node); old != nil {
		m.Joined = old.Joined
	}
	name, err := s.save(ctx, memberName, m)
	if err != nil {
		return m, "", err
	}
	for _, n := range st.oldNames {
		if p, ok := parseName(n); ok && p.node == m.Node {
			s.removeQuiet(ctx, n)
		}
	}
	if prev := st.memberAt[m.Node]; prev != "" && prev != name {
		s.removeQuiet(ctx, prev)
	}
	return m, name, nil
}

func (s *Store) save(ctx context.Context, nameFn func(c, node string, at time.Time) string, m Member) (string, error) {
	for range 3 {
		name := nameFn(s.cluster, m.Node, m.Heartbeat)
		err := s.r.SaveAs(ctx, repo.ClusterFile, name, encode(m))
		if !errors.Is(err, repo.ErrExists) {
			return name, err
		}
		m.Heartbeat = m.Heartbeat.Add(time.Microsecond) // another process of the same node, this nanosecond
	}
	return "", fmt.Errorf("member record of %s: three names taken", m.Node)
}

// Heartbeat writes m's record anew and removes prev, the last one: two
// writes per heartbeat, one object per member at rest.
func (s *Store) Heartbeat(ctx context.Context, m Member, prev string) (string, error) {
	m.Version, m.Cluster, m.Heartbeat = recordVersion, s.cluster, s.now()
	name, err := s.save(ctx, memberName, m)
	if err != nil {
		return prev, err
	}
	if prev != "" && prev != name {
		s.removeQuiet(ctx, prev)
	}
	return name, nil
}

// removeQuiet removes a member's older record. One that stays (the
// storage failed) is only clutter: readers take the newest record of a
// node, and the node's next start removes the older ones.
func (s *Store) removeQuiet(ctx context.Context, name string) {
	_ = s.r.RemoveAs(ctx, repo.ClusterFile, name)
}

// Leave takes node out of the cluster: a record of its leaving (for the
// scheduled groups it was a member of) replaces its member records. It
// is no member of groups after now.
func (s *Store) Leave(ctx context.Context, st *State, node string) error {
	m := st.Member(node)
	if m == nil {
		return fmt.Errorf("node %s is not a member of cluster %s", node, s.cluster)
	}
	left := *m
	left.Heartbeat = s.now()
	if _, err := s.save(ctx, removedName, left); err != nil {
		return err
	}
	for _, n := range append(slices.Clone(st.oldNames), st.memberAt[node]) {
		if p, ok := parseName(n); ok && p.node == node {
			if err := s.r.RemoveAs(ctx, repo.ClusterFile, n); err != nil && !errors.Is(err, repo.ErrNotFound) {
				return err
			}
		}
	}
	return nil
}

// ErrBusy is returned (wrapped, with the UUID) by Ask while another group
// is processing.
var ErrBusy = errors.New("a group is processing")

// Ask writes a group request: first its group record, then the cluster's
// current request, which nodes poll. A current request of a group that
// is still processing refuses it (ErrBusy, naming that group); one of a
// finished group is replaced. Two requests at once: one wins, the other
// removes its group record and is refused, so nothing is half-written.
func (s *Store) Ask(ctx context.Context, st *State, q Request) error {
	q.Version, q.Cluster = recordVersion, s.cluster
	if st.request {
		cur, err := s.CurrentRequest(ctx)
		switch {
		case errors.Is(err, repo.ErrNotFound):
		case err != nil:
			return err
		default:
			if g := st.Group(cur.UUID); g == nil || g.Status == Processing {
				return fmt.Errorf("%w: group %s (asked %s, freeze at %s): wait for it or for its timeout", ErrBusy, cur.UUID, cur.Created.Format(time.RFC3339), cur.FreezeAt.Format(time.RFC3339))
			}
			if err := s.r.RemoveAs(ctx, repo.ClusterFile, requestName(s.cluster)); err != nil && !errors.Is(err, repo.ErrNotFound) {
				return err
			}
		}
	}
	body := encode(q)
	gname := groupName(s.cluster, q.UUID)
	if err := s.r.SaveAs(ctx, repo.ClusterFile, gname, body); err != nil {
		return err
	}
	err := s.r.SaveAs(ctx, repo.ClusterFile, requestName(s.cluster), body)
	if err == nil {
		return nil
	}
	rmErr := s.r.RemoveAs(ctx, repo.ClusterFile, gname)
	if errors.Is(err, repo.ErrExists) {
		if cur, cerr := s.CurrentRequest(ctx); cerr == nil {
			err = fmt.Errorf("%w: group %s, asked at the same time", ErrBusy, cur.UUID)
		}
	}
	return errors.Join(err, rmErr)
}

// CurrentRequest reads the cluster's current request: the one read a
// node makes per poll. No request is an error wrapping repo.ErrNotFound.
func (s *Store) CurrentRequest(ctx context.Context) (*Request, error) {
	data, err := s.r.LoadAs(ctx, repo.ClusterFile, requestName(s.cluster), -1)
	if err != nil {
		return nil, err
	}
	q, err := DecodeRequest(data)
	if err != nil {
		return nil, err
	}
	if q.Cluster != s.cluster {
		return nil, fmt.Errorf("%s: %w: a request of cluster %s", requestName(s.cluster), repo.ErrCorrupt, q.Cluster)
	}
	return q, nil
}

// ClearRequest removes the current request if it is group uuid's.
func (s *Store) ClearRequest(ctx context.Context, uuid string) error {
	cur, err := s.CurrentRequest(ctx)
	if errors.Is(err, repo.ErrNotFound) {
		return nil
	}
	if err != nil || cur.UUID != uuid {
		return err
	}
	if err := s.r.RemoveAs(ctx, repo.ClusterFile, requestName(s.cluster)); err != nil && !errors.Is(err, repo.ErrNotFound) {
		return err
	}
	return nil
}

// WriteStatus writes a node's part of a group. A part already written
// (by an earlier run of the node) is left as it is: ErrExists.
func (s *Store) WriteStatus(ctx context.Context, v Status) error {
	v.Version, v.Cluster, v.Written = recordVersion, s.cluster, s.now()
	for _, other := range []bool{!v.Completed} {
		if _, err := s.r.LoadAs(ctx, repo.ClusterFile, statusName(s.cluster, v.UUID, v.FreezeAt, v.Node, other), -1); err == nil {
			return fmt.Errorf("node %s's part of group %s: %w", v.Node, v.UUID, repo.ErrExists)
		}
	}
	return s.r.SaveAs(ctx, repo.ClusterFile, statusName(s.cluster, v.UUID, v.FreezeAt, v.Node, v.Completed), encode(v))
}

// HasStatus reports whether node wrote its part of the group at freezeAt.
func (s *Store) HasStatus(ctx context.Context, uuid string, freezeAt time.Time, node string) (bool, error) {
	for _, c := range []bool{true, false} {
		_, err := s.r.LoadAs(ctx, repo.ClusterFile, statusName(s.cluster, uuid, freezeAt, node, c), -1)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, repo.ErrNotFound) {
			return false, err
		}
	}
	return false, nil
}

// RemoveGroup removes every object of group uuid (its record, its parts,
// the current request if it is this group's). Prune calls it for groups
// retention forgot.
func (s *Store) RemoveGroup(ctx context.Context, st *State, uuid string) error {
	var names []string
	if st.requests[uuid] != nil {
		names = append(names, groupName(s.cluster, uuid))
	}
	for _, p := range st.statuses[uuid] {
		names = append(names, p.name)
	}
	if err := s.ClearRequest(ctx, uuid); err != nil {
		return err
	}
	for _, n := range names {
		if err := s.r.RemoveAs(ctx, repo.ClusterFile, n); err != nil && !errors.Is(err, repo.ErrNotFound) {
			return err
		}
	}
	return nil
}
