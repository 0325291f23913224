// Package faulty wraps a Backend to fail chosen calls and record the order
// of calls, for tests.
package faulty

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/snapbackup/snap/repo"
)

// Operation names used in Call and passed to the FailOn hook. The
// optional interfaces of the inner Backend (repo.As) are failed and
// recorded as well: SaveFrom and a spool's Commit are saves of their
// handle, Spool (whose handle has no name) starts one.
const (
	OpSave       = "save"
	OpLoad       = "load"
	OpStat       = "stat"
	OpList       = "list"
	OpRemove     = "remove"
	OpSpool      = "spool"
	OpRemoveTemp = "remove-temp"
)

// Call records one call to the Backend. For List, Handle.Name is empty.
type Call struct {
	Op     string
	Handle repo.Handle
	// Err is what the call returned; nil while the call is in flight.
	Err error
}

// Backend passes calls to an inner Backend unless told to fail them. An
// injected failure happens before the inner Backend is reached, so it never
// changes what is stored.
type Backend struct {
	inner repo.Backend

	mu        sync.Mutex
	calls     []Call
	failAfter int // -1: off
	count     int // calls since FailAfter
	failErr   error
	hook      func(op string, h repo.Handle) error
}

var (
	_ repo.Wrapper     = (*Backend)(nil)
	_ repo.Spooler     = (*Backend)(nil)
	_ repo.StreamSaver = (*Backend)(nil)
	_ repo.TempRemover = (*Backend)(nil)
)

// New wraps inner. It fails nothing until told to.
func New(inner repo.Backend) *Backend {
	return &Backend{inner: inner, failAfter: -1}
}

// FailAfter lets the next n calls through and fails every call after them
// with err. The count starts when FailAfter is called, so a test can retry
// an operation with n = 0, 1, 2, ... to fail each call in turn. n < 0 turns
// it off.
func (b *Backend) FailAfter(n int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failAfter, b.failErr, b.count = n, err, 0
}

// FailOn sets a hook called before every call; a non-nil result fails the
// call with that error. nil removes the hook.
func (b *Backend) FailOn(hook func(op string, h repo.Handle) error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.hook = hook
}

// Calls returns every call so far, in the order they began.
func (b *Backend) Calls() []Call {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]Call(nil), b.calls...)
}

// begin records a call and decides whether it fails. It returns the call's
// index for end.
func (b *Backend) begin(op string, h repo.Handle) (int, error) {
	b.mu.Lock()
	i := len(b.calls)
	b.calls = append(b.calls, Call{Op: op, Handle: h})
	b.count++
	var err error
	if b.failAfter >= 0 && b.count > b.failAfter {
		err = b.failErr
	}
	hook := b.hook
	b.mu.Unlock()
	// The hook runs unlocked so it may call back into b.
	if err == nil && hook != nil {
		err = hook(op, h)
	}
	return i, err
}

func (b *Backend) end(i int, err error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls[i].Err = err
	return err
}

// Location returns the inner Backend's location.
func (b *Backend) Location() string { return b.inner.Location() }

func (b *Backend) Save(ctx context.Context, h repo.Handle, data []byte) error {
	i, err := b.begin(OpSave, h)
	if err == nil {
		err = b.inner.Save(ctx, h, data)
	}
	return b.end(i, err)
}

func (b *Backend) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	i, err := b.begin(OpLoad, h)
	if err == nil {
		err = b.inner.Load(ctx, h, offset, length, fn)
	}
	return b.end(i, err)
}

func (b *Backend) Stat(ctx context.Context, h repo.Handle) (repo.FileInfo, error) {
	i, err := b.begin(OpStat, h)
	var fi repo.FileInfo
	if err == nil {
		fi, err = b.inner.Stat(ctx, h)
	}
	return fi, b.end(i, err)
}

func (b *Backend) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	i, err := b.begin(OpList, repo.Handle{Type: t})
	if err == nil {
		err = b.inner.List(ctx, t, fn)
	}
	return b.end(i, err)
}

// ListPrefix is a list (OpList, with a handle of type t and no name)
// through the inner Backend's PrefixLister.
func (b *Backend) ListPrefix(ctx context.Context, t repo.FileType, prefix string, fn func(repo.FileInfo) error) error {
	i, err := b.begin(OpList, repo.Handle{Type: t})
	if err == nil {
		pl, ok := repo.As[repo.PrefixLister](b.inner)
		if !ok {
			err = fmt.Errorf("list %s in %s: %w", t, b.inner.Location(), errors.ErrUnsupported)
		} else {
			err = pl.ListPrefix(ctx, t, prefix, fn)
		}
	}
	return b.end(i, err)
}

func (b *Backend) Remove(ctx context.Context, h repo.Handle) error {
	i, err := b.begin(OpRemove, h)
	if err == nil {
		err = b.inner.Remove(ctx, h)
	}
	return b.end(i, err)
}

// Close closes the inner Backend. It is not counted and never fails by
// injection.
func (b *Backend) Close() error { return b.inner.Close() }

// Unwrap returns the inner Backend.
func (b *Backend) Unwrap() repo.Backend { return b.inner }

// SaveFrom is a save (OpSave) of src, streamed where the inner Backend
// can.
func (b *Backend) SaveFrom(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64) error {
	i, err := b.begin(OpSave, h)
	if err == nil {
		err = repo.SaveFrom(ctx, b.inner, h, src, size)
	}
	return b.end(i, err)
}

// Spool starts an object in the inner Backend (OpSpool, with a handle of
// type t and no name). Its Commit is a save (OpSave) of the handle it
// commits; an injected failure aborts the spool beneath, so nothing is
// stored.
func (b *Backend) Spool(ctx context.Context, t repo.FileType) (repo.Spool, error) {
	i, err := b.begin(OpSpool, repo.Handle{Type: t})
	var s repo.Spool
	if err == nil {
		sp, ok := repo.As[repo.Spooler](b.inner)
		if !ok {
			err = fmt.Errorf("spool in %s: %w", b.inner.Location(), errors.ErrUnsupported)
		} else if s, err = sp.Spool(ctx, t); err == nil {
			s = &spool{Spool: s, b: b}
		}
	}
	return s, b.end(i, err)
}

type spool struct {
	repo.Spool
	b *Backend
}

func (s *spool) Commit(ctx context.Context, h repo.Handle) error {
	i, err := s.b.begin(OpSave, h)
	if err == nil {
		err = s.Spool.Commit(ctx, h)
	} else {
		s.Spool.Abort()
	}
	return s.b.end(i, err)
}

// RemoveTemp is the inner Backend's (OpRemoveTemp, with an empty handle).
func (b *Backend) RemoveTemp(ctx context.Context, cutoff time.Time) (int, int64, error) {
	i, err := b.begin(OpRemoveTemp, repo.Handle{})
	var n int
	var size int64
	if err == nil {
		tr, ok := repo.As[repo.TempRemover](b.inner)
		if !ok {
			err = fmt.Errorf("remove temp files in %s: %w", b.inner.Location(), errors.ErrUnsupported)
		} else {
			n, size, err = tr.RemoveTemp(ctx, cutoff)
		}
	}
	return n, size, b.end(i, err)
}
