package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/mem"
)

func TestInitOpen(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    repo.InitOptions
		want repo.Config // ID is not compared
	}{
		{"defaults", repo.InitOptions{}, repo.Config{
			Version: 2, ChunkerMin: 512 << 10, ChunkerAvg: 1 << 20, ChunkerMax: 8 << 20,
			PackSize: repo.DefaultPackSize, Compression: "auto",
		}},
		{"custom", repo.InitOptions{
			ChunkerMin: 64 << 10, ChunkerAvg: 256 << 10, ChunkerMax: 2 << 20, PackSize: 4 << 20, Compression: "better",
		}, repo.Config{
			Version: 2, ChunkerMin: 64 << 10, ChunkerAvg: 256 << 10, ChunkerMax: 2 << 20,
			PackSize: 4 << 20, Compression: "better",
		}},
		{"off", repo.InitOptions{PackSize: 1 << 20, Compression: "off"}, repo.Config{
			Version: 2, ChunkerMin: 512 << 10, ChunkerAvg: 1 << 20, ChunkerMax: 8 << 20,
			PackSize: 1 << 20, Compression: "off",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := mem.New()
			r := initRepo(t, be, tc.o)
			check := func(what string, got repo.Config) {
				t.Helper()
				if len(got.ID) != 32 || strings.Trim(got.ID, "0123456789abcdef") != "" {
					t.Errorf("%s: config id %q is not 32 hex digits", what, got.ID)
				}
				want := tc.want
				want.ID = got.ID
				if got != want {
					t.Errorf("%s: config %+v, want %+v", what, got, want)
				}
			}
			check("init", r.Config())
			if len(list(t, be, repo.KeyFile)) != 1 || len(list(t, be, repo.ConfigFile)) != 1 {
				t.Fatalf("init stored keys %v, config %v", list(t, be, repo.KeyFile), list(t, be, repo.ConfigFile))
			}

			r2 := openRepo(t, be)
			check("open", r2.Config())
			if r2.Config().ID != r.Config().ID {
				t.Errorf("open: config id %s, init made %s", r2.Config().ID, r.Config().ID)
			}
			p, p2 := r.ChunkerParams(), r2.ChunkerParams()
			if p != p2 || p.Min != tc.want.ChunkerMin || p.Avg != tc.want.ChunkerAvg || p.Max != tc.want.ChunkerMax {
				t.Errorf("chunker params: init %+v, open %+v", p, p2)
			}
			if p.Seed == ([32]byte{}) {
				t.Error("chunker seed is zero")
			}
			// Same master key: same keyed ids.
			if a, b := r.BlobID([]byte("x")), r2.BlobID([]byte("x")); a != b || a == repo.Hash([]byte("x")) {
				t.Errorf("blob ids differ or are unkeyed: %v %v", a, b)
			}
		})
	}
}

// Two repositories never share keys, ids or chunker seeds.
func TestInitFreshKeys(t *testing.T) {
	r1 := initRepo(t, mem.New(), smallOptions())
	r2 := initRepo(t, mem.New(), smallOptions())
	if r1.BlobID(nil) == r2.BlobID(nil) || r1.ChunkerParams().Seed == r2.ChunkerParams().Seed || r1.Config().ID == r2.Config().ID {
		t.Error("two repositories share keys or ids")
	}
}

func TestInitInvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		name     string
		password string
		o        repo.InitOptions
	}{
		{"empty password", "", repo.InitOptions{}},
		{"pack size too small", password, repo.InitOptions{PackSize: 1000}},
		{"pack size too large", password, repo.InitOptions{PackSize: 1 << 30}},
		{"avg not a power of two", password, repo.InitOptions{ChunkerAvg: 1000000}},
		{"min above avg", password, repo.InitOptions{ChunkerMin: 2 << 20}},
		{"max above 64 MiB", password, repo.InitOptions{ChunkerMax: 128 << 20}},
		{"unknown compression", password, repo.InitOptions{Compression: "max"}},
		{"kdf out of range", password, repo.InitOptions{KDF: repo.KDFParams{Time: 1000, MemoryKiB: 64, Threads: 1}}},
		{"kdf threads over 16", password, repo.InitOptions{KDF: repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 17}}},
		{"kdf work over 8 GiB-passes", password, repo.InitOptions{KDF: repo.KDFParams{Time: 65, MemoryKiB: 128 << 10, Threads: 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := mem.New()
			o := tc.o
			if o.KDF == (repo.KDFParams{}) {
				o.KDF = cheapKDF
			}
			r, err := repo.Init(t.Context(), be, tc.password, o, repo.Options{})
			if err == nil || r != nil {
				t.Fatalf("Init = %v, %v; want an error", r, err)
			}
			for _, typ := range repo.AllFileTypes {
				if got := list(t, be, typ); len(got) != 0 {
					t.Errorf("failed init left %s objects: %v", typ, got)
				}
			}
		})
	}
}

