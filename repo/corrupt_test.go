package repo_test

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/mem"
)

func TestReadPackHeaderCorrupt(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	saveBlobs(t, r, makeBlobs(rng, r, 5, 50<<10))
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	var name string
	var size int64
	for name, size = range list(t, be, repo.PackFile) {
		break
	}
	id := mustParseID(t, name)
	h := repo.Handle{Type: repo.PackFile, Name: name}
	orig := backendtest.LoadAll(t, be, h)
	hl := int64(orig[size-4]) | int64(orig[size-3])<<8 | int64(orig[size-2])<<16 | int64(orig[size-1])<<24
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
	}{
		{"header byte", func(b []byte) []byte { b[size-4-hl/2] ^= 1; return b }},
		{"header length +1", func(b []byte) []byte { b[size-4]++; return b }},
		{"header length -1", func(b []byte) []byte { b[size-4]--; return b }},
		{"header length huge", func(b []byte) []byte { b[size-1] = 0xff; return b }},
		{"header length zero", func(b []byte) []byte { copy(b[size-4:], []byte{0, 0, 0, 0}); return b }},
		{"blob region", func(b []byte) []byte { b[0] ^= 1; return b }}, // header still fine
	} {
		t.Run(tc.name, func(t *testing.T) {
			rewrite(t, be, h, func([]byte) []byte { return tc.change(bytes.Clone(orig)) })
			_, err := r.ReadPackHeader(t.Context(), id, size)
			if tc.name == "blob region" {
				if err != nil {
					t.Errorf("read header of a pack with a damaged blob: %v", err)
				}
				return
			}
			if !errors.Is(err, repo.ErrCorrupt) {
				t.Errorf("read pack header: %v, want ErrCorrupt", err)
			}
		})
	}
	// A size that is not the pack's.
	rewrite(t, be, h, func([]byte) []byte { return orig })
	for _, s := range []int64{size - 1, size + 1, 3, 0, -1} {
		if _, err := r.ReadPackHeader(t.Context(), id, s); err == nil {
			t.Errorf("read pack header with size %d of %d: no error", s, size)
		}
	}
}

func TestLoadBlobCorruptPack(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	blobs := makeBlobs(rng, r, 10, 100<<10)
	saveBlobs(t, r, blobs)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, b := range blobs {
		loc, _ := r.Index().Lookup(b.id)
		h := repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()}
		orig := backendtest.LoadAll(t, be, h)
		for _, tc := range []struct {
			name string
			at   int // offset in the sealed blob
		}{
			{"nonce", 0},
			{"ciphertext", 24 + rng.IntN(int(loc.Length)-40)},
			{"tag", int(loc.Length) - 1},
		} {
			rewrite(t, be, h, func([]byte) []byte {
				c := bytes.Clone(orig)
				c[int(loc.Offset)+tc.at] ^= byte(1 + rng.IntN(255))
				return c
			})
			_, err := r.LoadBlob(t.Context(), b.id, nil)
			if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), loc.Pack.String()) {
				t.Errorf("blob %v, flipped %s byte: %v; want ErrCorrupt naming pack %v", b.id.Str(), tc.name, err, loc.Pack)
			}
		}
		rewrite(t, be, h, func([]byte) []byte { return orig })
		if _, err := r.LoadBlob(t.Context(), b.id, nil); err != nil {
			t.Fatalf("restored pack: %v", err)
		}
	}
}

// docs/design.md, "Threat model": a truncated object is reported as corrupt.
func TestLoadBlobTruncatedPack(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	blobs := makeBlobs(rng, r, 10, 100<<10)
	saveBlobs(t, r, blobs)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	var last testBlob
	var lastLoc repo.Location
	for _, b := range blobs {
		loc, _ := r.Index().Lookup(b.id)
		if loc.Offset >= lastLoc.Offset {
			last, lastLoc = b, loc
		}
	}
	h := repo.Handle{Type: repo.PackFile, Name: lastLoc.Pack.String()}
	rewrite(t, be, h, func(b []byte) []byte { return b[:lastLoc.Offset+lastLoc.Length/2] })
	_, err := r.LoadBlob(t.Context(), last.id, nil)
	if !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("load blob from a truncated pack: %v, want ErrCorrupt", err)
	}
}

