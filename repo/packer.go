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

// SaveStats counts what a repository stored since it was opened.
type SaveStats struct {
	BlobsNew   int64 // blobs written
	BytesNew   int64 // their plaintext bytes
	BytesSaved int64 // bytes written to packs (compressed, sealed)
	Packs      int64 // packs uploaded
	Indexes    int64 // index files written
}

// packer groups sealed blobs into packs and uploads them with bounded
// parallelism. A blob is "pending" from SaveBlob until its pack's upload
// finished and it is in the in-memory index.
type packer struct {
	r *Repository

	mu       sync.Mutex
	open     map[BlobType]*packBuilder
	pending  map[ID]struct{}
	unindex  []PackBlobs // uploaded, not yet in an index file
	uploadWG sync.WaitGroup
	sem      chan struct{}
	err      error // first upload error; sticky

	stats struct {
		blobsNew, bytesNew, bytesSaved, packs, indexes atomic.Int64
	}
	bufPool  sync.Pool // of *packBuilder
	blobBufs sync.Pool // of *[]byte, for compressing and sealing
}

func (p *packer) init(r *Repository) {
	p.r = r
	p.open = map[BlobType]*packBuilder{}
	p.pending = map[ID]struct{}{}
	p.sem = make(chan struct{}, r.conns)
}

// Stats reports what was saved so far.
func (r *Repository) Stats() SaveStats {
	s := &r.packer.stats
	return SaveStats{s.blobsNew.Load(), s.bytesNew.Load(), s.bytesSaved.Load(), s.packs.Load(), s.indexes.Load()}
}

// Known reports whether a blob is stored or about to be.
func (r *Repository) Known(id ID) bool {
	p := &r.packer
	p.mu.Lock()
	_, ok := p.pending[id]
	p.mu.Unlock()
	return ok || r.idx.Has(id)
}

// SaveBlob stores plain as a blob with the given id (which must be
// BlobID(plain)) unless the repository has it already. It compresses and
// seals in the caller's goroutine, so callers run it in parallel. It returns
// whether the blob was new. plain is not retained.
//
// A full pack is uploaded in the background under ctx, so ctx must stay live
// until Flush returns; cancelling it abandons the uploads.
func (r *Repository) SaveBlob(ctx context.Context, t BlobType, id ID, plain []byte) (bool, error) {
	if len(plain) > maxBlobSize {
		return false, fmt.Errorf("blob of %d bytes exceeds the %d byte limit", len(plain), maxBlobSize)
	}
	p := &r.packer
	p.mu.Lock()
	if p.err != nil {
		err := p.err
		p.mu.Unlock()
		return false, err
	}
	if _, ok := p.pending[id]; ok || r.idx.Has(id) {
		p.mu.Unlock()
		return false, nil
	}
	p.pending[id] = struct{}{}
	p.mu.Unlock()

	sealed, comp := r.sealBlob(plain)
	e := BlobEntry{ID: id, Type: t, Compression: comp, RawLength: uint32(len(plain))}

	p.mu.Lock()
	// A blob that would take the open pack past the target size closes it
	// first, so a pack's buffer never grows past its allocation.
	var full *packBuilder
	pb := p.open[t]
	if pb != nil && pb.size() > 0 && pb.size()+len(sealed) > r.cfg.PackSize {
		full, pb = pb, nil
		delete(p.open, t)
	}
	if pb == nil {
		var err error
		if pb, err = p.newBuilder(ctx); err != nil {
			delete(p.pending, id)
			p.mu.Unlock()
			r.putBuf(sealed)
			err = fmt.Errorf("start a pack: %w", err)
			if full != nil {
				err = errors.Join(err, p.upload(ctx, full))
			}
			return false, err
		}
		p.open[t] = pb
	}
	pb.add(e, sealed)
	p.mu.Unlock()
	r.putBuf(sealed)
	p.stats.blobsNew.Add(1)
	p.stats.bytesNew.Add(int64(len(plain)))

	if full != nil {
		return true, p.upload(ctx, full)
	}
	return true, nil
}

func (p *packer) newBuilder(ctx context.Context) (*packBuilder, error) {
	if b, ok := p.bufPool.Get().(*packBuilder); ok {
		b.buf, b.n, b.entries = b.buf[:0], 0, b.entries[:0]
		return b, nil
	}
	// In memory: room for the blobs and the header; a blob larger than the
	// target size gets a pack of its own, which grows as needed.
	return newPackBuilder(ctx, p.r.be, p.r.cfg.PackSize+64<<10)
}

