// Package mem is an in-memory Backend for tests.
package mem

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/snapbackup/snap/repo"
)

// Backend keeps objects in a map. It copies bytes in and out, so callers
// cannot change what it stores.
type Backend struct {
	mu    sync.RWMutex
	objs  map[repo.Handle][]byte
	saved map[repo.Handle]time.Time // reported as ModTime
	now   func() time.Time          // the storage's clock
}

var (
	_ repo.Backend      = (*Backend)(nil)
	_ repo.PrefixLister = (*Backend)(nil)
)

// New returns an empty Backend.
func New() *Backend { return NewClocked(time.Now) }

// NewClocked returns an empty Backend whose storage times come from now,
// so tests can age objects (locks, unindexed packs) without waiting.
func NewClocked(now func() time.Time) *Backend {
	return &Backend{objs: make(map[repo.Handle][]byte), saved: make(map[repo.Handle]time.Time), now: now}
}

// Location returns "mem:".
func (b *Backend) Location() string { return "mem:" }

// validType checks the type given to List, which has no handle.
func validType(t repo.FileType) error {
	switch t {
	case repo.ConfigFile, repo.KeyFile, repo.PackFile, repo.IndexFile, repo.SnapshotFile, repo.TailFile, repo.ClusterFile, repo.LockFile:
		return nil
	}
	return fmt.Errorf("invalid file type %q", t)
}

func check(ctx context.Context, h repo.Handle) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	// The same rules as the other backends, so tests against mem catch
	// handles the real ones would reject.
	return h.Validate()
}

// Save stores a copy of data under h.
func (b *Backend) Save(ctx context.Context, h repo.Handle, data []byte) error {
	if err := check(ctx, h); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	buf := bytes.Clone(data)
	if buf == nil {
		buf = []byte{}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objs[h]; ok {
		return fmt.Errorf("save %s: %w", h, repo.ErrExists)
	}
	b.objs[h] = buf
	b.saved[h] = b.now()
	return nil
}

// Load hands fn a reader of a copy of the requested range.
func (b *Backend) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	buf, err := b.load(ctx, h, offset, length)
	if err != nil {
		return fmt.Errorf("load %s: %w", h, err)
	}
	return fn(bytes.NewReader(buf))
}

func (b *Backend) load(ctx context.Context, h repo.Handle, offset, length int64) ([]byte, error) {
	if err := check(ctx, h); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, fmt.Errorf("invalid range offset %d length %d", offset, length)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	data, ok := b.objs[h]
	if !ok {
		return nil, repo.ErrNotFound
	}
	size := int64(len(data))
	if length == 0 {
		length = size - offset
	}
	if offset > size || length > size-offset {
		return nil, fmt.Errorf("range offset %d length %d past end of %d-byte object: %w",
			offset, length, size, io.ErrUnexpectedEOF)
	}
	return bytes.Clone(data[offset : offset+length]), nil
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h repo.Handle) (repo.FileInfo, error) {
	if err := check(ctx, h); err != nil {
		return repo.FileInfo{}, fmt.Errorf("stat %s: %w", h, err)
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	data, ok := b.objs[h]
	if !ok {
		return repo.FileInfo{}, fmt.Errorf("stat %s: %w", h, repo.ErrNotFound)
	}
	return repo.FileInfo{Name: h.Name, Size: int64(len(data)), ModTime: b.saved[h]}, nil
}

// List calls fn for every object of type t. fn runs without the lock held,
// so it may call back into the Backend.
func (b *Backend) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	if err := validType(t); err != nil {
		return fmt.Errorf("list %s: %w", t, err)
	}
	b.mu.RLock()
	var infos []repo.FileInfo
	for h, data := range b.objs {
		if h.Type == t {
			infos = append(infos, repo.FileInfo{Name: h.Name, Size: int64(len(data)), ModTime: b.saved[h]})
		}
	}
	b.mu.RUnlock()
	for _, fi := range infos {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %s: %w", t, err)
		}
		if err := fn(fi); err != nil {
			return err
		}
	}
	return nil
}

// ListPrefix lists the objects of type t whose names start with prefix.
func (b *Backend) ListPrefix(ctx context.Context, t repo.FileType, prefix string, fn func(repo.FileInfo) error) error {
	if t == repo.ConfigFile {
		return fmt.Errorf("list %s: no prefix listing of the config", t)
	}
	return b.List(ctx, t, func(fi repo.FileInfo) error {
		if !strings.HasPrefix(fi.Name, prefix) {
			return nil
		}
		return fn(fi)
	})
}

// Remove deletes h.
func (b *Backend) Remove(ctx context.Context, h repo.Handle) error {
	if err := check(ctx, h); err != nil {
		return fmt.Errorf("remove %s: %w", h, err)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.objs[h]; !ok {
		return fmt.Errorf("remove %s: %w", h, repo.ErrNotFound)
	}
	delete(b.objs, h)
	delete(b.saved, h)
	return nil
}

// Close does nothing.
func (b *Backend) Close() error { return nil }
