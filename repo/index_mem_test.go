package repo

// Tests of the in-memory index against a reference, and the measurements
// behind docs/performance.md, "In-memory index":
//
//	go test -run '^$' -bench 'Index(Load|Read)' -benchtime 3x ./repo/
//
// The benchmarks compare Index with mapIndex, the map it replaced, kept
// here for that only.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"
)

// Kinds of blob ids for memID.
const (
	hashed  = iota // random, as blob ids are
	skewed         // only the last byte and the first two vary, a little: long shared prefixes, many copies
	oneByte        // random but for the first byte, 0: all in one part of the index
)

func memID(rng *rand.Rand, kind int) ID {
	var id ID
	if kind == skewed {
		id[0], id[1], id[31] = byte(rng.IntN(3)), byte(rng.IntN(2)), byte(rng.IntN(200))
		return id
	}
	for i := 0; i < IDSize; i += 8 {
		binary.LittleEndian.PutUint64(id[i:], rng.Uint64())
	}
	if kind == oneByte {
		id[0] = 0
	}
	return id
}

// memPack is a pack of n blobs laid out one after another, as the packer
// writes them; ids come from pick.
func memPack(rng *rand.Rand, n int, pick func() ID) PackBlobs {
	p := PackBlobs{PackID: memID(rng, hashed)}
	off := uint32(0)
	for range n {
		e := BlobEntry{ID: pick(), Type: BlobType(rng.IntN(2)), Compression: Compression(rng.IntN(2)), Offset: off}
		e.RawLength = 512<<10 + rng.Uint32N(1<<20)
		e.Length = e.RawLength + Overhead
		if e.Compression == CompressionZstd {
			e.Length = Overhead + e.RawLength/2
		}
		off += e.Length
		p.Blobs = append(p.Blobs, e)
	}
	return p
}

// memRef is what the index must say: every location each blob was added
// at, and the one Lookup first gave (which must not change after).
type memRef struct {
	copies map[ID][]Location
	seen   map[ID]Location
}

func newMemRef() *memRef { return &memRef{copies: map[ID][]Location{}, seen: map[ID]Location{}} }

func (r *memRef) add(p PackBlobs) {
	for _, e := range p.Blobs {
		r.copies[e.ID] = append(r.copies[e.ID], Location{Pack: p.PackID, BlobEntry: e})
	}
}

// check looks id up in x and fails unless the answer is one of the
// copies added, the same as before.
func (r *memRef) check(t *testing.T, x *Index, id ID) {
	t.Helper()
	got, ok := x.Lookup(id)
	copies := r.copies[id]
	if ok != (len(copies) > 0) || x.Has(id) != ok {
		t.Fatalf("blob %s: Lookup says %v, Has %v, %d copies added", id.Str(), ok, x.Has(id), len(copies))
	}
	if !ok {
		return
	}
	if !slices.Contains(copies, got) {
		t.Fatalf("blob %s: Lookup gives %+v, not one of the copies added %+v", id.Str(), got, copies)
	}
	if prev, ok := r.seen[id]; ok && prev != got {
		t.Fatalf("blob %s moved from %+v to %+v", id.Str(), prev, got)
	}
	r.seen[id] = got
}

// checkAll checks Len and every blob, or with every > 1 one blob in
// every (the ids of a map come in random order).
func (r *memRef) checkAll(t *testing.T, x *Index, every int) {
	t.Helper()
	if x.Len() != len(r.copies) {
		t.Fatalf("Len %d, want %d", x.Len(), len(r.copies))
	}
	i := 0
	for id := range r.copies {
		if i%every == 0 {
			r.check(t, x, id)
		}
		i++
	}
}

