// Package gcs stores a repository in a Google Cloud Storage bucket, under a
// prefix, with the same object names as the local backend (docs/design.md,
// "Layout"):
//
//	gs://BUCKET/PREFIX/config
//	gs://BUCKET/PREFIX/keys/<name>
//	gs://BUCKET/PREFIX/data/<first two characters of name>/<name>
//	gs://BUCKET/PREFIX/index/<name>
//	gs://BUCKET/PREFIX/snapshots/<name>
//	gs://BUCKET/PREFIX/tails/<prefix>-<hash>
//	gs://BUCKET/PREFIX/locks/<name>
//
// Every write is create-only (ifGenerationMatch=0) and carries a CRC32C of
// the whole object, so GCS stores it whole or not at all and never replaces
// an object. Credentials are found the standard way (Application Default
// Credentials, GOOGLE_APPLICATION_CREDENTIALS); STORAGE_EMULATOR_HOST points
// the client at an emulator.
//
// The Backend makes one attempt per call: retries, timeouts and rate limits
// are decorators above it (packages retry and limit). Its errors say whether
// they are worth retrying (Error.Transient).
package gcs

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"strings"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/snapbackup/snap/repo"
)

// Scheme starts a GCS repository location: gs://bucket/prefix.
const Scheme = "gs://"

// Options tune how the Backend reaches GCS.
type Options struct {
	// ClientOptions are passed to storage.NewClient after the Backend's own
	// (JSON reads, no library retries). Tests use them to reach an emulator
	// through an endpoint and without authentication.
	ClientOptions []option.ClientOption
}

// Backend is a repository in a bucket under a prefix. It is safe for
// concurrent use; the number of calls in flight is the caller's choice.
type Backend struct {
	client *storage.Client
	bucket *storage.BucketHandle
	name   string // bucket name
	prefix string // "" or ends in "/"
}

var (
	_ repo.Backend      = (*Backend)(nil)
	_ repo.PrefixLister = (*Backend)(nil)
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// ParseLocation splits "gs://bucket/prefix" into a bucket name and a prefix
// (without leading or trailing slashes; empty for the bucket's root).
func ParseLocation(location string) (bucket, prefix string, err error) {
	rest, ok := strings.CutPrefix(location, Scheme)
	if !ok {
		return "", "", fmt.Errorf("repository %q: a GCS location starts with %s", location, Scheme)
	}
	bucket, prefix, _ = strings.Cut(rest, "/")
	if err := validBucket(bucket); err != nil {
		return "", "", fmt.Errorf("repository %q: %w", location, err)
	}
	prefix = strings.Trim(prefix, "/")
	if err := validPrefix(prefix); err != nil {
		return "", "", fmt.Errorf("repository %q: %w", location, err)
	}
	return bucket, prefix, nil
}

// validBucket checks the rules GCS gives for bucket names, so that a typo
// gets a clear message instead of a 400 from the server.
func validBucket(name string) error {
	if name == "" {
		return errors.New("no bucket name (want gs://bucket/prefix)")
	}
	if len(name) < 3 || len(name) > 222 {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters (222 with dots)", name)
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Errorf("bucket name %q may hold only lower-case letters, digits, '-', '_' and '.'", name)
		}
	}
	first, last := name[0], name[len(name)-1]
	if !isAlnum(first) || !isAlnum(last) {
		return fmt.Errorf("bucket name %q must start and end with a letter or digit", name)
	}
	return nil
}

func isAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

func validPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	for seg := range strings.SplitSeq(prefix, "/") {
		switch {
		case seg == "":
			return fmt.Errorf("prefix %q has an empty path segment (\"//\")", prefix)
		case seg == "." || seg == "..":
			return fmt.Errorf("prefix %q has a %q segment", prefix, seg)
		case strings.ContainsFunc(seg, func(r rune) bool { return r < 0x20 || r == 0x7f }):
			return fmt.Errorf("prefix %q has a control character", prefix)
		}
	}
	if len(prefix) > 512 {
		return fmt.Errorf("prefix is %d bytes long; keep it under 512", len(prefix))
	}
	return nil
}

