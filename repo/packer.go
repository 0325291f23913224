package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// indexEvery is how many uploaded packs are collected before an index file
// is written mid-backup, so an interrupted backup's work can be found again.
const indexEvery = 16

// SaveStats counts what a Saver stored.
type SaveStats struct {
	BlobsNew   int64 // blobs written
	BytesNew   int64 // their plaintext bytes
	BytesSaved int64 // bytes written to packs (compressed, sealed)
	Packs      int64 // packs uploaded
	Indexes    int64 // index files written
}

// SaverOptions choose how a Saver dedups and indexes. The zero value is
// a backup's: dedup, an index file every 16 packs and at Flush.
type SaverOptions struct {
	// Repack stores every blob it is given, even one the index knows (its
	// old copy is about to be deleted), and leaves the in-memory index
	// alone: that still locates the old copies until the caller's new
	// index names the packs Packs returns.
	Repack bool
	// IndexEvery is how many stored packs are collected before an index
	// file names them; Flush writes one for the rest. 1 indexes each pack
	// as soon as it is stored, so a prune killed while repacking leaves
	// packs the next one finds. Zero: 16.
	IndexEvery int
	// NoIndex writes no index file: the caller indexes what Packs returns,
	// or the packs stay unindexed until a prune past its margin removes
	// them.
	NoIndex bool
	// Owner is whose index files the session writes (as for
	// SaveIndexAs): "" for the repository's scope, a host tag or
	// SharedOwner (prune keeps each owner's packs apart).
	Owner string
}

// Saver is one write session: blobs in, packs and index files out. Save
// compresses and seals a blob in the caller's goroutine, so callers run it
// in parallel, and appends it to the open pack of its type; a pack that
// reaches the target size is stored in the background, at most
// Connections at once, and indexed once stored (packs, then index). The
// first upload or index error is sticky: Save and Flush return it from
// then on. It is safe for concurrent use.
//
// Memory: a blob is sealed into a buffer from the Repository's pool (one
// in use per Save in progress) and copied into its pack. An open pack is
// built in memory, in an aligned buffer of the target size plus 64 KiB
// that a pool reuses once the pack is stored, or, where the backend
// spools (local, GCS), streamed to it in two 1 MiB blocks. A Save that
// fills a pack while every upload slot is taken waits for one, holding
// that pack: that is the backpressure. So a session holds Connections
// packs uploading, one open per blob type and one per waiting Save, or
// two blocks each where the backend spools.
type Saver struct {
	r     *Repository
	o     SaverOptions
	every int
	slots chan struct{} // one taken per upload in flight

	mu        sync.Mutex
	open      map[BlobType]*packBuilder
	pending   map[ID]struct{} // saved, pack not stored yet (not with Repack)
	unindexed []PackBlobs     // stored, not yet in an index file
	packs     []PackBlobs     // stored (with Repack)
	indexes   []ID            // index files written
	err       error           // first upload or index error; sticky
	uploads   sync.WaitGroup

	stats struct {
		blobsNew, bytesNew, bytesSaved, packs, indexes atomic.Int64
	}
	builders sync.Pool // of in-memory *packBuilder
}

// NewSaver starts a write session. What it accepted is known to be
// stored and indexed once Flush returns nil.
func (r *Repository) NewSaver(o SaverOptions) *Saver {
	every := o.IndexEvery
	if every <= 0 {
		every = indexEvery
	}
	return &Saver{
		r: r, o: o, every: every, slots: make(chan struct{}, r.conns),
		open: map[BlobType]*packBuilder{}, pending: map[ID]struct{}{},
	}
}

// The Repository's own session, for backups: SaveBlob, Known, Flush and
// Stats use it.

// Stats reports what was saved since the repository was opened.
func (r *Repository) Stats() SaveStats { return r.saver.Stats() }

// Known reports whether a blob is stored or about to be.
func (r *Repository) Known(id ID) bool { return r.saver.Known(id) }

// SaveBlob stores plain as a blob with the given id (which must be
// BlobID(plain)) unless the repository has it already; see Saver.Save.
func (r *Repository) SaveBlob(ctx context.Context, t BlobType, id ID, plain []byte) (bool, error) {
	return r.saver.Save(ctx, t, id, plain)
}

// Flush stores and indexes everything SaveBlob accepted; see Saver.Flush.
func (r *Repository) Flush(ctx context.Context) error { return r.saver.Flush(ctx) }