// TestIndexReference adds packs of every size, with blobs repeated within
// and across packs and packs added twice, and checks every answer against
// a reference, through every path a blob takes: pending, recent, merges
// of either, tables that leave out 0, 1 and 2 bytes of the id.
func TestIndexReference(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ids        int // kind
		bulk       int // blobs loaded first, as LoadIndex does
		packs, max int // then packs of up to max blobs, one at a time
	}{
		{"small", hashed, 0, 60, 40},
		{"skewed", skewed, 0, 200, 60},
		{"recent-merges", hashed, 3000, 400, 300},
		{"one-part", oneByte, 3000, 300, 300}, // parts large enough to leave out 2 bytes, merged again
		{"large", hashed, 280_000, 30, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.bulk > 10_000 {
				t.Skip("large")
			}
			rng := rand.New(rand.NewPCG(7, uint64(len(tc.name))))
			x, ref := NewIndex(), newMemRef()
			var ids []ID
			pick := func() ID {
				if len(ids) > 0 && rng.IntN(8) == 0 {
					return ids[rng.IntN(len(ids))] // already added
				}
				id := memID(rng, tc.ids)
				ids = append(ids, id)
				return id
			}
			var added []PackBlobs
			if tc.bulk > 0 {
				x.Grow(tc.bulk)
				for n := 0; n < tc.bulk; {
					p := memPack(rng, min(2000, tc.bulk-n), pick)
					n += len(p.Blobs)
					x.AddPack(p)
					ref.add(p)
					added = append(added, p)
				}
			}
			for i := range tc.packs {
				p := memPack(rng, rng.IntN(tc.max+1), pick)
				if len(added) > 0 && rng.IntN(10) == 0 {
					p = added[rng.IntN(len(added))] // a pack added again
				}
				x.AddPack(p)
				ref.add(p)
				added = append(added, p)
				for range 20 {
					if rng.IntN(2) == 0 {
						ref.check(t, x, memID(rng, tc.ids))
					} else if len(ids) > 0 {
						ref.check(t, x, ids[rng.IntN(len(ids))])
					}
				}
				if i%50 == 49 {
					ref.checkAll(t, x, 1+tc.bulk/5000)
				}
			}
			ref.checkAll(t, x, 1+tc.bulk/20000)
			packs := map[ID]bool{}
			for _, p := range added {
				packs[p.PackID] = true
			}
			if got := x.Packs(); len(got) != len(packs) || !slices.IsSortedFunc(got, cmpID) {
				t.Fatalf("Packs gives %d, %d added, sorted %v", len(got), len(packs), slices.IsSortedFunc(got, cmpID))
			}
			if p := x.sorted[ids[0][0]]; p.n >= 1<<10 && p.drop != 2 {
				t.Fatalf("a part of %d blobs (%d in all) leaves out %d bytes of the id, want 2", p.n, x.nsorted, p.drop)
			}
		})
	}
}

func cmpID(a, b ID) int {
	for i := range a {
		if a[i] != b[i] {
			return int(a[i]) - int(b[i])
		}
	}
	return 0
}

// TestIndexConcurrent adds packs while other goroutines look blobs up:
// a blob whose pack was added is found from then on (run with -race).
func TestIndexConcurrent(t *testing.T) {
	x := NewIndex()
	rng := rand.New(rand.NewPCG(3, 4))
	var packs []PackBlobs
	for range 300 {
		packs = append(packs, memPack(rng, 1+rng.IntN(200), func() ID { return memID(rng, hashed) }))
	}
	x.Grow(5000)
	for _, p := range packs[:20] {
		x.AddPack(p)
	}
	var mu sync.Mutex
	done := 20 // packs[:done] are added
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for {
				mu.Lock()
				n := done
				mu.Unlock()
				p := packs[rng.IntN(n)]
				e := p.Blobs[rng.IntN(len(p.Blobs))]
				loc, ok := x.Lookup(e.ID)
				if !ok || !x.Has(e.ID) || loc.Pack != p.PackID || loc.BlobEntry != e {
					errs <- fmt.Errorf("blob %s of an added pack: %+v, %v", e.ID.Str(), loc, ok)
					return
				}
				if x.Has(memID(rng, hashed)) {
					errs <- errors.New("a random id is found")
					return
				}
				if n == len(packs) {
					return
				}
			}
		}()
	}
	for i := 20; i < len(packs); i++ {
		x.AddPack(packs[i])
		mu.Lock()
		done = i + 1
		mu.Unlock()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ref := newMemRef()
	for _, p := range packs {
		ref.add(p)
	}
	ref.checkAll(t, x, 1)
}