func (r *Repository) getBuf(n int) []byte {
	if bp, ok := r.packer.blobBufs.Get().(*[]byte); ok && cap(*bp) >= n {
		return (*bp)[:0]
	}
	return make([]byte, 0, max(n, 1<<20))
}

func (r *Repository) putBuf(b []byte) {
	r.packer.blobBufs.Put(&b)
}

// storeInBackground finishes pb and stores it in a goroutine counted by
// wg, once one of sem's slots is free: it blocks while they are all taken,
// which is a writer's backpressure. If ctx ends first, pb is dropped. done
// gets the pack's id and blobs, its size, and the error (storing a pack
// that exists counts as success: same name, same bytes).
func (r *Repository) storeInBackground(ctx context.Context, sem chan struct{}, wg *sync.WaitGroup, pb *packBuilder, done func(PackBlobs, int, error)) error {
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		pb.abort()
		return ctx.Err()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { <-sem }()
		id, size, err := pb.store(ctx, r.be, r.keys)
		if errors.Is(err, ErrExists) {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("save %s: %w", packName(id), err)
		}
		done(PackBlobs{PackID: id, Blobs: slices.Clone(pb.entries)}, size, err)
	}()
	return nil
}

// upload stores pb in the background, r.conns packs at a time, and indexes
// it once stored.
func (p *packer) upload(ctx context.Context, pb *packBuilder) error {
	return p.r.storeInBackground(ctx, p.sem, &p.uploadWG, pb, func(pbs PackBlobs, size int, err error) {
		if pb.buf != nil {
			p.bufPool.Put(pb) // in-memory builders keep their buffer
		}
		if err != nil {
			p.fail(err)
			return
		}
		p.stats.packs.Add(1)
		p.stats.bytesSaved.Add(int64(size))
		p.r.idx.AddPack(pbs)
		p.mu.Lock()
		for _, e := range pbs.Blobs {
			delete(p.pending, e.ID)
		}
		p.unindex = append(p.unindex, pbs)
		var batch []PackBlobs
		if len(p.unindex) >= indexEvery {
			batch, p.unindex = p.unindex, nil
		}
		p.mu.Unlock()
		if batch != nil {
			if err := p.saveIndex(ctx, batch); err != nil {
				p.fail(err)
			}
		}
	})
}

// abortOpen drops the packs not yet uploaded and waits for the uploads
// under way.
func (p *packer) abortOpen() {
	p.mu.Lock()
	for t, pb := range p.open {
		pb.abort()
		delete(p.open, t)
	}
	p.mu.Unlock()
	p.uploadWG.Wait()
}

// packName names a pack in messages; a pack that failed before it was
// whole has no id yet.
func packName(id ID) string {
	if id == (ID{}) {
		return "a new pack"
	}
	return Handle{Type: PackFile, Name: id.String()}.String()
}

func (p *packer) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

func (p *packer) saveIndex(ctx context.Context, packs []PackBlobs) error {
	if _, err := p.r.SaveIndex(ctx, &IndexData{Packs: packs}); err != nil {
		return fmt.Errorf("save index: %w", err)
	}
	p.stats.indexes.Add(1)
	return nil
}

// Flush uploads the open packs, waits for every upload and writes an index
// file for all packs not yet in one. After Flush returns nil, every blob
// SaveBlob accepted is durably stored and indexed: packs, then index.
func (r *Repository) Flush(ctx context.Context) error {
	p := &r.packer
	p.mu.Lock()
	var open []*packBuilder
	for t, pb := range p.open {
		open = append(open, pb)
		delete(p.open, t)
	}
	p.mu.Unlock()
	var errs []error
	for _, pb := range open {
		if err := p.upload(ctx, pb); err != nil {
			errs = append(errs, err)
		}
	}
	p.uploadWG.Wait()
	p.mu.Lock()
	if p.err != nil {
		errs = append(errs, p.err)
	}
	batch := p.unindex
	p.unindex = nil
	p.mu.Unlock()
	// Index what did upload even when something failed, so the next backup
	// finds those packs instead of storing their blobs again.
	if len(batch) > 0 {
		if err := p.saveIndex(ctx, batch); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
