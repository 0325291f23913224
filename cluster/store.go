package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

// Node and group states, as `snap cluster status` prints them.
const (
	Processing = "processing" // asked, not done
	Completed  = "completed"  // its snapshot is written (a group: every member's)
	Failed     = "failed"     // it reported an error or froze outside the skew (a group: a member failed or is missing)
	Missing    = "missing"    // a member with no part when the timeout passed
)

// ErrUnknownCluster is returned for a cluster no node ever joined.
var ErrUnknownCluster = errors.New("unknown cluster")

// ErrUnknownGroup is returned for a UUID that names no group of the
// cluster.
var ErrUnknownGroup = errors.New("unknown group")

// Store reads and writes one cluster's objects in a repository.
type Store struct {
	r       *repo.Repository
	cluster string
	now     func() time.Time
}

// NewStore returns the store of cluster in r. now may be nil (time.Now).
func NewStore(r *repo.Repository, cluster string, now func() time.Time) (*Store, error) {
	if err := snapshot.CheckName("cluster", cluster); err != nil {
		return nil, err
	}
	if now == nil {
		now = time.Now
	}
	return &Store{r: r, cluster: cluster, now: now}, nil
}

// Cluster is the store's cluster name.
func (s *Store) Cluster() string { return s.cluster }

// State is a cluster as one listing shows it, with the member records and
// group requests loaded: what node and group states are computed from.
type State struct {
	Cluster  string
	Members  []*Member // current members, by node name
	removed  []*Member // members that left, with Heartbeat set to when they left
	requests map[string]*Request
	statuses map[string]map[string]statusRef // uuid -> node -> the status object's name
	memberAt map[string]string               // node -> its newest member object (for heartbeats)
	oldNames []string                        // older member objects of the same nodes
	request  bool                            // the current request object exists
	now      time.Time
}

type statusRef struct {
	name      string
	freezeAt  time.Time
	completed bool
	size      int64
}

// Load lists the cluster's objects and loads its member records and
// group requests (a read each, a few at a time). A record that a
// heartbeat replaced between the listing and its read makes it list
// again.
func (s *Store) Load(ctx context.Context) (*State, error) {
	for attempt := 1; ; attempt++ {
		st, err := s.load(ctx)
		if errors.Is(err, repo.ErrNotFound) && attempt < 5 {
			continue
		}
		return st, err
	}
}

