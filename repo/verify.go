package repo

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/zeebo/blake3"
)

// BadBlob is a blob that failed verification.
type BadBlob struct {
	Entry BlobEntry
	Err   error
}

// CheckPack downloads pack id, stored with size bytes, and verifies all of
// it: the header authenticates, decodes and tiles the pack; every blob
// authenticates, decompresses to its recorded length and hashes to its id;
// and the pack's bytes hash to its name. It returns the header's entries
// and the blobs that failed. err is for a pack that could not be read or
// whose header or name is wrong. It holds one blob in memory at a time.
func (r *Repository) CheckPack(ctx context.Context, id ID, size int64) ([]BlobEntry, []BadBlob, error) {
	entries, err := r.ReadPackHeader(ctx, id, size)
	if err != nil {
		return nil, nil, err
	}
	h := Handle{Type: PackFile, Name: id.String()}
	var bad []BadBlob
	var sum ID
	bufs := getBlobBufs()
	defer putBlobBufs(bufs)
	err = r.be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		bad = bad[:0] // Load may call again after a retry
		hasher := blake3.New()
		for _, e := range entries {
			if err := checkBlobSize(e); err != nil {
				// Hashed for the pack's name, never held.
				if _, err := io.CopyN(hasher, rd, int64(e.Length)); err != nil {
					return err
				}
				bad = append(bad, BadBlob{Entry: e, Err: err})
				continue
			}
			buf := bufs.sealedFor(int64(e.Length))
			if _, err := io.ReadFull(rd, buf); err != nil {
				return err
			}
			hasher.Write(buf)
			if _, err := r.openBlob(e, buf, bufs.plainFor(e, int64(e.Length))); err != nil {
				bad = append(bad, BadBlob{Entry: e, Err: err})
			}
		}
		if _, err := io.Copy(hasher, rd); err != nil {
			return err
		}
		hasher.Sum(sum[:0])
		return nil
	})
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return entries, bad, fmt.Errorf("load %s: %w: shorter than its header says", h, ErrCorrupt)
	}
	if err != nil {
		return entries, bad, fmt.Errorf("load %s: %w", h, err)
	}
	if sum != id {
		return entries, bad, fmt.Errorf("%s: %w: content does not match its name", h, ErrCorrupt)
	}
	return entries, bad, nil
}

// PackSizeFor is the size of a pack that holds n blobs of blobBytes
// sealed bytes in all: the blobs, the sealed header with one entry each,
// and the trailer.
func PackSizeFor(blobBytes int64, n int) int64 {
	return blobBytes + int64(n)*packHeaderEntrySize + Overhead + packTrailerSize
}
