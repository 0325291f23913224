package snapshot_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// TestRestorePageEdges restores files around the page size, cut into
// chunks of a few KiB, so that chunks start at, end at, straddle and sit
// inside pages, and one chunk lands at two offsets of different alignment.
func TestRestorePageEdges(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	const pg = 4096
	// Long enough that whatever the repository's chunker seed, both
	// copies hold several chunks cut alike (40 KiB missed once in CI).
	repeated := randBytes(rng, 160<<10)
	sizes := []int{0, 1, pg - 1, pg, pg + 1, 3*pg + 17, 200 << 10}
	dir := t.TempDir()
	files := map[string][]byte{}
	for i, n := range sizes {
		files[fmt.Sprintf("%06d.sst", 10+i)] = randBytes(rng, n)
	}
	files["000030.sst"] = compressible(rng, 100<<10)
	// The same bytes twice, at offsets 3 bytes apart within their pages:
	// the chunker cuts the same chunks inside both copies.
	files["000031.sst"] = bytes.Join([][]byte{randBytes(rng, 5000), repeated, []byte("abc"), repeated}, nil)
	files["MANIFEST-000005"] = randBytes(rng, 3*pg+5)
	files["CURRENT"] = []byte("MANIFEST-000005\n")
	for name, data := range files {
		writeFile(t, dir, name, data)
	}
	src := &dirSource{dir: dir, reply: []any{fmt.Sprintf("/MANIFEST-000005:%d", len(files["MANIFEST-000005"]))}}
	for name := range files {
		if name != "MANIFEST-000005" {
			src.reply = append(src.reply, "/"+name)
		}
	}

	opts := testInit
	opts.ChunkerMin, opts.ChunkerAvg, opts.ChunkerMax = 300, 2048, 9000
	r, err := repo.Init(context.Background(), mem.New(), "pw", opts, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	sn := backup(t, r, src, false)
	tree, err := snapshot.LoadTree(context.Background(), r, sn.Tree)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tree.Files {
		seen := map[repo.ID]bool{}
		for _, id := range f.Chunks {
			seen[id] = true
		}
		if f.Name == "000031.sst" && len(seen) == len(f.Chunks) {
			t.Fatalf("%s: no chunk repeats; the test needs one that does", f.Name)
		}
	}
	checkRestore(t, r, sn, files)
}