func TestIndexEdges(t *testing.T) {
	x := NewIndex()
	if x.Len() != 0 || x.Has(ID{}) || len(x.Packs()) != 0 {
		t.Fatal("an empty index is not empty")
	}
	if _, ok := x.Lookup(ID{1}); ok {
		t.Fatal("an empty index finds a blob")
	}
	var zero Index // usable without NewIndex, as before
	zero.AddPack(PackBlobs{PackID: ID{1}, Blobs: []BlobEntry{{ID: ID{2}, Length: Overhead}}})
	if !zero.Has(ID{2}) {
		t.Fatal("a zero Index loses its blob")
	}

	// Extremes of every field, every type and compression, and values no
	// valid index holds (they go to odd) through pending, recent and a merge.
	entries := []BlobEntry{
		{ID: ID{1}, Type: DataBlob, Compression: CompressionNone, Offset: 0, Length: Overhead, RawLength: 0},
		{ID: ID{2}, Type: TreeBlob, Compression: CompressionZstd, Offset: 1<<32 - 1 - Overhead, Length: Overhead, RawLength: 1<<32 - 1},
		{ID: ID{3}, Type: TreeBlob, Compression: CompressionNone, Offset: 0, Length: 1<<32 - 1, RawLength: 1<<32 - 1 - Overhead},
		{ID: ID{4}, Type: DataBlob, Compression: CompressionZstd, Offset: 1 << 31, Length: 1 << 30, RawLength: 1 << 31},
		{ID: ID{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, Type: BlobType(7), Compression: Compression(200), Offset: 5, Length: 6, RawLength: 7},
		{ID: ID{5}, Type: DataBlob, Compression: Compression(2), Offset: 1, Length: 2, RawLength: 3},
		{ID: ID{6}, Type: BlobType(255), Compression: CompressionNone, Offset: 9, Length: 8, RawLength: 7},
	}
	for _, settle := range []string{"recent", "merge"} {
		t.Run(settle, func(t *testing.T) {
			x, ref := NewIndex(), newMemRef()
			for i, e := range entries {
				p := PackBlobs{PackID: ID{0xa0, byte(i)}, Blobs: []BlobEntry{e}}
				x.AddPack(p)
				ref.add(p)
			}
			if settle == "merge" {
				x.mu.Lock()
				x.merge()
				x.mu.Unlock()
			}
			ref.checkAll(t, x, 1)
			if settle == "merge" && (x.nsorted != len(entries) || len(x.odd) != 3) {
				t.Fatalf("table of %d, %d odd", x.nsorted, len(x.odd))
			}
			// Copies of the odd ones, the first staying where it is.
			for i, e := range entries[4:] {
				e.Offset++
				p := PackBlobs{PackID: ID{0xb0, byte(i)}, Blobs: []BlobEntry{e}}
				x.AddPack(p)
				ref.add(p)
			}
			ref.checkAll(t, x, 1)
			x.reset()
			if x.Len() != 0 || x.Has(ID{1}) || len(x.Packs()) != 0 || x.odd != nil {
				t.Fatal("reset leaves blobs")
			}
		})
	}

	// A pack number past what a loc holds goes to odd whole.
	x = NewIndex()
	r, odd := x.compact(escapePack, BlobEntry{ID: ID{9}, Type: TreeBlob, Compression: CompressionZstd, Offset: 1, Length: 2, RawLength: 3})
	if !odd || r.pf>>2 != escapePack || x.odd[ID{9}] != (memEntry{pack: escapePack, offset: 1, length: 2, rawLength: 3, typ: TreeBlob, compression: CompressionZstd}) {
		t.Fatalf("pack %d: rec %+v, odd %v %+v", escapePack, r, odd, x.odd)
	}
	if r, odd := x.compact(escapePack-1, BlobEntry{ID: ID{8}, Type: TreeBlob, Compression: CompressionZstd}); odd || r.pf != (escapePack-1)<<2|3 {
		t.Fatalf("pack %d: rec %+v, odd %v", escapePack-1, r, odd)
	}
}

// TestIndexGrowThenRead is LoadIndex's use: Grow, packs, and the first
// read sorts them all in one table.
func TestIndexGrowThenRead(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	x, ref := NewIndex(), newMemRef()
	x.Grow(100_000)
	for range 50 {
		p := memPack(rng, 2000, func() ID { return memID(rng, hashed) })
		x.AddPack(p)
		ref.add(p)
	}
	if x.npending != 100_000 || x.nsorted != 0 {
		t.Fatalf("after Grow and its blobs: %d pending, %d sorted", len(x.pending), x.nsorted)
	}
	ref.checkAll(t, x, 1)
	if x.npending != 0 || x.recent != nil || x.nsorted != 100_000 {
		t.Fatalf("after a read: %d pending, %d recent, %d sorted", x.npending, len(x.recent), x.nsorted)
	}
	// Without Grow, pending is merged on its own before it outgrows the rest.
	x = NewIndex()
	for range 60 {
		x.AddPack(memPack(rng, 2000, func() ID { return memID(rng, hashed) }))
		if x.npending > 4*x.nsorted+pendingMin {
			t.Fatalf("%d pending next to %d sorted", x.npending, x.nsorted)
		}
	}
	if x.nsorted == 0 {
		t.Fatal("120,000 blobs never read stay pending")
	}
}

func TestSortRecs(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, n := range []int{0, 1, 2, 16, 17, 33, 500, 20_000} {
		for _, kind := range []int{hashed, skewed, oneByte} {
			s := make([]rec, n)
			for i := range s {
				s[i] = rec{id: memID(rng, kind), loc: loc{off: rng.Uint32N(4), pf: rng.Uint32N(4)}}
			}
			want := slices.Clone(s)
			slices.SortFunc(want, cmpRec)
			from := uint(0)
			if kind == oneByte {
				from = 8
			}
			sortRecsFrom(s, from)
			if !slices.Equal(s, want) {
				t.Fatalf("%d records of kind %d: sorted wrongly", n, kind)
			}
		}
	}
}

// addEncodedSeeds are valid index files and damaged ones.
func addEncodedSeeds() [][]byte {
	rng := rand.New(rand.NewPCG(11, 12))
	var out [][]byte
	for i := range 12 {
		d := &IndexData{}
		for range rng.IntN(3) {
			d.Supersedes = append(d.Supersedes, memID(rng, hashed))
		}
		for range rng.IntN(4) {
			d.Packs = append(d.Packs, memPack(rng, rng.IntN(5), func() ID { return memID(rng, []int{hashed, skewed, oneByte}[i%3]) }))
		}
		b := EncodeIndex(d)
		out = append(out, b, b[:len(b)*2/3], append(slices.Clone(b), 0))
		if len(b) > 60 {
			c := slices.Clone(b)
			c[len(c)-3] ^= 0x80
			out = append(out, c)
		}
	}
	return append(out, nil, []byte("SNAPIDX"), []byte("SNAPIDX\x02"), []byte("SNAPIDX\x01\x00\x00"))
}

// FuzzAddEncoded: AddEncoded accepts exactly what DecodeIndex accepts,
// with the same error, adds the same blobs as AddPack of the decoded
// packs, and on an error leaves the index as it was.
func FuzzAddEncoded(f *testing.F) {
	for _, b := range addEncodedSeeds() {
		f.Add(b)
	}
	rng := rand.New(rand.NewPCG(13, 14))
	before := []PackBlobs{memPack(rng, 3, func() ID { return memID(rng, hashed) })}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, derr := DecodeIndex(b)
		x, want := NewIndex(), NewIndex()
		for _, p := range before {
			x.AddPack(p)
			want.AddPack(p)
		}
		x.Has(ID{}) // something settled, something pending
		want.Has(ID{})
		x.AddPack(PackBlobs{PackID: ID{1}, Blobs: []BlobEntry{{ID: ID{2}, Length: Overhead}}})
		want.AddPack(PackBlobs{PackID: ID{1}, Blobs: []BlobEntry{{ID: ID{2}, Length: Overhead}}})
		sup, err := x.AddEncoded(b)
		if (err == nil) != (derr == nil) || (err != nil && err.Error() != derr.Error()) {
			t.Fatalf("AddEncoded: %v; DecodeIndex: %v", err, derr)
		}
		if err != nil {
			if sup != nil {
				t.Fatal("supersedes and an error")
			}
		} else {
			if !slices.Equal(sup, d.Supersedes) {
				t.Fatalf("supersedes %v, want %v", sup, d.Supersedes)
			}
			for _, p := range d.Packs {
				want.AddPack(p)
			}
		}
		if !slices.Equal(x.Packs(), want.Packs()) || x.Len() != want.Len() {
			t.Fatalf("%d packs and %d blobs, want %d and %d", len(x.Packs()), x.Len(), len(want.Packs()), want.Len())
		}
		ids := []ID{{2}, {3}}
		for _, p := range append(before, d.packs()...) {
			for _, e := range p.Blobs {
				ids = append(ids, e.ID)
			}
		}
		for _, id := range ids {
			got, ok := x.Lookup(id)
			exp, expOK := want.Lookup(id)
			if got != exp || ok != expOK {
				t.Fatalf("blob %s: %+v %v, want %+v %v", id.Str(), got, ok, exp, expOK)
			}
		}
	})
}