// Stats reports what the session saved so far.
func (s *Saver) Stats() SaveStats {
	st := &s.stats
	return SaveStats{st.blobsNew.Load(), st.bytesNew.Load(), st.bytesSaved.Load(), st.packs.Load(), st.indexes.Load()}
}

// Known reports whether a blob is in the index or saved by this session
// and about to be stored. A miss adds the parked shared index files
// first (a parent's chunk that a prune moved to a shared pack).
func (s *Saver) Known(id ID) bool {
	s.mu.Lock()
	_, ok := s.pending[id]
	s.mu.Unlock()
	if ok || s.r.idx.Has(id) {
		return true
	}
	_, found := s.r.Lookup(id)
	return found
}

// Save stores plain as a blob with the given id (which must be
// BlobID(plain)), unless the session dedups and the blob is known. It
// returns whether the blob was new. plain is not retained.
//
// A full pack is uploaded in the background under ctx, so ctx must stay
// live until Flush returns; cancelling it abandons the uploads.
func (s *Saver) Save(ctx context.Context, t BlobType, id ID, plain []byte) (bool, error) {
	if len(plain) > maxBlobSize {
		return false, fmt.Errorf("blob of %d bytes exceeds the %d byte limit", len(plain), maxBlobSize)
	}
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return false, err
	}
	for !s.o.Repack {
		if _, ok := s.pending[id]; ok || s.r.idx.Has(id) {
			s.mu.Unlock()
			return false, nil
		}
		if s.r.parkedN.Load() != 0 {
			// New to the index as loaded: a blob only a parked shared
			// file names is written again until the new data passes
			// their size (a bounded loss prune merges); then they are
			// added and it is looked up again.
			s.mu.Unlock()
			added, err := s.r.unparkFor(len(plain))
			if err != nil {
				return false, err
			}
			s.mu.Lock()
			if added {
				continue
			}
			if _, ok := s.pending[id]; ok {
				s.mu.Unlock()
				return false, nil
			}
		}
		s.pending[id] = struct{}{}
		break
	}
	s.mu.Unlock()

	sealed, comp := s.r.sealBlob(plain)
	e := BlobEntry{ID: id, Type: t, Compression: comp, RawLength: uint32(len(plain))}

	s.mu.Lock()
	// A blob that would take the open pack past the target size closes it
	// first, so a pack's buffer never grows past its allocation; one that
	// fills it closes it after, so a full pack does not wait for the next.
	var full *packBuilder
	pb := s.open[t]
	if pb != nil && pb.size()+len(sealed) > s.r.cfg.PackSize {
		full, pb = pb, nil
		delete(s.open, t)
	}
	if pb == nil {
		var err error
		if pb, err = s.newBuilder(ctx); err != nil {
			delete(s.pending, id)
			s.mu.Unlock()
			s.r.putBuf(sealed)
			err = fmt.Errorf("start a pack: %w", err)
			if full != nil {
				err = errors.Join(err, s.upload(ctx, full))
			}
			return false, err
		}
		s.open[t] = pb
	}
	pb.add(e, sealed)
	var filled *packBuilder
	if pb.size() >= s.r.cfg.PackSize {
		filled = pb
		delete(s.open, t)
	}
	s.mu.Unlock()
	s.r.putBuf(sealed)
	s.stats.blobsNew.Add(1)
	s.stats.bytesNew.Add(int64(len(plain)))

	var errs []error
	for _, pb := range []*packBuilder{full, filled} {
		if pb != nil {
			if err := s.upload(ctx, pb); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return true, errors.Join(errs...)
}

func (s *Saver) newBuilder(ctx context.Context) (*packBuilder, error) {
	if b, ok := s.builders.Get().(*packBuilder); ok {
		b.buf, b.n, b.entries = b.buf[:0], 0, b.entries[:0]
		return b, nil
	}
	// In memory: room for the blobs and the header; a blob larger than the
	// target size gets a pack of its own, which grows as needed.
	return newPackBuilder(ctx, s.r.be, s.r.cfg.PackSize+64<<10)
}

func (r *Repository) getBuf(n int) []byte {
	if bp, ok := r.sealBufs.Get().(*[]byte); ok && cap(*bp) >= n {
		return (*bp)[:0]
	}
	return make([]byte, 0, max(n, 1<<20))
}

func (r *Repository) putBuf(b []byte) {
	r.sealBufs.Put(&b)
}

// upload finishes pb and stores it in the background once an upload slot
// is free: it blocks while they are all taken, which is a writer's
// backpressure. If ctx ends first, pb is dropped. Storing a pack that
// exists counts as success: same name, same bytes.
func (s *Saver) upload(ctx context.Context, pb *packBuilder) error {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		pb.abort()
		return ctx.Err()
	}
	s.uploads.Add(1)
	go func() {
		defer s.uploads.Done()
		defer func() { <-s.slots }()
		id, size, err := pb.store(ctx, s.r.be, s.r.keys)
		if errors.Is(err, ErrExists) {
			err = nil
		}
		pbs := PackBlobs{PackID: id, Blobs: slices.Clone(pb.entries)}
		if pb.buf != nil {
			s.builders.Put(pb) // in-memory builders keep their buffer
		}
		if err != nil {
			s.fail(fmt.Errorf("save %s: %w", packName(id), err))
			return
		}
		s.stored(ctx, pbs, size)
	}()
	return nil
}