func (s *Store) load(ctx context.Context) (*State, error) {
	st := &State{Cluster: s.cluster, requests: map[string]*Request{}, statuses: map[string]map[string]statusRef{}, memberAt: map[string]string{}, now: s.now()}
	type obj struct {
		name string
		size int64
		n    name
	}
	var members, removed, groups []obj
	newest := map[string]obj{}
	err := s.r.ListAs(ctx, repo.ClusterFile, func(fi repo.FileInfo) error {
		n, ok := parseName(fi.Name)
		if !ok || n.cluster != s.cluster {
			return nil
		}
		o := obj{fi.Name, fi.Size, n}
		switch n.kind {
		case "member":
			members = append(members, o)
			if cur, ok := newest[n.node]; !ok || n.at.After(cur.n.at) {
				newest[n.node] = o
			}
		case "removed":
			removed = append(removed, o)
		case "group":
			groups = append(groups, o)
		case "request":
			st.request = true
		case "status":
			m := st.statuses[n.uuid]
			if m == nil {
				m = map[string]statusRef{}
				st.statuses[n.uuid] = m
			}
			m[n.node] = statusRef{name: fi.Name, freezeAt: n.at, completed: n.completed, size: fi.Size}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, o := range members {
		if newest[o.n.node].name != o.name {
			st.oldNames = append(st.oldNames, o.name)
		}
	}
	var toLoad []obj
	for _, o := range newest {
		toLoad = append(toLoad, o)
		st.memberAt[o.n.node] = o.name
	}
	toLoad = append(append(toLoad, removed...), groups...)
	var mu sync.Mutex
	err = forEach(ctx, len(toLoad), func(ctx context.Context, i int) error {
		o := toLoad[i]
		data, err := s.r.LoadAs(ctx, repo.ClusterFile, o.name, o.size)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		switch o.n.kind {
		case "member", "removed":
			m, err := DecodeMember(data)
			if err != nil {
				return fmt.Errorf("%s: %w", o.name, err)
			}
			if m.Cluster != s.cluster || m.Node != o.n.node {
				return fmt.Errorf("%s: %w: holds node %s of cluster %s", o.name, repo.ErrCorrupt, m.Node, m.Cluster)
			}
			if o.n.kind == "member" {
				st.Members = append(st.Members, m)
			} else {
				m.Heartbeat = o.n.at // when it left
				st.removed = append(st.removed, m)
			}
		case "group":
			q, err := DecodeRequest(data)
			if err != nil {
				return fmt.Errorf("%s: %w", o.name, err)
			}
			if q.Cluster != s.cluster || q.UUID != o.n.uuid {
				return fmt.Errorf("%s: %w: holds group %s of cluster %s", o.name, repo.ErrCorrupt, q.UUID, q.Cluster)
			}
			st.requests[q.UUID] = q
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(st.Members, func(a, b *Member) int { return cmp.Compare(a.Node, b.Node) })
	return st, nil
}

// forEach calls fn(ctx, 0..n-1), four at a time, and returns the first
// error; the context fn gets ends with it.
func forEach(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i := range n {
		g.Go(func() error { return fn(gctx, i) })
	}
	return g.Wait()
}

// Known reports whether any node ever joined the cluster.
func (st *State) Known() bool {
	return len(st.Members) > 0 || len(st.removed) > 0 || len(st.requests) > 0 || len(st.statuses) > 0
}

// Member returns the current member record of node, or nil.
func (st *State) Member(node string) *Member {
	for _, m := range st.Members {
		if m.Node == node {
			return m
		}
	}
	return nil
}

// NodeStatus is one node's part of a group.
type NodeStatus struct {
	Node     string     `json:"node"`
	Status   string     `json:"status"`
	Snapshot string     `json:"snapshot,omitempty"`
	FrozenAt *time.Time `json:"frozen_at,omitempty"`
	Error    string     `json:"error,omitempty"`
}

// Group is a group's state.
type Group struct {
	UUID      string        `json:"uuid"`
	Status    string        `json:"status"`
	FreezeAt  time.Time     `json:"freeze_at"`
	Scheduled bool          `json:"scheduled"`
	Timeout   time.Duration `json:"-"`
	MaxSkew   time.Duration `json:"-"`
	Nodes     []NodeStatus  `json:"nodes"`
	// Counts of Nodes by status.
	Completed, Failed, Missing, Processing int `json:"-"`
}

// Groups returns every group of the cluster, newest first, with node
// states from the listing alone (no snapshot ids, freeze times or
// errors: Detail adds them).
func (st *State) Groups() []*Group {
	var out []*Group
	for uuid := range st.requests {
		out = append(out, st.group(uuid))
	}
	for uuid := range st.statuses {
		if st.requests[uuid] == nil {
			out = append(out, st.group(uuid))
		}
	}
	slices.SortFunc(out, func(a, b *Group) int {
		if c := b.FreezeAt.Compare(a.FreezeAt); c != 0 {
			return c
		}
		return cmp.Compare(a.UUID, b.UUID)
	})
	return out
}

// Group returns the group uuid, or nil if the cluster has none such.
func (st *State) Group(uuid string) *Group {
	if st.requests[uuid] == nil && st.statuses[uuid] == nil {
		return nil
	}
	return st.group(uuid)
}

func (st *State) group(uuid string) *Group {
	g := &Group{UUID: uuid}
	parts := st.statuses[uuid]
	timeout := map[string]time.Duration{}
	var members []string
	if q := st.requests[uuid]; q != nil {
		g.FreezeAt, g.Timeout, g.MaxSkew = q.FreezeAt, time.Duration(q.Timeout), time.Duration(q.MaxSkew)
		members = q.Members
	} else {
		// A scheduled group: its moment is in its parts' names, its
		// members are those of its schedule then.
		g.Scheduled = true
		var any statusRef
		for _, p := range parts {
			any = p
			break
		}
		g.FreezeAt = any.freezeAt
		sched := st.scheduleOf(uuid, any)
		for _, m := range slices.Concat(st.Members, st.removed) {
			left := !slices.Contains(st.Members, m)
			if time.Duration(m.Schedule) != sched || m.Joined.After(g.FreezeAt) || (left && !m.Heartbeat.After(g.FreezeAt)) {
				continue
			}
			members = append(members, m.Node)
			timeout[m.Node] = time.Duration(m.GroupTimeout)
			g.Timeout = max(g.Timeout, time.Duration(m.GroupTimeout))
		}
	}
	nodes := slices.Clone(members)
	for n := range parts {
		if !slices.Contains(nodes, n) {
			nodes = append(nodes, n)
		}
	}
	slices.Sort(nodes)
	nodes = slices.Compact(nodes)
	for _, n := range nodes {
		ns := NodeStatus{Node: n}
		p, done := parts[n]
		to, ok := timeout[n]
		if !ok {
			to = g.Timeout
		}
		switch {
		case done && p.completed:
			ns.Status = Completed
			g.Completed++
		case done:
			ns.Status = Failed
			g.Failed++
		case st.now.Before(g.FreezeAt.Add(to)):
			ns.Status = Processing
			g.Processing++
		default:
			ns.Status = Missing
			g.Missing++
		}
		g.Nodes = append(g.Nodes, ns)
	}
	switch {
	case g.Failed+g.Missing > 0:
		g.Status = Failed
	case g.Processing > 0 || len(g.Nodes) == 0:
		g.Status = Processing
	default:
		g.Status = Completed
	}
	return g
}

// scheduleOf returns the schedule of a scheduled group, from the members
// whose schedule derives uuid at the group's moment.
func (st *State) scheduleOf(uuid string, part statusRef) time.Duration {
	for _, m := range slices.Concat(st.Members, st.removed) {
		if m.Schedule > 0 && ScheduledUUID(st.Cluster, time.Duration(m.Schedule), part.freezeAt) == uuid {
			return time.Duration(m.Schedule)
		}
	}
	return -1 // no member has it any more: its parts are all it has
}

// Detail reads the status objects of g's nodes that have one and fills
// in their snapshots, freeze times and errors.
func (s *Store) Detail(ctx context.Context, st *State, g *Group) error {
	parts := st.statuses[g.UUID]
	var mu sync.Mutex
	return forEach(ctx, len(g.Nodes), func(ctx context.Context, i int) error {
		ns := &g.Nodes[i]
		p, ok := parts[ns.Node]
		if !ok {
			return nil
		}
		data, err := s.r.LoadAs(ctx, repo.ClusterFile, p.name, p.size)
		if err != nil {
			return err
		}
		v, err := DecodeStatus(data)
		if err != nil {
			return fmt.Errorf("%s: %w", p.name, err)
		}
		if v.UUID != g.UUID || v.Node != ns.Node || v.Completed != p.completed || v.Cluster != st.Cluster {
			return fmt.Errorf("%s: %w: holds node %s of group %s", p.name, repo.ErrCorrupt, v.Node, v.UUID)
		}
		ns.Snapshot, ns.Error = v.Snapshot, v.Error
		if !v.FrozenAt.IsZero() {
			t := v.FrozenAt
			ns.FrozenAt = &t
		}
		mu.Lock()
		if g.Scheduled && g.MaxSkew == 0 {
			g.MaxSkew = time.Duration(v.MaxSkew)
		}
		mu.Unlock()
		return nil
	})
}

// Part returns node's status in group uuid, read from its object, or
// ErrUnknownGroup and a NodeStatus without snapshot when it has none.
func (s *Store) Part(ctx context.Context, st *State, uuid, node string) (*Group, NodeStatus, error) {
	g := st.Group(uuid)
	if g == nil {
		return nil, NodeStatus{}, fmt.Errorf("%w %s in cluster %s", ErrUnknownGroup, uuid, st.Cluster)
	}
	if err := s.Detail(ctx, st, g); err != nil {
		return nil, NodeStatus{}, err
	}
	for _, ns := range g.Nodes {
		if ns.Node == node {
			return g, ns, nil
		}
	}
	return g, NodeStatus{}, fmt.Errorf("node %s is not a member of group %s (its members: %s)", node, uuid, strings.Join(nodeNames(g), ", "))
}

func nodeNames(g *Group) []string {
	var out []string
	for _, n := range g.Nodes {
		out = append(out, n.Node)
	}
	return out
}

// FindGroup returns the cluster whose group uuid is, from one listing of
// r's cluster objects.
func FindGroup(ctx context.Context, r *repo.Repository, uuid string) (string, error) {
	var found string
	err := r.ListAs(ctx, repo.ClusterFile, func(fi repo.FileInfo) error {
		if n, ok := parseName(fi.Name); ok && n.uuid == uuid {
			found = n.cluster
		}
		return nil
	})
	if err == nil && found == "" {
		err = fmt.Errorf("%w %s: no cluster in the repository has it (snap cluster ls --cluster NAME lists a cluster's groups)", ErrUnknownGroup, uuid)
	}
	return found, err
}
