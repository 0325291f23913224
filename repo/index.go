package repo

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// ErrNotIndexed is returned (wrapped) for a blob the loaded index does not
// name: not in the repository, or stored after the index was loaded.
var ErrNotIndexed = errors.New("not in the repository index")

// BlobType says what a blob holds.
type BlobType uint8

const (
	DataBlob BlobType = 0 // a chunk of a file
	TreeBlob BlobType = 1 // a snapshot's file list
)

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return fmt.Sprintf("blobtype(%d)", uint8(t))
}

// Compression of one stored blob.
type Compression uint8

const (
	CompressionNone Compression = 0
	CompressionZstd Compression = 1
)

// BlobEntry locates one blob inside a pack.
type BlobEntry struct {
	ID          ID
	Type        BlobType
	Compression Compression
	Offset      uint32 // of the sealed blob in the pack
	Length      uint32 // sealed length: nonce, ciphertext, tag
	RawLength   uint32 // plaintext length
}

// PackBlobs is one pack and the blobs it holds.
type PackBlobs struct {
	PackID ID
	Blobs  []BlobEntry
}

// IndexData is the content of one index file.
type IndexData struct {
	Supersedes []ID // index files this one replaces (written by prune)
	Packs      []PackBlobs
}

const (
	indexMagic   = "SNAPIDX"
	indexVersion = 1
	// Caps on counts read from storage, so a corrupt index cannot make the
	// decoder allocate without limit before it notices.
	maxIndexPacks    = 1 << 24
	maxBlobsPerPack  = 1 << 20
	maxSupersedes    = 1 << 20
	blobEntryMinSize = IDSize + 2 + 3 // id, type, compression, three one-byte uvarints
)

// EncodeIndex serializes d (docs/design.md, "Index files").
func EncodeIndex(d *IndexData) []byte {
	n := len(indexMagic) + 1 + 2*binary.MaxVarintLen64 + len(d.Supersedes)*IDSize
	for _, p := range d.Packs {
		n += IDSize + binary.MaxVarintLen64 + len(p.Blobs)*(IDSize+2+3*binary.MaxVarintLen32)
	}
	b := make([]byte, 0, n)
	b = append(b, indexMagic...)
	b = append(b, indexVersion)
	b = binary.AppendUvarint(b, uint64(len(d.Supersedes)))
	for _, id := range d.Supersedes {
		b = append(b, id[:]...)
	}
	b = binary.AppendUvarint(b, uint64(len(d.Packs)))
	for _, p := range d.Packs {
		b = append(b, p.PackID[:]...)
		b = binary.AppendUvarint(b, uint64(len(p.Blobs)))
		for _, e := range p.Blobs {
			b = append(b, e.ID[:]...)
			b = append(b, byte(e.Type), byte(e.Compression))
			b = binary.AppendUvarint(b, uint64(e.Offset))
			b = binary.AppendUvarint(b, uint64(e.Length))
			b = binary.AppendUvarint(b, uint64(e.RawLength))
		}
	}
	return b
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{ErrCorrupt}, args...)...)
	}
}