// stored records a stored pack and writes an index file once enough
// packs wait for one.
func (s *Saver) stored(ctx context.Context, pbs PackBlobs, size int) {
	s.stats.packs.Add(1)
	s.stats.bytesSaved.Add(int64(size))
	if !s.o.Repack {
		s.r.idx.AddPack(pbs)
	}
	s.mu.Lock()
	for _, e := range pbs.Blobs {
		delete(s.pending, e.ID)
	}
	if s.o.Repack {
		s.packs = append(s.packs, pbs)
	}
	var batch []PackBlobs
	if !s.o.NoIndex {
		s.unindexed = append(s.unindexed, pbs)
		if len(s.unindexed) >= s.every {
			batch, s.unindexed = s.unindexed, nil
		}
	}
	s.mu.Unlock()
	if batch != nil {
		if err := s.saveIndex(ctx, batch); err != nil {
			s.fail(err)
		}
	}
}

// saveIndex writes the one kind of index file a Saver writes: the packs
// it stored since the last one.
func (s *Saver) saveIndex(ctx context.Context, packs []PackBlobs) error {
	id, err := s.r.SaveIndexAs(ctx, s.o.Owner, &IndexData{Packs: packs})
	if err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	s.stats.indexes.Add(1)
	s.mu.Lock()
	s.indexes = append(s.indexes, id)
	s.mu.Unlock()
	return nil
}

// packName names a pack in messages; a pack that failed before it was
// whole has no id yet.
func packName(id ID) string {
	if id == (ID{}) {
		return "a new pack"
	}
	return Handle{Type: PackFile, Name: id.String()}.String()
}

func (s *Saver) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

// takeOpen removes the open packs from the session.
func (s *Saver) takeOpen() []*packBuilder {
	s.mu.Lock()
	defer s.mu.Unlock()
	var open []*packBuilder
	for t, pb := range s.open {
		open = append(open, pb)
		delete(s.open, t)
	}
	return open
}

// Flush uploads the open packs, waits for every upload and writes an
// index file for all packs not yet in one. After Flush returns nil, every
// blob Save accepted is durably stored and (unless NoIndex) indexed:
// packs, then index. The session stays usable.
func (s *Saver) Flush(ctx context.Context) error {
	var errs []error
	for _, pb := range s.takeOpen() {
		if err := s.upload(ctx, pb); err != nil {
			errs = append(errs, err)
		}
	}
	s.uploads.Wait()
	s.mu.Lock()
	if s.err != nil {
		errs = append(errs, s.err)
	}
	batch := s.unindexed
	s.unindexed = nil
	s.mu.Unlock()
	// Index what did upload even when something failed, so the next backup
	// finds those packs instead of storing their blobs again.
	if len(batch) > 0 {
		if err := s.saveIndex(ctx, batch); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// abort drops the packs not yet uploaded and waits for the uploads under
// way.
func (s *Saver) abort() {
	for _, pb := range s.takeOpen() {
		pb.abort()
	}
	s.uploads.Wait()
}

// Packs returns the packs stored so far, with Repack (else nil), and
// their total size.
func (s *Saver) Packs() ([]PackBlobs, int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.packs), s.stats.bytesSaved.Load()
}

// Indexes returns the index files written so far.
func (s *Saver) Indexes() []ID {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.indexes)
}
