package snapshot

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
)

// CopyOptions configure Copy.
type CopyOptions struct {
	RetryLock time.Duration // for either repository's lock
	Now       func() time.Time
	Log       *slog.Logger
}

// CopiedSnapshot is one snapshot of the source and its copy.
type CopiedSnapshot struct {
	Source repo.ID   `json:"source_id"`
	ID     repo.ID   `json:"id"` // the copy in the destination
	Time   time.Time `json:"time"`
	Host   string    `json:"host"`
	Files  int       `json:"files"`
	Bytes  int64     `json:"bytes"`
}

// CopyResult says what Copy did.
type CopyResult struct {
	Copied  []CopiedSnapshot `json:"copied"`
	Skipped []CopiedSnapshot `json:"skipped"` // in the destination already (ID: the copy there)
	// BlobsRead chunks were read from the source (BytesRead their
	// plaintext); BlobsKnown were not, because an earlier copy of the
	// same file's chunks is in the destination.
	BlobsRead  int64 `json:"blobs_read"`
	BytesRead  int64 `json:"bytes_read"`
	BlobsKnown int64 `json:"blobs_known"`
	// BlobsNew blobs (chunks and trees; BytesNew their plaintext) were
	// written to the destination in BytesStored bytes of packs; the
	// other chunks read were there already.
	BlobsNew    int64 `json:"blobs_new"`
	BytesNew    int64 `json:"bytes_new"`
	BytesStored int64 `json:"bytes_stored"`
	// RedisChains lists the chains of the redis snapshots copied, whose
	// tail objects stay in the source (copy takes snapshots only).
	RedisChains []string `json:"redis_chains_not_copied,omitempty"`
}

// origin is the id a snapshot had where it was first written.
func origin(sn *Snapshot) repo.ID {
	if sn.Original != nil {
		return *sn.Original
	}
	return sn.ID
}

