package repo_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/mem"
)

var errInjected = errors.New("injected failure")

// faultyRepo is a repository with small packs and no compression, in
// memory behind a fault-injecting backend.
func faultyRepo(t *testing.T) (*mem.Backend, *faulty.Backend, *repo.Repository) {
	t.Helper()
	inner := mem.New()
	fbe := faulty.New(inner)
	o := smallOptions()
	o.Compression = "off"
	return inner, fbe, initRepo(t, fbe, o)
}

// variants returns n distinct copies of base, each differing in its first
// two bytes: with base the pack size, a pack each.
func variants(base []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		p := bytes.Clone(base)
		p[0], p[1] = byte(i), byte(i>>8)
		out[i] = p
	}
	return out
}

// loadIndexFile reads and decodes one stored index file.
func loadIndexFile(t *testing.T, r *repo.Repository, name string) *repo.IndexData {
	t.Helper()
	plain, err := r.LoadObject(t.Context(), repo.IndexFile, name, -1)
	if err != nil {
		t.Fatal(err)
	}
	d, err := repo.DecodeIndex(plain)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Many goroutines saving overlapping blobs: each is new exactly once.
func TestSaveBlobConcurrentDuplicates(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	blobs := makeBlobs(rng, r, 60, 100<<10)
	var mu sync.Mutex
	newCount := map[repo.ID]int{}
	var g errgroup.Group
	for w := range 8 {
		order := rand.New(rand.NewPCG(*seed, uint64(w))).Perm(len(blobs))
		g.Go(func() error {
			for _, i := range order {
				b := blobs[i]
				isNew, err := r.SaveBlob(t.Context(), b.typ, b.id, b.plain)
				if err != nil {
					return err
				}
				if isNew {
					mu.Lock()
					newCount[b.id]++
					mu.Unlock()
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		if newCount[b.id] != 1 {
			t.Errorf("blob %v reported new %d times", b.id.Str(), newCount[b.id])
		}
	}
	if st := r.Stats(); st.BlobsNew != int64(len(blobs)) {
		t.Errorf("stats: %d blobs new, want %d", st.BlobsNew, len(blobs))
	}
	var entries int
	for _, e := range packBlobs(t, r, be) {
		entries += len(e)
	}
	if entries != len(blobs) {
		t.Errorf("packs hold %d blobs, want %d", entries, len(blobs))
	}
	checkBlobs(t, r, blobs)
}

// docs/design.md, "Write and read ordering": an index file is saved only
// after every pack it names is stored, also for the index files written
// mid-backup.
func TestWriteOrdering(t *testing.T) {
	if testing.Short() {
		t.Skip("stores 70 MiB")
	}
	rng := newRand(t)
	inner, fbe, r := faultyRepo(t)

	var mu sync.Mutex
	present := map[string]map[string]bool{} // index name -> packs stored when its Save began
	fbe.FailOn(func(op string, h repo.Handle) error {
		if op != faulty.OpSave || h.Type != repo.IndexFile {
			return nil
		}
		packs := map[string]bool{}
		err := inner.List(t.Context(), repo.PackFile, func(fi repo.FileInfo) error {
			packs[fi.Name] = true
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		mu.Lock()
		present[h.Name] = packs
		mu.Unlock()
		return nil
	})

	// One blob per pack: 1 MiB blobs fill a 1 MiB pack.
	var blobs []testBlob
	for _, p := range variants(randomBytes(rng, 1<<20), 70) {
		blobs = append(blobs, testBlob{id: r.BlobID(p), typ: repo.DataBlob, plain: p})
	}
	tree := textBytes(rng, 3000)
	blobs = append(blobs, testBlob{id: r.BlobID(tree), typ: repo.TreeBlob, plain: tree, comp: repo.CompressionNone})
	saveBlobs(t, r, blobs)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Packs != 71 || st.Indexes < 2 {
		t.Fatalf("stats %+v: want 71 packs and a mid-backup index", st)
	}

	calls := fbe.Calls()
	packSave := map[string]int{}
	for i, c := range calls {
		if c.Op == faulty.OpSave && c.Handle.Type == repo.PackFile && c.Err == nil {
			packSave[c.Handle.Name] = i
		}
	}
	named := map[repo.ID]bool{}
	nIndex := 0
	for i, c := range calls {
		if c.Op != faulty.OpSave || c.Handle.Type != repo.IndexFile {
			continue
		}
		nIndex++
		d := loadIndexFile(t, r, c.Handle.Name)
		for _, p := range d.Packs {
			named[p.PackID] = true
			j, ok := packSave[p.PackID.String()]
			if !ok || j > i {
				t.Errorf("index %s (call %d) names pack %s saved at call %d (ok %v)", c.Handle.Name[:8], i, p.PackID.Str(), j, ok)
			}
			if !present[c.Handle.Name][p.PackID.String()] {
				t.Errorf("index %s saved before pack %s was stored", c.Handle.Name[:8], p.PackID.Str())
			}
		}
	}
	if nIndex < 2 || len(named) != 71 {
		t.Errorf("%d index saves naming %d packs, want >= 2 naming 71", nIndex, len(named))
	}
}

func TestPackSaveFails(t *testing.T) {
	for _, tc := range []struct {
		name   string
		failAt int // the n-th pack save fails (from 1)
		blobs  int
		size   int // 1 MiB: a pack each
	}{
		{"first pack", 1, 3, 1 << 20},
		{"third pack", 3, 6, 1 << 20},
		{"after a mid-backup index", 66, 70, 1 << 20},
		{"in flush", 1, 5, 1000}, // one pack, uploaded by Flush
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.blobs > 10 {
				t.Skip("stores 70 MiB")
			}
			rng := newRand(t)
			inner, fbe, r := faultyRepo(t)
			var mu sync.Mutex
			n := 0
			fbe.FailOn(func(op string, h repo.Handle) error {
				if op != faulty.OpSave || h.Type != repo.PackFile {
					return nil
				}
				mu.Lock()
				defer mu.Unlock()
				n++
				if n == tc.failAt {
					return errInjected
				}
				return nil
			})
			var saveErr error
			for _, p := range variants(randomBytes(rng, tc.size), tc.blobs) {
				if _, err := r.SaveBlob(t.Context(), repo.DataBlob, r.BlobID(p), p); err != nil {
					saveErr = err
					break
				}
			}
			err := r.Flush(t.Context())
			if !errors.Is(err, errInjected) {
				t.Errorf("flush: %v, want the injected error", err)
			}
			if saveErr != nil && !errors.Is(saveErr, errInjected) {
				t.Errorf("save blob: %v, want the injected error", saveErr)
			}
			// The failure is sticky: nothing more is accepted.
			p := []byte("more")
			if _, err := r.SaveBlob(t.Context(), repo.DataBlob, r.BlobID(p), p); !errors.Is(err, errInjected) {
				t.Errorf("save after a failed upload: %v, want the injected error", err)
			}
			// Every index file names stored packs only.
			packs := list(t, inner, repo.PackFile)
			for name := range list(t, inner, repo.IndexFile) {
				d := loadIndexFile(t, r, name)
				for _, p := range d.Packs {
					if _, ok := packs[p.PackID.String()]; !ok {
						t.Errorf("index %s names missing pack %s", name[:8], p.PackID.Str())
					}
				}
			}
			// What was indexed is readable by the next process.
			r2 := openRepo(t, inner)
			if err := r2.LoadIndex(t.Context()); err != nil {
				t.Fatal(err)
			}
			if tc.name == "after a mid-backup index" && r2.Index().Len() < 64 {
				t.Errorf("mid-backup index lost: %d blobs indexed", r2.Index().Len())
			}
		})
	}
}

func TestIndexSaveFails(t *testing.T) {
	rng := newRand(t)
	inner := mem.New()
	fbe := faulty.New(inner)
	r := initRepo(t, fbe, smallOptions())
	fbe.FailOn(func(op string, h repo.Handle) error {
		if op == faulty.OpSave && h.Type == repo.IndexFile {
			return errInjected
		}
		return nil
	})
	blobs := makeBlobs(rng, r, 20, 100<<10)
	saveBlobs(t, r, blobs)
	if err := r.Flush(t.Context()); !errors.Is(err, errInjected) {
		t.Errorf("flush: %v, want the injected error", err)
	}
	if len(list(t, inner, repo.IndexFile)) != 0 {
		t.Error("an index file was stored")
	}
}

// packBlobs reads every pack's header: pack name -> its entries.
func packBlobs(t *testing.T, r *repo.Repository, be repo.Backend) map[repo.ID][]repo.BlobEntry {
	t.Helper()
	out := map[repo.ID][]repo.BlobEntry{}
	for name, size := range list(t, be, repo.PackFile) {
		id := mustParseID(t, name)
		e, err := r.ReadPackHeader(t.Context(), id, size)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = e
	}
	return out
}

// A repacking session stores blobs the index knows, leaves the in-memory
// index alone, returns its packs and writes an index file for each.
func TestSaverRepack(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	blobs := makeBlobs(rng, r, 40, 200<<10)
	saveBlobs(t, r, blobs)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	old := map[repo.ID]repo.ID{} // blob -> pack
	for _, b := range blobs {
		loc, _ := r.Index().Lookup(b.id)
		old[b.id] = loc.Pack
	}
	oldPacks := packBlobs(t, r, be)
	oldIndexes := list(t, be, repo.IndexFile)

	s := r.NewSaver(repo.SaverOptions{Repack: true, IndexEvery: 1})
	for _, b := range blobs {
		isNew, err := s.Save(t.Context(), b.typ, b.id, b.plain)
		if err != nil || !isNew {
			t.Fatalf("save %v: new %v, %v; want a new copy", b.id.Str(), isNew, err)
		}
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	packs, size := s.Packs()
	st := s.Stats()
	if st.BlobsNew != int64(len(blobs)) || st.Packs != int64(len(packs)) || st.BytesSaved != size || st.Indexes != int64(len(packs)) {
		t.Errorf("stats %+v for %d packs of %d bytes, want %d blobs and an index a pack", st, len(packs), size, len(blobs))
	}
	for _, b := range blobs {
		if loc, _ := r.Index().Lookup(b.id); loc.Pack != old[b.id] {
			t.Errorf("blob %v moved in the in-memory index to pack %v", b.id.Str(), loc.Pack.Str())
		}
	}
	// Every blob once in the new packs, as their headers say.
	stored := packBlobs(t, r, be)
	inNew := map[repo.ID]int{}
	var total int64
	for _, p := range packs {
		if oldPacks[p.PackID] != nil {
			t.Errorf("pack %v was there before", p.PackID.Str())
		}
		hdr := stored[p.PackID]
		if len(hdr) != len(p.Blobs) {
			t.Fatalf("pack %v: header lists %d blobs, Packs %d", p.PackID.Str(), len(hdr), len(p.Blobs))
		}
		for i, e := range p.Blobs {
			if e != hdr[i] {
				t.Errorf("pack %v blob %d: %+v, header says %+v", p.PackID.Str(), i, e, hdr[i])
			}
			inNew[e.ID]++
		}
		total += list(t, be, repo.PackFile)[p.PackID.String()]
	}
	if total != size {
		t.Errorf("packs hold %d bytes, Packs says %d", total, size)
	}
	for _, b := range blobs {
		if inNew[b.id] != 1 {
			t.Errorf("blob %v is in %d new packs, want 1", b.id.Str(), inNew[b.id])
		}
	}
	// One index file a pack, each naming that pack alone.
	ids := s.Indexes()
	if len(ids) != len(packs) || len(list(t, be, repo.IndexFile)) != len(oldIndexes)+len(packs) {
		t.Fatalf("%d index files for %d packs", len(ids), len(packs))
	}
	named := map[repo.ID]bool{}
	for _, id := range ids {
		d := loadIndexFile(t, r, r.IndexName("", id))
		if len(d.Packs) != 1 {
			t.Fatalf("index %v names %d packs, want 1", id.Str(), len(d.Packs))
		}
		named[d.Packs[0].PackID] = true
	}
	for _, p := range packs {
		if !named[p.PackID] {
			t.Errorf("no index file names pack %v", p.PackID.Str())
		}
	}
}

// docs/design.md, "Packs": a blob that would take a pack past the target
// closes it, so a pack holds at most the target or one larger blob; the
// same for every kind of session.
func TestSaverPackSize(t *testing.T) {
	for _, o := range []repo.SaverOptions{{}, {Repack: true, IndexEvery: 1}, {Repack: true, NoIndex: true}} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			rng := newRand(t)
			be := mem.New()
			opts := smallOptions()
			r := initRepo(t, be, opts)
			blobs := makeBlobs(rng, r, 50, 300<<10)
			big := randomBytes(rng, 3<<20/2)
			blobs = append(blobs, testBlob{id: r.BlobID(big), typ: repo.DataBlob, plain: big})
			s := r.NewSaver(o)
			var g errgroup.Group
			g.SetLimit(4)
			for _, b := range blobs {
				g.Go(func() error {
					_, err := s.Save(t.Context(), b.typ, b.id, b.plain)
					return err
				})
			}
			if err := g.Wait(); err != nil {
				t.Fatal(err)
			}
			if err := s.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			n := 0
			for id, entries := range packBlobs(t, r, be) {
				var data int
				for _, e := range entries {
					data += int(e.Length)
					if e.Type != entries[0].Type {
						t.Errorf("pack %v mixes blob types", id.Str())
					}
				}
				if data > opts.PackSize && len(entries) > 1 {
					t.Errorf("pack %v: %d blobs of %d bytes, over the %d target", id.Str(), len(entries), data, opts.PackSize)
				}
				n += len(entries)
			}
			if n != len(blobs) {
				t.Errorf("packs hold %d blobs, want %d", n, len(blobs))
			}
		})
	}
}

// With IndexEvery 1 each pack is indexed as soon as it is stored, not at
// Flush: with one connection, storage sees pack, index, pack, index.
func TestSaverIndexEachPackAtOnce(t *testing.T) {
	rng := newRand(t)
	_, fbe, _ := faultyRepo(t)
	r, err := repo.Open(t.Context(), fbe, password, repo.Options{Connections: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := r.NewSaver(repo.SaverOptions{Repack: true, IndexEvery: 1})
	for _, p := range variants(randomBytes(rng, 1<<20), 5) { // a pack each
		if _, err := s.Save(t.Context(), repo.DataBlob, r.BlobID(p), p); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	var seq []repo.FileType
	for _, c := range fbe.Calls() {
		if c.Op == faulty.OpSave && (c.Handle.Type == repo.PackFile || c.Handle.Type == repo.IndexFile) {
			seq = append(seq, c.Handle.Type)
		}
	}
	want := slices.Repeat([]repo.FileType{repo.PackFile, repo.IndexFile}, 5)
	if !slices.Equal(seq, want) {
		t.Errorf("saves %v, want %v", seq, want)
	}
}

// NoIndex stores packs no index file names; the caller has them.
func TestSaverNoIndex(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	blobs := makeBlobs(rng, r, 30, 200<<10)
	s := r.NewSaver(repo.SaverOptions{Repack: true, NoIndex: true})
	for _, b := range blobs {
		if _, err := s.Save(t.Context(), b.typ, b.id, b.plain); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	packs, _ := s.Packs()
	if n := len(list(t, be, repo.IndexFile)); n != 0 || len(s.Indexes()) != 0 || s.Stats().Indexes != 0 {
		t.Errorf("%d index files stored, want none", n)
	}
	if len(packs) == 0 || len(packs) != len(list(t, be, repo.PackFile)) {
		t.Errorf("Packs returns %d of %d stored packs", len(packs), len(list(t, be, repo.PackFile)))
	}
	if r.Index().Len() != 0 {
		t.Errorf("the in-memory index has %d blobs, want none", r.Index().Len())
	}
}

// A repacking session's failed index file is sticky too: nothing more is
// accepted and Flush reports it.
func TestSaverRepackIndexFails(t *testing.T) {
	rng := newRand(t)
	_, fbe, r := faultyRepo(t)
	fbe.FailOn(func(op string, h repo.Handle) error {
		if op == faulty.OpSave && h.Type == repo.IndexFile {
			return errInjected
		}
		return nil
	})
	s := r.NewSaver(repo.SaverOptions{Repack: true, IndexEvery: 1})
	base := randomBytes(rng, 1<<20)
	for _, p := range variants(base, 3) {
		if _, err := s.Save(t.Context(), repo.DataBlob, r.BlobID(p), p); err != nil && !errors.Is(err, errInjected) {
			t.Fatalf("save: %v", err)
		}
	}
	if err := s.Flush(t.Context()); !errors.Is(err, errInjected) {
		t.Errorf("flush: %v, want the injected error", err)
	}
	if _, err := s.Save(t.Context(), repo.DataBlob, r.BlobID(base), base); !errors.Is(err, errInjected) {
		t.Errorf("save after a failed index: %v, want the injected error", err)
	}
	if ids := s.Indexes(); len(ids) != 0 {
		t.Errorf("Indexes returns %d files, none was stored", len(ids))
	}
}
