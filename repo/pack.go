package repo

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/snapbackup/snap/internal/directio"
)

// A pack is: sealed blobs back to back, then the sealed header, then the
// header's sealed length as a little-endian uint32 (docs/design.md, "Packs").
// A writer streams blobs and appends the header last; a reader fetches the
// tail first.

const (
	packHeaderEntrySize = 1 + 1 + 4 + 4 + IDSize
	packTrailerSize     = 4
	// MaxPackSize bounds a pack so that offsets fit in 32 bits.
	MaxPackSize = 1<<32 - 1
)

// packBuilder assembles one pack: streamed to a Spooler backend block by
// block, or else in memory and stored whole with Save.
type packBuilder struct {
	buf     []byte // in memory: the pack so far
	sw      *spoolWriter
	n       int // bytes so far
	entries []BlobEntry
}

func (p *packBuilder) size() int { return p.n }

// add appends an already sealed blob.
func (p *packBuilder) add(e BlobEntry, sealed []byte) {
	e.Offset = uint32(p.n)
	e.Length = uint32(len(sealed))
	p.write(sealed)
	p.entries = append(p.entries, e)
}

func (p *packBuilder) write(b []byte) {
	p.n += len(b)
	if p.sw != nil {
		p.sw.write(b)
		return
	}
	p.buf = append(p.buf, b...)
}

// finish appends the sealed header and trailer. In memory it returns the
// pack's bytes; a spooled pack's bytes are with the spool.
func (p *packBuilder) finish(k *Keys) []byte {
	hdr := make([]byte, 0, len(p.entries)*packHeaderEntrySize)
	for _, e := range p.entries {
		hdr = append(hdr, byte(e.Type), byte(e.Compression))
		hdr = binary.LittleEndian.AppendUint32(hdr, e.Length)
		hdr = binary.LittleEndian.AppendUint32(hdr, e.RawLength)
		hdr = append(hdr, e.ID[:]...)
	}
	sealed := k.Seal(make([]byte, 0, len(hdr)+Overhead+packTrailerSize), hdr)
	sealed = binary.LittleEndian.AppendUint32(sealed, uint32(len(sealed)))
	p.write(sealed)
	return p.buf
}

// newPackBuilder starts a pack: spooled when be can take streams, else in
// memory, in an aligned buffer of capacity size that backends may write
// without copying.
func newPackBuilder(ctx context.Context, be Backend, size int) (*packBuilder, error) {
	sp, ok := As[Spooler](be)
	if !ok {
		return &packBuilder{buf: directio.Alloc(size)[:0]}, nil
	}
	s, err := sp.Spool(ctx, PackFile)
	if err != nil {
		return nil, err
	}
	return &packBuilder{sw: newSpoolWriter(s)}, nil
}

// store finishes the pack and stores it in be (the backend it was made
// for), streaming the rest of a spooled pack. It returns the pack's id and
// size.
func (p *packBuilder) store(ctx context.Context, be Backend, k *Keys) (ID, int, error) {
	data := p.finish(k)
	if p.sw == nil {
		id := Hash(data)
		return id, len(data), be.Save(ctx, Handle{Type: PackFile, Name: id.String()}, data)
	}
	sw := p.sw
	p.sw = nil
	id, err := sw.close()
	if err != nil {
		return id, p.n, err
	}
	return id, p.n, sw.sp.Commit(ctx, Handle{Type: PackFile, Name: id.String()})
}

// abort discards a pack that will not be stored.
func (p *packBuilder) abort() {
	if p.sw != nil {
		p.sw.close()
		p.sw.sp.Abort()
		p.sw = nil
	}
}

// DecodePackHeader parses a pack header's plaintext; packSize is the size of
// the whole pack and sealedHeaderLen the length read from its trailer. Blob
// offsets are derived from the order and checked to tile the data region.
func DecodePackHeader(hdr []byte, packSize int64, sealedHeaderLen uint32) ([]BlobEntry, error) {
	if len(hdr)%packHeaderEntrySize != 0 {
		return nil, fmt.Errorf("%w: pack header length %d is not a multiple of %d", ErrCorrupt, len(hdr), packHeaderEntrySize)
	}
	dataEnd := packSize - packTrailerSize - int64(sealedHeaderLen)
	entries := make([]BlobEntry, 0, len(hdr)/packHeaderEntrySize)
	var off int64
	for len(hdr) > 0 {
		e := BlobEntry{Type: BlobType(hdr[0]), Compression: Compression(hdr[1])}
		e.Length = binary.LittleEndian.Uint32(hdr[2:])
		e.RawLength = binary.LittleEndian.Uint32(hdr[6:])
		copy(e.ID[:], hdr[10:10+IDSize])
		hdr = hdr[packHeaderEntrySize:]
		if off > MaxPackSize {
			return nil, fmt.Errorf("%w: pack header blob offset %d beyond the pack limit", ErrCorrupt, off)
		}
		e.Offset = uint32(off)
		if err := e.validate(); err != nil {
			return nil, fmt.Errorf("%w: pack header entry %d: %v", ErrCorrupt, len(entries), err)
		}
		off += int64(e.Length)
		entries = append(entries, e)
	}
	if off != dataEnd {
		return nil, fmt.Errorf("%w: pack header describes %d bytes of blobs, the pack holds %d", ErrCorrupt, off, dataEnd)
	}
	return entries, nil
}

// parsePackTrailer reads the sealed header length from a pack's last bytes.
func parsePackTrailer(tail []byte, packSize int64) (uint32, error) {
	if packSize < packTrailerSize+Overhead || len(tail) < packTrailerSize {
		return 0, fmt.Errorf("%w: pack of %d bytes is too short", ErrCorrupt, packSize)
	}
	n := binary.LittleEndian.Uint32(tail[len(tail)-packTrailerSize:])
	if int64(n) < Overhead || int64(n) > packSize-packTrailerSize {
		return 0, fmt.Errorf("%w: pack header length %d does not fit a pack of %d bytes", ErrCorrupt, n, packSize)
	}
	if n > maxPackHeader {
		return 0, fmt.Errorf("%w: pack header length %d over the %d bytes of %d entries", ErrCorrupt, n, maxPackHeader, maxBlobsPerPack)
	}
	return n, nil
}

// maxPackHeader bounds a sealed pack header, which is read whole: as many
// entries as an index may list for one pack (42 MiB).
const maxPackHeader = maxBlobsPerPack*packHeaderEntrySize + Overhead
