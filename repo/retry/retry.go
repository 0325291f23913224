// Package retry wraps a repo.Backend so that transient failures (HTTP 408,
// 429 and 5xx, timeouts, reset connections, a download cut short) are
// retried with exponential backoff and jitter, and a request that makes no
// progress is cut off and retried. Permanent failures return at once.
//
// Retrying every call is safe because the Backend contract makes every
// write create-only and every read restartable: Save after an ambiguous
// failure may find the object its earlier attempt stored (see Save), and
// Load calls its fn again from the start.
package retry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/snapbackup/snap/repo"
)

// Defaults for the zero Options.
const (
	DefaultMaxElapsed     = 2 * time.Minute
	DefaultInitialBackoff = 250 * time.Millisecond
	DefaultMaxBackoff     = 15 * time.Second
	DefaultTimeout        = 30 * time.Second
	DefaultMinRate        = 64 << 10
)

// Options tune the retries. Zero values take the defaults above.
type Options struct {
	// Log receives one debug record per retry. nil: no logging.
	Log *slog.Logger
	// MaxElapsed bounds the time from a call's first attempt to the start
	// of its last. A call returns within MaxElapsed plus one attempt.
	MaxElapsed time.Duration
	// InitialBackoff is the wait before the first retry; it doubles with
	// every retry up to MaxBackoff. Each wait is drawn from [w/2, w].
	InitialBackoff, MaxBackoff time.Duration
	// Timeout cuts off an attempt that waits this long on the backend
	// without progress: for Stat and Remove the whole call; for Load and
	// List each wait for a response, a page or bytes (time spent in the
	// caller's fn does not count).
	Timeout time.Duration
	// MinRate (bytes per second) extends Save's cut-off by the time the
	// object takes at that rate: a Save of n bytes may take Timeout +
	// n/MinRate.
	MinRate int64
}

// Backend retries the calls of an inner Backend. It has the optional
// interfaces the inner Backend has (repo.As), retried as far as they can
// be.
type Backend struct {
	inner repo.Backend
	o     Options
}

var (
	_ repo.Wrapper     = (*Backend)(nil)
	_ repo.Spooler     = (*Backend)(nil)
	_ repo.StreamSaver = (*Backend)(nil)
	_ repo.TempRemover = (*Backend)(nil)
)

