// Package limit paces byte streams to a rate, so a backup can run beside a
// busy server without taking all of its network or disk: a Backend
// decorator for upload and download rates, and Reader and ReaderAt
// wrappers for reading the database files.
//
// Wrap the limited Backend around the retry decorator, not inside it: time
// spent waiting for the rate is then not mistaken for a stalled request.
package limit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"golang.org/x/time/rate"

	"github.com/snapbackup/snap/repo"
)

// Limiter is a token bucket of bytes. A nil *Limiter does not limit, so
// callers need not check whether a limit was set.
type Limiter struct {
	l     *rate.Limiter
	burst int
}

// NewLimiter returns a Limiter for bytesPerSecond, or nil (no limit) if it
// is not positive. The bucket holds a tenth of a second of bytes (at least
// 4 KiB, at most 4 MiB), so the rate holds over any span longer than that.
func NewLimiter(bytesPerSecond int64) *Limiter {
	if bytesPerSecond <= 0 {
		return nil
	}
	burst := int(min(max(bytesPerSecond/10, 4<<10), 4<<20))
	return &Limiter{l: rate.NewLimiter(rate.Limit(bytesPerSecond), burst), burst: burst}
}

// Rate returns the limit in bytes per second; 0 for a nil Limiter.
func (l *Limiter) Rate() int64 {
	if l == nil {
		return 0
	}
	return int64(l.l.Limit())
}

// WaitN blocks until n bytes may pass or ctx ends. n may exceed the bucket.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	if l == nil {
		return ctx.Err()
	}
	for n > 0 {
		m := min(n, l.burst)
		if err := l.l.WaitN(ctx, m); err != nil {
			// WaitN fails early when the wait would pass ctx's
			// deadline; say what the caller was waiting for.
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("rate limit %d bytes/s: %w", l.Rate(), err)
		}
		n -= m
	}
	return nil
}

// NewReader returns a reader of r that passes at most l's rate; each Read
// waits after reading for the bytes it returned. ctx ends the waits: it is
// kept for the reader's life because io.Reader has no context, so use the
// reader only within the call that made it. If r is a repo.PlacedReader,
// so is the reader returned, and its ReadPlaced is paced too.
func NewReader(ctx context.Context, r io.Reader, l *Limiter) io.Reader {
	if l == nil {
		return r
	}
	lr := &reader{ctx: ctx, r: r, l: l}
	if pr, ok := r.(repo.PlacedReader); ok {
		return &placedReader{reader: lr, pr: pr}
	}
	return lr
}

type reader struct {
	ctx context.Context // see NewReader
	r   io.Reader
	l   *Limiter
}

func (r *reader) Read(p []byte) (int, error) {
	// At most one bucket per Read, so the stream goes at the rate rather
	// than in large gulps with long pauses.
	p = p[:min(len(p), r.l.burst)]
	n, err := r.r.Read(p)
	if n > 0 {
		if werr := r.l.WaitN(r.ctx, n); werr != nil && err == nil {
			err = werr
		}
	}
	return n, err
}

type placedReader struct {
	*reader
	pr repo.PlacedReader
}

// ReadPlaced waits after reading for the n bytes asked for, as Read does
// for what it returns.
func (r *placedReader) ReadPlaced(b []byte, skip int64, n int) (int, error) {
	pad, err := r.pr.ReadPlaced(b, skip, n)
	if err == nil {
		err = r.l.WaitN(r.ctx, n)
	}
	return pad, err
}

// NewReaderAt returns a ReaderAt of r that passes at most l's rate. Each
// ReadAt reads in pieces of at most one bucket and waits before each piece,
// so a large read is spread over time instead of hitting the disk at once.
// ctx is kept as for NewReader.
func NewReaderAt(ctx context.Context, r io.ReaderAt, l *Limiter) io.ReaderAt {
	if l == nil {
		return r
	}
	return &readerAt{ctx: ctx, r: r, l: l}
}

type readerAt struct {
	ctx context.Context // see NewReader
	r   io.ReaderAt
	l   *Limiter
}

