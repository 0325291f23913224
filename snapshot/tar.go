package snapshot

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/source"
)

// TarOptions tune one WriteTar.
type TarOptions struct {
	Progress *Progress // may be nil
	Log      *slog.Logger
}

// TarStats is what a WriteTar wrote.
type TarStats struct {
	Files int   // tree entries written, of every type
	Bytes int64 // bytes of regular files, without tar's headers and padding
}

// tarBatchBytes bounds the plaintext of one batch of chunks read from a
// pack in one request (a larger chunk makes a batch of its own).
const tarBatchBytes = 4 << 20

// WriteTar writes the entries of sn to w as a POSIX (PAX) tar stream, in
// tree order: regular files with their bytes, directories, symlinks (their
// targets, never followed) and hard links (to the earlier regular file).
// Names are the tree's relative paths. The dir kind's modes and mtimes are
// kept; the other kinds record none, so files get 0644, directories 0755
// and every entry the snapshot's time. Owners are not recorded (uid and
// gid 0). Every chunk is verified as Restore verifies it: its type and
// length against the tree, its plaintext against its id.
//
// It streams: it holds at most r.Connections()+1 batches of chunks of
// about tarBatchBytes each, whatever the size of a file or the snapshot.
// Consecutive chunks that lie one after another in a pack are read in one
// request; a chunk that occurs twice is read twice. Like Restore it takes
// no lock: a blob whose pack a prune removed (or that the index does not
// name) makes it load the index again and go on, once per missing chunk.
//
// On error it returns what it wrote so far and w holds a truncated stream
// without the end-of-archive marker: it stops inside an entry, or, when it
// failed between entries, it ends with a lone extended header whose
// records are missing. Either way `tar -x` and archive/tar report an
// unexpected end of the archive instead of extracting a part as if it
// were the whole (GNU tar accepts a stream that merely lacks the end
// marker). r's index must be loaded.
func WriteTar(ctx context.Context, r BlobReader, sn *Snapshot, w io.Writer, o TarOptions) (st TarStats, err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	tw := tar.NewWriter(bw)
	var remaining int64 // bytes of the current entry announced but not yet written
	defer func() {
		if err == nil {
			return
		}
		if remaining == 0 && tw.Flush() == nil { // pads the last entry
			bw.Write(incompleteMarker())
		}
		bw.Flush() // best effort: the reader gets what was made, up to the failure
	}()

	ix := &reloadOnce{r: r, sn: sn, log: o.Log}
	var tree *Tree
	if err := ix.retry(ctx, func() (err error) {
		tree, err = LoadTree(ctx, r, sn.Tree)
		return err
	}); err != nil {
		return st, fmt.Errorf("snapshot %s: %w", sn.ID.Str(), err)
	}
	var total int64
	for _, f := range tree.Files {
		total += f.Length
	}
	o.Progress.FilesTotal.Store(int64(len(tree.Files)))
	o.Progress.BytesTotal.Store(total)
	meta := source.CanonicalKind(sn.Source.Kind) == source.KindDir

	cs := &chunkStream{r: r, sn: sn, files: tree.Files, log: o.Log, window: max(r.Connections(), 1)}
	defer cs.stop()
	for _, f := range tree.Files {
		if err := context.Cause(ctx); err != nil {
			return st, fmt.Errorf("snapshot %s: stopped before %s: %w", sn.ID.Str(), f.Name, err)
		}
		h, err := tarHeader(f, meta, sn.Time)
		if err != nil {
			return st, fmt.Errorf("snapshot %s: %w", sn.ID.Str(), err)
		}
		if err := tw.WriteHeader(h); err != nil {
			return st, fmt.Errorf("snapshot %s: write the tar header of %s: %w", sn.ID.Str(), f.Name, err)
		}
		remaining = h.Size
		for k := range f.Chunks {
			b, err := cs.next(ctx)
			if err != nil {
				return st, err
			}
			if int64(len(b)) > remaining {
				return st, fmt.Errorf("snapshot %s file %s: chunk %d would make it longer than its %d bytes", sn.ID.Str(), f.Name, k, f.Length)
			}
			n, err := tw.Write(b)
			remaining -= int64(n)
			st.Bytes += int64(n)
			o.Progress.BytesDone.Add(int64(n))
			if err != nil {
				return st, fmt.Errorf("snapshot %s: write %s to the tar stream: %w", sn.ID.Str(), f.Name, err)
			}
		}
		if remaining != 0 {
			return st, fmt.Errorf("snapshot %s file %s: its chunks hold %d bytes, the tree says %d", sn.ID.Str(), f.Name, f.Length-remaining, f.Length)
		}
		st.Files++
		o.Progress.FilesDone.Add(1)
	}
	if err := tw.Close(); err != nil {
		return st, fmt.Errorf("snapshot %s: end the tar stream: %w", sn.ID.Str(), err)
	}
	if err := bw.Flush(); err != nil {
		return st, fmt.Errorf("snapshot %s: write the tar stream: %w", sn.ID.Str(), err)
	}
	o.Log.Debug("tar stream written", "snapshot", sn.ID.Str(), "files", st.Files, "bytes", st.Bytes, "index_reloads", cs.reloads)
	return st, nil
}

