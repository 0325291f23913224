package repo

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
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
	maxBlobEntrySize = IDSize + 2 + 3*binary.MaxVarintLen32
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
	out := &IndexData{}
	err := walkIndex(b, indexVisitor{
		superseded: func(id ID) { out.Supersedes = append(out.Supersedes, id) },
		packCount:  func(n int) { out.Packs = make([]PackBlobs, 0, n) },
		pack: func(id ID, blobs int) {
			out.Packs = append(out.Packs, PackBlobs{PackID: id, Blobs: make([]BlobEntry, 0, blobs)})
		},
		blob: func(e BlobEntry) {
			p := &out.Packs[len(out.Packs)-1]
			p.Blobs = append(p.Blobs, e)
		},
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// indexVisitor receives the parts of an index file as walkIndex checks
// them, each only once it is known to be valid, and nothing after an
// error.
type indexVisitor struct {
	superseded func(id ID)
	packCount  func(n int)            // before the first pack
	pack       func(id ID, blobs int) // before the pack's blobs
	blob       func(e BlobEntry)      // of the last pack
	// headerOnly stops the walk after the supersedes list, which is then
	// all that is checked.
	headerOnly bool
}

// IndexSupersedes returns what the index file with plaintext b supersedes,
// reading only the header: for a file kept parked until needed.
func IndexSupersedes(b []byte) ([]ID, error) {
	var out []ID
	err := walkIndex(b, indexVisitor{superseded: func(id ID) { out = append(out, id) }, headerOnly: true})
	return out, err
}

// walkIndex is the one decoder of index files (docs/design.md, "Index
// files"): DecodeIndex builds an IndexData from it, Index.AddEncoded adds
// the blobs straight to the in-memory index.
func walkIndex(b []byte, v indexVisitor) error {
	if len(b) < len(indexMagic)+1 || string(b[:len(indexMagic)]) != indexMagic {
		return fmt.Errorf("%w: not an index (bad magic)", ErrCorrupt)
	}
	if ver := b[len(indexMagic)]; ver == 0 {
		return fmt.Errorf("%w: index format version 0", ErrCorrupt)
	} else if ver != indexVersion {
		return fmt.Errorf("index format version %d is not supported by this snap (it reads %d); upgrade snap", ver, indexVersion)
	}
	d := &decoder{b: b[len(indexMagic)+1:]}
	ns := d.uvarint("supersedes count", maxSupersedes)
	if d.err == nil && ns*IDSize > uint64(len(d.b)) {
		d.fail("supersedes count %d larger than the data", ns)
	}
	for i := uint64(0); i < ns && d.err == nil; i++ {
		id := d.id("superseded index id")
		if d.err == nil {
			v.superseded(id)
		}
	}
	if v.headerOnly {
		return d.err
	}
	np := d.uvarint("pack count", maxIndexPacks)
	if d.err == nil && np*(IDSize+1) > uint64(len(d.b)) {
		d.fail("pack count %d larger than the data", np)
	}
	if d.err == nil {
		v.packCount(int(np))
	}
	for i := uint64(0); i < np && d.err == nil; i++ {
		pack := d.id("pack id")
		nb := d.uvarint("blob count", maxBlobsPerPack)
		if d.err == nil && nb*blobEntryMinSize > uint64(len(d.b)) {
			d.fail("blob count %d larger than the data", nb)
		}
		if d.err == nil {
			v.pack(pack, int(nb))
		}
		for j := uint64(0); j < nb && d.err == nil; j++ {
			e, n, ok := blobEntryFast(d.b)
			if ok {
				d.b = d.b[n:]
			} else {
				e = BlobEntry{ID: d.id("blob id")}
				e.Type = BlobType(d.byte("blob type"))
				e.Compression = Compression(d.byte("compression"))
				e.Offset = uint32(d.uvarint("blob offset", 1<<32-1))
				e.Length = uint32(d.uvarint("blob length", 1<<32-1))
				e.RawLength = uint32(d.uvarint("blob raw length", 1<<32-1))
			}
			if d.err == nil {
				if err := e.validate(); err != nil {
					d.fail("pack %s blob %d: %v", pack.Str(), j, err)
				}
			}
			if d.err == nil {
				v.blob(e)
			}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// blobEntryFast decodes the blob entry at the start of b when b surely
// holds a whole one (the longest an entry can be) and each of its numbers
// is at most 5 bytes and fits 32 bits: nearly always, and then without the
// checked path's per-field calls, which a load of millions of entries
// feels. Anything else (ok false) is left to the checked path, which
// accepts or rejects it with its error: the result is the same either way
// (FuzzAddEncoded).
func blobEntryFast(b []byte) (e BlobEntry, n int, ok bool) {
	if len(b) < maxBlobEntrySize {
		return e, 0, false
	}
	e.ID = ID(b[:IDSize])
	e.Type, e.Compression = BlobType(b[IDSize]), Compression(b[IDSize+1])
	n = IDSize + 2
	var v [3]uint32
	for k := range v {
		var x uint32
		for i := uint(0); ; i++ {
			c := b[n]
			n++
			if c < 0x80 {
				if i == 4 && c > 0x0f {
					return e, 0, false // over 32 bits
				}
				x |= uint32(c) << (7 * i)
				break
			}
			if i == 4 {
				return e, 0, false // longer than 5 bytes
			}
			x |= uint32(c&0x7f) << (7 * i)
		}
		v[k] = x
	}
	e.Offset, e.Length, e.RawLength = v[0], v[1], v[2]
	return e, n, true
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

// Index is the in-memory index: every blob of every pack named by the
// index files loaded, plus those added by this process. Safe for
// concurrent use.
//
// Most blobs sit in tables sorted by id, one for each first byte of the
// id (blobPart), under 48 bytes a blob all told (docs/performance.md,
// "In-memory index"). Blobs added since wait in pending, unsorted lists
// (by first byte too) that cost one append a blob (a load adds millions at
// once), until the index is next read: then a few go into recent, a map,
// and many are sorted and merged with the tables into new ones, a part at
// a time. A part of a 2M-blob index is some 8,000 blobs, so a merge works
// in the CPU's cache and needs little memory besides the index's. recent
// is merged in too once it holds a 32nd of the tables, so a backup that
// adds its packs one at a time while other goroutines call Has pays a map
// insert a blob and now and then a merge.
//
// Every blob is in exactly one of sorted and recent, or else pending, which
// may also repeat blobs of any of the three. The copy found first is the
// one kept (any copy is as good as another), and found from then on.
type Index struct {
	mu       sync.RWMutex
	packs    []ID
	packNum  map[ID]uint32
	sorted   [256]blobPart // by the id's first byte
	nsorted  int
	recent   map[ID]loc
	pending  [256][]rec // by the id's first byte
	npending int
	// growHint is how many pending blobs Grow announced: AddPack merges
	// pending on its own only past that (see addedPending).
	growHint int
	// odd holds the blobs whose loc says escapePack: a type, compression
	// or pack number a loc has no room for. Never seen in a valid
	// repository below 2^30 packs, but AddPack takes whatever it is given.
	odd map[ID]memEntry
}

type memEntry struct {
	pack        uint32 // index into Index.packs
	offset      uint32
	length      uint32
	rawLength   uint32
	typ         BlobType
	compression Compression
}

// loc is a blob's place in 16 bytes: pf is the pack number (into
// Index.packs) << 2 | type << 1 | compression.
type loc struct {
	off, length, raw, pf uint32
}

// rec is one blob not yet in a sorted table: 48 bytes.
type rec struct {
	id ID
	loc
}

const (
	locSize    = 16
	packBits   = 30
	escapePack = 1<<packBits - 1 // a loc's pack number saying "see Index.odd"
	// recent is merged into the sorted tables when it would hold more than
	// max(mergeMin, a 32nd of theirs) blobs: a merge copies the tables, so
	// it has to be rare, and recent costs a map entry a blob.
	mergeMin = 1 << 13
	// AddPack merges pending on its own once it holds 4 times as many
	// blobs as the rest of the index plus pendingMin (or as many as Grow
	// announced), so an index that is never read stays bounded too.
	pendingMin = 1 << 16
	// keepPending is the capacity of a part of pending kept for reuse once
	// it is empty again (a backup adds a few blobs a pack to each).
	keepPending = 8
)

func NewIndex() *Index {
	return &Index{packNum: map[ID]uint32{}}
}

// Grow says that about n more blobs are coming at once (a load): they
// are then kept apart, unsorted, until the index is read or they are all
// there, and sorted in one go.
func (x *Index) Grow(n int) {
	if n <= 0 {
		return
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	// Ids are hashes: a part gets n/256, give or take a few times the
	// square root of that (an overflow only costs a part's reallocation).
	per := n/len(x.pending) + 4*int(math.Sqrt(float64(n/len(x.pending)))) + 1
	for i := range x.pending {
		x.pending[i] = slices.Grow(x.pending[i], per)
	}
	x.growHint = x.npending + n
}

// AddPack records every blob of p. A blob already known keeps its
// location: any copy is as good as another.
func (x *Index) AddPack(p PackBlobs) {
	x.mu.Lock()
	defer x.mu.Unlock()
	n := x.packNumber(p.PackID)
	for _, e := range p.Blobs {
		r, _ := x.compact(n, e)
		x.addPending(r)
	}
	x.addedPending()
}

// AddEncoded adds every pack of an index file, given its plaintext,
// without building an IndexData: it checks the file exactly as DecodeIndex
// does and fails with the same error, adding nothing then. It returns the
// index files this one supersedes; leaving out the files superseded is
// the caller's business, as it is with AddPack.
func (x *Index) AddEncoded(plain []byte) (supersedes []ID, err error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	a := indexAdder{x: x, npending: x.npending, packs: len(x.packs)}
	for i, p := range x.pending {
		a.pending[i] = len(p)
	}
	err = walkIndex(plain, indexVisitor{
		superseded: func(id ID) { a.supersedes = append(a.supersedes, id) },
		packCount:  func(int) {},
		pack:       func(id ID, _ int) { a.packNo = x.packNumber(id) },
		blob: func(e BlobEntry) {
			r, odd := x.compact(a.packNo, e)
			x.addPending(r)
			if odd {
				a.odd = append(a.odd, e.ID)
			}
		},
	})
	if err != nil {
		a.undo()
		return nil, err
	}
	x.addedPending()
	return a.supersedes, nil
}

// indexAdder is what AddEncoded keeps while it walks the file; x.mu is
// held.
type indexAdder struct {
	x          *Index
	pending    [256]int // lengths before, for undo
	npending   int
	packs      int
	odd        []ID // added to x.odd, for undo
	packNo     uint32
	supersedes []ID
}

// undo takes back what a failed AddEncoded added.
func (a *indexAdder) undo() {
	x := a.x
	for i, n := range a.pending {
		x.pending[i] = x.pending[i][:n]
	}
	x.npending = a.npending
	for _, id := range x.packs[a.packs:] {
		delete(x.packNum, id)
	}
	x.packs = x.packs[:a.packs]
	for _, id := range a.odd {
		delete(x.odd, id)
	}
}

// packNumber returns the number of a pack, giving it the next one if it
// is new. x.mu is held for writing.
func (x *Index) packNumber(id ID) uint32 {
	n, ok := x.packNum[id]
	if !ok {
		if x.packNum == nil {
			x.packNum = map[ID]uint32{}
		}
		n = uint32(len(x.packs))
		x.packs = append(x.packs, id)
		x.packNum[id] = n
	}
	return n
}

// compact is e as a rec, and whether it went to x.odd for want of room.
// x.mu is held for writing.
func (x *Index) compact(pack uint32, e BlobEntry) (rec, bool) {
	r := rec{id: e.ID, loc: loc{off: e.Offset, length: e.Length, raw: e.RawLength}}
	if pack < escapePack && e.Type <= 1 && e.Compression <= 1 {
		r.pf = pack<<2 | uint32(e.Type)<<1 | uint32(e.Compression)
		return r, false
	}
	r.pf = escapePack << 2
	if _, ok := x.odd[e.ID]; ok {
		return r, false // the copy there stands for this one
	}
	if x.odd == nil {
		x.odd = map[ID]memEntry{}
	}
	x.odd[e.ID] = memEntry{pack: pack, offset: e.Offset, length: e.Length, rawLength: e.RawLength, typ: e.Type, compression: e.Compression}
	return r, true
}

func (x *Index) addPending(r rec) {
	x.pending[r.id[0]] = append(x.pending[r.id[0]], r)
	x.npending++
}

// addedPending merges pending if it outgrew what Grow announced and the
// rest of the index. x.mu is held for writing.
func (x *Index) addedPending() {
	if x.npending > max(x.growHint, 4*(x.nsorted+len(x.recent))+pendingMin) {
		x.merge()
	}
}

// settle makes every pending blob findable in sorted or recent. x.mu is
// held for writing.
func (x *Index) settle() {
	if x.npending == 0 {
		return
	}
	if len(x.recent)+x.npending > max(mergeMin, x.nsorted/32) {
		x.merge()
		return
	}
	if x.recent == nil {
		x.recent = make(map[ID]loc, x.npending)
	}
	for i, part := range x.pending {
		for _, r := range part {
			if _, ok := x.locate(&r.id); !ok {
				x.recent[r.id] = r.loc
			}
		}
		if cap(part) > keepPending {
			x.pending[i] = nil
		} else {
			x.pending[i] = part[:0]
		}
	}
	x.npending, x.growHint = 0, 0
}

// merge makes new sorted tables of sorted, recent and pending. x.mu is
// held for writing.
func (x *Index) merge() {
	// What the index has keeps its place: a copy found once is the one
	// found from then on. Those in recent go here, those in sorted as each
	// part is merged.
	for i, part := range x.pending {
		if len(x.recent) == 0 {
			break
		}
		k := 0
		for _, r := range part {
			if _, ok := x.recent[r.id]; !ok {
				part[k] = r
				k++
			}
		}
		x.pending[i] = part[:k]
	}
	for id, l := range x.recent {
		x.pending[id[0]] = append(x.pending[id[0]], rec{id, l})
	}
	x.recent = nil
	for i, part := range x.pending {
		if len(part) == 0 {
			continue
		}
		sortRecsFrom(part, 8)
		// Equal ids are next to each other now, the lowest pack number first.
		k := 0
		for j := range part {
			if k == 0 || part[j].id != part[k-1].id {
				part[k] = part[j]
				k++
			}
		}
		if add := x.sorted[i].without(byte(i), part[:k]); len(add) > 0 {
			x.sorted[i] = x.sorted[i].merge(byte(i), add)
			x.nsorted += len(add)
		}
		x.pending[i] = nil // for the garbage collector, while the next parts merge
	}
	x.pending, x.npending, x.growHint = [256][]rec{}, 0, 0
}

// locate finds a blob in sorted or recent. x.mu is held.
func (x *Index) locate(id *ID) (loc, bool) {
	if l, ok := x.sorted[id[0]].find(id); ok {
		return l, true
	}
	l, ok := x.recent[*id]
	return l, ok
}

// readLocked runs f with x.mu held and nothing pending: for reading if
// nothing is, else for writing once pending is settled.
func (x *Index) readLocked(f func()) {
	x.mu.RLock()
	if x.npending == 0 {
		f()
		x.mu.RUnlock()
		return
	}
	x.mu.RUnlock()
	x.mu.Lock()
	defer x.mu.Unlock()
	x.settle()
	f()
}

// Has reports whether the blob is stored.
func (x *Index) Has(id ID) bool {
	var ok bool
	x.readLocked(func() { _, ok = x.locate(&id) })
	return ok
}

// Lookup returns where a blob is stored.
func (x *Index) Lookup(id ID) (Location, bool) {
	var out Location
	var ok bool
	x.readLocked(func() {
		var l loc
		if l, ok = x.locate(&id); !ok {
			return
		}
		if l.pf>>2 == escapePack {
			e := x.odd[id]
			out = Location{Pack: x.packs[e.pack], BlobEntry: BlobEntry{ID: id, Type: e.typ, Compression: e.compression,
				Offset: e.offset, Length: e.length, RawLength: e.rawLength}}
			return
		}
		out = Location{Pack: x.packs[l.pf>>2], BlobEntry: BlobEntry{ID: id, Type: BlobType(l.pf >> 1 & 1),
			Compression: Compression(l.pf & 1), Offset: l.off, Length: l.length, RawLength: l.raw}}
	})
	return out, ok
}

// Len is the number of blobs.
func (x *Index) Len() int {
	var n int
	x.readLocked(func() { n = x.nsorted + len(x.recent) })
	return n
}

// Packs returns the ids of all packs the index names, sorted.
func (x *Index) Packs() []ID {
	x.mu.RLock()
	defer x.mu.RUnlock()
	out := slices.Clone(x.packs)
	slices.SortFunc(out, func(a, b ID) int { return bytes.Compare(a[:], b[:]) })
	return out
}

// reset empties the index.
func (x *Index) reset() {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.packs = nil
	x.packNum = map[ID]uint32{}
	x.sorted, x.nsorted = [256]blobPart{}, 0
	x.recent, x.pending, x.npending, x.growHint, x.odd = nil, [256][]rec{}, 0, 0, nil
}

// blobPart is the blobs whose ids begin with one byte, in id order, each a
// record of stride bytes: the id without its first drop bytes, then its
// loc (little-endian). Bucket b is the records whose ids go on with the
// bits bits of b; it starts at starts[b], and starts[1<<bits] is n. The
// bits are chosen for 8 to 16 blobs a bucket (4 to 16 in parts of 1,024 to
// 4,095), so a lookup is a few comparisons close together. The part
// implies the first byte of its ids and a bucket the next bits/8: in parts
// of 1,024 blobs or more (an index of some 2^18), a record leaves out 2
// bytes, 46 bytes a record, under 48 a blob with its share of starts.
type blobPart struct {
	recs   []byte
	starts []uint32
	bits   uint
	drop   int
	n      int
}

func newBlobPart(n int) blobPart {
	if uint64(n) > math.MaxUint32 {
		panic("repo: more than 2^32 blobs in a part of the in-memory index")
	}
	p := blobPart{n: n}
	if n >= 16 {
		p.bits = uint(bits.Len(uint(n))) - 4
	}
	if n >= 1<<10 {
		p.bits = max(p.bits, 8) // 1 byte less a record pays for starts
	}
	p.drop = 1 + int(p.bits/8)
	p.recs = make([]byte, n*p.stride())
	p.starts = make([]uint32, 1<<p.bits+1)
	return p
}

func (p *blobPart) stride() int { return IDSize - p.drop + locSize }

// bucketOf is the bucket of an id in a part of 1<<bits buckets.
func bucketOf(id *ID, bits uint) uint64 {
	return binary.BigEndian.Uint64(id[:8]) << 8 >> (64 - bits) // 0 when bits is 0
}

func (p *blobPart) find(id *ID) (loc, bool) {
	if p.n == 0 {
		return loc{}, false
	}
	b := bucketOf(id, p.bits)
	lo, hi := int(p.starts[b]), int(p.starts[b+1])
	key := id[p.drop:]
	k0 := binary.BigEndian.Uint64(key)
	stride := p.stride()
	cmpAt := func(i int) int {
		r := p.recs[i*stride : (i+1)*stride]
		if c := cmp.Compare(binary.BigEndian.Uint64(r), k0); c != 0 {
			return c
		}
		return bytes.Compare(r[8:len(key)], key[8:])
	}
	for hi-lo > 16 { // ids that are not hashes
		m := int(uint(lo+hi) >> 1)
		if cmpAt(m) < 0 {
			lo = m + 1
		} else {
			hi = m + 1
		}
	}
	if lo == hi {
		return loc{}, false
	}
	// Among hashes, the bits after the bucket's are spread evenly: start
	// where the id would be if they were exactly so, and walk from there
	// (a record or two, in the same cache line or the next).
	m := lo + int(uint64(hi-lo)*(k0<<(p.bits%8)>>32)>>32)
	c := cmpAt(m)
	if c < 0 {
		for m++; m < hi; m++ {
			if c = cmpAt(m); c >= 0 {
				break
			}
		}
	} else if c > 0 {
		for m--; m >= lo; m-- {
			if c = cmpAt(m); c <= 0 {
				break
			}
		}
	}
	if c != 0 {
		return loc{}, false
	}
	return decodeLoc(p.recs[m*stride+len(key):]), true
}

// each calls f with every record of p in order and its id, whose first
// byte is first.
func (p *blobPart) each(first byte, f func(id *ID, r []byte)) {
	var id ID
	stride := p.stride()
	for b := 0; p.n > 0 && b+1 < len(p.starts); b++ {
		var prefix [8]byte
		binary.BigEndian.PutUint64(prefix[:], uint64(first)<<56|uint64(b)<<(56-p.bits))
		copy(id[:p.drop], prefix[:])
		for i := int(p.starts[b]); i < int(p.starts[b+1]); i++ {
			r := p.recs[i*stride : (i+1)*stride]
			copy(id[p.drop:], r)
			f(&id, r)
		}
	}
}

// without removes from add, which is sorted, the blobs p has: one walk
// through both, in cache, where a lookup each would not be.
func (p *blobPart) without(first byte, add []rec) []rec {
	if p.n == 0 {
		return add
	}
	k, j := 0, 0
	p.each(first, func(id *ID, _ []byte) {
		for ; j < len(add) && cmpIDs(&add[j].id, id) <= 0; j++ {
			if add[j].id != *id {
				add[k] = add[j]
				k++
			}
		}
	})
	k += copy(add[k:], add[j:])
	return add[:k]
}

// merge returns a new part of the blobs of p, whose ids begin with first,
// and of add, which is sorted and has none of p's.
func (p *blobPart) merge(first byte, add []rec) blobPart {
	t := newBlobPart(p.n + len(add))
	w, j := 0, 0
	p.each(first, func(id *ID, r []byte) {
		for ; j < len(add) && cmpIDs(&add[j].id, id) < 0; j++ {
			t.put(w, &add[j].id, add[j].loc)
			w++
		}
		t.put(w, id, decodeLoc(r[IDSize-p.drop:]))
		w++
	})
	for ; j < len(add); j++ {
		t.put(w, &add[j].id, add[j].loc)
		w++
	}
	for b := 1; b < len(t.starts); b++ {
		t.starts[b] += t.starts[b-1]
	}
	return t
}

// put writes record i and counts it in its bucket (merge turns the counts
// into starts).
func (p *blobPart) put(i int, id *ID, l loc) {
	stride := p.stride()
	r := p.recs[i*stride : (i+1)*stride]
	k := copy(r, id[p.drop:])
	binary.LittleEndian.PutUint32(r[k:], l.off)
	binary.LittleEndian.PutUint32(r[k+4:], l.length)
	binary.LittleEndian.PutUint32(r[k+8:], l.raw)
	binary.LittleEndian.PutUint32(r[k+12:], l.pf)
	p.starts[bucketOf(id, p.bits)+1]++
}

func decodeLoc(b []byte) loc {
	_ = b[locSize-1]
	return loc{binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:]),
		binary.LittleEndian.Uint32(b[8:]), binary.LittleEndian.Uint32(b[12:])}
}

// sortRecsFrom sorts s, whose ids share their first from bits, by id,
// then pack number and offset, in place: a radix sort on the ids' first 64
// bits, most significant first, up to 11 bits at a time (a pass moves
// records between at most 2,048 places, in cache for a part of a 2M-blob
// index), down to runs of a few records, which insertion sort orders.
func sortRecsFrom(s []rec, from uint) {
	if len(s) <= 16 {
		for i := 1; i < len(s); i++ {
			for j := i; j > 0 && cmpRec(s[j-1], s[j]) > 0; j-- {
				s[j-1], s[j] = s[j], s[j-1]
			}
		}
		return
	}
	if from == 64 {
		slices.SortFunc(s, cmpRec) // ids alike in 8 bytes: not hashes, or copies of one
		return
	}
	w := min(uint(bits.Len(uint(len(s))))-2, 11, 64-from) // about 4 records a part
	digit := func(r *rec) uint64 { return binary.BigEndian.Uint64(r.id[:8]) << from >> (64 - w) }
	next := make([]int, 1<<w+1) // next[d]: where the next record of part d goes
	for i := range s {
		next[digit(&s[i])+1]++
	}
	for d := 1; d < len(next); d++ {
		next[d] += next[d-1]
	}
	end := slices.Clone(next[1:]) // end[d]: where part d ends
	for d := range end {
		for next[d] < end[d] {
			t := digit(&s[next[d]])
			if t == uint64(d) {
				next[d]++
				continue
			}
			s[next[d]], s[next[t]] = s[next[t]], s[next[d]]
			next[t]++
		}
	}
	start := 0
	for _, e := range end {
		sortRecsFrom(s[start:e], from+w)
		start = e
	}
}

// cmpIDs is bytes.Compare of two ids, faster on ids that differ in their
// first 8 bytes (all but a few, among hashes).
func cmpIDs(a, b *ID) int {
	if c := cmp.Compare(binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])); c != 0 {
		return c
	}
	return bytes.Compare(a[8:], b[8:])
}

func cmpRec(a, b rec) int {
	if c := cmpIDs(&a.id, &b.id); c != 0 {
		return c
	}
	if c := cmp.Compare(a.pf, b.pf); c != 0 {
		return c
	}
	return cmp.Compare(a.off, b.off)
}

func sortEntries(s []BlobEntry) {
	slices.SortFunc(s, func(a, b BlobEntry) int { return int(int64(a.Offset) - int64(b.Offset)) })
}
