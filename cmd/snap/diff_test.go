package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

// blobs is a fake chunk store for diffTrees: content by id.
type blobs struct {
	m     map[repo.ID][]byte
	loads int
}

// file makes a regular file of the given chunk contents.
func (b *blobs) file(name, role string, chunks ...[]byte) snapshot.File {
	f := snapshot.File{Name: name, Role: role}
	for _, c := range chunks {
		id := repo.Hash(c)
		b.m[id] = c
		f.Chunks, f.Sizes, f.Length = append(f.Chunks, id), append(f.Sizes, uint32(len(c))), f.Length+int64(len(c))
	}
	return f
}

func (b *blobs) load(_ context.Context, id repo.ID) ([]byte, error) {
	b.loads++
	c, ok := b.m[id]
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", id.Str(), repo.ErrNotIndexed)
	}
	return c, nil
}

func TestDiffTrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 1))
	data := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		return p
	}
	b := &blobs{m: map[repo.ID][]byte{}}
	a1, a2, a3 := data(1000), data(1000), data(300)     // a grown WAL's chunks
	w1 := append(append([]byte{}, a3...), data(200)...) // its old last chunk, cut again with 200 bytes more
	o1, o2 := data(400), data(100)                      // a file of another role that grew
	o3 := append(append([]byte{}, o2...), data(50)...)
	r1, r2, r3 := data(400), data(100), data(150) // grew, but its end was rewritten
	same := data(700)
	from := &snapshot.Tree{Files: []snapshot.File{
		{Name: "d", Type: snapshot.TypeDir, Role: "file", Mode: 0o755, MtimeNs: 1},
		b.file("d/same", "file", same),
		b.file("d/gone", "file", data(10)),
		b.file("d/changed", "file", data(20)),
		b.file("000011.log", "wal", a1, a2, a3),
		b.file("d/grown", "file", o1, o2),
		b.file("d/rewritten", "file", r1, r2),
		b.file("d/chmod", "file", data(5)),
		b.file("MANIFEST-000005", "manifest", data(64)),
		{Name: "d/link", Type: snapshot.TypeSymlink, Role: "file", Target: "same"},
	}}
	to := &snapshot.Tree{Files: []snapshot.File{
		{Name: "d", Type: snapshot.TypeDir, Role: "file", Mode: 0o755, MtimeNs: 2},
		from.Files[1],
		b.file("d/changed", "file", data(20)),
		b.file("000011.log", "wal", a1, a2, w1),
		b.file("d/grown", "file", o1, o3),
		b.file("d/rewritten", "file", r1, r3),
		b.file("d/new", "file", same, data(30)),
		b.file("MANIFEST-000005", "manifest", data(32)), // shorter: rewritten
		{Name: "d/link", Type: snapshot.TypeSymlink, Role: "file", Target: "new"},
	}}
	chmod := from.Files[7]
	chmod.Mode = 0o600
	to.Files = append(to.Files, chmod)

	d, err := snapshot.DiffTrees(t.Context(), from, to, false, b.load)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(d)
	want := `{"from":"","to":"",` +
		`"added":[{"name":"d/new","type":"file","bytes":730}],` +
		`"removed":[{"name":"d/gone","type":"file","bytes":10}],` +
		`"changed":[{"name":"MANIFEST-000005","type":"file","old_bytes":64,"new_bytes":32,"what":["content"]},` +
		`{"name":"d/changed","type":"file","old_bytes":20,"new_bytes":20,"what":["content"]},` +
		`{"name":"d/link","type":"symlink","old_bytes":0,"new_bytes":0,"what":["target"]},` +
		`{"name":"d/rewritten","type":"file","old_bytes":500,"new_bytes":550,"what":["content"]}],` +
		`"appended":[{"name":"000011.log","old_bytes":2300,"new_bytes":2500,"appended":200},` +
		`{"name":"d/grown","old_bytes":500,"new_bytes":550,"appended":50}],` +
		`"summary":{"added":1,"removed":1,"changed":4,"appended":2,"added_bytes":730,"removed_bytes":10,"appended_bytes":250,` +
		`"from_bytes":4099,"to_bytes":5087,"new_bytes":882,"new_chunks":6}}`
	// New chunks: d/changed's 20 bytes, the WAL's 500, d/grown's 150,
	// d/rewritten's 150, d/new's 30 (its 700 are d/same's) and MANIFEST's 32.
	if string(got) != want {
		t.Errorf("diff:\n got %s\nwant %s", got, want)
	}
	// Only the files that are not append-only and whose last chunk
	// differs are read: d/grown and d/rewritten, one old and one new
	// chunk each. The WAL is trusted to have grown.
	if b.loads != 4 {
		t.Errorf("%d chunks loaded, want 4", b.loads)
	}

	d, err = snapshot.DiffTrees(t.Context(), from, to, true, b.load)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range d.Changed {
		names = append(names, c.Name+":"+strings.Join(c.What, ","))
	}
	if g, w := strings.Join(names, " "), "MANIFEST-000005:content d:mtime d/changed:content d/chmod:mode d/link:target d/rewritten:content"; g != w {
		t.Errorf("with metadata, changed %s, want %s", g, w)
	}
	var out bytes.Buffer
	printDiff(&out, d, "aaaaaaaa", "bbbbbbbb")
	for _, line := range []string{
		"> 000011.log  +200 B (2.2 KiB -> 2.4 KiB)\n",
		"M MANIFEST-000005  64 B -> 32 B\n",
		"U d/ (mtime)\n",
		"- d/gone  10 B\n",
		"> d/grown  +50 B (500 B -> 550 B)\n",
		"U d/chmod (mode)\n",
		"M d/link (target)\n",
		"+ d/new  730 B\n",
		"aaaaaaaa -> bbbbbbbb: 1 added (730 B), 1 removed (10 B), 6 changed, 2 appended (+250 B); 882 B in 6 chunks new in bbbbbbbb\n",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("text output lacks %q:\n%s", line, out.String())
		}
	}

	// A chunk that cannot be read fails the diff, naming the file.
	delete(b.m, repo.Hash(o2))
	if _, err := snapshot.DiffTrees(t.Context(), from, to, false, b.load); err == nil || !strings.Contains(err.Error(), "compare d/grown") {
		t.Errorf("diff with a missing chunk: %v", err)
	}
}

// An empty old file that grew is appended without reading anything.
func TestDiffAppendedFromEmpty(t *testing.T) {
	b := &blobs{m: map[repo.ID][]byte{}}
	from := &snapshot.Tree{Files: []snapshot.File{b.file("1.log", "file")}}
	to := &snapshot.Tree{Files: []snapshot.File{b.file("1.log", "file", []byte("hello"))}}
	d, err := snapshot.DiffTrees(t.Context(), from, to, false, b.load)
	if err != nil || len(d.Appended) != 1 || d.Appended[0].Appended != 5 || b.loads != 0 {
		t.Fatalf("diff: %+v, %v, %d loads", d, err, b.loads)
	}
}
