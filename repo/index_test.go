package repo_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
)

func randomID(rng *rand.Rand) repo.ID {
	var id repo.ID
	for i := 0; i < len(id); i += 8 {
		binary.LittleEndian.PutUint64(id[i:], rng.Uint64())
	}
	return id
}

// randomEntry is a valid blob entry whose numbers have varints of every
// length.
func randomEntry(rng *rand.Rand) repo.BlobEntry {
	e := repo.BlobEntry{ID: randomID(rng), Type: repo.BlobType(rng.IntN(2)), Compression: repo.Compression(rng.IntN(2))}
	limits := []uint32{100, 1 << 14, 64 << 20, 1 << 30}
	e.RawLength = rng.Uint32N(limits[rng.IntN(len(limits))])
	if e.Compression == repo.CompressionNone {
		e.Length = e.RawLength + repo.Overhead
	} else {
		e.Length = repo.Overhead + rng.Uint32N(limits[rng.IntN(len(limits))])
	}
	e.Offset = rng.Uint32N(limits[rng.IntN(len(limits))])
	return e
}

func randomIndex(rng *rand.Rand, maxPacks, maxBlobs int) *repo.IndexData {
	d := &repo.IndexData{}
	for range rng.IntN(3) {
		d.Supersedes = append(d.Supersedes, randomID(rng))
	}
	for range rng.IntN(maxPacks + 1) {
		p := repo.PackBlobs{PackID: randomID(rng)}
		for range rng.IntN(maxBlobs + 1) {
			p.Blobs = append(p.Blobs, randomEntry(rng))
		}
		d.Packs = append(d.Packs, p)
	}
	return d
}

// equalIndex treats nil and empty slices alike.
func equalIndex(a, b *repo.IndexData) bool {
	return slices.Equal(a.Supersedes, b.Supersedes) &&
		slices.EqualFunc(a.Packs, b.Packs, func(p, q repo.PackBlobs) bool {
			return p.PackID == q.PackID && slices.Equal(p.Blobs, q.Blobs)
		})
}

func TestIndexRoundTrip(t *testing.T) {
	rng := newRand(t)
	cases := []*repo.IndexData{
		{},
		{Supersedes: []repo.ID{{1}, {2}}},
		{Packs: []repo.PackBlobs{{PackID: repo.ID{3}}}},
	}
	for range 200 {
		cases = append(cases, randomIndex(rng, 5, 30))
	}
	for i, d := range cases {
		b := repo.EncodeIndex(d)
		got, err := repo.DecodeIndex(b)
		if err != nil {
			t.Fatalf("case %d: decode: %v", i, err)
		}
		if !equalIndex(got, d) {
			t.Fatalf("case %d: round trip changed the index:\n got %+v\nwant %+v", i, got, d)
		}
		if !bytes.Equal(repo.EncodeIndex(got), b) {
			t.Fatalf("case %d: encoding is not stable", i)
		}
	}
}

// Entries whose numbers all fit one varint byte take 37 bytes: the
// decoder's size check must not reject them. Small tree blobs (an empty
// listing's tree is 24 bytes) and empty blobs make such entries.
func TestIndexSmallEntries(t *testing.T) {
	for _, blobs := range [][]repo.BlobEntry{
		{{ID: repo.ID{1}, Length: 64, RawLength: 24}},
		{{ID: repo.ID{1}, Length: 40}, {ID: repo.ID{2}, Offset: 40, Length: 41, RawLength: 1}},
		{{ID: repo.ID{1}, Length: 60, RawLength: 100, Compression: repo.CompressionZstd}},
	} {
		d := &repo.IndexData{Packs: []repo.PackBlobs{{PackID: repo.ID{9}, Blobs: blobs}}}
		got, err := repo.DecodeIndex(repo.EncodeIndex(d))
		if err != nil {
			t.Errorf("decode %+v: %v", blobs, err)
			continue
		}
		if !equalIndex(got, d) {
			t.Errorf("round trip: %+v, want %+v", got, d)
		}
	}
}

func uv(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	header = []byte("SNAPIDX\x01")
	noSup  = uv(0)
)

