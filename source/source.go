// Package source yields the files of a database to back up: a frozen listing
// (names, roles, exact byte lengths) and readers for exactly those bytes.
//
// A Source is anything that can freeze a set of files in one directory: a
// sada-sliding server via FREEZE (Redis), and later a Redis multi-part AOF
// directory or an offline database directory. The backup pipeline only sees
// Source, Frozen, Listing and Reader, so new sources need no pipeline changes.
package source

import (
	"context"
	"sync"
	"time"
)

// ReleaseTimeout bounds how long Frozen.Release may take. Release ignores the
// caller's cancellation, because a freeze must end also when the backup was
// cancelled.
const ReleaseTimeout = 30 * time.Second

// Info describes a source for snapshot metadata.
type Info struct {
	Kind    string // KindFreeze, KindDir, KindRedis
	Address string // server address, empty for sources without a server
	DataDir string // directory the listed names are relative to
}

// Source yields a frozen listing. Frozen.Release must be called exactly once
// for every successful Freeze, also when the backup fails.
type Source interface {
	Info() Info
	Freeze(ctx context.Context) (*Frozen, error)
}

// Frozen is a listing whose files will not be deleted until Release.
type Frozen struct {
	Listing Listing
	Dir     string // directory the names are relative to
	// AOF is what a redis snapshot records of the AOF (redis kind only).
	AOF *AOFPoint
	// Check, when set, is called once every file was read and before the
	// snapshot is saved; its error fails the backup (the redis kind makes
	// sure no rewrite switched the files it read).
	Check func(context.Context) error

	mu       sync.Mutex
	release  func(context.Context) error
	released bool
}

// NewFrozen returns a Frozen over listing in dir whose Release calls release
// (which may be nil) at most once. Sources build their result with it; tests
// use it for a source that needs no server.
func NewFrozen(listing Listing, dir string, release func(context.Context) error) *Frozen {
	return &Frozen{Listing: listing, Dir: dir, release: release}
}

// Release ends the freeze. It works even if ctx is cancelled (it keeps ctx's
// values, drops its cancellation and allows ReleaseTimeout). Only the first
// call does anything; later calls return nil.
func (f *Frozen) Release(ctx context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.released {
		return nil
	}
	f.released = true
	if f.release == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ReleaseTimeout)
	defer cancel()
	return f.release(ctx)
}

// Open opens a listed file for reading exactly its snapshot bytes. A file
// with Content is served from memory. A missing file is an error wrapping
// fs.ErrNotExist; a file shorter than its listed Length is a
// *ShortFileError.
func (f *Frozen) Open(file File) (*Reader, error) {
	return openFile(f.Dir, file, nil)
}

// Stat describes a listed file without keeping it open, with the errors
// Open gives: a backup plans a listing of thousands of files with it and
// opens each only to read it (OpenStat).
func (f *Frozen) Stat(file File) (FileStat, error) {
	return statFile(f.Dir, file)
}

// OpenStat opens a listed file that Stat described as st, for reading its
// first st.Length bytes. A file that is no longer the one st describes is
// an error wrapping ErrFileChanged, or a *ShortFileError if it shrank.
func (f *Frozen) OpenStat(file File, st FileStat) (*Reader, error) {
	return openFile(f.Dir, file, &st)
}
