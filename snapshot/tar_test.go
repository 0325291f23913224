package snapshot_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

type tarEntry struct {
	h    *tar.Header
	data []byte
}

// readTar reads a whole tar stream; it fails the test unless the stream
// is complete.
func readTar(t *testing.T, b []byte) []tarEntry {
	t.Helper()
	entries, err := readTarPrefix(b)
	if err != nil {
		t.Fatalf("read the tar stream back after %d entries: %v", len(entries), err)
	}
	return entries
}

// readTarPrefix reads entries until the end marker or an error.
func readTarPrefix(b []byte) ([]tarEntry, error) {
	tr := tar.NewReader(bytes.NewReader(b))
	var out []tarEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			return out, err
		}
		out = append(out, tarEntry{h, data})
	}
}

func writeTar(t *testing.T, r *repo.Repository, sn *snapshot.Snapshot, pr *snapshot.Progress) ([]byte, snapshot.TarStats) {
	t.Helper()
	var buf bytes.Buffer
	st, err := snapshot.WriteTar(context.Background(), r, sn, &buf, snapshot.TarOptions{Progress: pr})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), st
}

// extract runs the system's tar -x on stream into a new directory; dir
// is empty when tar is not installed.
func extract(t *testing.T, stream []byte) (dir string, out []byte, err error) {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Log("no tar on PATH: not extracting with it")
		return "", nil, nil
	}
	dir = t.TempDir()
	cmd := exec.Command("tar", "-xpf", "-", "-C", dir)
	cmd.Stdin = bytes.NewReader(stream)
	out, err = cmd.CombinedOutput()
	return dir, out, err
}