func TestDecodeIndexRejects(t *testing.T) {
	valid := repo.EncodeIndex(&repo.IndexData{Supersedes: []repo.ID{{7}}, Packs: []repo.PackBlobs{
		{PackID: repo.ID{1}, Blobs: []repo.BlobEntry{
			{ID: repo.ID{2}, Length: 1040, RawLength: 1000},
			{ID: repo.ID{3}, Offset: 1040, Length: 500, RawLength: 2000, Compression: repo.CompressionZstd, Type: repo.TreeBlob},
		}},
	}})
	if _, err := repo.DecodeIndex(valid); err != nil {
		t.Fatal(err)
	}
	oneBlob := func(e repo.BlobEntry) []byte {
		return repo.EncodeIndex(&repo.IndexData{Packs: []repo.PackBlobs{{PackID: repo.ID{1}, Blobs: []repo.BlobEntry{e}}}})
	}
	pack := repo.ID{1}
	blobID := repo.ID{2}
	for _, tc := range []struct {
		name string
		b    []byte
		msg  string // in the error; all but the version errors are ErrCorrupt
	}{
		{"empty", nil, "magic"},
		{"short", []byte("SNAPIDX"), "magic"},
		{"bad magic", cat([]byte("SNAPIDY\x01"), noSup, uv(0)), "magic"},
		{"lower-case magic", cat([]byte("snapidx\x01"), noSup, uv(0)), "magic"},
		{"version 2", cat([]byte("SNAPIDX\x02"), noSup, uv(0)), "upgrade snap"},
		{"version 255", cat([]byte("SNAPIDX\xff"), noSup, uv(0)), "upgrade snap"},
		{"no counts", header, "supersedes count"},
		{"no pack count", cat(header, noSup), "pack count"},
		{"trailing byte", append(bytes.Clone(valid), 0), "trailing"},
		{"trailing id", append(bytes.Clone(valid), make([]byte, 32)...), "trailing"},
		{"overlong varint", cat(header, bytes.Repeat([]byte{0xff}, 11)), "supersedes count"},
		{"supersedes at cap", cat(header, uv(1<<20)), "supersedes count"},
		{"supersedes over cap", cat(header, uv(1<<20+1)), "supersedes count"},
		{"supersedes 2^63", cat(header, uv(1<<63)), "supersedes count"},
		{"supersedes one short", cat(header, uv(2), make([]byte, 63)), "supersedes"},
		{"packs at cap", cat(header, noSup, uv(1<<24)), "pack count"},
		{"packs over cap", cat(header, noSup, uv(1<<24+1)), "pack count"},
		{"packs 2^64-1", cat(header, noSup, uv(1<<64-1)), "pack count"},
		{"blobs at cap", cat(header, noSup, uv(1), pack[:], uv(1<<20)), "blob count"},
		{"blobs over cap", cat(header, noSup, uv(1), pack[:], uv(1<<20+1)), "blob count"},
		{"blobs truncated", cat(header, noSup, uv(1), pack[:], uv(2), blobID[:], []byte{0, 0}, uv(0), uv(1040), uv(1000)), ""},
		{"offset over 32 bits", cat(header, noSup, uv(1), pack[:], uv(1), blobID[:], []byte{0, 0}, uv(1<<32), uv(1040), uv(1000)), "offset"},
		{"length over 32 bits", cat(header, noSup, uv(1), pack[:], uv(1), blobID[:], []byte{0, 1}, uv(0), uv(1<<32), uv(1000)), "length"},
		{"raw length over 32 bits", cat(header, noSup, uv(1), pack[:], uv(1), blobID[:], []byte{0, 1}, uv(0), uv(1040), uv(1<<32)), "raw length"},
		{"blob type 2", oneBlob(repo.BlobEntry{Type: 2, Length: 1040, RawLength: 1000}), "blob type"},
		{"blob type 255", oneBlob(repo.BlobEntry{Type: 255, Length: 1040, RawLength: 1000}), "blob type"},
		{"compression 2", oneBlob(repo.BlobEntry{Compression: 2, Length: 1040, RawLength: 1000}), "compression"},
		{"shorter than overhead", oneBlob(repo.BlobEntry{Compression: repo.CompressionZstd, Length: 39, RawLength: 1000}), "overhead"},
		{"uncompressed length mismatch", oneBlob(repo.BlobEntry{Length: 1041, RawLength: 1000}), "raw length"},
		{"uncompressed length mismatch low", oneBlob(repo.BlobEntry{Length: 1039, RawLength: 1000}), "raw length"},
		{"beyond 4 GiB", oneBlob(repo.BlobEntry{Offset: 1<<32 - 1000, Length: 1040, RawLength: 1000}), "4 GiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m0, m1 runtime.MemStats
			runtime.ReadMemStats(&m0)
			d, err := repo.DecodeIndex(tc.b)
			runtime.ReadMemStats(&m1)
			if err == nil || d != nil {
				t.Fatalf("decode: %+v, %v; want an error", d, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if version := strings.Contains(tc.msg, "upgrade"); errors.Is(err, repo.ErrCorrupt) == version {
				t.Errorf("error %q: ErrCorrupt is %v", err, !version)
			}
			// No allocation in proportion to the counts claimed.
			if n := m1.TotalAlloc - m0.TotalAlloc; n > 64<<10 {
				t.Errorf("decoding %d bytes allocated %d bytes", len(tc.b), n)
			}
		})
	}
	for n := range len(valid) {
		if _, err := repo.DecodeIndex(valid[:n]); !errors.Is(err, repo.ErrCorrupt) {
			t.Errorf("valid index cut to %d of %d bytes: %v, want ErrCorrupt", n, len(valid), err)
		}
	}
}

// checkEntry checks what every decoded entry must satisfy.
func checkEntry(t *testing.T, e repo.BlobEntry) {
	t.Helper()
	if e.Type > repo.TreeBlob || e.Compression > repo.CompressionZstd || e.Length < repo.Overhead ||
		(e.Compression == repo.CompressionNone && e.Length != e.RawLength+repo.Overhead) ||
		uint64(e.Offset)+uint64(e.Length) > 1<<32-1 {
		t.Fatalf("decoder accepted invalid entry %+v", e)
	}
}

func FuzzDecodeIndex(f *testing.F) {
	rng := rand.New(rand.NewPCG(1, 2))
	f.Add(repo.EncodeIndex(&repo.IndexData{}))
	f.Add(repo.EncodeIndex(&repo.IndexData{Supersedes: []repo.ID{{1}}}))
	for range 20 {
		f.Add(repo.EncodeIndex(randomIndex(rng, 3, 4)))
	}
	f.Add(cat(header, uv(1<<20)))
	// Found by fuzzing: non-minimal varints make the entries long enough for
	// the size check; the canonical re-encoding is not (TestIndexSmallEntries).
	f.Add([]byte("SNAPIDX\x01\x0100000000000000000000000000000000\x0100000000000000000000000000000000" +
		"\x0200000000000000000000000000000000\x01\x01\xee\x00\x800000000000000000000000000000000000\x01\x01000"))
	f.Add(cat(header, noSup, uv(1), make([]byte, 32), uv(1<<20)))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := repo.DecodeIndex(b)
		if err != nil {
			if d != nil {
				t.Fatal("index and error")
			}
			return
		}
		for _, p := range d.Packs {
			for _, e := range p.Blobs {
				checkEntry(t, e)
			}
		}
		enc := repo.EncodeIndex(d)
		if len(enc) > len(b) {
			t.Fatalf("re-encoding grew %d bytes to %d", len(b), len(enc))
		}
		d2, err := repo.DecodeIndex(enc)
		if err != nil {
			t.Fatalf("re-encoded index does not decode: %v", err)
		}
		if !equalIndex(d, d2) {
			t.Fatalf("re-encoded index decodes differently:\n%+v\n%+v", d, d2)
		}
	})
}

