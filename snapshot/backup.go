package snapshot

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/chunker"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/limit"
	"github.com/snapbackup/snap/source"
)

// Progress is updated while a backup or restore runs; a display reads it.
type Progress struct {
	FilesTotal atomic.Int64
	FilesDone  atomic.Int64
	BytesTotal atomic.Int64 // bytes to read (backup) or write (restore)
	BytesDone  atomic.Int64
}

// BackupOptions tune one backup.
type BackupOptions struct {
	Host     string
	Tags     []string
	Force    bool // read every file, ignoring the parent snapshot
	Readers  int  // files read, and so open, at once; zero: 2
	Workers  int  // goroutines hashing, compressing and sealing; zero: GOMAXPROCS
	Program  string
	Progress *Progress // may be nil
	// ReadLimit paces reading the database files (bytes per second), so a
	// backup can run beside a busy server; nil reads at full speed.
	ReadLimit *limit.Limiter
	Log       *slog.Logger
	Now       func() time.Time
	// RetryLock is how long to wait while a prune holds the repository's
	// exclusive lock; zero fails at once.
	RetryLock time.Duration
	// AllowChanges saves a snapshot marked Partial when files of a
	// directory backup change while they are read, instead of failing.
	AllowChanges bool
	// Group, when set, makes the snapshot a node's part of a cluster
	// group: the backup gets ready (lock, parent), waits for
	// Group.FreezeAt and freezes then; ready later than MaxLate after
	// it, it fails with ErrMissedFreeze without freezing.
	Group   *GroupRef
	MaxLate time.Duration
}

// ErrMissedFreeze is returned by a group's backup that was not ready to
// freeze within its MaxLate of the group's moment.
var ErrMissedFreeze = errors.New("missed the group's freeze moment")

// fileJob is one file of the listing on its way into the repository.
type fileJob struct {
	file   source.File
	st     source.FileStat // the file as planned
	from   int64           // first byte to read; bytes before it come from reused chunks
	reused File            // chunks carried over from the parent snapshot
	out    File
	// changed: a directory backup's file that is not as the walk saw it
	// (an error, or with AllowChanges a partial snapshot)
	changed bool

	mu     sync.Mutex
	chunks []repo.ID // by sequence number, for the chunks read
	sizes  []uint32
}

type chunkJob struct {
	f    *fileJob
	seq  int
	data *[]byte
}