func loadTree(t *testing.T, r *repo.Repository, sn *snapshot.Snapshot) *snapshot.Tree {
	t.Helper()
	tree, err := snapshot.LoadTree(context.Background(), r, sn.Tree)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// checkOrder checks that the stream holds the tree's entries, in its
// order, with their names and types.
func checkOrder(t *testing.T, entries []tarEntry, tree *snapshot.Tree) {
	t.Helper()
	if len(entries) != len(tree.Files) {
		t.Fatalf("%d tar entries, the tree has %d", len(entries), len(tree.Files))
	}
	types := map[string]byte{snapshot.TypeFile: tar.TypeReg, snapshot.TypeDir: tar.TypeDir, snapshot.TypeSymlink: tar.TypeSymlink, snapshot.TypeHardlink: tar.TypeLink}
	for i, f := range tree.Files {
		h := entries[i].h
		name := f.Name
		if f.Type == snapshot.TypeDir {
			name += "/"
		}
		if h.Name != name || h.Typeflag != types[f.Type] {
			t.Fatalf("tar entry %d is %q of type %c, the tree's is %q, a %q", i, h.Name, h.Typeflag, f.Name, f.Type)
		}
		if f.Type == snapshot.TypeFile && (h.Size != f.Length || int64(len(entries[i].data)) != f.Length) {
			t.Fatalf("%s: %d bytes (header %d), the tree says %d", f.Name, len(entries[i].data), h.Size, f.Length)
		}
	}
}

// TestWriteTarFreeze: a freeze snapshot's files, some sharing chunks and
// one empty, come out whole and in tree order, with the default mode and
// the snapshot's time, and the system's tar extracts the same.
func TestWriteTarFreeze(t *testing.T) {
	fx := newFixture(t, 81)
	rng := rand.New(rand.NewPCG(81, 82))
	twice := randBytes(rng, 300<<10)
	extra := map[string][]byte{
		"000020.sst": fx.files["000011.sst"],          // every chunk also another file's
		"000021.sst": bytes.Repeat(twice, 2),          // chunks repeated within the file
		"000022.sst": nil,                             // empty
		"000023.sst": append(randBytes(rng, 7), 1, 2), // one tiny chunk
	}
	for name, data := range extra {
		writeFile(t, fx.dir, name, data)
		fx.files[name] = data
	}
	fx.relist()
	be := mem.New()
	sn := backup(t, newRepo(t, be), fx.src, false)
	loads := &countLoads{Backend: be}
	r := reopen(t, loads)
	tree := loadTree(t, r, sn)

	var pr snapshot.Progress
	loads.n.Store(0)
	stream, st := writeTar(t, r, sn, &pr)
	chunks := 0
	for _, f := range tree.Files {
		chunks += len(f.Chunks)
	}
	if n := loads.n.Load(); n > int32(chunks/2) {
		t.Fatalf("%d chunks read in %d requests: consecutive chunks of a pack are not read together", chunks, n)
	} else {
		t.Logf("%d chunks read in %d requests", chunks, n)
	}
	entries := readTar(t, stream)
	checkOrder(t, entries, tree)
	var total int64
	for i, f := range tree.Files {
		h := entries[i].h
		if !bytes.Equal(entries[i].data, fx.files[f.Name]) {
			t.Fatalf("%s: the tar holds %d bytes that differ from the %d backed up", f.Name, len(entries[i].data), len(fx.files[f.Name]))
		}
		if h.Mode != 0o644 || !h.ModTime.Equal(sn.Time) || strings.HasPrefix(h.Name, "/") {
			t.Fatalf("%s: mode %o, mtime %v; want 0644 and the snapshot's time %v", h.Name, h.Mode, h.ModTime, sn.Time)
		}
		total += f.Length
	}
	if st.Files != len(tree.Files) || st.Bytes != total {
		t.Fatalf("stats %+v, want %d files and %d bytes", st, len(tree.Files), total)
	}
	if pr.FilesDone.Load() != int64(st.Files) || pr.FilesTotal.Load() != int64(st.Files) || pr.BytesDone.Load() != total || pr.BytesTotal.Load() != total {
		t.Fatalf("progress %d/%d files, %d/%d bytes; want %d files, %d bytes", pr.FilesDone.Load(), pr.FilesTotal.Load(), pr.BytesDone.Load(), pr.BytesTotal.Load(), st.Files, total)
	}

	dir, out, err := extract(t, stream)
	if err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	if dir != "" {
		compareDir(t, dir, fx.files)
		fi, err := os.Stat(filepath.Join(dir, "CURRENT"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != 0o644 || !fi.ModTime().Equal(sn.Time) {
			t.Fatalf("extracted CURRENT: mode %v, mtime %v; want 0644 and %v", fi.Mode(), fi.ModTime(), sn.Time)
		}
	}
}

// countLoads counts the reads of packs.
type countLoads struct {
	repo.Backend
	n atomic.Int32
}

func (b *countLoads) Load(ctx context.Context, h repo.Handle, off, n int64, fn func(io.Reader) error) error {
	if h.Type == repo.PackFile {
		b.n.Add(1)
	}
	return b.Backend.Load(ctx, h, off, n, fn)
}

// dirFixture makes a directory with nested directories, symlinks (one
// absolute, one dangling), hard links, empty files and a file of many
// chunks, each with its own mode and an mtime in nanoseconds.
func dirFixture(t *testing.T) string {
	t.Helper()
	rng := rand.New(rand.NewPCG(83, 84))
	dir := t.TempDir()
	mk := func(name string) {
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk("sub/dir")
	mk("sub/empty-dir")
	mk("other")
	files := map[string][]byte{
		"CURRENT":          []byte("MANIFEST-000005\n"),
		"sub/dir/big":      randBytes(rng, 900<<10),
		"sub/dir/again":    bytes.Repeat(randBytes(rng, 200<<10), 3),
		"sub/empty":        nil,
		"other/empty-too":  nil,
		"other/small.conf": []byte("x = 1\n"),
	}
	for name, data := range files {
		writeFile(t, dir, name, data)
	}
	link := func(old, name string) {
		if err := os.Link(filepath.Join(dir, old), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	link("sub/dir/big", "zz-big-link")     // after its file in walk order
	link("sub/empty", "sub/zz-empty-link") // a hard link to an empty file
	for name, target := range map[string]string{
		"sub/to-big":   "dir/big",
		"abs":          "/etc/passwd",
		"dangling":     "does/not/exist",
		"other/up-one": "../sub",
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	modes := map[string]os.FileMode{
		"sub/dir/big": 0o600, "sub/dir/again": 0o640, "sub/empty": 0o400, "other/small.conf": 0o755 | os.ModeSetgid,
		"sub/dir": 0o700, "sub/empty-dir": 0o750, "other": 0o775 | os.ModeSticky,
	}
	for name, mode := range modes {
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil {
			t.Fatal(err)
		}
	}
	// Deepest first, so setting an mtime changes no parent's after it.
	base := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	for i, name := range []string{"sub/dir/big", "sub/dir/again", "sub/empty", "other/empty-too", "other/small.conf", "CURRENT", "sub/dir", "sub/empty-dir", "sub", "other"} {
		mt := base.Add(time.Duration(i) * time.Hour)
		if err := os.Chtimes(filepath.Join(dir, name), mt, mt); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// sameEntry compares what got holds at name with what want does: type,
// mode, mtime (not a symlink's: tar need not keep it), bytes, link text.
func sameEntry(t *testing.T, want, got, name string) {
	t.Helper()
	wi, err := os.Lstat(filepath.Join(want, name))
	if err != nil {
		t.Fatal(err)
	}
	gi, err := os.Lstat(filepath.Join(got, name))
	if err != nil {
		t.Fatalf("extracted: %v", err)
	}
	if wi.Mode() != gi.Mode() {
		t.Fatalf("%s: extracted mode %v, the source's %v", name, gi.Mode(), wi.Mode())
	}
	switch {
	case wi.Mode()&fs.ModeSymlink != 0:
		wt, _ := os.Readlink(filepath.Join(want, name))
		gt, _ := os.Readlink(filepath.Join(got, name))
		if wt != gt {
			t.Fatalf("%s: extracted symlink to %q, the source's to %q", name, gt, wt)
		}
		return
	case wi.Mode().IsRegular():
		wd, _ := os.ReadFile(filepath.Join(want, name))
		gd, _ := os.ReadFile(filepath.Join(got, name))
		if !bytes.Equal(wd, gd) {
			t.Fatalf("%s: extracted %d bytes that differ from the source's %d", name, len(gd), len(wd))
		}
	}
	if !wi.ModTime().Equal(gi.ModTime()) {
		t.Fatalf("%s: extracted mtime %v, the source's %v", name, gi.ModTime(), wi.ModTime())
	}
}

// TestWriteTarDir: a dir snapshot's directories, symlinks, hard links,
// modes and mtimes come out as the source had them, in tree order, and
// the system's tar extracts a copy of the source.
func TestWriteTarDir(t *testing.T) {
	src := dirFixture(t)
	r := newRepo(t, mem.New())
	sn := backup(t, r, source.NewDir(src, source.DirOptions{}), false)
	tree := loadTree(t, r, sn)
	stream, st := writeTar(t, r, sn, nil)
	entries := readTar(t, stream)
	checkOrder(t, entries, tree)
	kinds := map[string]int{}
	for i, f := range tree.Files {
		h := entries[i].h
		p := filepath.Join(src, filepath.FromSlash(f.Name))
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		kinds[f.Type]++
		if f.Type != snapshot.TypeSymlink && f.Type != snapshot.TypeHardlink {
			if want := unixMode(fi.Mode()); h.Mode != want || int64(f.Mode) != want {
				t.Fatalf("%s: tar mode %o, tree %o, source %o", f.Name, h.Mode, f.Mode, want)
			}
			if !h.ModTime.Equal(fi.ModTime()) {
				t.Fatalf("%s: tar mtime %v, source %v", f.Name, h.ModTime, fi.ModTime())
			}
		}
		switch f.Type {
		case snapshot.TypeFile:
			data, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(entries[i].data, data) {
				t.Fatalf("%s: the tar holds %d bytes that differ from the source's %d", f.Name, len(entries[i].data), len(data))
			}
			if len(f.Chunks) > 5 {
				kinds["many chunks"]++
			}
		case snapshot.TypeSymlink:
			if target, _ := os.Readlink(p); h.Linkname != target {
				t.Fatalf("%s: tar symlink to %q, the source's to %q", f.Name, h.Linkname, target)
			}
		case snapshot.TypeHardlink:
			ti, err := os.Lstat(filepath.Join(src, filepath.FromSlash(h.Linkname)))
			if err != nil || !os.SameFile(fi, ti) || h.Linkname != f.Target {
				t.Fatalf("%s: tar hard link to %q (tree %q), not the same file (%v)", f.Name, h.Linkname, f.Target, err)
			}
		}
	}
	if kinds[snapshot.TypeDir] != 4 || kinds[snapshot.TypeSymlink] != 4 || kinds[snapshot.TypeHardlink] != 2 || kinds["many chunks"] < 2 {
		t.Fatalf("the fixture did not make what the test needs: %v", kinds)
	}
	if st.Files != len(tree.Files) {
		t.Fatalf("stats %+v, the tree has %d entries", st, len(tree.Files))
	}

	dir, out, err := extract(t, stream)
	if err != nil {
		t.Fatalf("tar -x: %v\n%s", err, out)
	}
	if dir == "" {
		return
	}
	n := 0
	if err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != len(tree.Files) {
		t.Fatalf("tar -x made %d entries, the tree has %d", n, len(tree.Files))
	}
	for _, f := range tree.Files {
		sameEntry(t, src, dir, f.Name)
		if f.Type == snapshot.TypeHardlink {
			a, _ := os.Lstat(filepath.Join(dir, f.Name))
			b, _ := os.Lstat(filepath.Join(dir, f.Target))
			if !os.SameFile(a, b) {
				t.Fatalf("extracted %s is not a hard link to %s", f.Name, f.Target)
			}
		}
	}
}

// unixMode is m's permission bits, setuid, setgid and sticky as tar has
// them.
func unixMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	for bit, u := range map[fs.FileMode]int64{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
		if m&bit != 0 {
			mode |= u
		}
	}
	return mode
}

// checkTruncated checks that a failed WriteTar's stream does not read as a
// whole archive, to archive/tar or to the system's tar, and returns the
// entries that read whole.
func checkTruncated(t *testing.T, stream []byte) []tarEntry {
	t.Helper()
	entries, err := readTarPrefix(stream)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("archive/tar read the failed stream's %d entries to %v, want an unexpected EOF", len(entries), err)
	}
	if dir, out, err := extract(t, stream); err == nil && dir != "" {
		t.Fatalf("tar -x of a failed stream succeeded:\n%s", out)
	} else if err != nil {
		t.Logf("tar -x of the failed stream: %v: %s", err, bytes.TrimSpace(out))
	}
	return entries
}

// TestWriteTarMissingPack: a pack the index names is gone. WriteTar loads
// the index again, finds the blob still there in it, and fails naming the
// file, leaving a stream that does not read as whole.
func TestWriteTarMissingPack(t *testing.T) {
	src := dirFixture(t)
	be := mem.New()
	sn := backup(t, newRepo(t, be), source.NewDir(src, source.DirOptions{}), false)
	r := reopen(t, be)
	tree := loadTree(t, r, sn)
	// The pack of the last chunk of the last regular file; the first file
	// with a chunk in it is the one that fails.
	var victim repo.ID
	for _, f := range tree.Files {
		if len(f.Chunks) > 0 {
			victim = f.Chunks[len(f.Chunks)-1]
		}
	}
	loc, _ := r.Index().Lookup(victim)
	if err := be.Remove(context.Background(), repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()}); err != nil {
		t.Fatal(err)
	}
	first := ""
	for _, f := range tree.Files {
		for _, id := range f.Chunks {
			if l, _ := r.Index().Lookup(id); l.Pack == loc.Pack && first == "" {
				first = f.Name
			}
		}
	}

	var logs, buf bytes.Buffer
	_, err := snapshot.WriteTar(context.Background(), r, sn, &buf, snapshot.TarOptions{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err == nil || !errors.Is(err, repo.ErrNotFound) || !strings.Contains(err.Error(), "file "+first+":") || !strings.Contains(err.Error(), sn.ID.Str()) {
		t.Fatalf("WriteTar with a pack gone: %v; want a not-found error naming snapshot %s and file %s", err, sn.ID.Str(), first)
	}
	if !strings.Contains(logs.String(), "loading the index again") {
		t.Fatalf("WriteTar did not load the index again before failing:\n%s", logs.String())
	}
	t.Log(err)
	entries := checkTruncated(t, buf.Bytes())
	for i, e := range entries {
		f := tree.Files[i]
		if f.Name == first {
			t.Fatalf("the failed stream holds %s whole", first)
		}
		if f.Type == snapshot.TypeFile {
			data, err := os.ReadFile(filepath.Join(src, filepath.FromSlash(f.Name)))
			if err != nil || !bytes.Equal(e.data, data) {
				t.Fatalf("entry %d %s of the failed stream is not the source's whole file (%v)", i, f.Name, err)
			}
		}
	}
}

// TestWriteTarCorruptChunk: a chunk whose sealed bytes changed in its
// pack fails WriteTar, naming the file, as it fails a restore.
func TestWriteTarCorruptChunk(t *testing.T) {
	src := dirFixture(t)
	be := mem.New()
	sn := backup(t, newRepo(t, be), source.NewDir(src, source.DirOptions{}), false)
	r := reopen(t, be)
	tree := loadTree(t, r, sn)
	var victim repo.ID
	for _, f := range tree.Files {
		if len(f.Chunks) > 0 {
			victim = f.Chunks[len(f.Chunks)-1]
		}
	}
	want := ""
	for _, f := range tree.Files {
		if k := slices.Index(f.Chunks, victim); k >= 0 && want == "" {
			want = fmt.Sprintf("file %s: chunk %d:", f.Name, k)
		}
	}
	loc, _ := r.Index().Lookup(victim)
	ctx := context.Background()
	h := repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()}
	var data []byte
	if err := be.Load(ctx, h, 0, 0, func(rd io.Reader) (err error) { data, err = io.ReadAll(rd); return err }); err != nil {
		t.Fatal(err)
	}
	data[loc.Offset+loc.Length/2] ^= 0x40
	replace(t, be, h, data)

	var buf bytes.Buffer
	_, err := snapshot.WriteTar(ctx, reopen(t, be), sn, &buf, snapshot.TarOptions{})
	if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), want) {
		t.Fatalf("WriteTar of a corrupt chunk: %v; want a corruption error with %q", err, want)
	}
	t.Log(err)
	checkTruncated(t, buf.Bytes())
}

// TestWriteTarUnindexedChunk: a tree names a chunk no index has; WriteTar
// fails naming that file, after writing the files before it whole.
func TestWriteTarUnindexedChunk(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(86, 86))
	a, b := randBytes(rng, 3000), randBytes(rng, 5000)
	if _, err := r.SaveBlob(ctx, repo.DataBlob, r.BlobID(a), a); err != nil {
		t.Fatal(err)
	}
	tree := &snapshot.Tree{Files: []snapshot.File{
		{Name: "000001.sst", Role: "table", Length: 3000, Chunks: []repo.ID{r.BlobID(a)}, Sizes: []uint32{3000}},
		{Name: "000002.sst", Role: "table", Length: 8000, Chunks: []repo.ID{r.BlobID(a), r.BlobID(b)}, Sizes: []uint32{3000, 5000}},
	}}
	tid, err := snapshot.SaveTree(ctx, r, tree)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: time.Now(), Host: "h", Tree: tid, Source: snapshot.Source{Kind: source.KindFreeze}}
	if err := snapshot.Save(ctx, r, sn); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	st, err := snapshot.WriteTar(ctx, reopen(t, be), sn, &buf, snapshot.TarOptions{})
	if !errors.Is(err, repo.ErrNotIndexed) || !strings.Contains(err.Error(), "file 000002.sst: chunk 1") {
		t.Fatalf("WriteTar of a tree with an unindexed chunk: %v", err)
	}
	t.Log(err)
	if st.Files != 1 || st.Bytes != 6000 {
		t.Fatalf("stats %+v, want the first file and the first chunk of the second", st)
	}
	if entries := checkTruncated(t, buf.Bytes()); len(entries) != 1 || !bytes.Equal(entries[0].data, a) {
		t.Fatalf("the failed stream reads %d whole entries, want the first file", len(entries))
	}
}

// cancelOnWrite cancels a context at its first write.
type cancelOnWrite struct {
	bytes.Buffer
	cancel context.CancelFunc
}

func (w *cancelOnWrite) Write(p []byte) (int, error) {
	w.cancel()
	return w.Buffer.Write(p)
}

// TestWriteTarCancelledBetweenEntries: a WriteTar that stops between two
// entries (here, of many directories) still leaves a stream that tar
// refuses: GNU tar takes one that merely lacks the end marker as whole.
func TestWriteTarCancelledBetweenEntries(t *testing.T) {
	src := t.TempDir()
	for i := range 300 {
		if err := os.Mkdir(filepath.Join(src, strings.Repeat("d", 1+i%50)+string(rune('a'+i/50))), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := newRepo(t, mem.New())
	sn := backup(t, r, source.NewDir(src, source.DirOptions{}), false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &cancelOnWrite{cancel: cancel}
	st, err := snapshot.WriteTar(ctx, r, sn, w, snapshot.TarOptions{})
	if !errors.Is(err, context.Canceled) || st.Files == 0 || st.Files == 300 {
		t.Fatalf("WriteTar cancelled at its first write: %v after %d entries", err, st.Files)
	}
	if entries := checkTruncated(t, w.Bytes()); len(entries) != st.Files {
		t.Fatalf("the failed stream reads %d whole entries, WriteTar wrote %d", len(entries), st.Files)
	}
}

// TestWriteTarWhilePruneRepacks: a prune repacks and deletes the packs of
// the snapshot being written out; WriteTar loads the index again and
// reads the chunks from their new packs.
func TestWriteTarWhilePruneRepacks(t *testing.T) {
	fx := smallFixture(t, rand.New(rand.NewPCG(87, 87)))
	fx.put(t, "000001.sst", randBytes(rand.New(rand.NewPCG(88, 88)), 1500<<10))
	fx.relist()
	be := mem.New()
	backup(t, newRepo(t, be), fx.src, false)
	// The second snapshot lacks the largest table, so the packs it shares
	// with the first are mostly unused once the first is forgotten.
	os.Remove(filepath.Join(fx.dir, "000001.sst"))
	delete(fx.files, "000001.sst")
	fx.relist()
	sn := backup(t, reopen(t, be), fx.src, false)

	var res *snapshot.PruneResult
	r := openPruneMid(t, be, func() { res = prune(t, be, pruneOpts(time.Now, snapshot.Policy{Last: 1})) })
	var logs, buf bytes.Buffer
	if _, err := snapshot.WriteTar(context.Background(), r, sn, &buf, snapshot.TarOptions{Log: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatalf("WriteTar while a prune repacked: %v", err)
	}
	if res == nil || res.Stats.PacksRepacked+res.Stats.PacksDeleted == 0 {
		t.Fatalf("the prune moved nothing: %+v", res)
	}
	if !strings.Contains(logs.String(), "loading the index again") {
		t.Fatalf("WriteTar never needed the new index; the test proves nothing:\n%s", logs.String())
	}
	entries := readTar(t, buf.Bytes())
	if len(entries) != len(fx.files) {
		t.Fatalf("%d entries, want %d", len(entries), len(fx.files))
	}
	for _, e := range entries {
		if !bytes.Equal(e.data, fx.files[e.h.Name]) {
			t.Fatalf("%s: %d bytes that differ from the %d backed up", e.h.Name, len(e.data), len(fx.files[e.h.Name]))
		}
	}
}
