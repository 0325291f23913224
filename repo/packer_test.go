package repo_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/mem"
)

var errInjected = errors.New("injected failure")

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
	for name, size := range list(t, be, repo.PackFile) {
		e, err := r.ReadPackHeader(t.Context(), mustParseID(t, name), size)
		if err != nil {
			t.Fatal(err)
		}
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
	inner := mem.New()
	fbe := faulty.New(inner)
	o := smallOptions()
	o.Compression = "off"
	r := initRepo(t, fbe, o)

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
	base := randomBytes(rng, 1<<20)
	var blobs []testBlob
	for i := range 70 {
		p := bytes.Clone(base)
		p[0], p[1] = byte(i), byte(i>>8)
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
		plain, err := r.LoadObject(t.Context(), repo.IndexFile, c.Handle.Name, -1)
		if err != nil {
			t.Fatal(err)
		}
		d, err := repo.DecodeIndex(plain)
		if err != nil {
			t.Fatal(err)
		}
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
			inner := mem.New()
			fbe := faulty.New(inner)
			o := smallOptions()
			o.Compression = "off"
			r := initRepo(t, fbe, o)
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
			base := randomBytes(rng, tc.size)
			var saveErr error
			for i := range tc.blobs {
				p := bytes.Clone(base)
				p[0], p[1] = byte(i), byte(i>>8)
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
				plain, err := r.LoadObject(t.Context(), repo.IndexFile, name, -1)
				if err != nil {
					t.Fatal(err)
				}
				d, err := repo.DecodeIndex(plain)
				if err != nil {
					t.Fatal(err)
				}
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