// encodePackHeader is the header plaintext of docs/design.md, "Packs".
func encodePackHeader(entries []repo.BlobEntry) []byte {
	var b []byte
	for _, e := range entries {
		b = append(b, byte(e.Type), byte(e.Compression))
		b = binary.LittleEndian.AppendUint32(b, e.Length)
		b = binary.LittleEndian.AppendUint32(b, e.RawLength)
		b = append(b, e.ID[:]...)
	}
	return b
}

// tiled sets offsets as a pack lays blobs out and returns the data size.
func tiled(entries []repo.BlobEntry) int64 {
	var off int64
	for i := range entries {
		entries[i].Offset = uint32(off)
		off += int64(entries[i].Length)
	}
	return off
}

func TestDecodePackHeader(t *testing.T) {
	rng := newRand(t)
	var entries []repo.BlobEntry
	for range 50 {
		e := randomEntry(rng)
		e.RawLength %= 1 << 20
		if e.Compression == repo.CompressionNone {
			e.Length = e.RawLength + repo.Overhead
		} else {
			e.Length = repo.Overhead + e.Length%(1<<20)
		}
		entries = append(entries, e)
	}
	data := tiled(entries)
	hdr := encodePackHeader(entries)
	hl := uint32(len(hdr) + repo.Overhead)
	size := data + int64(hl) + 4
	got, err := repo.DecodePackHeader(hdr, size, hl)
	if err != nil || !slices.Equal(got, entries) {
		t.Fatalf("decode: %v\n got %+v\nwant %+v", err, got, entries)
	}
	if got, err := repo.DecodePackHeader(nil, 4+40, 40); err != nil || len(got) != 0 {
		t.Errorf("empty pack: %v, %v", got, err)
	}

	bad := func(change func([]repo.BlobEntry)) []byte {
		c := slices.Clone(entries)
		change(c)
		return encodePackHeader(c)
	}
	for _, tc := range []struct {
		name string
		hdr  []byte
		size int64
	}{
		{"pack one byte longer", hdr, size + 1},
		{"pack one byte shorter", hdr, size - 1},
		{"pack tiny", hdr, 10},
		{"pack negative", hdr, -1},
		{"partial entry", hdr[:len(hdr)-1], size},
		{"extra byte", append(bytes.Clone(hdr), 0), size},
		{"entry missing", hdr[:len(hdr)-42], size},
		{"blob type", bad(func(c []repo.BlobEntry) { c[3].Type = 2 }), size},
		{"compression", bad(func(c []repo.BlobEntry) { c[3].Compression = 7 }), size},
		{"length", bad(func(c []repo.BlobEntry) { c[3].Length++ }), size},
		{"short blob", bad(func(c []repo.BlobEntry) { c[3].Compression, c[3].Length = 1, 39 }), size},
		{"raw length", bad(func(c []repo.BlobEntry) { c[3].Compression = 0; c[3].RawLength = c[3].Length }), size},
		{"beyond 4 GiB", encodePackHeader([]repo.BlobEntry{
			{Compression: 1, Length: 1<<32 - 1, RawLength: 1}, {Compression: 1, Length: 1 << 31, RawLength: 1},
		}), 1<<32 - 1 + 1<<31 + 4 + 40 + 84},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := repo.DecodePackHeader(tc.hdr, tc.size, hl)
			if !errors.Is(err, repo.ErrCorrupt) || got != nil {
				t.Errorf("decode: %d entries, %v; want ErrCorrupt", len(got), err)
			}
		})
	}
}

