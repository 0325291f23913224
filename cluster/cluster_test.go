package cluster

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

func newRepo(t testing.TB) *repo.Repository {
	t.Helper()
	r, err := repo.Init(context.Background(), mem.New(), "pw", repo.InitOptions{KDF: repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// clock is a settable now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func member(node string) Member {
	return Member{Node: node, Host: node, Kind: "freeze", Every: Duration(time.Minute), Poll: Duration(5 * time.Second)}
}

func load(t *testing.T, s *Store) *State {
	t.Helper()
	st, err := s.Load(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func clusterObjects(t *testing.T, r *repo.Repository) []string {
	t.Helper()
	var names []string
	if err := r.ListAs(t.Context(), repo.ClusterFile, func(fi repo.FileInfo) error { names = append(names, fi.Name); return nil }); err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// TestJoinAndHeartbeat: one record per member at rest; a restart keeps
// the join time; leaving removes the member.
func TestJoinAndHeartbeat(t *testing.T) {
	r := newRepo(t)
	c := &clock{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	s, err := NewStore(r, "shop", c.now)
	if err != nil {
		t.Fatal(err)
	}
	if st := load(t, s); st.Known() {
		t.Fatal("an empty repository knows the cluster")
	}
	joined := c.now()
	m, rec, err := s.Join(t.Context(), load(t, s), member("db-0"))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c.add(time.Minute)
		if rec, err = s.Heartbeat(t.Context(), m, rec); err != nil {
			t.Fatal(err)
		}
	}
	if got := clusterObjects(t, r); len(got) != 1 || got[0] != rec {
		t.Fatalf("after heartbeats: %v, want just %s", got, rec)
	}
	st := load(t, s)
	if len(st.Members) != 1 || !st.Members[0].Joined.Equal(joined) || !st.Members[0].Heartbeat.Equal(c.now()) {
		t.Fatalf("members %+v", st.Members)
	}
	// A restart: the same join time, still one record.
	c.add(time.Hour)
	if _, _, err := s.Join(t.Context(), st, member("db-0")); err != nil {
		t.Fatal(err)
	}
	st = load(t, s)
	if len(clusterObjects(t, r)) != 1 || !st.Members[0].Joined.Equal(joined) {
		t.Fatalf("after a restart: %v, joined %v", clusterObjects(t, r), st.Members[0].Joined)
	}
	if err := s.Leave(t.Context(), st, "db-0"); err != nil {
		t.Fatal(err)
	}
	if st := load(t, s); len(st.Members) != 0 || !st.Known() {
		t.Fatalf("after leaving: members %v, known %v", st.Members, st.Known())
	}
	if err := s.Leave(t.Context(), load(t, s), "db-0"); err == nil {
		t.Fatal("a node that left left again")
	}
}

func ask(t *testing.T, s *Store, c *clock, members ...string) Request {
	t.Helper()
	q := Request{UUID: uuid.NewString(), Created: c.now(), FreezeAt: c.now().Add(10 * time.Second), Timeout: Duration(time.Minute), MaxSkew: Duration(time.Second), Members: members}
	if err := s.Ask(t.Context(), load(t, s), q); err != nil {
		t.Fatal(err)
	}
	return q
}

func part(t *testing.T, s *Store, q Request, node string, ok bool) {
	t.Helper()
	v := Status{UUID: q.UUID, Node: node, FreezeAt: q.FreezeAt, Completed: ok}
	if ok {
		v.Snapshot, v.FrozenAt = strings.Repeat("ab", 32), q.FreezeAt.Add(3*time.Millisecond)
	} else {
		v.Error = "FREEZE: ERR no"
	}
	if err := s.WriteStatus(t.Context(), v); err != nil {
		t.Fatal(err)
	}
}

// TestGroupStates: node and group states from the listing, and the
// details from the status objects.
func TestGroupStates(t *testing.T) {
	r := newRepo(t)
	c := &clock{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	s, _ := NewStore(r, "shop", c.now)
	q := ask(t, s, c, "a", "b", "c")
	g := load(t, s).Group(q.UUID)
	if g.Status != Processing || g.Processing != 3 {
		t.Fatalf("just asked: %+v", g)
	}
	part(t, s, q, "a", true)
	if g := load(t, s).Group(q.UUID); g.Status != Processing || g.Completed != 1 {
		t.Fatalf("one completed: %+v", g)
	}
	part(t, s, q, "b", false)
	if g := load(t, s).Group(q.UUID); g.Status != Failed || g.Failed != 1 || g.Processing != 1 {
		t.Fatalf("one failed: %+v", g)
	}
	c.add(2 * time.Minute) // past freeze + timeout
	st := load(t, s)
	g = st.Group(q.UUID)
	if g.Status != Failed || g.Missing != 1 {
		t.Fatalf("after the timeout: %+v", g)
	}
	if err := s.Detail(t.Context(), st, g); err != nil {
		t.Fatal(err)
	}
	want := []NodeStatus{{Node: "a", Status: Completed, Snapshot: strings.Repeat("ab", 32)}, {Node: "b", Status: Failed, Error: "FREEZE: ERR no"}, {Node: "c", Status: Missing}}
	for i, n := range g.Nodes {
		if n.Node != want[i].Node || n.Status != want[i].Status || n.Snapshot != want[i].Snapshot || n.Error != want[i].Error || (n.Status == Completed) != (n.FrozenAt != nil) {
			t.Errorf("node %d: %+v, want %+v", i, n, want[i])
		}
	}
	// A part cannot be written twice, nor the other way.
	if err := s.WriteStatus(t.Context(), Status{UUID: q.UUID, Node: "a", FreezeAt: q.FreezeAt, Error: "late"}); !errors.Is(err, repo.ErrExists) {
		t.Fatalf("second part: %v", err)
	}

	q2 := ask(t, s, c, "a", "b")
	part(t, s, q2, "a", true)
	part(t, s, q2, "b", true)
	st = load(t, s)
	if g := st.Group(q2.UUID); g.Status != Completed {
		t.Fatalf("all completed: %+v", g)
	}
	if gs := st.Groups(); len(gs) != 2 || gs[0].UUID != q2.UUID {
		t.Fatalf("groups %+v", gs)
	}
	states, _, err := Retention(t.Context(), r, c.now, quiet, nil)
	if err != nil {
		t.Fatal(err)
	}
	if states[q.UUID] != (snapshot.GroupState{Finished: true}) || states[q2.UUID] != (snapshot.GroupState{Completed: true, Finished: true}) {
		t.Fatalf("states %+v", states)
	}
}

// TestAskRefusedWhileProcessing: a second request names the running one
// and writes nothing; once that one is over, a new one replaces it.
func TestAskRefusedWhileProcessing(t *testing.T) {
	r := newRepo(t)
	c := &clock{t: time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)}
	s, _ := NewStore(r, "shop", c.now)
	q := ask(t, s, c, "a")
	before := clusterObjects(t, r)
	q2 := Request{UUID: uuid.NewString(), Created: c.now(), FreezeAt: c.now().Add(time.Second), Timeout: Duration(time.Minute), Members: []string{"a"}}
	err := s.Ask(t.Context(), load(t, s), q2)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), q.UUID) {
		t.Fatalf("second request: %v", err)
	}
	if after := clusterObjects(t, r); !slices.Equal(before, after) {
		t.Fatalf("a refused request wrote: %v -> %v", before, after)
	}
	c.add(2 * time.Minute)
	if err := s.Ask(t.Context(), load(t, s), q2); err != nil {
		t.Fatalf("after the first timed out: %v", err)
	}
	cur, err := s.CurrentRequest(t.Context())
	if err != nil || cur.UUID != q2.UUID {
		t.Fatalf("current request %v, %v", cur, err)
	}
	if g := load(t, s).Group(q.UUID); g == nil || g.Status != Failed {
		t.Fatalf("the first group is gone or not failed: %+v", g)
	}
}

// TestScheduledGroupMembers: a scheduled group's members are the nodes of
// its schedule that had joined by its moment and not left.
func TestScheduledGroupMembers(t *testing.T) {
	r := newRepo(t)
	c := &clock{t: time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)}
	s, _ := NewStore(r, "shop", c.now)
	join := func(node string, sched time.Duration) {
		m := member(node)
		m.Schedule, m.GroupTimeout, m.MaxSkew = Duration(sched), Duration(5*time.Minute), Duration(time.Second)
		if _, _, err := s.Join(t.Context(), load(t, s), m); err != nil {
			t.Fatal(err)
		}
	}
	join("a", time.Hour)
	join("b", time.Hour)
	join("gone", time.Hour)
	join("other", 2*time.Hour)
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	c.t = at.Add(-time.Second)
	if err := s.Leave(t.Context(), load(t, s), "gone"); err != nil {
		t.Fatal(err)
	}
	c.t = at.Add(30 * time.Second)
	join("late", time.Hour)
	id := ScheduledUUID("shop", time.Hour, at)
	if id != ScheduledUUID("shop", time.Hour, at) || id == ScheduledUUID("shop", time.Hour, at.Add(time.Hour)) || id == ScheduledUUID("shop2", time.Hour, at) {
		t.Fatal("scheduled UUIDs are not a function of cluster, schedule and moment")
	}
	if err := s.WriteStatus(t.Context(), Status{UUID: id, Node: "a", FreezeAt: at, Completed: true, Snapshot: strings.Repeat("cd", 32), FrozenAt: at, Schedule: Duration(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	g := load(t, s).Group(id)
	if !g.Scheduled || !g.FreezeAt.Equal(at) || g.Status != Processing || len(g.Nodes) != 2 || g.Nodes[0].Node != "a" || g.Nodes[1].Node != "b" {
		t.Fatalf("scheduled group %+v", g)
	}
	c.t = at.Add(10 * time.Minute)
	if g := load(t, s).Group(id); g.Status != Failed || g.Nodes[1].Status != Missing {
		t.Fatalf("b did not show missing after the timeout: %+v", g)
	}
}

// TestNames: names parse back, and nothing that is not one of them is.
func TestNames(t *testing.T) {
	at := time.Unix(1764669600, 123)
	id := uuid.NewString()
	for _, n := range []string{memberName("c", "db-0", at), removedName("c", "db_1", at), groupName("c", id), requestName("c"), statusName("c", id, at, "db-0", true)} {
		if _, ok := parseName(n); !ok {
			t.Errorf("%s does not parse", n)
		}
	}
	for _, n := range []string{"c", "c+member+db-0", "c+member+DB+1", "c+group+not-a-uuid", "c+status+" + id + "+x+db+c", "c+status+" + id + "+1+db+x", "C+request", "c+request+x", "c+member+db-0+-5"} {
		if _, ok := parseName(n); ok {
			t.Errorf("%s parses", n)
		}
	}
}

func FuzzDecodeRecords(f *testing.F) {
	at := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	m := member("db-0")
	m.Version, m.Cluster, m.Joined, m.Heartbeat = 1, "c", at, at
	f.Add(encode(m))
	f.Add(encode(Request{Version: 1, Cluster: "c", UUID: uuid.NewString(), FreezeAt: at, Timeout: Duration(time.Minute), Members: []string{"a", "b"}}))
	f.Add(encode(Status{Version: 1, Cluster: "c", UUID: uuid.NewString(), Node: "a", FreezeAt: at, Completed: true, Snapshot: strings.Repeat("ab", 32), FrozenAt: at}))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"every":"-1s"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		if m, err := DecodeMember(data); err == nil {
			if snapshot.CheckName("node", m.Node) != nil || m.Poll <= 0 {
				t.Fatalf("accepted member %+v", m)
			}
			if _, err := DecodeMember(encode(m)); err != nil {
				t.Fatalf("re-encoded member: %v", err)
			}
		}
		if q, err := DecodeRequest(data); err == nil {
			if len(q.Members) == 0 || !slices.IsSorted(q.Members) {
				t.Fatalf("accepted request %+v", q)
			}
			if _, err := DecodeRequest(encode(q)); err != nil {
				t.Fatalf("re-encoded request: %v", err)
			}
		}
		if v, err := DecodeStatus(data); err == nil {
			if v.Completed && v.Snapshot == "" || !v.Completed && v.Error == "" {
				t.Fatalf("accepted status %+v", v)
			}
		}
		parseName(string(data))
	})
}

func FuzzParseName(f *testing.F) {
	f.Add(statusName("c", uuid.NewString(), time.Unix(5, 0), "n", true))
	f.Add(memberName("c", "n", time.Unix(5, 0)))
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := parseName(s)
		if !ok {
			return
		}
		if snapshot.CheckName("cluster", n.cluster) != nil || (n.node != "" && snapshot.CheckName("node", n.node) != nil) {
			t.Fatalf("%q parsed to %+v", s, n)
		}
	})
}

var quiet = slog.New(slog.DiscardHandler)