func (d *IndexData) packs() []PackBlobs {
	if d == nil {
		return nil
	}
	return d.Packs
}

// TestAddEncodedDamaged: every damaged seed is refused as DecodeIndex
// refuses it and adds nothing, also the blobs before the damage.
func TestAddEncodedDamaged(t *testing.T) {
	refused := 0
	for _, b := range addEncodedSeeds() {
		_, derr := DecodeIndex(b)
		x := NewIndex()
		_, err := x.AddEncoded(b)
		if (err == nil) != (derr == nil) || (err != nil && err.Error() != derr.Error()) {
			t.Fatalf("AddEncoded: %v; DecodeIndex: %v", err, derr)
		}
		if err != nil {
			refused++
			if x.Len() != 0 || len(x.Packs()) != 0 || len(x.packNum) != 0 || len(x.odd) != 0 {
				t.Fatalf("a refused file (%v) left %d blobs, %d packs", err, x.Len(), len(x.Packs()))
			}
		}
	}
	if refused < 20 {
		t.Fatalf("only %d damaged seeds refused", refused)
	}
}

// mapIndex is the index as it was before sortedBlobs: a Go map of blob
// id to a 24-byte entry. Kept for the benchmarks' comparison only.
type mapIndex struct {
	mu      sync.RWMutex
	packs   []ID
	packNum map[ID]uint32
	blobs   map[ID]memEntry
}

