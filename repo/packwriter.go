package repo

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// PackWriter stores blobs in new packs for prune's repacking. Unlike
// SaveBlob it stores a blob even if the index knows it (that copy is about
// to be deleted). With indexEach, each pack gets an index file of its own
// as soon as it is stored, so a prune killed while repacking leaves packs
// the next prune finds and keeps, instead of copying the same blobs again;
// prune's final index supersedes those files. It is safe for concurrent
// use.
type PackWriter struct {
	r         *Repository
	sem       chan struct{}
	wg        sync.WaitGroup
	indexEach bool
	owner     string // of the index files indexEach writes (SaveIndexAs)

	mu      sync.Mutex
	open    map[BlobType]*packBuilder
	done    []PackBlobs
	indexes []ID // the index files indexEach wrote
	bytes   int64
	err     error
}

// NewPackWriter returns a writer that uploads up to Connections packs at
// once; memory is about (Connections + 2) packs, or two 1 MiB blocks each
// where the backend spools. With indexEach it writes an index file for
// each pack once it is stored.
func (r *Repository) NewPackWriter(indexEach bool) *PackWriter {
	return r.NewPackWriterFor("", indexEach)
}

// NewPackWriterFor is NewPackWriter whose index files are owner's (as for
// SaveIndexAs): prune keeps each host's packs apart.
func (r *Repository) NewPackWriterFor(owner string, indexEach bool) *PackWriter {
	return &PackWriter{r: r, sem: make(chan struct{}, r.conns), open: map[BlobType]*packBuilder{}, indexEach: indexEach, owner: owner}
}

// Add compresses, seals and packs plain, whose id is id.
func (w *PackWriter) Add(ctx context.Context, t BlobType, id ID, plain []byte) error {
	if len(plain) > maxBlobSize {
		return fmt.Errorf("blob of %d bytes exceeds the %d byte limit", len(plain), maxBlobSize)
	}
	sealed, comp := w.r.sealBlob(plain)
	e := BlobEntry{ID: id, Type: t, Compression: comp, RawLength: uint32(len(plain))}
	w.mu.Lock()
	if w.err != nil {
		err := w.err
		w.mu.Unlock()
		w.r.putBuf(sealed)
		return err
	}
	pb := w.open[t]
	if pb == nil {
		var err error
		pb, err = newPackBuilder(ctx, w.r.be, w.r.cfg.PackSize+w.r.chunkerP.Max+Overhead+64<<10)
		if err != nil {
			w.mu.Unlock()
			w.r.putBuf(sealed)
			return fmt.Errorf("start a pack: %w", err)
		}
		w.open[t] = pb
	}
	pb.add(e, sealed)
	var full *packBuilder
	if pb.size() >= w.r.cfg.PackSize {
		full = pb
		delete(w.open, t)
	}
	w.mu.Unlock()
	w.r.putBuf(sealed)
	if full != nil {
		return w.upload(ctx, full)
	}
	return nil
}

func (w *PackWriter) upload(ctx context.Context, pb *packBuilder) error {
	return w.r.storeInBackground(ctx, w.sem, &w.wg, pb, func(pbs PackBlobs, size int, err error) {
		var idx ID
		if err == nil && w.indexEach {
			idx, err = w.r.SaveIndexAs(ctx, w.owner, &IndexData{Packs: []PackBlobs{pbs}})
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			if w.err == nil {
				w.err = err
			}
			return
		}
		w.done = append(w.done, pbs)
		if w.indexEach {
			w.indexes = append(w.indexes, idx)
		}
		w.bytes += int64(size)
	})
}

// Indexes returns the index files written for the packs stored so far
// (with indexEach).
func (w *PackWriter) Indexes() []ID {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.indexes)
}

// Finish uploads the packs still open, waits for every upload and returns
// the packs written and their total size. After an error some packs may be
// stored: without indexEach no index names them, so a later prune removes
// them once they are older than its margin.
func (w *PackWriter) Finish(ctx context.Context) ([]PackBlobs, int64, error) {
	w.mu.Lock()
	var open []*packBuilder
	for t, pb := range w.open {
		open = append(open, pb)
		delete(w.open, t)
	}
	w.mu.Unlock()
	var errs []error
	for _, pb := range open {
		if err := w.upload(ctx, pb); err != nil {
			errs = append(errs, err)
		}
	}
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		errs = append(errs, w.err)
	}
	return w.done, w.bytes, errors.Join(errs...)
}