func TestOpenWrongPassword(t *testing.T) {
	be := mem.New()
	initRepo(t, be, smallOptions())
	for _, pw := range []string{"wrong", password + " ", strings.ToUpper(password)} {
		r, err := repo.Open(t.Context(), be, pw, repo.Options{})
		if !errors.Is(err, repo.ErrWrongPassword) {
			t.Errorf("open with %q: %v, want ErrWrongPassword", pw, err)
		}
		if r != nil {
			t.Errorf("open with %q returned a repository", pw)
		}
	}
	if r, err := repo.Open(t.Context(), be, "", repo.Options{}); err == nil || r != nil {
		t.Errorf("open with empty password: %v, %v", r, err)
	}
}

func TestInitTwice(t *testing.T) {
	be := mem.New()
	initRepo(t, be, smallOptions())
	keys := list(t, be, repo.KeyFile)
	r, err := repo.Init(t.Context(), be, "other", repo.InitOptions{KDF: cheapKDF}, repo.Options{})
	if err == nil || r != nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second init: %v, %v; want \"already exists\"", r, err)
	}
	if got := list(t, be, repo.KeyFile); len(got) != len(keys) {
		t.Errorf("second init added a key file: %v", got)
	}
	openRepo(t, be)
}

func TestOpenEmpty(t *testing.T) {
	r, err := repo.Open(t.Context(), mem.New(), password, repo.Options{})
	if err == nil || r != nil || !strings.Contains(err.Error(), "run snap init") || !errors.Is(err, repo.ErrNoRepository) {
		t.Fatalf("open empty: %v, %v; want ErrNoRepository and \"run snap init\"", r, err)
	}
}

// A config changed in storage must fail authentication, whichever byte
// changed.
func TestOpenTamperedConfig(t *testing.T) {
	be := mem.New()
	initRepo(t, be, smallOptions())
	h := repo.Handle{Type: repo.ConfigFile}
	orig := backendtest.LoadAll(t, be, h)
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
	}{
		{"nonce", func(b []byte) []byte { b[0] ^= 1; return b }},
		{"ciphertext", func(b []byte) []byte { b[30] ^= 0x80; return b }},
		{"tag", func(b []byte) []byte { b[len(b)-1] ^= 1; return b }},
		{"truncated", func(b []byte) []byte { return b[:len(b)-1] }},
		{"extended", func(b []byte) []byte { return append(b, 0) }},
		{"short", func(b []byte) []byte { return b[:10] }},
		{"empty", func(b []byte) []byte { return b[:0] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rewrite(t, be, h, func([]byte) []byte { return tc.change(bytes.Clone(orig)) })
			r, err := repo.Open(t.Context(), be, password, repo.Options{})
			if !errors.Is(err, repo.ErrCorrupt) || r != nil {
				t.Errorf("open: %v, %v; want ErrCorrupt", r, err)
			}
		})
	}
}

func TestOpenTamperedKeyFile(t *testing.T) {
	be := mem.New()
	initRepo(t, be, smallOptions())
	keys := list(t, be, repo.KeyFile)
	for name := range keys {
		h := repo.Handle{Type: repo.KeyFile, Name: name}
		rewrite(t, be, h, func(b []byte) []byte {
			// Change the wrapped master key, keeping the JSON valid.
			i := bytes.Index(b, []byte(`"data": "`)) + len(`"data": "`)
			if b[i+5] == 'A' {
				b[i+5] = 'B'
			} else {
				b[i+5] = 'A'
			}
			return b
		})
	}
	r, err := repo.Open(t.Context(), be, password, repo.Options{})
	if !errors.Is(err, repo.ErrWrongPassword) || r != nil {
		t.Errorf("open with a tampered key: %v, %v; want ErrWrongPassword", r, err)
	}
}