func (x *mapIndex) Grow(n int) { x.blobs = make(map[ID]memEntry, n) }

func (x *mapIndex) AddPack(p PackBlobs) {
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

func (x *mapIndex) Has(id ID) bool {
	x.mu.RLock()
	_, ok := x.blobs[id]
	x.mu.RUnlock()
	return ok
}

func (x *mapIndex) Lookup(id ID) (Location, bool) {
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

type blobIndex interface {
	Grow(int)
	AddPack(PackBlobs)
	Has(ID) bool
	Lookup(ID) (Location, bool)
}

// fleetPacks is n blobs in packs of 2,000 (a fleet repository's, issue
// 18), and the index files the packer would write for them.
func fleetPacks(n int) ([]PackBlobs, [][]byte) {
	rng := rand.New(rand.NewPCG(18, 18))
	var packs []PackBlobs
	for left := n; left > 0; left -= 2000 {
		packs = append(packs, memPack(rng, min(left, 2000), func() ID { return memID(rng, hashed) }))
	}
	var files [][]byte
	for p := range slices.Chunk(packs, 16) {
		files = append(files, EncodeIndex(&IndexData{Packs: p}))
	}
	return packs, files
}

func heapAlloc() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

const fleetBlobs = 2_000_000

// BenchmarkIndexLoad builds the index of 2,000,000 blobs as LoadIndex
// does (Grow, then AddPack a pack at a time, then the first Has) and
// reports the time and CPU time a blob and the heap a blob after GC.
// "map-decoded" and "encoded" start from the index files' plaintexts, as
// a load does: DecodeIndex and AddPack (what LoadIndex did), and Grow by
// the files' sizes and AddEncoded ("encoded-nohint" without the Grow).
func BenchmarkIndexLoad(b *testing.B) {
	packs, files := fleetPacks(fleetBlobs)
	for _, kind := range []string{"map", "compact", "map-decoded", "encoded", "encoded-nohint"} {
		b.Run(kind, func(b *testing.B) {
			var heap uint64
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				base := heapAlloc()
				cpu0 := cpuTime()
				b.StartTimer()
				var x blobIndex
				if kind == "map" || kind == "map-decoded" {
					x = &mapIndex{packNum: map[ID]uint32{}, blobs: map[ID]memEntry{}}
				} else {
					x = NewIndex()
				}
				switch kind {
				case "encoded", "encoded-nohint":
					ix := x.(*Index)
					if kind == "encoded" {
						// What a loader knows from the listing: the files'
						// sizes, at 44 to 49 bytes an entry (docs/design.md).
						size := 0
						for _, f := range files {
							size += len(f)
						}
						ix.Grow(size / 44)
					}
					for _, f := range files {
						if _, err := ix.AddEncoded(f); err != nil {
							b.Fatal(err)
						}
					}
				case "map-decoded": // what LoadIndex did: decode every file, then add
					datas := make([]*IndexData, len(files))
					n := 0
					for i, f := range files {
						d, err := DecodeIndex(f)
						if err != nil {
							b.Fatal(err)
						}
						datas[i] = d
						for _, p := range d.Packs {
							n += len(p.Blobs)
						}
					}
					x.Grow(n)
					for i, d := range datas {
						for _, p := range d.Packs {
							x.AddPack(p)
						}
						datas[i] = nil
					}
				default:
					x.Grow(fleetBlobs)
					for _, p := range packs {
						x.AddPack(p)
					}
				}
				if !x.Has(packs[0].Blobs[0].ID) {
					b.Fatal("first blob not found")
				}
				b.StopTimer()
				cpu += cpuTime() - cpu0
				heap = heapAlloc() - base
				runtime.KeepAlive(x)
				b.StartTimer()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/fleetBlobs, "ns/blob")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/fleetBlobs, "cpu-ns/blob")
			b.ReportMetric(float64(heap)/fleetBlobs, "heapB/blob")
		})
	}
}