// New wraps inner.
func New(inner repo.Backend, o Options) *Backend {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MaxElapsed <= 0 {
		o.MaxElapsed = DefaultMaxElapsed
	}
	if o.InitialBackoff <= 0 {
		o.InitialBackoff = DefaultInitialBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = DefaultMaxBackoff
	}
	if o.MaxBackoff < o.InitialBackoff {
		o.MaxBackoff = o.InitialBackoff
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MinRate <= 0 {
		o.MinRate = DefaultMinRate
	}
	return &Backend{inner: inner, o: o}
}

// Location returns the inner Backend's location.
func (b *Backend) Location() string { return b.inner.Location() }

// Close closes the inner Backend.
func (b *Backend) Close() error { return b.inner.Close() }

// Unwrap returns the inner Backend.
func (b *Backend) Unwrap() repo.Backend { return b.inner }

// IsTransient reports whether err is worth retrying. An error in the chain
// with a Transient() bool method decides (backends classify what only they
// understand, such as HTTP statuses); otherwise timeouts and reset, refused
// or broken connections are transient and everything else is permanent.
// ErrNotFound and ErrExists are always permanent.
func IsTransient(err error) bool {
	if err == nil || errors.Is(err, repo.ErrNotFound) || errors.Is(err, repo.ErrExists) {
		return false
	}
	var t interface{ Transient() bool }
	if errors.As(err, &t) {
		return t.Transient()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return true // a deadline inside the backend; the caller's is checked first
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, errno := range []syscall.Errno{syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.ECONNABORTED, syscall.EPIPE, syscall.ETIMEDOUT} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// errStalled is the cause of an attempt's context when the watchdog cut it
// off.
var errStalled = errors.New("no progress")

// watchdog cancels an attempt's context when the backend has been busy for
// longer than its timeout without progress. The attempt is idle while the
// caller's fn runs.
type watchdog struct {
	d     time.Duration
	timer *time.Timer
}

// watch returns the context for one attempt, its watchdog (busy) and the
// function that ends it.
func watch(ctx context.Context, d time.Duration) (context.Context, *watchdog, func()) {
	actx, cancel := context.WithCancelCause(ctx)
	w := &watchdog{d: d, timer: time.AfterFunc(d, func() { cancel(errStalled) })}
	return actx, w, func() { w.timer.Stop(); cancel(nil) }
}

func (w *watchdog) busy() { w.timer.Reset(w.d) }
func (w *watchdog) idle() { w.timer.Stop() }

// watchedReader keeps the watchdog busy only while a Read waits on the
// backend, and remembers the first error the stream gave fn.
type watchedReader struct {
	rd  io.Reader
	wd  *watchdog
	err *error
}

// watchReader returns rd watched, a repo.PlacedReader if rd is one.
func watchReader(rd io.Reader, wd *watchdog, err *error) io.Reader {
	w := &watchedReader{rd: rd, wd: wd, err: err}
	if pr, ok := rd.(repo.PlacedReader); ok {
		return &watchedPlacedReader{watchedReader: w, pr: pr}
	}
	return w
}

func (r *watchedReader) Read(p []byte) (int, error) {
	r.wd.busy()
	n, err := r.rd.Read(p)
	r.wd.idle()
	r.failed(err)
	return n, err
}

func (r *watchedReader) failed(err error) {
	if err != nil && err != io.EOF && *r.err == nil {
		*r.err = err
	}
}

// watchedPlacedReader is a watchedReader whose ReadPlaced is watched and
// retried like Read.
type watchedPlacedReader struct {
	*watchedReader
	pr repo.PlacedReader
}

func (r *watchedPlacedReader) ReadPlaced(b []byte, skip int64, n int) (int, error) {
	r.wd.busy()
	pad, err := r.pr.ReadPlaced(b, skip, n)
	r.wd.idle()
	r.failed(err)
	return pad, err
}

// classify decides what a failed attempt means. ctx is the call's, actx
// the attempt's.
func (b *Backend) classify(ctx, actx context.Context, timeout time.Duration, err error) (transient bool, _ error) {
	switch {
	case err == nil:
		return false, nil
	case ctx.Err() != nil:
		if !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (and: %w)", ctx.Err(), err)
		}
		return false, err
	case errors.Is(context.Cause(actx), errStalled):
		return true, fmt.Errorf("cut off after %s without progress: %w", timeout, err)
	}
	return IsTransient(err), err
}

// do runs attempt until it succeeds, fails permanently, ctx ends or the
// time is up. attempt reports whether its error is worth retrying.
func (b *Backend) do(ctx context.Context, op string, obj fmt.Stringer, attempt func(ctx context.Context) (transient bool, err error)) error {
	start := time.Now()
	for n := 1; ; n++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s %s in %s: %w", op, obj, b.inner.Location(), err)
		}
		transient, err := attempt(ctx)
		if err == nil || !transient {
			return err
		}
		wait := b.backoff(n)
		elapsed := time.Since(start)
		if elapsed+wait > b.o.MaxElapsed {
			return fmt.Errorf("gave up after %d attempts in %s: %w", n, elapsed.Round(time.Millisecond), err)
		}
		b.o.Log.Debug("retrying", "op", op, "object", obj.String(), "location", b.inner.Location(),
			"attempt", n, "wait", wait.Round(time.Millisecond), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (while waiting to retry after: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// backoff returns the wait before retry n (1, 2, ...): up to
// InitialBackoff·2^(n-1), capped, drawn from its upper half so that
// concurrent callers spread out.
func (b *Backend) backoff(n int) time.Duration {
	w := b.o.InitialBackoff
	for i := 1; i < n && w < b.o.MaxBackoff; i++ {
		w *= 2
	}
	w = min(w, b.o.MaxBackoff)
	return w/2 + rand.N(w/2+1)
}

type typeName repo.FileType

func (t typeName) String() string { return string(t) }

// Save stores data under h. If an attempt failed in a way that may have
// stored the object anyway (the response was lost), a later attempt gets
// ErrExists. When equal bytes under the name prove the object is the one
// this Save stored, Save reads it back and returns nil if it holds exactly
// data, so a retried Save is as idempotent as a first one. That proof
// holds for a name that ends in the hash of data (packs, index, snapshots,
// keys, locks) and for the config, which holds random bytes; any other
// name keeps ErrExists, since another writer could have stored equal bytes.
func (b *Backend) Save(ctx context.Context, h repo.Handle, data []byte) error {
	return b.save(ctx, h, bytes.NewReader(data), int64(len(data)), func(ctx context.Context) error {
		return b.inner.Save(ctx, h, data)
	})
}

// SaveFrom is Save of the size bytes of src, streamed where the inner
// Backend can (repo.SaveFrom); every attempt reads src again.
func (b *Backend) SaveFrom(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64) error {
	return b.save(ctx, h, src, size, func(ctx context.Context) error {
		return repo.SaveFrom(ctx, b.inner, h, src, size)
	})
}

// save runs attempt until it succeeds or fails for good. An attempt that
// fails with ErrExists after an earlier one ended ambiguously (a timeout
// or a broken connection, after which the object may have been created)
// counts as success if the object holds exactly the size bytes of src
// and could only have been stored by this save (see provesOurs).
func (b *Backend) save(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64, attempt func(context.Context) error) error {
	timeout := b.o.Timeout + time.Duration(float64(size)/float64(b.o.MinRate)*float64(time.Second))
	ambiguous := false
	return b.do(ctx, "save", h, func(ctx context.Context) (bool, error) {
		actx, _, stop := watch(ctx, timeout)
		defer stop()
		err := attempt(actx)
		if errors.Is(err, repo.ErrExists) && ambiguous && provesOurs(h, src, size) {
			same, transient, cerr := b.holds(ctx, h, src, size, timeout)
			if cerr != nil {
				return transient, cerr
			}
			if same {
				b.o.Log.Debug("object stored by an earlier attempt", "object", h.String(), "location", b.inner.Location())
				return false, nil
			}
			return false, err
		}
		transient, err := b.classify(ctx, actx, timeout, err)
		ambiguous = ambiguous || transient
		return transient, err
	})
}

// provesOurs reports whether an object under h that holds the size bytes
// of src must have been stored by this save (see save).
func provesOurs(h repo.Handle, src io.ReaderAt, size int64) bool {
	if h.Type == repo.ConfigFile {
		return true
	}
	id, err := repo.HashFrom(src, size)
	return err == nil && strings.HasSuffix(h.Name, id.String())
}

// holds reports whether h holds exactly the size bytes of src.
func (b *Backend) holds(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64, timeout time.Duration) (same, transient bool, err error) {
	actx, _, stop := watch(ctx, timeout)
	defer stop()
	err = b.inner.Load(actx, h, 0, 0, func(rd io.Reader) error {
		same = false
		var pos int64
		buf := make([]byte, 64<<10)
		want := make([]byte, len(buf))
		for {
			n, err := rd.Read(buf)
			if int64(n) > size-pos {
				return nil // longer; different, not an error
			}
			if m, _ := src.ReadAt(want[:n], pos); m < n || !bytes.Equal(buf[:n], want[:n]) {
				return nil
			}
			pos += int64(n)
			if err == io.EOF {
				same = pos == size
				return nil
			}
			if err != nil {
				return err
			}
		}
	})
	transient, err = b.classify(ctx, actx, timeout, err)
	if err != nil {
		return false, transient, fmt.Errorf("read back %s after an ambiguous save: %w", h, err)
	}
	return same, false, nil
}

// Load reads h like the inner Backend. After a transient failure fn is
// called again with a fresh reader of the whole range. An error fn returns
// is returned as is, unless the stream failed under it first.
func (b *Backend) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	return b.do(ctx, "load", h, func(ctx context.Context) (bool, error) {
		actx, wd, stop := watch(ctx, b.o.Timeout)
		defer stop()
		var readErr, fnErr error
		err := b.inner.Load(actx, h, offset, length, func(rd io.Reader) error {
			wd.idle()
			readErr = nil
			fnErr = fn(watchReader(rd, wd, &readErr))
			wd.busy()
			return fnErr
		})
		switch {
		case err == nil || ctx.Err() != nil || errors.Is(context.Cause(actx), errStalled):
		case readErr != nil:
			// The stream broke under fn; whatever fn made of that, the
			// read is worth repeating if the break is. A body cut short
			// counts here, not in general: a range past the end of an
			// object is a permanent ErrUnexpectedEOF.
			return IsTransient(readErr) || errors.Is(readErr, io.ErrUnexpectedEOF), err
		case fnErr != nil && errors.Is(err, fnErr):
			return false, err // fn's own
		}
		return b.classify(ctx, actx, b.o.Timeout, err)
	})
}

// Stat returns the inner Backend's answer.
func (b *Backend) Stat(ctx context.Context, h repo.Handle) (repo.FileInfo, error) {
	var fi repo.FileInfo
	err := b.do(ctx, "stat", h, func(ctx context.Context) (bool, error) {
		actx, _, stop := watch(ctx, b.o.Timeout)
		defer stop()
		var err error
		fi, err = b.inner.Stat(actx, h)
		return b.classify(ctx, actx, b.o.Timeout, err)
	})
	return fi, err
}

// List calls fn once per object. A listing that fails part way is started
// again and skips the names fn has seen, which it remembers for the length
// of the call (some 50 bytes per object).
func (b *Backend) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	return b.list(ctx, t, fn, func(ctx context.Context, fn func(repo.FileInfo) error) error {
		return b.inner.List(ctx, t, fn)
	})
}

// list retries a listing (inner), passing each name to fn once however
// many attempts list it.
func (b *Backend) list(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error, inner func(context.Context, func(repo.FileInfo) error) error) error {
	var (
		mu    sync.Mutex
		seen  = make(map[string]struct{})
		fnErr error
	)
	return b.do(ctx, "list", typeName(t), func(ctx context.Context) (bool, error) {
		actx, wd, stop := watch(ctx, b.o.Timeout)
		defer stop()
		err := inner(actx, func(fi repo.FileInfo) error {
			mu.Lock()
			defer mu.Unlock()
			if _, ok := seen[fi.Name]; ok {
				return nil
			}
			seen[fi.Name] = struct{}{}
			wd.idle()
			fnErr = fn(fi)
			wd.busy()
			return fnErr
		})
		if err != nil && fnErr != nil && errors.Is(err, fnErr) && ctx.Err() == nil {
			return false, err // fn's own
		}
		return b.classify(ctx, actx, b.o.Timeout, err)
	})
}

// ListPrefix is List of the names that start with prefix, through the
// inner Backend's PrefixLister, retried as List is.
func (b *Backend) ListPrefix(ctx context.Context, t repo.FileType, prefix string, fn func(repo.FileInfo) error) error {
	pl, ok := repo.As[repo.PrefixLister](b.inner)
	if !ok {
		return fmt.Errorf("list %s in %s: %w", t, b.inner.Location(), errors.ErrUnsupported)
	}
	return b.list(ctx, t, fn, func(ctx context.Context, fn func(repo.FileInfo) error) error {
		return pl.ListPrefix(ctx, t, prefix, fn)
	})
}

// Remove deletes h. If an attempt failed in a way that may have deleted
// the object, a later one returns ErrNotFound, as the contract says for an
// absent object: callers that remove garbage treat that as done.
func (b *Backend) Remove(ctx context.Context, h repo.Handle) error {
	return b.do(ctx, "remove", h, func(ctx context.Context) (bool, error) {
		actx, _, stop := watch(ctx, b.o.Timeout)
		defer stop()
		return b.classify(ctx, actx, b.o.Timeout, b.inner.Remove(actx, h))
	})
}

// Spool starts an object in the inner Backend, retrying the start. What
// is written is not retried: a spool is one stream, consumed as it goes,
// and Commit finishes it either way, so a failed Write or Commit fails the
// object as a Save that ran out of retries would. The start has no
// watchdog, since the spool outlives the call and may keep its context.
func (b *Backend) Spool(ctx context.Context, t repo.FileType) (repo.Spool, error) {
	sp, ok := repo.As[repo.Spooler](b.inner)
	if !ok {
		return nil, fmt.Errorf("spool in %s: %w", b.inner.Location(), errors.ErrUnsupported)
	}
	var s repo.Spool
	err := b.do(ctx, "spool", typeName(t), func(ctx context.Context) (bool, error) {
		var err error
		s, err = sp.Spool(ctx, t)
		return b.classify(ctx, ctx, b.o.Timeout, err)
	})
	return s, err
}

// RemoveTemp retries the inner Backend's. It has no watchdog: it may
// scan a large directory tree without anything to show for a while.
func (b *Backend) RemoveTemp(ctx context.Context, cutoff time.Time) (int, int64, error) {
	tr, ok := repo.As[repo.TempRemover](b.inner)
	if !ok {
		return 0, 0, fmt.Errorf("remove temp files in %s: %w", b.inner.Location(), errors.ErrUnsupported)
	}
	var n int
	var size int64
	err := b.do(ctx, "remove", typeName("temp files"), func(ctx context.Context) (bool, error) {
		var err error
		n, size, err = tr.RemoveTemp(ctx, cutoff)
		return b.classify(ctx, ctx, b.o.Timeout, err)
	})
	return n, size, err
}