// Open returns a Backend for the repository in bucket under prefix. It
// makes no request: GCS has no directories to create, and repo.Init and
// repo.Open find out through the Backend whether the bucket and a
// repository exist, so those checks are retried like any other call.
func Open(ctx context.Context, bucket, prefix string, o Options) (*Backend, error) {
	if err := validBucket(bucket); err != nil {
		return nil, err
	}
	prefix = strings.Trim(prefix, "/")
	if err := validPrefix(prefix); err != nil {
		return nil, err
	}
	// JSON reads work the same against GCS and emulators (XML reads need
	// an emulator's public host to match).
	opts := append([]option.ClientOption{storage.WithJSONReads()}, o.ClientOptions...)
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to Google Cloud Storage for gs://%s: %w (%s)", bucket, err, hintCredentials)
	}
	// One attempt per call: the retry decorator decides, so retries do
	// not multiply and every one is logged.
	client.SetRetry(storage.WithPolicy(storage.RetryNever))
	if prefix != "" {
		prefix += "/"
	}
	return &Backend{client: client, bucket: client.Bucket(bucket), name: bucket, prefix: prefix}, nil
}

// checkBucket returns an error if the bucket cannot be listed. A read of a
// missing object and a read in a missing bucket both fail with 404 "not
// found"; a listing tells them apart.
func (b *Backend) checkBucket(ctx context.Context) error {
	q := &storage.Query{Prefix: b.prefix + string(repo.ConfigFile)}
	if err := q.SetAttrSelection([]string{"Name"}); err != nil {
		return err
	}
	it := b.bucket.Objects(ctx, q)
	it.PageInfo().MaxSize = 1
	if _, err := it.Next(); err != nil && err != iterator.Done {
		return b.wrap("list", q.Prefix, err)
	}
	return nil
}

// Location returns gs://bucket/prefix, or gs://bucket without a prefix.
func (b *Backend) Location() string {
	if b.prefix == "" {
		return Scheme + b.name
	}
	return Scheme + b.name + "/" + strings.TrimSuffix(b.prefix, "/")
}

// objectName returns the object that holds h.
func (b *Backend) objectName(h repo.Handle) (string, error) {
	if err := h.Validate(); err != nil {
		return "", err
	}
	switch h.Type {
	case repo.ConfigFile:
		return b.prefix + string(repo.ConfigFile), nil
	case repo.PackFile:
		return b.prefix + string(h.Type) + "/" + h.Name[:2] + "/" + h.Name, nil
	default:
		return b.prefix + string(h.Type) + "/" + h.Name, nil
	}
}