// Copy copies snapshots of src, those pick chooses among all of src's
// (oldest first), into dst with exactly the blobs they need
// (docs/design.md, "Copy"). Blob ids are keyed per repository, so every
// chunk is named anew: read from src, verified, hashed with dst's key and
// stored unless dst has it; each tree is rewritten with the new ids,
// keeping the chunk boundaries. A snapshot whose original (Original, or
// its own id) dst holds already is skipped without reading anything of
// it, and chunks that an earlier copy of the same file put into dst are
// not read again. The copy keeps every field but its tree, parent and
// Original. It takes a shared lock on src and one on dst (as a backup
// does), and writes, per snapshot, packs, then index, then the snapshot.
func Copy(ctx context.Context, dst, src *repo.Repository, pick func([]*Snapshot) ([]*Snapshot, error), o CopyOptions) (*CopyResult, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	slk, err := src.Lock(ctx, repo.LockOptions{Command: "copy", Now: o.Now, RetryFor: o.RetryLock, Log: o.Log})
	if err != nil {
		return nil, fmt.Errorf("source repository %s: %w", src.Backend().Location(), err)
	}
	defer slk.Unlock(ctx)
	dlk, err := dst.Lock(ctx, repo.LockOptions{Command: "copy", Now: o.Now, RetryFor: o.RetryLock, Log: o.Log})
	if err != nil {
		return nil, err
	}
	defer dlk.Unlock(ctx)

	srcSnaps, err := List(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("source repository %s: %w", src.Backend().Location(), err)
	}
	chosen, err := pick(srcSnaps)
	if err != nil {
		return nil, err
	}
	// Oldest first, so a parent is copied before its child and the copy
	// can name the parent's copy.
	chosen = slices.Clone(chosen)
	slices.SortStableFunc(chosen, func(a, b *Snapshot) int { return a.Time.Compare(b.Time) })
	dstSnaps, err := List(ctx, dst)
	if err != nil {
		return nil, err
	}
	inDst := map[repo.ID]*Snapshot{} // by origin
	for _, sn := range dstSnaps {
		inDst[origin(sn)] = sn
	}
	res := &CopyResult{Copied: []CopiedSnapshot{}, Skipped: []CopiedSnapshot{}}
	var todo []*Snapshot
	for _, sn := range chosen {
		if d, ok := inDst[origin(sn)]; ok {
			res.Skipped = append(res.Skipped, CopiedSnapshot{Source: sn.ID, ID: d.ID, Time: sn.Time, Host: sn.Host, Files: d.Summary.Files, Bytes: d.Summary.Bytes})
			continue
		}
		todo = append(todo, sn)
	}
	if len(todo) == 0 {
		return res, nil
	}
	if err := src.LoadIndex(ctx); err != nil {
		return nil, fmt.Errorf("source repository %s: %w", src.Backend().Location(), err)
	}
	if err := dst.RefreshIndex(ctx); err != nil {
		return nil, err
	}
	c := &copier{dst: dst, src: src, known: map[repo.ID]repo.ID{}, res: res}
	if err := c.learn(ctx, srcSnaps, inDst, todo); err != nil {
		return nil, err
	}
	before := dst.Stats()
	bySrcID := map[repo.ID]*Snapshot{}
	for _, sn := range srcSnaps {
		bySrcID[sn.ID] = sn
	}
	chains := map[string]bool{}
	for _, sn := range todo {
		cp, err := c.copySnapshot(ctx, sn, bySrcID, inDst, dlk)
		if err != nil {
			return res, fmt.Errorf("copy snapshot %s: %w", sn.ID.Str(), err)
		}
		inDst[origin(sn)] = cp
		res.Copied = append(res.Copied, CopiedSnapshot{Source: sn.ID, ID: cp.ID, Time: sn.Time, Host: sn.Host, Files: cp.Summary.Files, Bytes: cp.Summary.Bytes})
		o.Log.Info("copied snapshot", "source", sn.ID.Str(), "copy", cp.ID.Str(), "host", sn.Host)
		if sn.Redis != nil && !chains[sn.Redis.Chain] {
			chains[sn.Redis.Chain] = true
			res.RedisChains = append(res.RedisChains, sn.Redis.Chain)
		}
	}
	after := dst.Stats()
	res.BlobsNew = after.BlobsNew - before.BlobsNew
	res.BytesNew = after.BytesNew - before.BytesNew
	res.BytesStored = after.BytesSaved - before.BytesSaved
	return res, nil
}

// copier carries what one Copy learned: known maps a source chunk id to
// its id in the destination.
type copier struct {
	dst, src *repo.Repository
	mu       sync.Mutex
	known    map[repo.ID]repo.ID
	res      *CopyResult
}