// checkBlob finds e among blobs and returns its index, and an error if
// plain is not its bytes.
func checkBlob(blobs []testBlob, e repo.BlobEntry, plain []byte) (int, error) {
	i := slices.IndexFunc(blobs, func(b testBlob) bool { return b.id == e.ID })
	if i < 0 {
		return i, fmt.Errorf("blob %s was not asked for", e.ID)
	}
	if !bytes.Equal(plain, blobs[i].plain) {
		return i, fmt.Errorf("blob %d: wrong bytes", i)
	}
	return i, nil
}

type testBlob struct {
	id    repo.ID
	typ   repo.BlobType
	plain []byte
	comp  repo.Compression // expected
}

// makeBlobs returns n blobs of random sizes, half compressible text and
// half random bytes, a tenth of them tree blobs.
func makeBlobs(rng *rand.Rand, r *repo.Repository, n, maxSize int) []testBlob {
	blobs := make([]testBlob, 0, n)
	seen := map[repo.ID]bool{}
	for len(blobs) < n {
		size := 1000 + rng.IntN(maxSize-1000)
		b := testBlob{typ: repo.DataBlob}
		if rng.IntN(10) == 0 {
			b.typ = repo.TreeBlob
		}
		if rng.IntN(2) == 0 {
			b.plain, b.comp = textBytes(rng, size), repo.CompressionZstd
		} else {
			b.plain, b.comp = randomBytes(rng, size), repo.CompressionNone
		}
		b.id = r.BlobID(b.plain)
		if !seen[b.id] {
			seen[b.id] = true
			blobs = append(blobs, b)
		}
	}
	return blobs
}

