package faulty_test

import (
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/mem"
)

var errInjected = errors.New("injected")

// With no faults set, the wrapper must be invisible.
func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) repo.Backend { return faulty.New(mem.New()) })
}

func handle(name string) repo.Handle { return repo.Handle{Type: repo.PackFile, Name: name} }

func TestFailAfter(t *testing.T) {
	inner := mem.New()
	be := faulty.New(inner)
	ctx := t.Context()

	be.FailAfter(2, errInjected)
	if err := be.Save(ctx, handle("a1"), []byte("1")); err != nil {
		t.Fatalf("call 1: %v", err)
	}
	if _, err := be.Stat(ctx, handle("a1")); err != nil {
		t.Fatalf("call 2: %v", err)
	}
	// Every later call fails, and a failed Save stores nothing.
	if err := be.Save(ctx, handle("a2"), []byte("2")); !errors.Is(err, errInjected) {
		t.Fatalf("call 3: got %v, want injected error", err)
	}
	if _, err := inner.Stat(ctx, handle("a2")); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("failed save reached the inner backend: %v", err)
	}
	checks := map[string]error{
		"load":   be.Load(ctx, handle("a1"), 0, 0, func(io.Reader) error { return nil }),
		"list":   be.List(ctx, repo.PackFile, func(repo.FileInfo) error { return nil }),
		"remove": be.Remove(ctx, handle("a1")),
	}
	for op, err := range checks {
		if !errors.Is(err, errInjected) {
			t.Errorf("%s: got %v, want injected error", op, err)
		}
	}
	if _, err := inner.Stat(ctx, handle("a1")); err != nil {
		t.Errorf("failed remove reached the inner backend: %v", err)
	}

	be.FailAfter(-1, nil)
	if err := be.Save(ctx, handle("a2"), []byte("2")); err != nil {
		t.Fatalf("after disabling: %v", err)
	}
}

// The Pebble-style loop: fail the first, second, ... call of an operation
// until it gets through, checking each partial outcome.
func TestFailEachCallInTurn(t *testing.T) {
	ctx := t.Context()
	be := faulty.New(mem.New())
	op := func() error {
		for _, h := range []repo.Handle{
			{Type: repo.PackFile, Name: "a1"},
			{Type: repo.IndexFile, Name: "i1"},
			{Type: repo.SnapshotFile, Name: "s1"},
		} {
			if _, err := be.Stat(ctx, h); err == nil {
				continue // saved by an earlier attempt
			}
			if err := be.Save(ctx, h, []byte(h.Name)); err != nil {
				return err
			}
		}
		return nil
	}
	attempts := 0
	for n := 0; ; n++ {
		be.FailAfter(n, errInjected)
		attempts++
		err := op()
		if err == nil {
			break
		}
		if !errors.Is(err, errInjected) {
			t.Fatalf("n=%d: %v", n, err)
		}
		if n > 20 {
			t.Fatal("operation never succeeded")
		}
	}
	if attempts < 2 {
		t.Errorf("only %d attempts; faults were not injected", attempts)
	}
}

func TestFailOn(t *testing.T) {
	ctx := t.Context()
	be := faulty.New(mem.New())
	be.FailOn(func(op string, h repo.Handle) error {
		if op == faulty.OpSave && h.Type == repo.IndexFile {
			return errInjected
		}
		return nil
	})
	if err := be.Save(ctx, handle("ab"), nil); err != nil {
		t.Errorf("save pack: %v", err)
	}
	if err := be.Save(ctx, repo.Handle{Type: repo.IndexFile, Name: "ab"}, nil); !errors.Is(err, errInjected) {
		t.Errorf("save index: got %v, want injected error", err)
	}
	if _, err := be.Stat(ctx, repo.Handle{Type: repo.IndexFile, Name: "ab"}); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("stat index: got %v, want ErrNotFound", err)
	}
	be.FailOn(nil)
	if err := be.Save(ctx, repo.Handle{Type: repo.IndexFile, Name: "ab"}, nil); err != nil {
		t.Errorf("save index after removing hook: %v", err)
	}
}

func TestCalls(t *testing.T) {
	ctx := t.Context()
	be := faulty.New(mem.New())
	be.FailOn(func(op string, h repo.Handle) error {
		if op == faulty.OpRemove {
			return errInjected
		}
		return nil
	})
	pack := handle("a1")
	idx := repo.Handle{Type: repo.IndexFile, Name: "i1"}
	snap := repo.Handle{Type: repo.SnapshotFile, Name: "s1"}
	_ = be.Save(ctx, pack, []byte("p"))
	_ = be.Save(ctx, idx, []byte("i"))
	_ = be.Save(ctx, snap, []byte("s"))
	_ = be.Save(ctx, snap, []byte("s"))
	_ = be.Load(ctx, snap, 0, 0, func(io.Reader) error { return nil })
	_, _ = be.Stat(ctx, idx)
	_ = be.List(ctx, repo.PackFile, func(repo.FileInfo) error { return nil })
	_ = be.Remove(ctx, pack)

	type call struct {
		op string
		h  repo.Handle
	}
	var got []call
	for _, c := range be.Calls() {
		got = append(got, call{c.Op, c.Handle})
	}
	want := []call{
		{faulty.OpSave, pack},
		{faulty.OpSave, idx},
		{faulty.OpSave, snap},
		{faulty.OpSave, snap},
		{faulty.OpLoad, snap},
		{faulty.OpStat, idx},
		{faulty.OpList, repo.Handle{Type: repo.PackFile}},
		{faulty.OpRemove, pack},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("calls:\n got %v\nwant %v", got, want)
	}
	calls := be.Calls()
	if calls[2].Err != nil || !errors.Is(calls[3].Err, repo.ErrExists) || !errors.Is(calls[7].Err, errInjected) {
		t.Errorf("recorded errors: %v, %v, %v", calls[2].Err, calls[3].Err, calls[7].Err)
	}
}