func FuzzDecodePackHeader(f *testing.F) {
	rng := rand.New(rand.NewPCG(3, 4))
	f.Add([]byte{}, int64(44), uint32(40))
	for n := range 6 {
		var entries []repo.BlobEntry
		for range n {
			e := randomEntry(rng)
			if uint64(e.Length)*6 > 1<<32-1 {
				e.Compression, e.Length = repo.CompressionZstd, e.Length/8+repo.Overhead
			}
			entries = append(entries, e)
		}
		hl := uint32(42*n + repo.Overhead)
		f.Add(encodePackHeader(entries), tiled(entries)+int64(hl)+4, hl)
	}
	f.Fuzz(func(t *testing.T, hdr []byte, packSize int64, hl uint32) {
		entries, err := repo.DecodePackHeader(hdr, packSize, hl)
		if err != nil {
			if entries != nil {
				t.Fatal("entries and error")
			}
			return
		}
		if len(entries)*42 != len(hdr) {
			t.Fatalf("%d entries from %d header bytes", len(entries), len(hdr))
		}
		var off int64
		for i, e := range entries {
			checkEntry(t, e)
			if int64(e.Offset) != off {
				t.Fatalf("entry %d at %d, previous blob ends at %d", i, e.Offset, off)
			}
			off += int64(e.Length)
		}
		if off != packSize-4-int64(hl) {
			t.Fatalf("entries cover %d bytes, data region is %d", off, packSize-4-int64(hl))
		}
		if !bytes.Equal(encodePackHeader(entries), hdr) {
			t.Fatal("entries do not re-encode to the header")
		}
	})
}
