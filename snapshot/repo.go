package snapshot

import (
	"context"
	"log/slog"

	"github.com/snapbackup/snap/chunker"
	"github.com/snapbackup/snap/repo"
)

// What snapshot's work needs of a repository, each kind of work its own
// interface, so that a signature says what a function does to a
// repository and a test can give it something smaller than a
// *repo.Repository (which satisfies them all).
//
// Prune, check, copy, repair, forget and stats keep *repo.Repository:
// they read and rewrite the index files themselves (LoadIndexFiles,
// SaveIndexAs, the Saver's repack), take exclusive locks and remove
// objects; an interface of most of the repository would only rename it.

// BlobReader is what reading a snapshot's data needs: restore, tar and
// trees. Every blob it returns is verified against its id by the
// repository; Restore and WriteTar rely on that.
type BlobReader interface {
	// LoadBlob returns one blob's plaintext, appended to dst.
	LoadBlob(ctx context.Context, id repo.ID, dst []byte) ([]byte, error)
	// LoadBlobs and ReadBlobs read blobs of one pack in one request.
	LoadBlobs(ctx context.Context, pack repo.ID, entries []repo.BlobEntry, fn func(repo.BlobEntry, []byte) error) error
	ReadBlobs(ctx context.Context, pack repo.ID, entries []repo.BlobEntry, into func(repo.BlobEntry) ([]byte, error), fn func(repo.BlobEntry, []byte) error) error
	// OpenBlob decrypts, decompresses and verifies a sealed blob.
	OpenBlob(pack repo.ID, e repo.BlobEntry, sealed, dst []byte) ([]byte, error)
	// Lookup says where a blob is; LoadMissing brings the index up to
	// date (and beyond a host's scope) when a blob is not found.
	Lookup(id repo.ID) (repo.Location, bool)
	LoadMissing(ctx context.Context) error
	Connections() int
}

// Lister is what listing and loading snapshot objects needs.
type Lister interface {
	HostScoped() bool
	HostTag(host string) string
	ListObjects(ctx context.Context, t repo.FileType, fn func(repo.ObjectInfo) error) error
	ListOwned(ctx context.Context, t repo.FileType, owner string, fn func(repo.ObjectInfo) error) error
	LoadObject(ctx context.Context, t repo.FileType, name string, size int64) ([]byte, error)
	Connections() int
	Log() *slog.Logger
}

// BlobWriter is what storing blobs needs: a tree, or a backup's chunks.
type BlobWriter interface {
	BlobID(plain []byte) repo.ID
	Known(id repo.ID) bool
	SaveBlob(ctx context.Context, t repo.BlobType, id repo.ID, plain []byte) (bool, error)
	Flush(ctx context.Context) error
	Stats() repo.SaveStats
}

// SnapshotWriter is what saving a snapshot object needs.
type SnapshotWriter interface {
	HostScoped() bool
	HostTag(host string) string
	SaveNamed(ctx context.Context, t repo.FileType, prefix string, plain []byte) (string, error)
	SaveUnpacked(ctx context.Context, t repo.FileType, plain []byte) (repo.ID, error)
}

// Backuper is what a backup needs: its lock, an index up to date after
// it, the parent (listing, its tree), and storing chunks, tree and
// snapshot.
type Backuper interface {
	BlobReader
	Lister
	BlobWriter
	SnapshotWriter
	Lock(ctx context.Context, o repo.LockOptions) (*repo.Lock, error)
	RefreshIndex(ctx context.Context) error
	ChunkerParams() chunker.Params
}

var (
	_ BlobReader = (*repo.Repository)(nil)
	_ Lister     = (*repo.Repository)(nil)
	_ Backuper   = (*repo.Repository)(nil)
)