// learn fills known from the snapshots already copied: a source snapshot
// and its copy have the same files cut at the same boundaries, so their
// chunk lists pair up. Only pairs of the host and source of a snapshot to
// copy are read (their trees, no data), so a second copy of a growing
// database reads only the chunks that are new.
func (c *copier) learn(ctx context.Context, srcSnaps []*Snapshot, inDst map[repo.ID]*Snapshot, todo []*Snapshot) error {
	type key struct {
		host string
		src  Source
	}
	want := map[key]bool{}
	for _, sn := range todo {
		want[key{sn.Host, sn.Source}] = true
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.src.Connections())
	for _, sn := range srcSnaps {
		d, ok := inDst[origin(sn)]
		if !ok || !want[key{sn.Host, sn.Source}] {
			continue
		}
		g.Go(func() error {
			st, err := LoadTree(gctx, c.src, sn.Tree)
			if err != nil {
				return fmt.Errorf("source snapshot %s: %w", sn.ID.Str(), err)
			}
			dt, err := LoadTree(gctx, c.dst, d.Tree)
			if err != nil {
				// A damaged copy teaches nothing; its chunks are read again.
				return nil
			}
			files := make(map[string]File, len(dt.Files))
			for _, f := range dt.Files {
				files[f.Name] = f
			}
			c.mu.Lock()
			defer c.mu.Unlock()
			for _, f := range st.Files {
				df, ok := files[f.Name]
				if !ok || !slices.Equal(f.Sizes, df.Sizes) {
					continue
				}
				for i, id := range f.Chunks {
					c.known[id] = df.Chunks[i]
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// copySnapshot copies one snapshot's chunks and tree, then the snapshot.
func (c *copier) copySnapshot(ctx context.Context, sn *Snapshot, bySrcID map[repo.ID]*Snapshot, inDst map[repo.ID]*Snapshot, dlk *repo.Lock) (*Snapshot, error) {
	t, err := LoadTree(ctx, c.src, sn.Tree)
	if err != nil {
		return nil, err
	}
	byPack := map[repo.ID][]repo.BlobEntry{}
	queued := map[repo.ID]bool{}
	for _, f := range t.Files {
		for _, id := range f.Chunks {
			if queued[id] {
				continue
			}
			if did, ok := c.known[id]; ok && c.dst.Known(did) {
				c.res.BlobsKnown++
				queued[id] = true
				continue
			}
			loc, ok := c.src.Index().Lookup(id)
			if !ok {
				return nil, fmt.Errorf("file %s: chunk %s is not in the source's index (run snap check on the source)", f.Name, id.Str())
			}
			if loc.Type != repo.DataBlob {
				return nil, fmt.Errorf("file %s: chunk %s is a %s blob in the source's index (run snap check on the source)", f.Name, id.Str(), loc.Type)
			}
			queued[id] = true
			byPack[loc.Pack] = append(byPack[loc.Pack], loc.BlobEntry)
		}
	}
	packs := make([]repo.ID, 0, len(byPack))
	for id := range byPack {
		packs = append(packs, id)
	}
	slices.SortFunc(packs, compareID)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.src.Connections())
	for _, pack := range packs {
		g.Go(func() error {
			return c.src.LoadBlobs(gctx, pack, byPack[pack], func(e repo.BlobEntry, plain []byte) error {
				did := c.dst.BlobID(plain)
				// ctx, not gctx: SaveBlob starts uploads that must
				// outlive this group.
				if _, err := c.dst.SaveBlob(ctx, e.Type, did, plain); err != nil {
					return err
				}
				c.mu.Lock()
				c.known[e.ID] = did
				c.res.BlobsRead++
				c.res.BytesRead += int64(len(plain))
				c.mu.Unlock()
				return nil
			})
		})
	}
	if err := g.Wait(); err != nil {
		return nil, fmt.Errorf("read from the source: %w", err)
	}
	nt := &Tree{Files: make([]File, len(t.Files))}
	for i, f := range t.Files {
		f.Chunks = slices.Clone(f.Chunks)
		for j, id := range f.Chunks {
			did, ok := c.known[id]
			if !ok {
				return nil, fmt.Errorf("file %s: chunk %s was not copied (internal error)", f.Name, id.Str())
			}
			f.Chunks[j] = did
		}
		nt.Files[i] = f
	}
	tid, err := SaveTree(ctx, c.dst, nt)
	if err != nil {
		return nil, err
	}
	if err := c.dst.Flush(ctx); err != nil {
		return nil, err
	}
	cp := *sn
	cp.Tree = tid
	orig := origin(sn)
	cp.Original = &orig
	cp.Parent = nil
	if sn.Parent != nil {
		if p, ok := bySrcID[*sn.Parent]; ok {
			if d, ok := inDst[origin(p)]; ok {
				pid := d.ID
				cp.Parent = &pid
			}
		}
	}
	if err := dlk.Err(); err != nil {
		return nil, fmt.Errorf("snapshot not saved: %w", err)
	}
	if err := Save(ctx, c.dst, &cp); err != nil {
		return nil, err
	}
	return &cp, nil
}
