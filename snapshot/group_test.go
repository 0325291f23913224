package snapshot

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/snapbackup/snap/repo"
)

// TestApplyPolicyGroups: a group's snapshots go or stay together; keep
// rules count completed groups; a failed group stays only while newer
// than the newest completed one; a processing one stays.
func TestApplyPolicyGroups(t *testing.T) {
	base := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	var snaps []*Snapshot
	n := 0
	mk := func(host string, at time.Time, g *GroupRef) *Snapshot {
		n++
		sn := &Snapshot{Host: host, Time: at.Add(time.Duration(n) * time.Millisecond), Group: g}
		sn.ID[0], sn.ID[1] = byte(n), 7
		snaps = append(snaps, sn)
		return sn
	}
	states := map[string]GroupState{}
	group := func(hour int, st GroupState, nodes ...string) string {
		id := uuid.NewString()
		at := base.Add(time.Duration(hour) * time.Hour)
		for _, node := range nodes {
			mk(node, at, &GroupRef{Cluster: "shop", UUID: id, Node: node, FreezeAt: at})
		}
		states[id] = st
		return id
	}
	done := GroupState{Completed: true, Finished: true}
	failed := GroupState{Finished: true}
	g0 := group(0, done, "a", "b")
	g1 := group(1, failed, "a") // older than the newest completed: goes
	g2 := group(2, done, "a", "b")
	g3 := group(3, done, "a", "b")
	g4 := group(4, failed, "b") // newer than the newest completed: stays
	g5 := group(5, GroupState{}, "a")
	lone := mk("a", base, nil)

	groups := ApplyPolicyGroups(snaps, Policy{Last: 2}, GroupBy{Host: true}, time.UTC, base.Add(6*time.Hour), states)
	keep := map[string]bool{}
	for _, g := range groups {
		for _, d := range g.Decisions {
			key := "lone"
			if d.Snapshot.Group != nil {
				key = d.Snapshot.Group.UUID
				if g.Cluster != "shop" {
					t.Errorf("group snapshot in %q", g.Key())
				}
			}
			if prev, seen := keep[key]; seen && prev != d.Keep {
				t.Errorf("group %s split: some kept, some not", key)
			}
			keep[key] = d.Keep
		}
	}
	want := map[string]bool{g0: false, g1: false, g2: true, g3: true, g4: true, g5: true, "lone": true}
	for k, w := range want {
		if keep[k] != w {
			t.Errorf("group %s kept %v, want %v", k, keep[k], w)
		}
	}
	_ = lone

	// Without a policy nothing goes, failed groups neither.
	for _, g := range ApplyPolicyGroups(snaps, Policy{}, GroupBy{Host: true}, time.UTC, base, states) {
		for _, d := range g.Decisions {
			if !d.Keep {
				t.Errorf("empty policy forgot %v", d.Snapshot.Group)
			}
		}
	}
}

// TestDecodeGroupRef: a snapshot's group is checked like the rest.
func TestDecodeGroupRef(t *testing.T) {
	at := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	good := GroupRef{Cluster: "shop", UUID: uuid.NewString(), Node: "db-0", FreezeAt: at}
	for i, g := range []GroupRef{
		good,
		{Cluster: "shop", UUID: good.UUID, Node: "../etc", FreezeAt: at},
		{Cluster: "shop", UUID: "nope", Node: "db-0", FreezeAt: at},
		{Cluster: "Shop", UUID: good.UUID, Node: "db-0", FreezeAt: at},
		{Cluster: "shop", UUID: good.UUID, Node: "db-0"},
	} {
		sn := Snapshot{Version: 1, Time: at, Host: "h", Tree: repo.ID{1}, Group: &g}
		data, _ := json.Marshal(sn)
		_, err := Decode(data)
		if (i == 0) != (err == nil) || (err != nil && !errors.Is(err, repo.ErrCorrupt)) {
			t.Errorf("group %d %+v: %v", i, g, err)
		}
	}
}

func TestCheckName(t *testing.T) {
	for _, s := range []string{"db-0", "a", "shop_eu-1", fmt.Sprintf("%063d", 0)} {
		if err := CheckName("node", s); err != nil {
			t.Errorf("%q: %v", s, err)
		}
	}
	for _, s := range []string{"", "a/b", "..", "a..b", "-a", "a-", "A", "a.b", "a+b", "a b", fmt.Sprintf("%064d", 0)} {
		if err := CheckName("node", s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

// TestWaitFor: a group's backup freezes at the moment, at once when a
// little late, and not at all when later than it may be.
func TestWaitFor(t *testing.T) {
	now := time.Now
	if err := waitFor(t.Context(), time.Now().Add(-2*time.Second), time.Second, now); !errors.Is(err, ErrMissedFreeze) {
		t.Fatalf("2s late with 1s allowed: %v", err)
	}
	start := time.Now()
	if err := waitFor(t.Context(), start.Add(-500*time.Millisecond), time.Second, now); err != nil || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("a little late: %v after %v", err, time.Since(start))
	}
	at := time.Now().Add(150 * time.Millisecond)
	if err := waitFor(t.Context(), at, time.Second, now); err != nil || time.Now().Before(at) {
		t.Fatalf("early: returned %v before the moment (%v)", err, time.Until(at))
	}
	ctx, cancel := context.WithCancelCause(t.Context())
	stop := errors.New("stopping")
	cancel(stop)
	if err := waitFor(ctx, time.Now().Add(time.Hour), time.Second, now); !errors.Is(err, stop) {
		t.Fatalf("cancelled: %v", err)
	}
}
