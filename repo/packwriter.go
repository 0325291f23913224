package repo

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// PackWriter stores blobs in new packs and writes no index file: prune
// repacks with it and names the new packs in the one index it writes.
// Unlike SaveBlob it stores a blob even if the index knows it (that copy
// is about to be deleted). It is safe for concurrent use.
type PackWriter struct {
	r   *Repository
	sem chan struct{}
	wg  sync.WaitGroup

	mu    sync.Mutex
	open  map[BlobType]*packBuilder
	done  []PackBlobs
	bytes int64
	err   error
}

// NewPackWriter returns a writer that uploads up to Connections packs at
// once; memory is about (Connections + 2) packs, or two 1 MiB blocks each
// where the backend spools.
func (r *Repository) NewPackWriter() *PackWriter {
	return &PackWriter{r: r, sem: make(chan struct{}, r.conns), open: map[BlobType]*packBuilder{}}
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
		w.mu.Lock()
		defer w.mu.Unlock()
		if err != nil {
			if w.err == nil {
				w.err = err
			}
			return
		}
		w.done = append(w.done, pbs)
		w.bytes += int64(size)
	})
}

// Finish uploads the packs still open, waits for every upload and returns
// the packs written and their total size. After an error some packs may be
// stored: no index names them, so a later prune removes them once they are
// older than its margin.
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
