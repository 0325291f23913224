package snapshot_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// gatedLoads holds every load of a snapshot object until bound of them
// are in flight at once, and records the peak. A List that loads one at a
// time never gets there: the gate then opens after giveUp, and the peak
// of 1 fails the test instead of hanging it.
type gatedLoads struct {
	repo.Backend
	bound int

	mu             sync.Mutex
	inFlight, peak int
	full           chan struct{}
	fullOnce       sync.Once
	giveUp         chan struct{}
}

func newGatedLoads(t *testing.T, be repo.Backend, bound int) *gatedLoads {
	b := &gatedLoads{Backend: be, bound: bound, full: make(chan struct{}), giveUp: make(chan struct{})}
	timer := time.AfterFunc(10*time.Second, func() { close(b.giveUp) })
	t.Cleanup(func() { timer.Stop() })
	return b
}

func (b *gatedLoads) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(io.Reader) error) error {
	if h.Type != repo.SnapshotFile {
		return b.Backend.Load(ctx, h, offset, length, fn)
	}
	b.mu.Lock()
	b.inFlight++
	b.peak = max(b.peak, b.inFlight)
	if b.inFlight >= b.bound {
		b.fullOnce.Do(func() { close(b.full) })
	}
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
	}()
	select {
	case <-b.full:
	case <-b.giveUp:
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Backend.Load(ctx, h, offset, length, fn)
}

func (b *gatedLoads) maxInFlight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}

// listOneByOne is List as it was: every snapshot loaded in turn.
func listOneByOne(t *testing.T, r *repo.Repository) []*snapshot.Snapshot {
	t.Helper()
	var out []*snapshot.Snapshot
	if err := r.ListObjects(t.Context(), repo.SnapshotFile, func(o repo.ObjectInfo) error {
		sn, err := snapshot.Load(t.Context(), r, o.ID)
		out = append(out, sn)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(out, func(a, b *snapshot.Snapshot) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID.String(), b.ID.String())
	})
	return out
}

// saveSnapshots stores n snapshots of several hosts, some at the same
// time (List orders those by id).
func saveSnapshots(t *testing.T, r *repo.Repository, n int) []*snapshot.Snapshot {
	t.Helper()
	base := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var saved []*snapshot.Snapshot
	for i := range n {
		sn := &snapshot.Snapshot{
			Time: base.Add(time.Duration((i*7)%(n/2)) * time.Minute),
			Host: fmt.Sprintf("host-%d", i%5),
			Tags: []string{fmt.Sprint(i)},
			Tree: decID(byte(i), byte(i>>8), 1),
		}
		if err := snapshot.Save(t.Context(), r, sn); err != nil {
			t.Fatal(err)
		}
		saved = append(saved, sn)
	}
	return saved
}

// TestListParallel: List loads snapshots at once, up to the repository's
// connections and at least 4, and returns what loading them one by one
// in turn gives.
func TestListParallel(t *testing.T) {
	const snapshots = 60
	inner := mem.New()
	saveSnapshots(t, newRepo(t, inner), snapshots)
	for _, tc := range []struct {
		conns, bound int
	}{
		{0, 4}, // the default, 4
		{1, 4},
		{7, 7},
	} {
		t.Run(fmt.Sprintf("connections %d", tc.conns), func(t *testing.T) {
			be := newGatedLoads(t, inner, tc.bound)
			r, err := repo.Open(t.Context(), be, "pw", repo.Options{Connections: tc.conns})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			got, err := snapshot.List(t.Context(), r)
			if err != nil {
				t.Fatal(err)
			}
			if peak := be.maxInFlight(); peak <= 1 || peak > tc.bound {
				t.Errorf("at most %d snapshot loads at once, want 2 to %d", peak, tc.bound)
			}
			rs, err := repo.Open(t.Context(), inner, "pw", repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rs.Close() })
			want := listOneByOne(t, rs)
			if len(got) != snapshots || !reflect.DeepEqual(got, want) {
				t.Errorf("List gave %d snapshots, loading one by one %d, or they differ", len(got), len(want))
				for i := range min(len(got), len(want)) {
					if got[i].ID != want[i].ID {
						t.Errorf("at %d: %s, want %s", i, got[i].ID.Str(), want[i].ID.Str())
					}
				}
			}
		})
	}
}

// TestListDamaged: a damaged snapshot object fails List with the error
// loading it gives, also with the other loads in flight.
func TestListDamaged(t *testing.T) {
	inner := mem.New()
	saved := saveSnapshots(t, newRepo(t, inner), 30)
	for _, damage := range []struct {
		name string
		edit func([]byte) []byte
	}{
		{"not its hash", func(b []byte) []byte { b[len(b)/2] ^= 1; return b }},
		{"replaced", func([]byte) []byte { return []byte("tampered") }},
		{"emptied", func([]byte) []byte { return nil }},
	} {
		t.Run(damage.name, func(t *testing.T) {
			be := mem.New()
			copyObjects(t, inner, be)
			bad := saved[17].ID
			h := repo.Handle{Type: repo.SnapshotFile, Name: saved[17].Name}
			data := loadObject(t, be, h)
			if err := be.Remove(t.Context(), h); err != nil {
				t.Fatal(err)
			}
			if err := be.Save(t.Context(), h, damage.edit(data)); err != nil {
				t.Fatal(err)
			}
			rs, err := repo.Open(t.Context(), be, "pw", repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { rs.Close() })
			_, loadErr := snapshot.Load(t.Context(), rs, bad)
			if !errors.Is(loadErr, repo.ErrCorrupt) {
				t.Fatalf("load of the damaged snapshot: %v, want ErrCorrupt", loadErr)
			}
			r, err := repo.Open(t.Context(), newGatedLoads(t, be, 4), "pw", repo.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			list, err := snapshot.List(t.Context(), r)
			if err == nil || err.Error() != loadErr.Error() || !errors.Is(err, repo.ErrCorrupt) {
				t.Errorf("list: %d snapshots, %v; want the load's error: %v", len(list), err, loadErr)
			}
		})
	}
}

func copyObjects(t *testing.T, from, to repo.Backend) {
	t.Helper()
	for _, typ := range repo.AllFileTypes {
		var names []string
		if err := from.List(t.Context(), typ, func(fi repo.FileInfo) error {
			names = append(names, fi.Name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			h := repo.Handle{Type: typ, Name: n}
			if err := to.Save(t.Context(), h, loadObject(t, from, h)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func loadObject(t *testing.T, be repo.Backend, h repo.Handle) []byte {
	t.Helper()
	var data []byte
	if err := be.Load(t.Context(), h, 0, 0, func(rd io.Reader) error {
		var err error
		data, err = io.ReadAll(rd)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return data
}