func (r *readerAt) ReadAt(p []byte, off int64) (int, error) {
	done := 0
	for done < len(p) {
		piece := p[done:min(len(p), done+r.l.burst)]
		if err := r.l.WaitN(r.ctx, len(piece)); err != nil {
			return done, err
		}
		n, err := r.r.ReadAt(piece, off+int64(done))
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// Backend paces the bytes of an inner Backend: Save's data, SaveFrom's and
// a spool's against the upload Limiter, the bytes Load hands to fn (Read
// and ReadPlaced) against the download Limiter. Names, listings and
// metadata are not counted. It has the optional interfaces the inner
// Backend has (repo.As).
type Backend struct {
	inner        repo.Backend
	upload, down *Limiter
}

var (
	_ repo.Wrapper     = (*Backend)(nil)
	_ repo.Spooler     = (*Backend)(nil)
	_ repo.StreamSaver = (*Backend)(nil)
	_ repo.TempRemover = (*Backend)(nil)
)

// New wraps inner. Either Limiter may be nil (no limit); the same Limiter
// may be shared by several Backends to limit them together.
func New(inner repo.Backend, upload, download *Limiter) *Backend {
	return &Backend{inner: inner, upload: upload, down: download}
}

// Location returns the inner Backend's location.
func (b *Backend) Location() string { return b.inner.Location() }

// Close closes the inner Backend.
func (b *Backend) Close() error { return b.inner.Close() }

// Unwrap returns the inner Backend.
func (b *Backend) Unwrap() repo.Backend { return b.inner }

// Save waits until the upload rate allows len(data) bytes, then stores
// them. The Backend interface hands over whole objects, so each object is
// paid for before it is sent and then goes at the link's speed; over a
// backup the rate holds. Retries below this decorator are not counted.
func (b *Backend) Save(ctx context.Context, h repo.Handle, data []byte) error {
	if err := b.upload.WaitN(ctx, len(data)); err != nil {
		return fmt.Errorf("save %s in %s: %w", h, b.inner.Location(), err)
	}
	return b.inner.Save(ctx, h, data)
}

// SaveFrom waits for the upload rate, then stores the size bytes of src in
// the inner Backend, streamed where it can (repo.SaveFrom).
func (b *Backend) SaveFrom(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64) error {
	if err := b.upload.WaitN(ctx, int(size)); err != nil {
		return fmt.Errorf("save %s in %s: %w", h, b.inner.Location(), err)
	}
	return repo.SaveFrom(ctx, b.inner, h, src, size)
}

// Spool starts an object in the inner Backend whose writes wait for the
// upload rate, so a spooled pack is paced as its bytes go out rather than
// whole before or after.
func (b *Backend) Spool(ctx context.Context, t repo.FileType) (repo.Spool, error) {
	sp, ok := repo.As[repo.Spooler](b.inner)
	if !ok {
		return nil, fmt.Errorf("spool in %s: %w", b.inner.Location(), errors.ErrUnsupported)
	}
	s, err := sp.Spool(ctx, t)
	if err != nil || b.upload == nil {
		return s, err
	}
	return &spool{Spool: s, ctx: ctx, l: b.upload, loc: b.inner.Location()}, nil
}

type spool struct {
	repo.Spool
	// ctx is Spool's, kept because Write has none (as NewReader's): a
	// spool lives within the call that started it.
	ctx context.Context
	l   *Limiter
	loc string
}

// Write waits for the rate, then writes p.
func (s *spool) Write(p []byte) error {
	if err := s.l.WaitN(s.ctx, len(p)); err != nil {
		return fmt.Errorf("spool in %s: %w", s.loc, err)
	}
	return s.Spool.Write(p)
}

// RemoveTemp passes through: it moves no bytes.
func (b *Backend) RemoveTemp(ctx context.Context, cutoff time.Time) (int, int64, error) {
	tr, ok := repo.As[repo.TempRemover](b.inner)
	if !ok {
		return 0, 0, fmt.Errorf("remove temp files in %s: %w", b.inner.Location(), errors.ErrUnsupported)
	}
	return tr.RemoveTemp(ctx, cutoff)
}

// Load hands fn a reader paced to the download rate.
func (b *Backend) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	if b.down == nil {
		return b.inner.Load(ctx, h, offset, length, fn)
	}
	return b.inner.Load(ctx, h, offset, length, func(rd io.Reader) error {
		return fn(NewReader(ctx, rd, b.down))
	})
}

// Stat passes through.
func (b *Backend) Stat(ctx context.Context, h repo.Handle) (repo.FileInfo, error) {
	return b.inner.Stat(ctx, h)
}

// List passes through.
func (b *Backend) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	return b.inner.List(ctx, t, fn)
}

// ListPrefix passes through: a listing is not paced, as List is not.
func (b *Backend) ListPrefix(ctx context.Context, t repo.FileType, prefix string, fn func(repo.FileInfo) error) error {
	pl, ok := repo.As[repo.PrefixLister](b.inner)
	if !ok {
		return fmt.Errorf("list %s in %s: %w", t, b.inner.Location(), errors.ErrUnsupported)
	}
	return pl.ListPrefix(ctx, t, prefix, fn)
}

// Remove passes through.
func (b *Backend) Remove(ctx context.Context, h repo.Handle) error {
	return b.inner.Remove(ctx, h)
}
