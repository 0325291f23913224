package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

// fakeBackup records the parts asked of it; a node whose freeze fails
// returns that error, one that freezes late freezes late.
type fakeBackup struct {
	mu    sync.Mutex
	refs  []snapshot.GroupRef
	fail  error
	delay time.Duration // how late it freezes
}

func (b *fakeBackup) backup(ctx context.Context, g *snapshot.GroupRef, maxLate time.Duration) (*snapshot.Snapshot, error) {
	b.mu.Lock()
	b.refs = append(b.refs, *g)
	fail, delay := b.fail, b.delay
	b.mu.Unlock()
	if d := time.Until(g.FreezeAt); d < -maxLate {
		return nil, fmt.Errorf("%w: late", snapshot.ErrMissedFreeze)
	} else if d > 0 {
		time.Sleep(d)
	}
	if fail != nil {
		return nil, fail
	}
	sn := &snapshot.Snapshot{Time: time.Now().Add(delay), Group: g}
	sn.ID[0] = 1
	return sn, nil
}

func startAgent(t *testing.T, s *Store, node string, b *fakeBackup, sched time.Duration) {
	t.Helper()
	m := Member{Node: node, Host: node, Kind: "freeze", Every: Duration(50 * time.Millisecond), Poll: Duration(20 * time.Millisecond),
		Schedule: Duration(sched), GroupTimeout: Duration(5 * time.Second), MaxSkew: Duration(200 * time.Millisecond)}
	joined := make(chan struct{})
	a := &Agent{Store: s, Member: m, Backup: b.backup, Log: quiet, Joined: joined, Prepare: 300 * time.Millisecond}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-joined:
	case <-time.After(5 * time.Second):
		t.Fatal("agent did not join")
	}
}

func waitGroup(t *testing.T, s *Store, id string, want string) *Group {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := s.Load(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if g := st.Group(id); g != nil && g.Status == want {
			if err := s.Detail(t.Context(), st, g); err != nil {
				t.Fatal(err)
			}
			return g
		}
		if time.Now().After(deadline) {
			t.Fatalf("group %s never %s: %+v", id, want, st.Group(id))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgentRequestedGroup: three agents take their parts of a request at
// its moment; one whose freeze fails reports it; one that froze outside
// the skew fails the group too.
func TestAgentRequestedGroup(t *testing.T) {
	r := newRepo(t)
	s, _ := NewStore(r, "shop", nil)
	var bs [3]fakeBackup
	for i := range bs {
		startAgent(t, s, fmt.Sprintf("db-%d", i), &bs[i], 0)
	}
	request := func() Request {
		st, err := s.Load(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		q := Request{UUID: uuid.NewString(), Created: time.Now(), FreezeAt: time.Now().Add(300 * time.Millisecond), Timeout: Duration(5 * time.Second), MaxSkew: Duration(100 * time.Millisecond), Members: []string{"db-0", "db-1", "db-2"}}
		if err := s.Ask(t.Context(), st, q); err != nil {
			t.Fatal(err)
		}
		return q
	}
	q := request()
	g := waitGroup(t, s, q.UUID, Completed)
	for _, n := range g.Nodes {
		if n.FrozenAt == nil || n.FrozenAt.Sub(q.FreezeAt).Abs() > 100*time.Millisecond {
			t.Errorf("node %s froze at %v, the moment was %v", n.Node, n.FrozenAt, q.FreezeAt)
		}
	}
	for i := range bs {
		if len(bs[i].refs) != 1 || bs[i].refs[0].UUID != q.UUID || !bs[i].refs[0].FreezeAt.Equal(q.FreezeAt) {
			t.Fatalf("node %d took parts %+v", i, bs[i].refs)
		}
	}

	bs[1].mu.Lock()
	bs[1].fail = errors.New("FREEZE: ERR disk full")
	bs[1].mu.Unlock()
	bs[2].mu.Lock()
	bs[2].delay = time.Second
	bs[2].mu.Unlock()
	q = request()
	g = waitGroup(t, s, q.UUID, Failed)
	deadline := time.Now().Add(5 * time.Second)
	for g.Processing > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		g = waitGroup(t, s, q.UUID, Failed)
	}
	if g.Nodes[0].Status != Completed || g.Nodes[1].Status != Failed || !strings.Contains(g.Nodes[1].Error, "disk full") ||
		g.Nodes[2].Status != Failed || !strings.Contains(g.Nodes[2].Error, "max skew") || g.Nodes[2].Snapshot == "" {
		t.Fatalf("nodes %+v", g.Nodes)
	}
}

// TestAgentScheduledGroup: agents with a schedule take their parts at the
// same boundary, under the UUID each derives, with no request.
func TestAgentScheduledGroup(t *testing.T) {
	r := newRepo(t)
	s, _ := NewStore(r, "shop", nil)
	const every = time.Second
	var bs [2]fakeBackup
	for i := range bs {
		startAgent(t, s, fmt.Sprintf("db-%d", i), &bs[i], every)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		bs[0].mu.Lock()
		n := len(bs[0].refs)
		bs[0].mu.Unlock()
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no two scheduled parts in 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	bs[0].mu.Lock()
	first := bs[0].refs[0]
	bs[0].mu.Unlock()
	if first.FreezeAt.UnixNano()%int64(every) != 0 || first.UUID != ScheduledUUID("shop", every, first.FreezeAt) {
		t.Fatalf("part %+v is not at a boundary under its derived UUID", first)
	}
	g := waitGroup(t, s, first.UUID, Completed)
	if !g.Scheduled || len(g.Nodes) != 2 {
		t.Fatalf("scheduled group %+v", g)
	}
	if _, err := s.CurrentRequest(t.Context()); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("a scheduled group wrote a request: %v", err)
	}
}