func (d *decoder) uvarint(what string, max uint64) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("truncated or invalid %s", what)
		return 0
	}
	if v > max {
		d.fail("%s %d exceeds %d", what, v, max)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) id(what string) ID {
	var id ID
	if d.err != nil {
		return id
	}
	if len(d.b) < IDSize {
		d.fail("truncated %s", what)
		return id
	}
	copy(id[:], d.b)
	d.b = d.b[IDSize:]
	return id
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) < 1 {
		d.fail("truncated %s", what)
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// DecodeIndex parses an index file's plaintext, checking every field.
func DecodeIndex(b []byte) (*IndexData, error) {
	if len(b) < len(indexMagic)+1 || string(b[:len(indexMagic)]) != indexMagic {
		return nil, fmt.Errorf("%w: not an index (bad magic)", ErrCorrupt)
	}
	if v := b[len(indexMagic)]; v == 0 {
		return nil, fmt.Errorf("%w: index format version 0", ErrCorrupt)
	} else if v != indexVersion {
		return nil, fmt.Errorf("index format version %d is not supported by this snap (it reads %d); upgrade snap", v, indexVersion)
	}
	d := &decoder{b: b[len(indexMagic)+1:]}
	out := &IndexData{}
	ns := d.uvarint("supersedes count", maxSupersedes)
	if d.err == nil && ns*IDSize > uint64(len(d.b)) {
		d.fail("supersedes count %d larger than the data", ns)
	}
	for i := uint64(0); i < ns && d.err == nil; i++ {
		out.Supersedes = append(out.Supersedes, d.id("superseded index id"))
	}
	np := d.uvarint("pack count", maxIndexPacks)
	if d.err == nil && np*(IDSize+1) > uint64(len(d.b)) {
		d.fail("pack count %d larger than the data", np)
	}
	if d.err == nil {
		out.Packs = make([]PackBlobs, 0, np)
	}
	for i := uint64(0); i < np && d.err == nil; i++ {
		p := PackBlobs{PackID: d.id("pack id")}
		nb := d.uvarint("blob count", maxBlobsPerPack)
		if d.err == nil && nb*blobEntryMinSize > uint64(len(d.b)) {
			d.fail("blob count %d larger than the data", nb)
		}
		if d.err == nil {
			p.Blobs = make([]BlobEntry, 0, nb)
		}
		for j := uint64(0); j < nb && d.err == nil; j++ {
			e := BlobEntry{ID: d.id("blob id")}
			e.Type = BlobType(d.byte("blob type"))
			e.Compression = Compression(d.byte("compression"))
			e.Offset = uint32(d.uvarint("blob offset", 1<<32-1))
			e.Length = uint32(d.uvarint("blob length", 1<<32-1))
			e.RawLength = uint32(d.uvarint("blob raw length", 1<<32-1))
			if d.err == nil {
				if err := e.validate(); err != nil {
					d.fail("pack %s blob %d: %v", p.PackID.Str(), j, err)
				}
			}
			p.Blobs = append(p.Blobs, e)
		}
		out.Packs = append(out.Packs, p)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return out, nil
}

func (e BlobEntry) validate() error {
	if e.Type > TreeBlob {
		return fmt.Errorf("unknown blob type %d", e.Type)
	}
	if e.Compression > CompressionZstd {
		return fmt.Errorf("unknown compression %d", e.Compression)
	}
	if e.Length < Overhead {
		return fmt.Errorf("sealed length %d shorter than the encryption overhead", e.Length)
	}
	if e.Compression == CompressionNone && e.Length != e.RawLength+Overhead {
		return fmt.Errorf("uncompressed blob with length %d and raw length %d", e.Length, e.RawLength)
	}
	if uint64(e.Offset)+uint64(e.Length) > 1<<32-1 {
		return fmt.Errorf("blob end %d beyond the 4 GiB pack limit", uint64(e.Offset)+uint64(e.Length))
	}
	return nil
}

// Location is where a blob is stored, as the in-memory index keeps it.
type Location struct {
	Pack ID
	BlobEntry
}

type memEntry struct {
	pack        uint32 // index into Index.packs
	offset      uint32
	length      uint32
	rawLength   uint32
	typ         BlobType
	compression Compression
}

// Index is the in-memory index: every blob of every pack named by the
// index files loaded, plus those added by this process. A blob id maps to a
// 24-byte entry and pack ids are stored once, so a million blobs take well
// under 100 MiB.
type Index struct {
	mu      sync.RWMutex
	packs   []ID
	packNum map[ID]uint32
	blobs   map[ID]memEntry
}

func NewIndex() *Index {
	return &Index{packNum: map[ID]uint32{}, blobs: map[ID]memEntry{}}
}

// Grow makes room for n more blobs at once, so that loading a large index
// does not rehash the table again and again as it doubles (in a 2M-blob
// repository that was half of LoadIndex's time). It does nothing once the
// index holds blobs: a map cannot grow in place.
func (x *Index) Grow(n int) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if len(x.blobs) == 0 && n > 0 {
		x.blobs = make(map[ID]memEntry, n)
	}
}

// AddPack records every blob of p. A blob already known keeps its first
// location: any copy is as good as another.
func (x *Index) AddPack(p PackBlobs) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n, ok := x.packNum[p.PackID]
	if !ok {
		n = uint32(len(x.packs))
		x.packs = append(x.packs, p.PackID)
		x.packNum[p.PackID] = n
	}
	for _, e := range p.Blobs {
		if _, ok := x.blobs[e.ID]; ok {
			continue
		}
		x.blobs[e.ID] = memEntry{pack: n, offset: e.Offset, length: e.Length, rawLength: e.RawLength, typ: e.Type, compression: e.Compression}
	}
}

// Has reports whether the blob is stored.
func (x *Index) Has(id ID) bool {
	x.mu.RLock()
	_, ok := x.blobs[id]
	x.mu.RUnlock()
	return ok
}

// Lookup returns where a blob is stored.
func (x *Index) Lookup(id ID) (Location, bool) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	e, ok := x.blobs[id]
	if !ok {
		return Location{}, false
	}
	return Location{Pack: x.packs[e.pack], BlobEntry: BlobEntry{
		ID: id, Type: e.typ, Compression: e.compression, Offset: e.offset, Length: e.length, RawLength: e.rawLength,
	}}, true
}

// Len is the number of blobs.
func (x *Index) Len() int {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return len(x.blobs)
}

// Packs returns the ids of all packs the index names, sorted.
func (x *Index) Packs() []ID {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := slices.Clone(x.packs)
	slices.SortFunc(out, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

func sortEntries(s []BlobEntry) {
	slices.SortFunc(s, func(a, b BlobEntry) int { return int(int64(a.Offset) - int64(b.Offset)) })
}