// BenchmarkIndexRead looks up stored and absent blobs in random order in
// the 2,000,000-blob index, with Has and Lookup, in Index and mapIndex.
// The eight are measured in turns, a batch of each per round, so that a
// shared machine's load weighs on all alike; each is reported as
// "<index>-<call>-<stored|absent>-ns/op".
func BenchmarkIndexRead(b *testing.B) {
	packs, _ := fleetPacks(fleetBlobs)
	rng := rand.New(rand.NewPCG(1, 2))
	const batch = 1 << 10
	ids := map[bool][]ID{}
	for range 1 << 18 {
		p := packs[rng.IntN(len(packs))]
		ids[true] = append(ids[true], p.Blobs[rng.IntN(len(p.Blobs))].ID)
		ids[false] = append(ids[false], memID(rng, hashed))
	}
	indexes := map[string]blobIndex{
		"map":     &mapIndex{packNum: map[ID]uint32{}, blobs: map[ID]memEntry{}},
		"compact": NewIndex(),
	}
	for _, x := range indexes {
		x.Grow(fleetBlobs)
		for _, p := range packs {
			x.AddPack(p)
		}
		x.Has(ID{})
	}
	type cell struct {
		kind, call string
		stored     bool
	}
	var cells []cell
	for _, kind := range []string{"map", "compact"} {
		for _, call := range []string{"has", "lookup"} {
			cells = append(cells, cell{kind, call, true}, cell{kind, call, false})
		}
	}
	spent := make([]time.Duration, len(cells))
	rounds, off := 0, 0
	for b.Loop() {
		for i, c := range cells {
			// Each its own ids: one looked up just before is in cache.
			at := (off + i*batch) % len(ids[c.stored])
			x, batchIDs := indexes[c.kind], ids[c.stored][at:at+batch]
			start := time.Now()
			for _, id := range batchIDs {
				var ok bool
				if c.call == "has" {
					ok = x.Has(id)
				} else {
					_, ok = x.Lookup(id)
				}
				if ok != c.stored {
					b.Fatal("wrong answer")
				}
			}
			spent[i] += time.Since(start)
		}
		rounds++
		off = (off + len(cells)*batch) % len(ids[true])
	}
	for i, c := range cells {
		which := "absent"
		if c.stored {
			which = "stored"
		}
		b.ReportMetric(float64(spent[i].Nanoseconds())/float64(rounds*batch), c.kind+"-"+c.call+"-"+which+"-ns/op")
	}
}