// An index that lies about a blob: the blob is never returned.
func TestLoadBlobForgedIndex(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	blobs := makeBlobs(rng, r, 10, 100<<10)
	blobs[0].plain = textBytes(rng, 5000)
	blobs[0].id, blobs[0].comp = r.BlobID(blobs[0].plain), repo.CompressionZstd
	blobs[1].plain = randomBytes(rng, 5000)
	blobs[1].id, blobs[1].comp = r.BlobID(blobs[1].plain), repo.CompressionNone
	saveBlobs(t, r, blobs)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	zloc, _ := r.Index().Lookup(blobs[0].id)
	nloc, _ := r.Index().Lookup(blobs[1].id)
	other, _ := r.Index().Lookup(blobs[2].id)
	for _, tc := range []struct {
		name  string
		forge func() repo.Location
	}{
		{"other blob's place", func() repo.Location { l := other; l.ID = zloc.ID; return l }},
		{"raw length", func() repo.Location { l := zloc; l.RawLength++; return l }},
		{"raw length short", func() repo.Location { l := zloc; l.RawLength--; return l }},
		{"raw length huge", func() repo.Location { l := zloc; l.RawLength = 1 << 31; return l }},
		{"compression off", func() repo.Location {
			l := zloc
			l.Compression, l.RawLength = repo.CompressionNone, l.Length-repo.Overhead
			return l
		}},
		{"compression on", func() repo.Location { l := nloc; l.Compression = repo.CompressionZstd; return l }},
		{"offset", func() repo.Location { l := zloc; l.Offset++; return l }},
		{"length", func() repo.Location { l := zloc; l.Length--; return l }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fbe := mem.New()
			for _, typ := range []repo.FileType{repo.ConfigFile, repo.KeyFile, repo.PackFile} {
				for name := range list(t, be, typ) {
					h := repo.Handle{Type: typ, Name: name}
					if err := fbe.Save(t.Context(), h, backendtest.LoadAll(t, be, h)); err != nil {
						t.Fatal(err)
					}
				}
			}
			l := tc.forge()
			fr := openRepo(t, fbe)
			if _, err := fr.SaveIndex(t.Context(), &repo.IndexData{Packs: []repo.PackBlobs{{PackID: l.Pack, Blobs: []repo.BlobEntry{l.BlobEntry}}}}); err != nil {
				t.Fatal(err)
			}
			if err := fr.LoadIndex(t.Context()); err != nil {
				t.Fatal(err)
			}
			got, err := fr.LoadBlob(t.Context(), l.ID, nil)
			if err == nil {
				t.Fatalf("forged index entry %+v: loaded %d bytes", l.BlobEntry, len(got))
			}
			if !errors.Is(err, repo.ErrCorrupt) {
				t.Errorf("forged index entry: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestLoadIndexCorrupt(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	saveBlobs(t, r, makeBlobs(rng, r, 5, 50<<10))
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	idx := list(t, be, repo.IndexFile)
	if len(idx) != 1 {
		t.Fatalf("%d index files", len(idx))
	}
	var name string
	for name = range idx {
	}
	h := repo.Handle{Type: repo.IndexFile, Name: name}
	orig := backendtest.LoadAll(t, be, h)
	plain, err := r.LoadObject(t.Context(), repo.IndexFile, name, -1)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("stored object", func(t *testing.T) {
		for _, change := range []func([]byte) []byte{
			func(b []byte) []byte { return b[:len(b)/2] },
			func(b []byte) []byte { return b[:len(b)-1] },
			func(b []byte) []byte { b[len(b)/2] ^= 4; return b },
			func(b []byte) []byte { return append(b, 0) },
		} {
			rewrite(t, be, h, func([]byte) []byte { return change(bytes.Clone(orig)) })
			err := openRepo(t, be).LoadIndex(t.Context())
			if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), name) {
				t.Errorf("load index: %v, want ErrCorrupt naming %s", err, name)
			}
		}
		rewrite(t, be, h, func([]byte) []byte { return orig })
	})

	// Properly sealed and named, but the plaintext is cut short: the
	// decoder must catch it.
	t.Run("truncated plaintext", func(t *testing.T) {
		for _, n := range []int{0, 7, 8, 9, len(plain) / 2, len(plain) - 1} {
			tbe := mem.New()
			for _, typ := range []repo.FileType{repo.ConfigFile, repo.KeyFile} {
				for name := range list(t, be, typ) {
					h := repo.Handle{Type: typ, Name: name}
					if err := tbe.Save(t.Context(), h, backendtest.LoadAll(t, be, h)); err != nil {
						t.Fatal(err)
					}
				}
			}
			tr := openRepo(t, tbe)
			id, err := tr.SaveUnpacked(t.Context(), repo.IndexFile, plain[:n])
			if err != nil {
				t.Fatal(err)
			}
			err = openRepo(t, tbe).LoadIndex(t.Context())
			if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), id.String()) {
				t.Errorf("index cut to %d of %d bytes: %v, want ErrCorrupt naming %v", n, len(plain), err, id)
			}
		}
	})
}