func saveBlobs(t testing.TB, r *repo.Repository, blobs []testBlob) {
	t.Helper()
	// Not errgroup.WithContext: SaveBlob's uploads run on after it returns,
	// with its ctx, and the group's context ends with Wait.
	var g errgroup.Group
	g.SetLimit(8)
	for _, b := range blobs {
		g.Go(func() error {
			isNew, err := r.SaveBlob(t.Context(), b.typ, b.id, b.plain)
			if err != nil {
				return err
			}
			if !isNew {
				return fmt.Errorf("blob %v: SaveBlob says it is not new", b.id.Str())
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func checkBlobs(t testing.TB, r *repo.Repository, blobs []testBlob) {
	t.Helper()
	for _, b := range blobs {
		got, err := r.LoadBlob(t.Context(), b.id, nil)
		if err != nil {
			t.Fatalf("load blob %v: %v", b.id.Str(), err)
		}
		if !bytes.Equal(got, b.plain) {
			t.Fatalf("blob %v: loaded %d bytes that differ from the %d saved", b.id.Str(), len(got), len(b.plain))
		}
		loc, ok := r.Index().Lookup(b.id)
		if !ok {
			t.Fatalf("blob %v: not in the index", b.id.Str())
		}
		if loc.ID != b.id || loc.Type != b.typ || loc.Compression != b.comp || loc.RawLength != uint32(len(b.plain)) {
			t.Errorf("blob %v: index entry %+v, want type %v, compression %d, raw length %d",
				b.id.Str(), loc.BlobEntry, b.typ, b.comp, len(b.plain))
		}
		// A prefix in dst is kept.
		got, err = r.LoadBlob(t.Context(), b.id, []byte("prefix"))
		if err != nil || !bytes.Equal(got, append([]byte("prefix"), b.plain...)) {
			t.Fatalf("load blob %v after a prefix: %v", b.id.Str(), err)
		}
	}
}

func TestBlobRoundTrip(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	blobs := makeBlobs(rng, r, 150, 200<<10)
	// A few blobs larger than the pack size.
	for range 3 {
		p := randomBytes(rng, 1<<20+rng.IntN(100<<10))
		blobs = append(blobs, testBlob{id: r.BlobID(p), typ: repo.DataBlob, plain: p, comp: repo.CompressionNone})
	}
	saveBlobs(t, r, blobs)
	for _, b := range blobs {
		if !r.Known(b.id) {
			t.Fatalf("blob %v not known after SaveBlob", b.id.Str())
		}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatalf("flush: %v", err)
	}

	var bytesNew int64
	for _, b := range blobs {
		bytesNew += int64(len(b.plain))
	}
	packs := list(t, be, repo.PackFile)
	var packBytes int64
	for _, size := range packs {
		packBytes += size
	}
	st := r.Stats()
	want := repo.SaveStats{BlobsNew: int64(len(blobs)), BytesNew: bytesNew, BytesSaved: packBytes,
		Packs: int64(len(packs)), Indexes: int64(len(list(t, be, repo.IndexFile)))}
	if st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if len(packs) < 3 {
		t.Errorf("%d packs for %d bytes with 1 MiB packs: not split", len(packs), bytesNew)
	}
	if st.Indexes < 1 {
		t.Error("flush wrote no index")
	}
	if r.Index().Len() != len(blobs) {
		t.Errorf("index holds %d blobs, saved %d", r.Index().Len(), len(blobs))
	}
	if got := r.Index().Packs(); len(got) != len(packs) || !slices.IsSortedFunc(got, func(a, b repo.ID) int { return bytes.Compare(a[:], b[:]) }) {
		t.Errorf("index names %d packs (sorted: %v), stored %d", len(got), slices.IsSortedFunc(got, func(a, b repo.ID) int { return bytes.Compare(a[:], b[:]) }), len(packs))
	}
	checkBlobs(t, r, blobs)

	// Saving again stores nothing.
	for _, b := range blobs[:20] {
		isNew, err := r.SaveBlob(t.Context(), b.typ, b.id, b.plain)
		if err != nil || isNew {
			t.Fatalf("second save of %v: new %v, %v", b.id.Str(), isNew, err)
		}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if r.Stats() != st || len(list(t, be, repo.PackFile)) != len(packs) {
		t.Errorf("duplicate saves changed stats %+v -> %+v", st, r.Stats())
	}

	// A new process finds everything through the index files.
	r2 := openRepo(t, be)
	if _, err := r2.LoadBlob(t.Context(), blobs[0].id, nil); err == nil {
		t.Error("load blob before LoadIndex: no error")
	}
	if err := r2.LoadIndex(t.Context()); err != nil {
		t.Fatalf("load index: %v", err)
	}
	if r2.Index().Len() != len(blobs) {
		t.Errorf("reloaded index holds %d blobs, saved %d", r2.Index().Len(), len(blobs))
	}
	for _, b := range blobs {
		l1, _ := r.Index().Lookup(b.id)
		l2, _ := r2.Index().Lookup(b.id)
		if l1 != l2 {
			t.Errorf("blob %v: reloaded location %+v, saved at %+v", b.id.Str(), l2, l1)
		}
	}
	checkBlobs(t, r2, blobs)
	for _, b := range blobs[:20] {
		isNew, err := r2.SaveBlob(t.Context(), b.typ, b.id, b.plain)
		if err != nil || isNew {
			t.Fatalf("save of known %v after reopen: new %v, %v", b.id.Str(), isNew, err)
		}
	}
	if err := r2.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := r2.Stats(); st != (repo.SaveStats{}) {
		t.Errorf("saving known blobs after reopen: stats %+v", st)
	}

	// Packs hold one blob type each and close at the pack size.
	for name, size := range packs {
		entries, err := r2.ReadPackHeader(t.Context(), mustParseID(t, name), size)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Type != entries[0].Type {
				t.Errorf("pack %s mixes %v and %v blobs", name[:8], entries[0].Type, e.Type)
			}
		}
		last := entries[len(entries)-1]
		if int(last.Offset) >= 1<<20 {
			t.Errorf("pack %s: blob at %d starts after the pack size", name[:8], last.Offset)
		}
	}
}

func TestEmptyAndTinyBlobs(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	var blobs []testBlob
	for _, p := range [][]byte{{}, {0}, []byte("x"), bytes.Repeat([]byte("a"), 100)} {
		comp := repo.CompressionNone
		if len(p) == 100 {
			comp = repo.CompressionZstd
		}
		blobs = append(blobs, testBlob{id: r.BlobID(p), typ: repo.DataBlob, plain: p, comp: comp})
	}
	saveBlobs(t, r, blobs)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	checkBlobs(t, r, blobs)
	r2 := openRepo(t, be)
	if err := r2.LoadIndex(t.Context()); err != nil {
		t.Fatalf("load index: %v", err)
	}
	checkBlobs(t, r2, blobs)
}

// A small tree blob alone in its pack (a snapshot of an empty or tiny
// listing) must be readable after a restart.
func TestSmallTreeBlobIndexed(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	tree := []byte(`{"version":1,"files":[]}`)
	id := r.BlobID(tree)
	if _, err := r.SaveBlob(t.Context(), repo.TreeBlob, id, tree); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	r2 := openRepo(t, be)
	if err := r2.LoadIndex(t.Context()); err != nil {
		t.Fatalf("load index: %v", err)
	}
	if got, err := r2.LoadBlob(t.Context(), id, nil); err != nil || !bytes.Equal(got, tree) {
		t.Fatalf("load tree: %q, %v", got, err)
	}
}

func TestSaveBlobTooLarge(t *testing.T) {
	r := initRepo(t, mem.New(), smallOptions())
	p := make([]byte, 64<<20+1)
	if isNew, err := r.SaveBlob(t.Context(), repo.DataBlob, r.BlobID(p), p); err == nil || isNew {
		t.Errorf("save of a 64 MiB + 1 blob: new %v, %v", isNew, err)
	}
}

// ReadPackHeader agrees with the index, also for a header longer than the
// 64 KiB tail read first.
func TestReadPackHeader(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	blobs := makeBlobs(rng, r, 40, 300<<10)
	for range 2000 { // 2000 * 42-byte entries: an 84 KB header
		p := randomBytes(rng, 100)
		blobs = append(blobs, testBlob{id: r.BlobID(p), typ: repo.TreeBlob, plain: p, comp: repo.CompressionNone})
	}
	saveBlobs(t, r, blobs)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	byPack := map[repo.ID][]repo.BlobEntry{}
	for _, b := range blobs {
		loc, ok := r.Index().Lookup(b.id)
		if !ok {
			t.Fatalf("blob %v not indexed", b.id.Str())
		}
		byPack[loc.Pack] = append(byPack[loc.Pack], loc.BlobEntry)
	}
	packs := list(t, be, repo.PackFile)
	if len(packs) != len(byPack) {
		t.Fatalf("%d packs stored, index names %d", len(packs), len(byPack))
	}
	bigHeader := false
	for name, size := range packs {
		id := mustParseID(t, name)
		got, err := r.ReadPackHeader(t.Context(), id, size)
		if err != nil {
			t.Fatalf("read pack header %s: %v", name[:8], err)
		}
		want := byPack[id]
		slices.SortFunc(want, func(a, b repo.BlobEntry) int { return int(a.Offset) - int(b.Offset) })
		if !slices.Equal(got, want) {
			t.Errorf("pack %s: header has %d entries, index %d:\n got %+v\nwant %+v", name[:8], len(got), len(want), got, want)
		}
		if len(got)*42 > 64<<10 {
			bigHeader = true
		}
	}
	if !bigHeader {
		t.Error("no pack had a header beyond the 64 KiB tail")
	}
}

// Prune writes an index that supersedes others; readers skip those.
func TestLoadIndexSupersedes(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	entry := func(b byte) repo.BlobEntry {
		return repo.BlobEntry{ID: repo.ID{b}, Length: 1000, RawLength: 960}
	}
	oldID, err := r.SaveIndex(t.Context(), &repo.IndexData{Packs: []repo.PackBlobs{
		{PackID: repo.ID{0xa1}, Blobs: []repo.BlobEntry{entry(1), entry(2)}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveIndex(t.Context(), &repo.IndexData{Supersedes: []repo.ID{oldID}, Packs: []repo.PackBlobs{
		{PackID: repo.ID{0xa2}, Blobs: []repo.BlobEntry{entry(2)}},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.SaveIndex(t.Context(), &repo.IndexData{Packs: []repo.PackBlobs{
		{PackID: repo.ID{0xa3}, Blobs: []repo.BlobEntry{entry(3)}},
	}}); err != nil {
		t.Fatal(err)
	}
	// A stray object is skipped.
	if err := be.Save(t.Context(), repo.Handle{Type: repo.IndexFile, Name: "README"}, []byte("hello")); err != nil {
		t.Fatal(err)
	}
	r2 := openRepo(t, be)
	if err := r2.LoadIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got, want := r2.Index().Packs(), []repo.ID{{0xa2}, {0xa3}}; !slices.Equal(got, want) {
		t.Errorf("packs %v, want %v", got, want)
	}
	if r2.Index().Has(repo.ID{1}) || !r2.Index().Has(repo.ID{2}) || !r2.Index().Has(repo.ID{3}) || r2.Index().Len() != 2 {
		t.Errorf("index after supersede: has 1 %v, 2 %v, 3 %v, len %d", r2.Index().Has(repo.ID{1}), r2.Index().Has(repo.ID{2}), r2.Index().Has(repo.ID{3}), r2.Index().Len())
	}
}

// Ranged reads: blobs far apart are fetched separately, near ones together,
// and fn sees them in offset order whatever order they were asked in.
func TestLoadBlobsOrder(t *testing.T) {
	rng := newRand(t)
	fbe := faulty.New(mem.New())
	o := smallOptions()
	o.PackSize, o.Compression = 8<<20, "off"
	r := initRepo(t, fbe, o)
	var blobs []testBlob
	for range 12 {
		p := randomBytes(rng, 400<<10)
		blobs = append(blobs, testBlob{id: r.BlobID(p), plain: p})
	}
	for _, b := range blobs { // in order, so offsets follow
		if _, err := r.SaveBlob(t.Context(), repo.DataBlob, b.id, b.plain); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	loc0, _ := r.Index().Lookup(blobs[0].id)
	var entries []repo.BlobEntry
	for _, i := range []int{11, 1, 0, 10, 5} { // 0,1 together; 5 alone (>1 MiB gap); 10,11 together
		loc, _ := r.Index().Lookup(blobs[i].id)
		if loc.Pack != loc0.Pack {
			t.Fatal("blobs not in one pack")
		}
		entries = append(entries, loc.BlobEntry)
	}
	before := len(fbe.Calls())
	var got []int
	err := r.LoadBlobs(t.Context(), loc0.Pack, entries, func(e repo.BlobEntry, plain []byte) error {
		i, err := checkBlob(blobs, e, plain)
		got = append(got, i)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 5, 10, 11}; !slices.Equal(got, want) {
		t.Errorf("fn saw blobs %v, want %v", got, want)
	}
	if loads := len(fbe.Calls()) - before; loads != 3 {
		t.Errorf("%d loads, want 3", loads)
	}
	// fn's error stops the loop and comes back as is.
	stop := errors.New("stop")
	n := 0
	err = r.LoadBlobs(t.Context(), loc0.Pack, entries, func(repo.BlobEntry, []byte) error { n++; return stop })
	if err != stop || n != 1 {
		t.Errorf("LoadBlobs with failing fn: %v after %d calls", err, n)
	}
}

func TestIndex(t *testing.T) {
	x := repo.NewIndex()
	e := func(id byte, off uint32) repo.BlobEntry {
		return repo.BlobEntry{ID: repo.ID{id}, Offset: off, Length: 50, RawLength: 10}
	}
	x.AddPack(repo.PackBlobs{PackID: repo.ID{0xb0}, Blobs: []repo.BlobEntry{e(1, 0), e(2, 50)}})
	x.AddPack(repo.PackBlobs{PackID: repo.ID{0xa0}, Blobs: []repo.BlobEntry{e(2, 0), e(3, 50)}})
	if x.Len() != 3 {
		t.Errorf("len %d", x.Len())
	}
	if loc, ok := x.Lookup(repo.ID{2}); !ok || loc.Pack != (repo.ID{0xb0}) || loc.Offset != 50 {
		t.Errorf("a blob in two packs keeps its first location: %+v", loc)
	}
	if _, ok := x.Lookup(repo.ID{4}); ok || x.Has(repo.ID{4}) {
		t.Error("unknown blob found")
	}
	if got := x.Packs(); !slices.Equal(got, []repo.ID{{0xa0}, {0xb0}}) {
		t.Errorf("packs %v", got)
	}
}

// restartingBackend breaks the first read of every Load after breakAt
// bytes and then calls fn again from the start of the range, as the retry
// decorator does after a broken read.
type restartingBackend struct {
	repo.Backend
	breakAt int
}

var errBroken = errors.New("connection reset (test)")

type breakingReader struct {
	data []byte
}

func (r *breakingReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, errBroken
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	return n, nil
}

func (b *restartingBackend) Load(ctx context.Context, h repo.Handle, offset, length int64, fn func(io.Reader) error) error {
	var data []byte
	if err := b.Backend.Load(ctx, h, offset, length, func(rd io.Reader) error {
		var err error
		data, err = io.ReadAll(rd)
		return err
	}); err != nil {
		return err
	}
	if b.breakAt < len(data) {
		if err := fn(&breakingReader{data: data[:b.breakAt]}); !errors.Is(err, errBroken) {
			return fmt.Errorf("fn made %v of a broken read", err)
		}
	}
	return fn(bytes.NewReader(data))
}

// TestLoadBlobsRestart: when a backend restarts a broken read, LoadBlobs
// hands fn every blob once, in order, wherever the read broke; a blob
// listed twice is handed over twice, as asked.
func TestLoadBlobsRestart(t *testing.T) {
	rng := newRand(t)
	be := &restartingBackend{Backend: mem.New()}
	o := smallOptions()
	o.PackSize, o.Compression = 8<<20, "off"
	r := initRepo(t, be, o)
	var blobs []testBlob
	for range 6 {
		p := randomBytes(rng, 100<<10+rng.IntN(1000))
		blobs = append(blobs, testBlob{id: r.BlobID(p), plain: p})
		if _, err := r.SaveBlob(t.Context(), repo.DataBlob, blobs[len(blobs)-1].id, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	var entries []repo.BlobEntry
	var pack repo.ID
	for _, i := range []int{0, 1, 1, 3, 4} { // a gap (2), a repeat (1), a tail left out (5)
		loc, _ := r.Index().Lookup(blobs[i].id)
		entries = append(entries, loc.BlobEntry)
		pack = loc.Pack
	}
	e0, e1, e3 := entries[0], entries[1], entries[3]
	for _, breakAt := range []int{
		0, 1, int(e0.Length) - 1, int(e0.Length), int(e0.Length) + 1,
		int(e1.Offset+e1.Length) - int(e0.Offset), int(e3.Offset) - int(e0.Offset) - 7, 1 << 30,
	} {
		be.breakAt = breakAt
		var got []int
		err := r.LoadBlobs(t.Context(), pack, entries, func(e repo.BlobEntry, plain []byte) error {
			i, err := checkBlob(blobs, e, plain)
			got = append(got, i)
			return err
		})
		if err != nil {
			t.Fatalf("break at %d: %v", breakAt, err)
		}
		if want := []int{0, 1, 1, 3, 4}; !slices.Equal(got, want) {
			t.Errorf("break at %d: fn saw blobs %v, want %v", breakAt, got, want)
		}

		// ReadBlobs hands each blob over once, and reads a blob whose
		// read broke into the buffer it had for it.
		got, intos := nil, 0
		err = r.ReadBlobs(t.Context(), pack, entries,
			func(e repo.BlobEntry) ([]byte, error) { intos++; return make([]byte, e.Length), nil },
			func(e repo.BlobEntry, sealed []byte) error {
				plain, err := r.OpenBlob(pack, e, sealed, nil)
				if err != nil {
					return err
				}
				i, err := checkBlob(blobs, e, plain)
				got = append(got, i)
				return err
			})
		if err != nil {
			t.Fatalf("break at %d: ReadBlobs: %v", breakAt, err)
		}
		if want := []int{0, 1, 3, 4}; !slices.Equal(got, want) || intos != len(want) {
			t.Errorf("break at %d: ReadBlobs handed over blobs %v in %d buffers, want %v in %d", breakAt, got, intos, want, len(want))
		}
	}
}

// ReadBlobs hands each blob's sealed bytes over in the caller's buffer,
// and OpenBlob, in another goroutine, decodes it into the caller's memory,
// compressed or not. The caller's errors from into and fn come back
// unchanged; a damaged blob's error names its pack.
func TestReadBlobsOpenBlob(t *testing.T) {
	rng := newRand(t)
	for _, comp := range []string{"off", "fastest"} {
		t.Run(comp, func(t *testing.T) {
			o := smallOptions()
			o.Compression = comp
			r := initRepo(t, mem.New(), o)
			var blobs []testBlob
			for i := range 5 {
				p := textBytes(rng, 50<<10+i*777)
				if i%2 == 1 {
					p = randomBytes(rng, 30<<10+i) // stored uncompressed even under zstd
				}
				blobs = append(blobs, testBlob{id: r.BlobID(p), plain: p})
				if _, err := r.SaveBlob(t.Context(), repo.DataBlob, blobs[i].id, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			byPack := map[repo.ID][]repo.BlobEntry{}
			for _, b := range blobs {
				loc, _ := r.Index().Lookup(b.id)
				byPack[loc.Pack] = append(byPack[loc.Pack], loc.BlobEntry)
			}
			seen := 0
			for pack, entries := range byPack {
				type sealedBlob struct {
					e      repo.BlobEntry
					sealed []byte
				}
				ch := make(chan sealedBlob)
				done := make(chan error)
				go func() {
					var err error
					for s := range ch {
						if err != nil {
							continue
						}
						dst := make([]byte, 3+s.e.RawLength)
						var plain []byte
						if plain, err = r.OpenBlob(pack, s.e, s.sealed, dst[3:3]); err != nil {
							continue
						}
						var i int
						if i, err = checkBlob(blobs, s.e, plain); err == nil && &plain[0] != &dst[3] {
							err = fmt.Errorf("blob %d was not decoded into the caller's buffer", i)
						}
						seen++
					}
					done <- err
				}()
				err := r.ReadBlobs(t.Context(), pack, entries,
					func(e repo.BlobEntry) ([]byte, error) { return make([]byte, e.Length), nil },
					func(e repo.BlobEntry, sealed []byte) error {
						ch <- sealedBlob{e, sealed}
						return nil
					})
				close(ch)
				if err != nil {
					t.Fatal(err)
				}
				if err := <-done; err != nil {
					t.Fatal(err)
				}

				errMine := errors.New("no buffer for you")
				err = r.ReadBlobs(t.Context(), pack, entries, func(repo.BlobEntry) ([]byte, error) { return nil, errMine },
					func(repo.BlobEntry, []byte) error { return errors.New("fn called after into failed") })
				if err != errMine {
					t.Fatalf("into's error came back as %v", err)
				}
				err = r.ReadBlobs(t.Context(), pack, entries, func(e repo.BlobEntry) ([]byte, error) { return make([]byte, e.Length), nil },
					func(repo.BlobEntry, []byte) error { return errMine })
				if err != errMine {
					t.Fatalf("fn's error came back as %v", err)
				}

				e := entries[0]
				err = r.ReadBlobs(t.Context(), pack, entries[:1], func(e repo.BlobEntry) ([]byte, error) { return make([]byte, e.Length), nil },
					func(e repo.BlobEntry, sealed []byte) error {
						sealed[len(sealed)/2] ^= 1
						_, err := r.OpenBlob(pack, e, sealed, nil)
						return err
					})
				if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), pack.String()) || !strings.Contains(err.Error(), e.ID.String()) {
					t.Fatalf("a damaged blob: %v, want ErrCorrupt naming pack and blob", err)
				}
			}
			if seen != len(blobs) {
				t.Fatalf("OpenBlob saw %d blobs, want %d", seen, len(blobs))
			}
		})
	}
}