// TestIndexMemory holds the index to issue 18's bound: at most 48 bytes
// a blob once loaded. Heap after GC, so it counts what the Go runtime
// does, with a smaller load than the benchmark's.
func TestIndexMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("loads 1,000,000 blobs")
	}
	const n = 1_000_000
	packs, files := fleetPacks(n)
	for _, kind := range []string{"addpack", "encoded"} {
		base := heapAlloc()
		x := NewIndex()
		if kind == "encoded" {
			for _, f := range files {
				if _, err := x.AddEncoded(f); err != nil {
					t.Fatal(err)
				}
			}
		} else {
			x.Grow(n)
			for _, p := range packs {
				x.AddPack(p)
			}
		}
		if x.Len() != n {
			t.Fatalf("%d blobs, want %d", x.Len(), n)
		}
		perBlob := float64(heapAlloc()-base) / n
		runtime.KeepAlive(x)
		t.Logf("%s: %.1f heap bytes a blob (%d bytes a record)", kind, perBlob, x.sorted[0].stride())
		if perBlob > 48 {
			t.Errorf("%s: %.1f bytes a blob, more than 48", kind, perBlob)
		}
	}
}

// FuzzBlobEntryFast: where the fast entry decoder takes an entry, the
// checked fields decode the same entry from the same bytes, to the same
// end.
func FuzzBlobEntryFast(f *testing.F) {
	rng := rand.New(rand.NewPCG(15, 16))
	for range 8 {
		for _, e := range memPack(rng, 2, func() ID { return memID(rng, hashed) }).Blobs {
			b := append(e.ID[:], byte(e.Type), byte(e.Compression))
			b = binary.AppendUvarint(b, uint64(e.Offset))
			b = binary.AppendUvarint(b, uint64(e.Length))
			b = binary.AppendUvarint(b, uint64(e.RawLength))
			f.Add(append(b, make([]byte, 15)...))
		}
	}
	f.Add(append(make([]byte, 34), 0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
	f.Add(append(make([]byte, 34), 0xff, 0xff, 0xff, 0xff, 0x1f, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, n, ok := blobEntryFast(b)
		if !ok {
			return
		}
		d := &decoder{b: b}
		want := BlobEntry{ID: d.id("blob id")}
		want.Type = BlobType(d.byte("blob type"))
		want.Compression = Compression(d.byte("compression"))
		want.Offset = uint32(d.uvarint("blob offset", 1<<32-1))
		want.Length = uint32(d.uvarint("blob length", 1<<32-1))
		want.RawLength = uint32(d.uvarint("blob raw length", 1<<32-1))
		if d.err != nil {
			t.Fatalf("fast decoder took an entry the checked one rejects: %v", d.err)
		}
		if e != want || n != len(b)-len(d.b) {
			t.Fatalf("fast %+v (%d bytes), checked %+v (%d bytes)", e, n, want, len(b)-len(d.b))
		}
	})
}

// FuzzIndexSupersedes: the header-only decoder of a parked index file
// never fails where DecodeIndex succeeds, and agrees with it.
func FuzzIndexSupersedes(f *testing.F) {
	for _, b := range addEncodedSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		sup, err := IndexSupersedes(b)
		d, derr := DecodeIndex(b)
		if derr != nil {
			return
		}
		if err != nil || !slices.Equal(sup, d.Supersedes) {
			t.Fatalf("IndexSupersedes: %v, %v; DecodeIndex: %v", sup, err, d.Supersedes)
		}
	})
}