// tarHeader is f's header. meta says whether the tree records modes and
// mtimes (the dir kind); else they are the defaults and when.
func tarHeader(f File, meta bool, when time.Time) (*tar.Header, error) {
	// The tree was validated; this keeps a name that could leave the
	// directory tar extracts into out of the stream whatever the tree says.
	if !fs.ValidPath(f.Name) || f.Name == "." {
		return nil, fmt.Errorf("tree file %q: not a relative path", f.Name)
	}
	h := &tar.Header{Name: f.Name, Format: tar.FormatPAX, ModTime: when}
	var mode int64
	switch f.Type {
	case TypeFile:
		h.Typeflag, h.Size, mode = tar.TypeReg, f.Length, 0o644
	case TypeDir:
		h.Typeflag, h.Name, mode = tar.TypeDir, f.Name+"/", 0o755
	case TypeSymlink:
		h.Typeflag, h.Linkname, mode = tar.TypeSymlink, f.Target, 0o777
	case TypeHardlink:
		h.Typeflag, h.Linkname, mode = tar.TypeLink, f.Target, 0o644
	default:
		return nil, fmt.Errorf("tree file %q: unknown type %q", f.Name, f.Type)
	}
	if meta {
		mode, h.ModTime = int64(f.Mode), time.Unix(0, f.MtimeNs)
	}
	h.Mode = mode
	return h, nil
}

// incompleteMarker is the header of a global extended header without its
// records: a reader that meets it at the end of a stream reports an
// unexpected EOF, where a stream that merely stops between entries would
// be accepted by GNU tar as whole.
func incompleteMarker() []byte {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, PAXRecords: map[string]string{"comment": "snap: this tar stream is incomplete; see the error snap reported"}})
	return b.Bytes()[:512]
}

// chunkStream hands out the chunks of a tree's regular files in tree
// order, loading up to window batches ahead, each on its own goroutine.
// A batch is a run of consecutive chunks that lie in one pack at
// increasing offsets, read with one LoadBlobs.
type chunkStream struct {
	r      BlobReader
	sn     *Snapshot
	files  []File
	log    *slog.Logger
	window int

	plan  chunkPos    // the next chunk to put into a batch
	queue []*tarBatch // planned batches, loading or loaded, in order
	cur   *tarBatch   // the batch being handed out
	i     int         // chunks of cur handed out
	off   int         // their bytes
	free  [][]byte    // buffers of consumed batches
	wg    sync.WaitGroup

	reloaded bool // the index was loaded again since the last chunk handed out
	reloads  int
}

type chunkPos struct{ file, chunk int }

type tarBatch struct {
	start   chunkPos
	at      []chunkPos // of each entry
	pack    repo.ID
	entries []repo.BlobEntry
	size    int
	buf     []byte // the plaintexts one after another, once done
	err     error
	done    chan struct{}
	cancel  context.CancelFunc
}

// next returns the plaintext of the next chunk, verified; it is valid
// until the next call.
func (s *chunkStream) next(ctx context.Context) ([]byte, error) {
	for {
		if s.cur != nil && s.i < len(s.cur.entries) {
			n := int(s.cur.entries[s.i].RawLength)
			b := s.cur.buf[s.off : s.off+n]
			s.i++
			s.off += n
			s.reloaded = false
			return b, nil
		}
		if s.cur != nil {
			s.release(s.cur)
			s.cur = nil
		}
		s.fill(ctx)
		if len(s.queue) == 0 {
			return nil, fmt.Errorf("snapshot %s: the tree asks for more chunks than it lists", s.sn.ID.Str())
		}
		b := s.queue[0]
		select {
		case <-b.done:
		case <-ctx.Done():
			return nil, fmt.Errorf("snapshot %s: %w", s.sn.ID.Str(), context.Cause(ctx))
		}
		s.queue = s.queue[1:]
		if b.err == nil {
			s.cur, s.i, s.off = b, 0, 0
			continue
		}
		if !(errors.Is(b.err, repo.ErrNotFound) || errors.Is(b.err, repo.ErrNotIndexed)) || s.reloaded {
			s.release(b)
			return nil, b.err
		}
		// A prune removed the pack after writing an index that names the
		// blob's new one: load the index again and plan from this batch on.
		s.log.Info("a chunk's pack is gone or not indexed (a prune ran?); loading the index again", "snapshot", s.sn.ID.Str(), "err", b.err)
		s.release(b)
		s.stop()
		s.reloaded = true
		s.reloads++
		if err := s.r.LoadMissing(ctx); err != nil {
			return nil, errors.Join(b.err, fmt.Errorf("snapshot %s: load the index again: %w", s.sn.ID.Str(), err))
		}
		s.plan = b.start
	}
}

