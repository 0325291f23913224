package retry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/repo/retry"
)

// fast retries quickly, so tests of many retries stay short.
var fast = retry.Options{
	MaxElapsed:     5 * time.Second,
	InitialBackoff: time.Millisecond,
	MaxBackoff:     5 * time.Millisecond,
	Timeout:        2 * time.Second,
	MinRate:        1 << 30,
}

// transientErr is how a backend marks an error worth retrying.
type transientErr struct{ transient bool }

func (e transientErr) Error() string   { return fmt.Sprintf("injected (transient %v)", e.transient) }
func (e transientErr) Transient() bool { return e.transient }

var (
	errTransient = transientErr{true}
	errPermanent = transientErr{false}
)

func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) repo.Backend {
		return retry.New(mem.New(), fast)
	})
}

// TestConformanceFlaky runs the suite with a third of all calls failing
// before they reach the store: the retries must hide every one.
func TestConformanceFlaky(t *testing.T) {
	var seed atomic.Uint64
	backendtest.Run(t, func(t *testing.T) repo.Backend {
		f := faulty.New(mem.New())
		var mu sync.Mutex
		rng := rand.New(rand.NewPCG(seed.Add(1), 1))
		f.FailOn(func(string, repo.Handle) error {
			mu.Lock()
			defer mu.Unlock()
			if rng.IntN(3) == 0 {
				return errTransient
			}
			return nil
		})
		return retry.New(f, fast)
	})
}

func TestIsTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("boom"), false},
		{errTransient, true},
		{fmt.Errorf("load x: %w", errTransient), true},
		{errPermanent, false},
		{fmt.Errorf("load: %w", repo.ErrNotFound), false},
		{errors.Join(repo.ErrNotFound, errTransient), false},
		{fmt.Errorf("save: %w", repo.ErrExists), false},
		{context.DeadlineExceeded, true},
		{context.Canceled, false},
		{&url.Error{Op: "Get", URL: "http://x", Err: &net.OpError{Op: "read", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}, true},
		{&net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, true},
		{fmt.Errorf("write: %w", syscall.EPIPE), true},
		{&net.DNSError{IsTimeout: true}, true},
		{&net.DNSError{IsNotFound: true}, false},
		{io.ErrUnexpectedEOF, false}, // only on a stream, see Load
	} {
		if got := retry.IsTransient(tc.err); got != tc.want {
			t.Errorf("IsTransient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// counting fails the first n calls of each operation with err, then passes
// them to mem.
type counting struct {
	*mem.Backend
	mu    sync.Mutex
	calls map[string]int
	fail  map[string]int // op -> number of calls to fail
	err   error
}

func newCounting(fail map[string]int, err error) *counting {
	return &counting{Backend: mem.New(), calls: map[string]int{}, fail: fail, err: err}
}

func (c *counting) hit(op string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[op]++
	if c.calls[op] <= c.fail[op] {
		return c.err
	}
	return nil
}

func (c *counting) count(op string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[op]
}

func (c *counting) Save(ctx context.Context, h repo.Handle, data []byte) error {
	if err := c.hit("save"); err != nil {
		return err
	}
	return c.Backend.Save(ctx, h, data)
}

func (c *counting) Load(ctx context.Context, h repo.Handle, off, n int64, fn func(io.Reader) error) error {
	if err := c.hit("load"); err != nil {
		return err
	}
	return c.Backend.Load(ctx, h, off, n, fn)
}

func (c *counting) Stat(ctx context.Context, h repo.Handle) (repo.FileInfo, error) {
	if err := c.hit("stat"); err != nil {
		return repo.FileInfo{}, err
	}
	return c.Backend.Stat(ctx, h)
}

func (c *counting) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	if err := c.hit("list"); err != nil {
		return err
	}
	return c.Backend.List(ctx, t, fn)
}

func (c *counting) Remove(ctx context.Context, h repo.Handle) error {
	if err := c.hit("remove"); err != nil {
		return err
	}
	return c.Backend.Remove(ctx, h)
}

var ops = []string{"save", "load", "stat", "list", "remove"}

// call makes one call of op on be against h, which holds data after save.
func call(ctx context.Context, be repo.Backend, op string, h repo.Handle) error {
	switch op {
	case "save":
		return be.Save(ctx, h, []byte("data"))
	case "load":
		return be.Load(ctx, h, 0, 0, func(rd io.Reader) error { _, err := io.ReadAll(rd); return err })
	case "stat":
		_, err := be.Stat(ctx, h)
		return err
	case "list":
		return be.List(ctx, h.Type, func(repo.FileInfo) error { return nil })
	case "remove":
		return be.Remove(ctx, h)
	}
	panic(op)
}

// logBuffer collects log records.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func TestRetriesTransient(t *testing.T) {
	for _, op := range ops {
		t.Run(op, func(t *testing.T) {
			c := newCounting(map[string]int{op: 3}, fmt.Errorf("%s: %w", op, errTransient))
			h := repo.Handle{Type: repo.IndexFile, Name: "ab12"}
			if op != "save" {
				if err := c.Backend.Save(t.Context(), h, []byte("data")); err != nil {
					t.Fatal(err)
				}
			}
			var logs logBuffer
			o := fast
			o.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			if err := call(t.Context(), retry.New(c, o), op, h); err != nil {
				t.Fatalf("%s with 3 transient failures: %v", op, err)
			}
			if n := c.count(op); n != 4 {
				t.Errorf("%s: %d attempts, want 4", op, n)
			}
			if n := strings.Count(logs.String(), "msg=retrying"); n != 3 {
				t.Errorf("%s: %d retries logged, want 3:\n%s", op, n, logs.String())
			}
			want := "object=index/ab12"
			if op == "list" {
				want = "object=index"
			}
			if !strings.Contains(logs.String(), "level=DEBUG") || !strings.Contains(logs.String(), want) {
				t.Errorf("%s: retries not logged at debug with the object:\n%s", op, logs.String())
			}
		})
	}
}

func TestPermanentFailsFast(t *testing.T) {
	for _, op := range ops {
		for _, perm := range []error{errPermanent, errors.New("plain"), repo.ErrNotFound} {
			c := newCounting(map[string]int{op: 1}, perm)
			err := call(t.Context(), retry.New(c, fast), op, repo.Handle{Type: repo.IndexFile, Name: "ab"})
			if !errors.Is(err, perm) {
				t.Errorf("%s failing with %v: got %v", op, perm, err)
			}
			if n := c.count(op); n != 1 {
				t.Errorf("%s failing with %v: %d attempts, want 1", op, perm, n)
			}
		}
	}
}

func TestGivesUp(t *testing.T) {
	c := newCounting(map[string]int{"stat": 1 << 30}, errTransient)
	o := fast
	o.MaxElapsed = 50 * time.Millisecond
	_, err := retry.New(c, o).Stat(t.Context(), repo.Handle{Type: repo.IndexFile, Name: "ab"})
	if !errors.Is(err, errTransient) || !strings.Contains(err.Error(), "gave up after") {
		t.Errorf("stat failing forever: got %v, want the last error after giving up", err)
	}
	if n := c.count("stat"); n < 3 {
		t.Errorf("gave up after %d attempts", n)
	}
}

func TestCancelWhileWaiting(t *testing.T) {
	c := newCounting(map[string]int{"stat": 1 << 30}, errTransient)
	o := fast
	o.InitialBackoff, o.MaxBackoff = time.Hour, time.Hour
	o.MaxElapsed = 10 * time.Hour
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	_, err := retry.New(c, o).Stat(ctx, repo.Handle{Type: repo.IndexFile, Name: "ab"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled while waiting to retry: got %v", err)
	}
}

// lostResponse stores an object and then fails as if the response had
// been lost on the way back.
type lostResponse struct {
	*mem.Backend
	lost atomic.Int32
}

func (l *lostResponse) Save(ctx context.Context, h repo.Handle, data []byte) error {
	err := l.Backend.Save(ctx, h, data)
	if err == nil && l.lost.Add(1) == 1 {
		return errTransient
	}
	return err
}

// TestSaveAfterLostResponse: a save whose first response was lost ends
// well when the stored bytes prove they are this save's, and with
// ErrExists otherwise; from memory (Save) or from a file (SaveFrom, which
// reads the source again for each attempt and for the proof).
func TestSaveAfterLostResponse(t *testing.T) {
	saves := map[string]func(b *retry.Backend, ctx context.Context, h repo.Handle, data []byte) error{
		"Save": func(b *retry.Backend, ctx context.Context, h repo.Handle, data []byte) error {
			return b.Save(ctx, h, data)
		},
		"SaveFrom": func(b *retry.Backend, ctx context.Context, h repo.Handle, data []byte) error {
			return b.SaveFrom(ctx, h, bytes.NewReader(data), int64(len(data)))
		},
	}
	for name, save := range saves {
		t.Run(name, func(t *testing.T) {
			data := []byte("content")
			hash := repo.Hash(data).String()
			for _, h := range []repo.Handle{
				{Type: repo.PackFile, Name: hash},
				{Type: repo.LockFile, Name: "exclusive-" + hash},
				{Type: repo.ConfigFile},
			} {
				l := &lostResponse{Backend: mem.New()}
				if err := save(retry.New(l, fast), t.Context(), h, data); err != nil {
					t.Errorf("save %v whose first response was lost: %v", h, err)
				}
				got := backendtest.LoadAll(t, l.Backend, h)
				if !bytes.Equal(got, data) {
					t.Errorf("save %v stored %q", h, got)
				}
			}

			// Someone else's object under the name is still a conflict,
			// also after an ambiguous failure; so is an equal one under a
			// name that does not prove whose it is.
			theirs := []byte("theirs")
			c := newCounting(map[string]int{"save": 1}, errTransient)
			for _, tc := range []struct {
				h    repo.Handle
				data []byte
			}{
				{repo.Handle{Type: repo.PackFile, Name: repo.Hash(theirs).String()}, []byte("mine")},
				{repo.Handle{Type: repo.ConfigFile}, []byte("their")},
				{repo.Handle{Type: repo.ConfigFile}, []byte("theirs and more")},
				{repo.Handle{Type: repo.ConfigFile}, nil},
				{repo.Handle{Type: repo.LockFile, Name: "lock"}, theirs},
			} {
				if _, err := c.Backend.Stat(t.Context(), tc.h); err != nil {
					if err := c.Backend.Save(t.Context(), tc.h, theirs); err != nil {
						t.Fatal(err)
					}
				}
				c.calls = map[string]int{}
				err := save(retry.New(c, fast), t.Context(), tc.h, tc.data)
				if !errors.Is(err, repo.ErrExists) {
					t.Errorf("retried save of %q over %v: got %v, want ErrExists", tc.data, tc.h, err)
				}
				if c.count("save") != 2 {
					t.Errorf("retried save of %q over %v: %d attempts, want 2", tc.data, tc.h, c.count("save"))
				}
			}
		})
	}
}

// breaking cuts the first n streams of Load short.
type breaking struct {
	*mem.Backend
	n     atomic.Int32
	after int64
}

func (b *breaking) Load(ctx context.Context, h repo.Handle, off, length int64, fn func(io.Reader) error) error {
	return b.Backend.Load(ctx, h, off, length, func(rd io.Reader) error {
		if b.n.Add(-1) >= 0 {
			rd = io.MultiReader(io.LimitReader(rd, b.after), errReader{io.ErrUnexpectedEOF})
		}
		return fn(rd)
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestLoadRestartsFn(t *testing.T) {
	b := &breaking{Backend: mem.New(), after: 100}
	b.n.Store(2)
	h := repo.Handle{Type: repo.PackFile, Name: "ab02"}
	data := bytes.Repeat([]byte("0123456789"), 100)
	if err := b.Backend.Save(t.Context(), h, data); err != nil {
		t.Fatal(err)
	}
	calls := 0
	var got []byte
	err := retry.New(b, fast).Load(t.Context(), h, 0, 0, func(rd io.Reader) error {
		calls++
		var err error
		got, err = io.ReadAll(rd)
		// Whatever fn makes of the broken stream, it is retried.
		if err != nil {
			return fmt.Errorf("decode: %v", err)
		}
		return nil
	})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("load with two broken streams: %v (got %d bytes)", err, len(got))
	}
	if calls != 3 {
		t.Errorf("fn called %d times, want 3", calls)
	}
}

func TestLoadFnErrorNotRetried(t *testing.T) {
	c := newCounting(nil, nil)
	h := repo.Handle{Type: repo.PackFile, Name: "ab03"}
	if err := c.Backend.Save(t.Context(), h, []byte("data")); err != nil {
		t.Fatal(err)
	}
	be := retry.New(c, fast)
	for _, fnErr := range []error{errors.New("corrupt"), errTransient, io.ErrUnexpectedEOF} {
		c.calls = map[string]int{}
		err := be.Load(t.Context(), h, 0, 0, func(io.Reader) error { return fnErr })
		if err != fnErr {
			t.Errorf("fn failing with %v: got %v, want it unwrapped", fnErr, err)
		}
		if n := c.count("load"); n != 1 {
			t.Errorf("fn failing with %v: %d attempts", fnErr, n)
		}
	}
	// A range past the end wraps ErrUnexpectedEOF but is permanent.
	c.calls = map[string]int{}
	err := be.Load(t.Context(), h, 2, 10, func(io.Reader) error { return nil })
	if err == nil || c.count("load") != 1 {
		t.Errorf("load past the end: %v after %d attempts", err, c.count("load"))
	}
}

// stalling blocks the first n calls of every operation until ctx ends.
type stalling struct {
	*mem.Backend
	n atomic.Int32
}

func (s *stalling) stall(ctx context.Context) error {
	if s.n.Add(-1) >= 0 {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (s *stalling) Save(ctx context.Context, h repo.Handle, data []byte) error {
	if err := s.stall(ctx); err != nil {
		return err
	}
	return s.Backend.Save(ctx, h, data)
}

func (s *stalling) Load(ctx context.Context, h repo.Handle, off, n int64, fn func(io.Reader) error) error {
	return s.Backend.Load(ctx, h, off, n, func(rd io.Reader) error {
		// Stall mid-stream, after fn has started reading.
		return fn(io.MultiReader(io.LimitReader(rd, 2), readerFunc(func(p []byte) (int, error) {
			if err := s.stall(ctx); err != nil {
				return 0, err
			}
			return rd.Read(p)
		})))
	})
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func (s *stalling) Stat(ctx context.Context, h repo.Handle) (repo.FileInfo, error) {
	if err := s.stall(ctx); err != nil {
		return repo.FileInfo{}, err
	}
	return s.Backend.Stat(ctx, h)
}

func (s *stalling) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	if err := s.stall(ctx); err != nil {
		return err
	}
	return s.Backend.List(ctx, t, fn)
}

func (s *stalling) Remove(ctx context.Context, h repo.Handle) error {
	if err := s.stall(ctx); err != nil {
		return err
	}
	return s.Backend.Remove(ctx, h)
}

func TestStuckRequestCutOff(t *testing.T) {
	o := fast
	o.Timeout = 50 * time.Millisecond
	for _, op := range ops {
		s := &stalling{Backend: mem.New()}
		h := repo.Handle{Type: repo.IndexFile, Name: "ab04"}
		if op != "save" {
			if err := s.Backend.Save(t.Context(), h, []byte("data")); err != nil {
				t.Fatal(err)
			}
		}
		s.n.Store(2)
		var logs logBuffer
		o.Log = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		if err := call(t.Context(), retry.New(s, o), op, h); err != nil {
			t.Errorf("%s stuck twice: %v", op, err)
		}
		if !strings.Contains(logs.String(), "without progress") {
			t.Errorf("%s: retries of a stuck call not logged as such:\n%s", op, logs.String())
		}
	}
}

// TestSlowCallerIsNotAStall: time spent in fn is the caller's, not a stuck
// request.
func TestSlowCallerIsNotAStall(t *testing.T) {
	c := newCounting(nil, nil)
	for _, name := range []string{"ab05", "ab06"} {
		if err := c.Backend.Save(t.Context(), repo.Handle{Type: repo.IndexFile, Name: name}, []byte("data")); err != nil {
			t.Fatal(err)
		}
	}
	o := fast
	o.Timeout = 20 * time.Millisecond
	be := retry.New(c, o)
	err := be.Load(t.Context(), repo.Handle{Type: repo.IndexFile, Name: "ab05"}, 0, 0, func(rd io.Reader) error {
		time.Sleep(100 * time.Millisecond)
		_, err := io.ReadAll(rd)
		return err
	})
	if err != nil || c.count("load") != 1 {
		t.Errorf("load with a slow fn: %v after %d attempts", err, c.count("load"))
	}
	err = be.List(t.Context(), repo.IndexFile, func(repo.FileInfo) error {
		time.Sleep(50 * time.Millisecond)
		return nil
	})
	if err != nil || c.count("list") != 1 {
		t.Errorf("list with a slow fn: %v after %d attempts", err, c.count("list"))
	}
}

// partialList fails the first listing after it has passed two names.
type partialList struct {
	*mem.Backend
	failed atomic.Bool
}

func (p *partialList) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	n := 0
	err := p.Backend.List(ctx, t, func(fi repo.FileInfo) error {
		if n == 2 && !p.failed.Swap(true) {
			return errTransient
		}
		n++
		return fn(fi)
	})
	return err
}

func TestListResumesWithoutRepeats(t *testing.T) {
	p := &partialList{Backend: mem.New()}
	want := map[string]bool{}
	for i := range 10 {
		name := fmt.Sprintf("%064x", i)
		want[name] = true
		if err := p.Backend.Save(t.Context(), repo.Handle{Type: repo.SnapshotFile, Name: name}, nil); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]int{}
	err := retry.New(p, fast).List(t.Context(), repo.SnapshotFile, func(fi repo.FileInfo) error {
		seen[fi.Name]++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !p.failed.Load() {
		t.Fatal("the listing did not fail")
	}
	for name := range want {
		if seen[name] != 1 {
			t.Errorf("%s listed %d times", name, seen[name])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("listed %d names, want %d", len(seen), len(want))
	}
}
