package repo

import (
	"encoding/binary"
	"fmt"
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

// packBuilder assembles one pack in memory.
type packBuilder struct {
	buf     []byte
	entries []BlobEntry
}

func (p *packBuilder) size() int { return len(p.buf) }

// add appends an already sealed blob.
func (p *packBuilder) add(e BlobEntry, sealed []byte) {
	e.Offset = uint32(len(p.buf))
	e.Length = uint32(len(sealed))
	p.buf = append(p.buf, sealed...)
	p.entries = append(p.entries, e)
}

// finish appends the sealed header and trailer and returns the pack bytes.
func (p *packBuilder) finish(k *Keys) []byte {
	hdr := make([]byte, 0, len(p.entries)*packHeaderEntrySize)
	for _, e := range p.entries {
		hdr = append(hdr, byte(e.Type), byte(e.Compression))
		hdr = binary.LittleEndian.AppendUint32(hdr, e.Length)
		hdr = binary.LittleEndian.AppendUint32(hdr, e.RawLength)
		hdr = append(hdr, e.ID[:]...)
	}
	start := len(p.buf)
	p.buf = k.Seal(p.buf, hdr)
	p.buf = binary.LittleEndian.AppendUint32(p.buf, uint32(len(p.buf)-start))
	return p.buf
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
	return n, nil
}