// Backup freezes src, stores every listed file in r, and saves a snapshot.
// The freeze is always ended, also when the backup fails; if ending it fails
// after the snapshot was saved, both are returned.
func Backup(ctx context.Context, r Backuper, src source.Source, o BackupOptions) (_ *Snapshot, err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Readers <= 0 {
		o.Readers = 2
	}
	if o.Workers <= 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	start := o.Now()
	info := src.Info()
	srcMeta := Source{Kind: source.CanonicalKind(info.Kind), Address: info.Address, DataDir: info.DataDir}

	// A shared lock keeps prune out until the snapshot is saved
	// (docs/design.md, "Locks and concurrency").
	lk, err := r.Lock(ctx, repo.LockOptions{Command: "backup", Now: o.Now, RetryFor: o.RetryLock, Log: o.Log})
	if err != nil {
		return nil, err
	}
	defer lk.Unlock(ctx)
	// The caller may have loaded the index before the lock was ours, and a
	// prune may have finished in between: never reuse a blob it removed.
	if err := r.RefreshIndex(ctx); err != nil {
		return nil, err
	}

	// Only this host's snapshots can be the parent: read only those.
	snaps, err := ListHost(ctx, r, o.Host)
	if err != nil {
		return nil, err
	}
	var parent *Snapshot
	var parentFiles map[string]File
	if !o.Force {
		parent = Latest(snaps, func(s *Snapshot) bool { return s.Host == o.Host && s.Source == srcMeta })
		if parent != nil {
			t, err := LoadTree(ctx, r, parent.Tree)
			if err != nil {
				return nil, fmt.Errorf("parent snapshot %s: %w", parent.ID.Str(), err)
			}
			parentFiles = make(map[string]File, len(t.Files))
			for _, f := range t.Files {
				parentFiles[f.Name] = f
			}
		}
	}

	if o.Group != nil {
		if err := waitFor(ctx, o.Group.FreezeAt, o.MaxLate, o.Now); err != nil {
			return nil, err
		}
	}
	frozen, err := src.Freeze(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if rerr := frozen.Release(ctx); rerr != nil {
			err = errors.Join(err, fmt.Errorf("end freeze: %w", rerr))
		}
	}()
	frozenAt := o.Now()
	o.Log.Debug("frozen", "files", len(frozen.Listing.Files))

	jobs, err := planFiles(r, frozen, parentFiles)
	if err != nil {
		return nil, err
	}
	var toRead int64
	for _, j := range jobs {
		toRead += j.out.Length - j.from
	}
	o.Progress.FilesTotal.Store(int64(len(jobs)))
	o.Progress.BytesTotal.Store(toRead)

	before := r.Stats()
	if err := storeFiles(ctx, r, frozen, jobs, o); err != nil {
		return nil, err
	}

	if frozen.Check != nil {
		if err := frozen.Check(ctx); err != nil {
			return nil, err
		}
	}
	tree := &Tree{Files: make([]File, 0, len(jobs))}
	var total int64
	partial := false
	for _, j := range jobs {
		tree.Files = append(tree.Files, j.finish())
		total += j.out.Length
		if j.changed {
			partial = true
			o.Log.Warn("file changed while it was read; the snapshot is marked partial", "file", j.file.Name)
		}
	}
	treeID, err := SaveTree(ctx, r, tree)
	if err != nil {
		return nil, err
	}
	if err := r.Flush(ctx); err != nil {
		return nil, err
	}
	after := r.Stats()
	sn := &Snapshot{
		Time: frozenAt, Host: o.Host, Tags: o.Tags, Source: srcMeta, Tree: treeID, Program: o.Program, Partial: partial,
		Redis: frozen.AOF, Group: o.Group,
		Summary: Summary{
			Files: len(jobs), Bytes: total, BytesRead: o.Progress.BytesDone.Load(),
			BytesNew:    after.BytesNew - before.BytesNew,
			BytesStored: after.BytesSaved - before.BytesSaved,
			BlobsNew:    after.BlobsNew - before.BlobsNew,
			Start:       start, End: o.Now(),
		},
	}
	if parent != nil {
		pid := parent.ID
		sn.Parent = &pid
	}
	// A prune may have taken a lost lock for stale and removed blobs this
	// snapshot reuses: then it must not be saved.
	if err := lk.Err(); err != nil {
		return nil, fmt.Errorf("snapshot not saved: %w", err)
	}
	if err := Save(ctx, r, sn); err != nil {
		return nil, err
	}
	return sn, nil
}

// planFiles stats every listed file and decides which bytes must be read:
// an immutable file whose name and stat identity match the parent is taken
// whole from it; an append-only file with the same name and inode that did
// not shrink is read from the start of its last stored chunk, which is
// where the chunker would cut it again. It keeps no file open: a listing
// can hold more files than the process may open.
func planFiles(r BlobWriter, frozen *source.Frozen, parent map[string]File) ([]*fileJob, error) {
	jobs := make([]*fileJob, 0, len(frozen.Listing.Files))
	for _, f := range frozen.Listing.Files {
		if f.Type != source.EntryFile {
			// A directory, symlink or hard link: its entry is all there is.
			jobs = append(jobs, &fileJob{file: f, out: File{Name: f.Name, Type: string(f.Type), Role: string(f.Role),
				Mode: unixMode(f.Mode), MtimeNs: f.MtimeNs, Target: f.Target}})
			continue
		}
		st, err := frozen.Stat(f)
		if err != nil {
			return nil, err
		}
		// Mode and mtime are zero in a FREEZE listing: a directory
		// backup's only.
		j := &fileJob{file: f, st: st, out: File{Name: f.Name, Role: string(f.Role), Length: st.Length,
			Mode: unixMode(f.Mode), MtimeNs: f.MtimeNs}}
		jobs = append(jobs, j)
		if f.Content != nil {
			continue
		}
		id := st.Identity
		j.out.Identity = treeIdentity(f, id)
		if w := f.Walked; w != nil {
			if w.Inode != id.Inode || w.Size != id.Size || w.MtimeNs != id.MtimeNs {
				j.changed = true
				continue // read whole, if at all
			}
		}
		p, ok := parent[f.Name]
		if !ok || p.Identity == nil || p.Role != string(f.Role) || !allKnown(r, p.Chunks) {
			continue
		}
		switch {
		case f.Role.AppendOnly():
			if p.Identity.Inode != id.Inode || p.Length > j.out.Length || len(p.Chunks) == 0 {
				continue
			}
			if p.Length == j.out.Length {
				j.reused, j.from = p, p.Length
				continue
			}
			n := len(p.Chunks) - 1
			j.reused = File{Chunks: p.Chunks[:n], Sizes: p.Sizes[:n]}
			j.from = p.Length - int64(p.Sizes[n])
		case sameIdentity(*p.Identity, *j.out.Identity) && p.Length == j.out.Length:
			j.reused, j.from = p, p.Length
		}
	}
	return jobs, nil
}