func TestUnpacked(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	plainA, plainB := textBytes(rng, 3000), randomBytes(rng, 1000)
	a, err := r.SaveUnpacked(t.Context(), repo.SnapshotFile, plainA)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.SaveUnpacked(t.Context(), repo.SnapshotFile, plainB)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := r.LoadUnpacked(t.Context(), repo.SnapshotFile, a); err != nil || !bytes.Equal(got, plainA) {
		t.Fatalf("load unpacked: %v", err)
	}
	stored := backendtest.LoadAll(t, be, repo.Handle{Type: repo.SnapshotFile, Name: a.String()})
	if repo.Hash(stored) != a || len(stored) != len(plainA)+repo.Overhead || bytes.Contains(stored, plainA[:100]) {
		t.Error("stored object is not the sealed plaintext named by its hash")
	}
	var ids []repo.ID
	if err := r.List(t.Context(), repo.SnapshotFile, func(id repo.ID, size int64) error {
		ids = append(ids, id)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 2 || !slices.Contains(ids, a) || !slices.Contains(ids, b) {
		t.Errorf("list: %v", ids)
	}

	ha := repo.Handle{Type: repo.SnapshotFile, Name: a.String()}
	origA := backendtest.LoadAll(t, be, ha)
	origB := backendtest.LoadAll(t, be, repo.Handle{Type: repo.SnapshotFile, Name: b.String()})
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
		want   string
	}{
		{"flipped", func(c []byte) []byte { c[50] ^= 1; return c }, "does not match its name"},
		{"truncated", func(c []byte) []byte { return c[:len(c)-1] }, "does not match its name"},
		{"swapped", func([]byte) []byte { return bytes.Clone(origB) }, "does not match its name"},
		{"empty", func([]byte) []byte { return []byte{} }, "does not match its name"},
	} {
		rewrite(t, be, ha, func([]byte) []byte { return tc.change(bytes.Clone(origA)) })
		_, err := r.LoadUnpacked(t.Context(), repo.SnapshotFile, a)
		if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), a.String()) {
			t.Errorf("%s: %v, want ErrCorrupt %q naming %v", tc.name, err, tc.want, a)
		}
	}
	// Named by its hash, but not sealed with our key.
	forged := randomBytes(rng, 200)
	fid := repo.Hash(forged)
	if err := be.Save(t.Context(), repo.Handle{Type: repo.SnapshotFile, Name: fid.String()}, forged); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadUnpacked(t.Context(), repo.SnapshotFile, fid); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("forged object: %v, want ErrCorrupt", err)
	}
	if _, err := r.LoadUnpacked(t.Context(), repo.SnapshotFile, repo.ID{1}); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("missing object: %v, want ErrNotFound", err)
	}
}