// Save writes data to h with the DoesNotExist precondition and its CRC32C.
// If anything fails before GCS confirmed the object, the write's context is
// cancelled before the writer is closed, so the upload is abandoned rather
// than committed with what was sent so far.
func (b *Backend) Save(ctx context.Context, h repo.Handle, data []byte) error {
	return b.save(ctx, h, crc32.Checksum(data, crc32c), func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// SaveFrom is Save of the size bytes of src, streamed: what a pack spooled
// to a temp file is stored with (repo.SpoolToFiles), so a backup does not
// hold it in memory. src is read twice, for the CRC32C and the upload.
func (b *Backend) SaveFrom(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64) error {
	sum := crc32.New(crc32c)
	if err := copyAll(sum, src, size, nil); err != nil {
		return fmt.Errorf("save %s in %s: read: %w", h, b.Location(), err)
	}
	return b.save(ctx, h, sum.Sum32(), func(w io.Writer) error {
		return copyAll(w, src, size, make([]byte, 1<<20))
	})
}

// copyAll copies the size bytes of src to w; a src that ends early is an
// error, not a shorter object.
func copyAll(w io.Writer, src io.ReaderAt, size int64, buf []byte) error {
	n, err := io.CopyBuffer(w, io.NewSectionReader(src, 0, size), buf)
	if err == nil && n < size {
		err = fmt.Errorf("source ended after %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	return err
}

// save uploads what write writes, whose CRC32C is crc, to h, creating it.
func (b *Backend) save(ctx context.Context, h repo.Handle, crc uint32, write func(io.Writer) error) error {
	name, err := b.objectName(h)
	if err != nil {
		return fmt.Errorf("save %s in %s: %w", h, b.Location(), err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", b.url(name), err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := b.bucket.Object(name).If(storage.Conditions{DoesNotExist: true}).NewWriter(wctx)
	// One request (multipart upload) with no copy of the data: a failed
	// upload is retried whole, and no resumable session is left behind.
	w.ChunkSize = 0
	w.ContentType = "application/octet-stream"
	w.CRC32C = crc
	w.SendCRC32C = true
	w.DisableAutoChecksum = true // it would compute the same CRC again
	if err := write(w); err != nil {
		// Cancelled before Close, the upload creates nothing.
		cancel()
		w.Close()
		return b.wrap("save", name, err)
	}
	if err := w.Close(); err != nil {
		return b.wrap("save", name, err)
	}
	return nil
}

// Load hands fn a reader of length bytes of h from offset (length 0: to the
// end), fetched with one ranged read. A range that does not lie within the
// object is an error wrapping io.ErrUnexpectedEOF.
func (b *Backend) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(rd io.Reader) error) error {
	name, err := b.objectName(h)
	if err != nil {
		return fmt.Errorf("load %s in %s: %w", h, b.Location(), err)
	}
	if offset < 0 || length < 0 {
		return fmt.Errorf("load %s: invalid range offset %d length %d", b.url(name), offset, length)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("load %s: %w", b.url(name), err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	want := length
	if want == 0 {
		want = -1 // to the end
	}
	r, err := b.bucket.Object(name).NewRangeReader(rctx, offset, want)
	if isStatus(err, http.StatusRequestedRangeNotSatisfiable) && length == 0 {
		// GCS has no empty range: offset at the end of the object is
		// valid and reads nothing, past it is an error.
		fi, serr := b.Stat(ctx, h)
		if serr != nil {
			return serr
		}
		if offset == fi.Size {
			return fn(strings.NewReader(""))
		}
	}
	if errors.Is(err, storage.ErrObjectNotExist) && h.Type == repo.ConfigFile {
		if berr := b.checkBucket(ctx); berr != nil {
			return berr
		}
	}
	if err != nil {
		if isStatus(err, http.StatusRequestedRangeNotSatisfiable) {
			return fmt.Errorf("load %s: range offset %d length %d past the end of the object: %w",
				b.url(name), offset, length, io.ErrUnexpectedEOF)
		}
		return b.wrap("load", name, err)
	}
	defer r.Close()
	size := r.Attrs.Size
	if length == 0 {
		length = size - offset
	}
	// Written so that offset+length cannot overflow.
	if offset > size || length > size-offset || r.Remain() != length {
		return fmt.Errorf("load %s: range offset %d length %d past the end of the %d-byte object: %w",
			b.url(name), offset, length, size, io.ErrUnexpectedEOF)
	}
	// fn's error is the caller's own; return it as is.
	return fn(&reader{r: r, b: b, name: name})
}

// reader translates the errors of a download in progress, so a reset
// connection mid-object says which object and that it is worth retrying.
type reader struct {
	r    *storage.Reader
	b    *Backend
	name string
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = r.b.wrap("read", r.name, err)
	}
	return n, err
}

// Stat returns the size of h.
func (b *Backend) Stat(ctx context.Context, h repo.Handle) (repo.FileInfo, error) {
	name, err := b.objectName(h)
	if err != nil {
		return repo.FileInfo{}, fmt.Errorf("stat %s in %s: %w", h, b.Location(), err)
	}
	if err := ctx.Err(); err != nil {
		return repo.FileInfo{}, fmt.Errorf("stat %s: %w", b.url(name), err)
	}
	attrs, err := b.bucket.Object(name).Attrs(ctx)
	if errors.Is(err, storage.ErrObjectNotExist) && h.Type == repo.ConfigFile {
		// Every command looks for the config first: say so if the
		// reason it is missing is a wrong bucket name.
		if berr := b.checkBucket(ctx); berr != nil {
			return repo.FileInfo{}, berr
		}
	}
	if err != nil {
		return repo.FileInfo{}, b.wrap("stat", name, err)
	}
	return repo.FileInfo{Name: h.Name, Size: attrs.Size, ModTime: attrs.Created}, nil
}

// List calls fn for every object of type t, one page of names at a time.
// Names that do not fit the layout (another tool's objects, a "folder"
// placeholder) are skipped.
func (b *Backend) List(ctx context.Context, t repo.FileType, fn func(repo.FileInfo) error) error {
	return b.list(ctx, t, "", fn)
}

// ListPrefix lists the objects of type t whose names start with prefix,
// with a query prefix: the bucket lists only those.
func (b *Backend) ListPrefix(ctx context.Context, t repo.FileType, prefix string, fn func(repo.FileInfo) error) error {
	if t == repo.ConfigFile {
		return fmt.Errorf("list %s in %s: no prefix listing of the config", t, b.Location())
	}
	return b.list(ctx, t, prefix, fn)
}

func (b *Backend) list(ctx context.Context, t repo.FileType, prefix string, fn func(repo.FileInfo) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s in %s: %w", t, b.Location(), err)
	}
	switch t {
	case repo.ConfigFile:
		fi, err := b.Stat(ctx, repo.Handle{Type: repo.ConfigFile})
		if errors.Is(err, repo.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(fi)
	case repo.KeyFile, repo.PackFile, repo.IndexFile, repo.SnapshotFile, repo.TailFile, repo.ClusterFile, repo.LockFile:
	default:
		return fmt.Errorf("list %s in %s: invalid file type %q", t, b.Location(), t)
	}
	dir := b.prefix + string(t) + "/"
	q := &storage.Query{Prefix: dir + prefix}
	if t != repo.PackFile {
		q.Delimiter = "/" // only direct children
	}
	if err := q.SetAttrSelection([]string{"Name", "Size", "Created"}); err != nil {
		return err
	}
	it := b.bucket.Objects(ctx, q)
	for {
		attrs, err := it.Next()
		if err == iterator.Done {
			return nil
		}
		if err != nil {
			return b.wrap("list", dir, err)
		}
		if attrs.Name == "" { // a "directory" (Prefix) entry
			continue
		}
		name, ok := b.handleName(t, strings.TrimPrefix(attrs.Name, dir))
		if !ok {
			continue
		}
		// Objects are never rewritten, so creation is when it was stored.
		if err := fn(repo.FileInfo{Name: name, Size: attrs.Size, ModTime: attrs.Created}); err != nil {
			// fn's error is the caller's own; return it as is.
			return err
		}
	}
}

// handleName returns the handle name for the part of an object name after
// its type's directory, if it is one the layout can hold.
func (b *Backend) handleName(t repo.FileType, rel string) (string, bool) {
	name := rel
	if t == repo.PackFile {
		sub, n, ok := strings.Cut(rel, "/")
		if !ok || len(n) < 2 || n[:2] != sub {
			return "", false
		}
		name = n
	}
	if (repo.Handle{Type: t, Name: name}).Validate() != nil {
		return "", false
	}
	return name, true
}

// Remove deletes h.
func (b *Backend) Remove(ctx context.Context, h repo.Handle) error {
	name, err := b.objectName(h)
	if err != nil {
		return fmt.Errorf("remove %s in %s: %w", h, b.Location(), err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", b.url(name), err)
	}
	if err := b.bucket.Object(name).Delete(ctx); err != nil {
		return b.wrap("remove", name, err)
	}
	return nil
}

// Close releases the client's connections.
func (b *Backend) Close() error { return b.client.Close() }