func allKnown(r BlobWriter, ids []repo.ID) bool {
	for _, id := range ids {
		if !r.Known(id) {
			return false
		}
	}
	return true
}

// treeIdentity is the identity a tree records of f as stat'ed: with
// ctime for a directory backup's file, which it tells a reader of the tree
// when the inode last changed (it is recorded, not compared:
// sameIdentity), and without it for a server's files, whose trees stay
// version 1.
func treeIdentity(f source.File, id source.Identity) *Identity {
	t := &Identity{Size: id.Size, MtimeNs: id.MtimeNs, Inode: id.Inode}
	if f.Walked != nil {
		t.CtimeNs = id.CtimeNs
	}
	return t
}

// sameIdentity compares what says a file is unchanged: size, mtime and
// inode. Not ctime: a hard link changes it, and a checkpoint of a store
// hard-links the same tables every time.
func sameIdentity(a, b Identity) bool {
	return a.Size == b.Size && a.MtimeNs == b.MtimeNs && a.Inode == b.Inode
}

// unixMode turns permission bits into a tree's mode (Unix layout).
func unixMode(m fs.FileMode) uint32 {
	out := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		out |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		out |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		out |= 0o1000
	}
	return out
}

// finish assembles the file's tree entry from reused and new chunks.
func (j *fileJob) finish() File {
	f := j.out
	f.Chunks = append(append([]repo.ID{}, j.reused.Chunks...), j.chunks...)
	f.Sizes = append(append([]uint32{}, j.reused.Sizes...), j.sizes...)
	return f
}