// fill plans and starts batches until window are queued or every chunk
// is planned.
func (s *chunkStream) fill(ctx context.Context) {
	for len(s.queue) < s.window {
		b := s.planBatch()
		if b == nil {
			return
		}
		s.queue = append(s.queue, b)
		if b.err != nil {
			close(b.done)
			continue
		}
		bctx, cancel := context.WithCancel(ctx)
		b.cancel = cancel
		buf := s.buffer(b.size)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer close(b.done)
			j := 0
			err := s.r.LoadBlobs(bctx, b.pack, b.entries, func(e repo.BlobEntry, plain []byte) error {
				if j >= len(b.entries) || e != b.entries[j] {
					return fmt.Errorf("pack %s: blob %s handed over out of order", b.pack.Str(), e.ID.Str())
				}
				buf = append(buf, plain...)
				j++
				return nil
			})
			b.buf = buf
			if err != nil {
				p := b.at[min(j, len(b.at)-1)]
				b.err = fmt.Errorf("snapshot %s file %s: chunk %d: %w", s.sn.ID.Str(), s.files[p.file].Name, p.chunk, err)
			}
		}()
	}
}

// planBatch takes the next chunks from s.plan into a batch, or returns
// nil when every chunk is planned. A chunk that the index does not name,
// or names with another type or length than the tree's, makes a batch of
// its own that holds the error.
func (s *chunkStream) planBatch() *tarBatch {
	idx := s.r
	var b *tarBatch
	for s.plan.file < len(s.files) {
		f := &s.files[s.plan.file]
		if s.plan.chunk >= len(f.Chunks) {
			s.plan = chunkPos{file: s.plan.file + 1}
			continue
		}
		k := s.plan.chunk
		id := f.Chunks[k]
		loc, ok := idx.Lookup(id)
		var err error
		switch {
		case !ok:
			err = fmt.Errorf("snapshot %s file %s: chunk %d (%s): %w (if a prune forgot this snapshot meanwhile, use another; else run snap check)", s.sn.ID.Str(), f.Name, k, id.Str(), repo.ErrNotIndexed)
		case loc.Type != repo.DataBlob || loc.RawLength != f.Sizes[k]:
			err = fmt.Errorf("snapshot %s file %s: chunk %d (%s) is a %d-byte %s blob in the index, but the tree says a %d-byte data chunk: the tree and the index disagree (run snap check)",
				s.sn.ID.Str(), f.Name, k, id.Str(), loc.RawLength, loc.Type, f.Sizes[k])
		}
		if b != nil {
			last := b.entries[len(b.entries)-1]
			if err != nil || loc.Pack != b.pack || loc.Offset <= last.Offset || b.size+int(loc.RawLength) > tarBatchBytes {
				return b
			}
		} else {
			b = &tarBatch{start: s.plan, pack: loc.Pack, done: make(chan struct{})}
		}
		s.plan.chunk++
		if err != nil {
			b.err = err
			return b
		}
		b.entries = append(b.entries, loc.BlobEntry)
		b.at = append(b.at, chunkPos{file: s.plan.file, chunk: k})
		b.size += int(loc.RawLength)
	}
	return b
}

// buffer returns an empty buffer with room for n bytes.
func (s *chunkStream) buffer(n int) []byte {
	if k := len(s.free); k > 0 {
		b := s.free[k-1]
		s.free = s.free[:k-1]
		if cap(b) >= n {
			return b[:0]
		}
	}
	return make([]byte, 0, max(n, tarBatchBytes))
}

// release ends a batch that is done and keeps its buffer.
func (s *chunkStream) release(b *tarBatch) {
	if b.cancel != nil {
		b.cancel()
	}
	if b.buf != nil && len(s.free) <= s.window {
		s.free = append(s.free, b.buf[:0])
	}
	b.buf = nil
}

// stop cancels the queued batches and waits for their loads to end.
func (s *chunkStream) stop() {
	for _, b := range s.queue {
		if b.cancel != nil {
			b.cancel()
		}
	}
	s.wg.Wait()
	for _, b := range s.queue {
		s.release(b)
	}
	s.queue = nil
	if s.cur != nil {
		s.release(s.cur)
		s.cur = nil
	}
}