// storeFiles is the pipeline: o.Readers goroutines read and chunk files,
// each open only while it is read (so at most o.Readers are open),
// o.Workers goroutines hash, compress, seal and pack chunks. Each reader
// fills one chunk buffer, o.Workers chunks wait in the channel and o.Workers
// are being stored, which bounds memory to (Readers + 2*Workers) * chunker
// max + packs in flight, and typically to a fifth of that (2 * chunker avg
// a buffer).
func storeFiles(ctx context.Context, r Backuper, frozen *source.Frozen, jobs []*fileJob, o BackupOptions) error {
	ch, err := chunker.New(r.ChunkerParams())
	if err != nil {
		return err
	}
	// Chunk buffers start with room for almost every chunk (see grow) and
	// are reused, so they seldom grow. make, unlike append, leaves fresh
	// pages untouched until a chunk fills them.
	firstCap := min(2*ch.Params().Avg, ch.Params().Max)
	bufs := newChunkBufs(firstCap)

	g, gctx := errgroup.WithContext(ctx)
	files := make(chan *fileJob)
	chunks := make(chan chunkJob, o.Workers)

	g.Go(func() error {
		defer close(files)
		for _, j := range jobs {
			select {
			case files <- j:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var readers sync.WaitGroup
	for range o.Readers {
		readers.Add(1)
		g.Go(func() error {
			defer readers.Done()
			for j := range files {
				if err := openAndRead(gctx, ch, frozen, j, bufs, chunks, o.Progress, o.ReadLimit, o.AllowChanges); err != nil {
					return err
				}
				o.Progress.FilesDone.Add(1)
			}
			return nil
		})
	}
	g.Go(func() error {
		readers.Wait()
		close(chunks)
		return nil
	})
	for range o.Workers {
		g.Go(func() error {
			for c := range chunks {
				data := *c.data
				id := r.BlobID(data)
				// ctx, not gctx: SaveBlob starts uploads that must outlive
				// this group, which cancels gctx when it ends.
				if _, err := r.SaveBlob(ctx, repo.DataBlob, id, data); err != nil {
					return fmt.Errorf("store %s: %w", c.f.file.Name, err)
				}
				c.f.mu.Lock()
				c.f.chunks[c.seq] = id
				c.f.mu.Unlock()
				bufs.put(c.data)
			}
			return nil
		})
	}
	return g.Wait()
}

// chunkBufs are the chunk buffers in circulation between readers and
// workers. A buffer that grew past size for a long chunk is not kept: kept,
// it would stay that large, and in time every buffer would be as large as
// the longest chunk (a first backup with 2 MiB average chunks: 139 MiB of
// live heap, most of it 8 MiB buffers holding 2 MiB chunks).
type chunkBufs struct {
	size int
	pool sync.Pool
}

func newChunkBufs(size int) *chunkBufs {
	b := &chunkBufs{size: size}
	b.pool.New = func() any { p := make([]byte, 0, size); return &p }
	return b
}

func (b *chunkBufs) get() *[]byte { return b.pool.Get().(*[]byte) }

func (b *chunkBufs) put(p *[]byte) {
	if cap(*p) <= b.size {
		b.pool.Put(p)
	}
}

// openAndRead opens j's file, if any of its bytes are to be read, reads
// them (readFile) and closes it. Opened, it must still be the file
// planFiles saw (source.Frozen.OpenStat).
func openAndRead(ctx context.Context, ch *chunker.Chunker, frozen *source.Frozen, j *fileJob, bufs *chunkBufs, out chan<- chunkJob, pr *Progress, lim *limit.Limiter, allowChanges bool) error {
	if j.changed && !allowChanges {
		return changedError(frozen, j)
	}
	if j.from >= j.out.Length {
		return nil
	}
	rd, err := frozen.OpenStat(j.file, j.st)
	if errors.Is(err, source.ErrFileChanged) && j.file.Walked != nil {
		if !allowChanges {
			return changedError(frozen, j)
		}
		// Take the file as it is now, whole: as the descriptor opened
		// finds it, so that a file that keeps changing is read once more,
		// not refused again between a stat and an open.
		j.changed = true
		if rd, err = frozen.Open(j.file); err != nil {
			return err
		}
		j.st = source.FileStat{Length: rd.Length(), Identity: rd.Identity()}
		j.out.Length, j.from, j.reused = rd.Length(), 0, File{}
		j.out.Identity = treeIdentity(j.file, rd.Identity())
	}
	if err != nil {
		return err
	}
	defer rd.Close()
	if err := readFile(ctx, ch, j, rd, bufs, out, pr, lim); err != nil {
		return err
	}
	if j.file.Walked == nil {
		return nil
	}
	// A directory backup's file must be as it was before it was read.
	fi, err := os.Lstat(filepath.Join(frozen.Dir, filepath.FromSlash(j.file.Name)))
	if err != nil {
		return fmt.Errorf("file %s in %s vanished while it was read: %w", j.file.Name, frozen.Dir, err)
	}
	if now := source.IdentityOf(fi); now != j.st.Identity {
		if !allowChanges {
			return changedError(frozen, j)
		}
		j.changed = true
	}
	return nil
}

// ErrChanged is wrapped by the error about a file of a directory backup
// that changed while it was read.
var ErrChanged = errors.New("file changed while it was read")

func changedError(frozen *source.Frozen, j *fileJob) error {
	return fmt.Errorf("file %s in %s changed while it was read: %w (is something writing to the directory? back up a checkpoint, or pass --allow-changes to save a snapshot marked partial)",
		j.file.Name, frozen.Dir, ErrChanged)
}

// readBlock is how much readFile reads at a time after a chunk's first Min
// bytes. The cut is found only after the block holding it is read,
// and the block's bytes after the cut are copied to start the next chunk:
// half a block a chunk on average, a tenth of the bytes at the default
// sizes. Reading and chunking alone ran at the same speed with blocks of
// 64 KiB to 512 KiB (BenchmarkReadFile), as did whole backups; 256 KiB
// stays in the L2 cache between the read and the chunker's scan.
const readBlock = 256 << 10

// readFile reads j from j.from to its length through rd, cuts it into
// chunks and sends them to the workers.
//
// Bytes are read straight into the buffer of the chunk they belong to and
// fed to the chunker as they arrive. No cut comes before Min, so the first
// Min bytes of a chunk are read at once, the rest in blocks of at most Min
// bytes: a block then holds at most one cut, and only its tail after the
// cut is copied, once.
func readFile(ctx context.Context, ch *chunker.Chunker, j *fileJob, rd *source.Reader, bufs *chunkBufs, out chan<- chunkJob, pr *Progress, lim *limit.Limiter) error {
	p := ch.Params()
	block := min(readBlock, p.Min)
	s := ch.NewStream()
	dp := bufs.get()
	cur := (*dp)[:0] // the chunk being read; *dp is set from it when sent
	defer func() {
		if dp != nil {
			*dp = cur[:0]
			bufs.put(dp)
		}
	}()
	for pos, end := j.from, j.out.Length; pos < end; {
		n := len(cur)
		want := min(max(p.Min-n, block), p.Max-n)
		if left := end - pos; left < int64(want) {
			want = int(left)
		}
		if want <= 0 { // never: the chunker cuts at Max at the latest
			return fmt.Errorf("chunker made no progress in %s at offset %d", j.file.Name, pos)
		}
		cur = grow(cur, want, p.Max)
		if err := lim.WaitN(ctx, want); err != nil {
			return err
		}
		got, err := readAt(rd, cur[n:n+want], pos)
		pr.BytesDone.Add(int64(got))
		if err != nil {
			return fmt.Errorf("read %s: %w", j.file.Name, err)
		}
		cur = cur[:n+want]
		pos += int64(want)
		for fresh := cur[n:]; ; {
			k, cut := s.Next(fresh)
			if !cut {
				break
			}
			// The chunk ends k bytes into fresh; what follows starts the
			// next one.
			next := bufs.get()
			rest := append((*next)[:0], fresh[k:]...)
			*dp = cur[:len(cur)-len(fresh)+k]
			err := send(ctx, j, dp, out)
			dp, cur, fresh = next, rest, rest
			if err != nil {
				return err
			}
		}
	}
	if len(cur) == 0 {
		return nil
	}
	*dp = cur
	err := send(ctx, j, dp, out)
	dp = nil // the worker returns it to the pool
	return err
}

// grow returns b with room for n more bytes. It doubles the capacity, up
// to limit (a chunk never needs more), so a long chunk is moved a few times,
// not once a block.
func grow(b []byte, n, limit int) []byte {
	if len(b)+n <= cap(b) {
		return b
	}
	nb := make([]byte, len(b), max(len(b)+n, min(2*cap(b), limit)))
	copy(nb, b)
	return nb
}

// send hands the next chunk of j to the workers.
func send(ctx context.Context, j *fileJob, data *[]byte, out chan<- chunkJob) error {
	j.mu.Lock()
	seq := len(j.chunks)
	j.chunks = append(j.chunks, repo.ID{})
	j.sizes = append(j.sizes, uint32(len(*data)))
	j.mu.Unlock()
	select {
	case out <- chunkJob{f: j, seq: seq, data: data}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func readAt(rd *source.Reader, p []byte, off int64) (int, error) {
	got, err := rd.ReadAt(p, off)
	if got == len(p) {
		return got, nil
	}
	if err == nil {
		err = fmt.Errorf("short read at offset %d", off)
	}
	return got, err
}

// waitFor sleeps until at, by now's clock; it fails when now is already
// later than at by more than late.
func waitFor(ctx context.Context, at time.Time, late time.Duration, now func() time.Time) error {
	d := at.Sub(now())
	if d < -late {
		return fmt.Errorf("%w: ready %v after the moment %s, more than the %v allowed", ErrMissedFreeze, (-d).Round(time.Millisecond), at.Format(time.RFC3339Nano), late)
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
