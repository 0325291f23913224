package local_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/local"
)

func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) repo.Backend {
		return create(t, filepath.Join(t.TempDir(), "repo"))
	})
}

func create(t *testing.T, dir string) *local.Backend {
	t.Helper()
	be, err := local.Create(dir)
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return be
}

func TestLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	be := create(t, dir)
	for _, d := range []string{"keys", "data/00", "data/7f", "data/ff", "index", "snapshots", "tails", "locks"} {
		fi, err := os.Stat(filepath.Join(dir, d))
		if err != nil {
			t.Fatalf("layout: %v", err)
		}
		if !fi.IsDir() || fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s: mode %v, want a directory with at most 0700", d, fi.Mode())
		}
	}
	for h, want := range map[repo.Handle]string{
		{Type: repo.ConfigFile}:                        "config",
		{Type: repo.PackFile, Name: "ab01"}:            "data/ab/ab01",
		{Type: repo.IndexFile, Name: "ab01"}:           "index/ab01",
		{Type: repo.SnapshotFile, Name: "0123456789"}:  "snapshots/0123456789",
		{Type: repo.TailFile, Name: "ab-0123456789"}:   "tails/ab-0123456789",
		{Type: repo.PackFile, Name: "zz01"}:            "",
		{Type: repo.PackFile, Name: "a"}:               "",
		{Type: repo.IndexFile, Name: "../config"}:      "",
		{Type: repo.LockFile, Name: ".tmp-1234567890"}: "",
	} {
		if want != "" {
			want = filepath.Join(dir, want)
		}
		if got := be.Path(h); got != want {
			t.Errorf("Path(%v) = %q, want %q", h, got, want)
		}
	}
}

// A repository made before tails existed has no tails/ directory: it
// opens, lists no tails, and the first Save of one makes the directory.
func TestNoTailsDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	create(t, dir)
	if err := os.WriteFile(filepath.Join(dir, "config"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "tails")); err != nil {
		t.Fatal(err)
	}
	be, err := local.Open(dir)
	if err != nil {
		t.Fatalf("open without tails/: %v", err)
	}
	ctx := t.Context()
	list := func() []string {
		t.Helper()
		var names []string
		if err := be.List(ctx, repo.TailFile, func(fi repo.FileInfo) error {
			names = append(names, fi.Name)
			return nil
		}); err != nil {
			t.Fatalf("list tails: %v", err)
		}
		return names
	}
	if got := list(); len(got) != 0 {
		t.Fatalf("list tails without tails/: %q", got)
	}
	h := repo.Handle{Type: repo.TailFile, Name: "0123abcd-3-" + strings.Repeat("ab", 32)}
	if _, err := be.Stat(ctx, h); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("stat without tails/: %v, want ErrNotFound", err)
	}
	if err := be.Remove(ctx, h); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("remove without tails/: %v, want ErrNotFound", err)
	}
	if err := be.Save(ctx, h, []byte("tail")); err != nil {
		t.Fatalf("save without tails/: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "tails")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("tails/ after save: %v, %v", fi, err)
	}
	if got := list(); len(got) != 1 || got[0] != h.Name {
		t.Fatalf("list tails after save: %q", got)
	}
	if got := backendtest.LoadAll(t, be, h); string(got) != "tail" {
		t.Errorf("load %v = %q", h, got)
	}
	// Only tails/ is made on demand: a vanished repository stays an error.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := be.List(ctx, repo.TailFile, func(repo.FileInfo) error { return nil }); err == nil {
		t.Error("list tails of a removed repository: no error")
	}
	if err := be.Save(ctx, repo.Handle{Type: repo.TailFile, Name: "ab-" + strings.Repeat("cd", 32)}, nil); err == nil {
		t.Error("save a tail in a removed repository: no error")
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the removed repository came back: %v", err)
	}
}

func TestPackNames(t *testing.T) {
	be := create(t, filepath.Join(t.TempDir(), "repo"))
	for _, name := range []string{"a", "zz01", "AB01", ".tmp-ab"} {
		h := repo.Handle{Type: repo.PackFile, Name: name}
		if err := be.Save(t.Context(), h, []byte("x")); err == nil {
			t.Errorf("save %v: no error", h)
		}
	}
}

// A crash mid-save leaves a ".tmp-" file; it must stay invisible and not
// get in the way.
func TestLeftoverTemp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	be := create(t, dir)
	h := repo.Handle{Type: repo.PackFile, Name: "ab0123"}
	hi := repo.Handle{Type: repo.IndexFile, Name: "cd0123"}
	for _, p := range []string{
		filepath.Join(dir, "data", "ab", ".tmp-12345"),
		filepath.Join(dir, "index", ".tmp-67890"),
		filepath.Join(dir, "index", ".tmp-"+hi.Name),
	} {
		if err := os.WriteFile(p, []byte("torn"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, typ := range []repo.FileType{repo.PackFile, repo.IndexFile} {
		err := be.List(t.Context(), typ, func(fi repo.FileInfo) error {
			return errors.New("listed " + fi.Name)
		})
		if err != nil {
			t.Errorf("list %s: %v", typ, err)
		}
	}
	for _, h := range []repo.Handle{h, hi} {
		if err := be.Save(t.Context(), h, []byte("whole")); err != nil {
			t.Fatalf("save after crash: %v", err)
		}
		if got := backendtest.LoadAll(t, be, h); string(got) != "whole" {
			t.Errorf("load %v = %q", h, got)
		}
	}
}

// No temp file may stay behind, also after a failed Save.
func TestNoTempLeft(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	be := create(t, dir)
	h := repo.Handle{Type: repo.PackFile, Name: "ab0123"}
	if err := be.Save(t.Context(), h, []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(t.Context(), h, []byte("two")); !errors.Is(err, repo.ErrExists) {
		t.Fatalf("save existing: %v", err)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".tmp-") {
			t.Errorf("temp file left: %s", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	be := create(t, dir)
	for _, h := range []repo.Handle{
		{Type: repo.ConfigFile},
		{Type: repo.KeyFile, Name: "k1"},
		{Type: repo.PackFile, Name: "ff00"},
	} {
		if err := be.Save(t.Context(), h, []byte("secret")); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(be.Path(h))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%v: mode %v, want 0600", h, fi.Mode().Perm())
		}
	}
}

func TestCreateExisting(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	be := create(t, dir)
	if err := be.Save(t.Context(), repo.Handle{Type: repo.ConfigFile}, []byte("cfg")); err != nil {
		t.Fatal(err)
	}
	_, err := local.Create(dir)
	if err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("create over a repository: got %v, want an 'already exists' error", err)
	}
	be2, err := local.Open(dir)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if got := backendtest.LoadAll(t, be2, repo.Handle{Type: repo.ConfigFile}); string(got) != "cfg" {
		t.Errorf("config = %q", got)
	}
}

// Create into an existing empty directory is fine (t.TempDir, a mount point).
func TestCreateEmptyDir(t *testing.T) {
	dir := t.TempDir()
	create(t, dir)
	if _, err := os.Stat(filepath.Join(dir, "data", "00")); err != nil {
		t.Fatal(err)
	}
}

func TestOpenNotRepository(t *testing.T) {
	tmp := t.TempDir()
	file := filepath.Join(tmp, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	noConfig := filepath.Join(tmp, "noconfig")
	create(t, noConfig) // layout but no config
	for _, dir := range []string{
		filepath.Join(tmp, "missing"),
		tmp,
		noConfig,
		file,
	} {
		_, err := local.Open(dir)
		want := "no snap repository at " + dir + " (run snap init)"
		if err == nil || err.Error() != want || !errors.Is(err, repo.ErrNoRepository) {
			t.Errorf("open %s: got %v, want %q", dir, err, want)
		}
	}
}

// Another Backend on the same directory, as another process would have, sees
// what was saved.
func TestSecondInstance(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	a := create(t, dir)
	if err := a.Save(t.Context(), repo.Handle{Type: repo.ConfigFile}, []byte("cfg")); err != nil {
		t.Fatal(err)
	}
	b, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	h := repo.Handle{Type: repo.PackFile, Name: "0a0b"}
	if err := a.Save(t.Context(), h, []byte("pack")); err != nil {
		t.Fatal(err)
	}
	if got := backendtest.LoadAll(t, b, h); !bytes.Equal(got, []byte("pack")) {
		t.Errorf("second instance loaded %q", got)
	}
	if err := b.Save(t.Context(), h, []byte("other")); !errors.Is(err, repo.ErrExists) {
		t.Errorf("second instance overwrote: %v", err)
	}
}

func TestErrorNamesObjectAndLocation(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	be := create(t, dir)
	_, err := be.Stat(t.Context(), repo.Handle{Type: repo.IndexFile, Name: "beef"})
	if err == nil || !strings.Contains(err.Error(), "index/beef") || !strings.Contains(err.Error(), dir) {
		t.Errorf("stat error %q does not name the object and %s", err, dir)
	}
}

// A large range of a pack not in the page cache is read with direct I/O,
// and its reader reads
// placed: pieces at any offset, after any skip, straight into aligned
// memory, with the bytes at their remainder modulo the page; a piece past
// the range's end is a short read, a buffer too small an error.
func TestReadPlaced(t *testing.T) {
	be := create(t, filepath.Join(t.TempDir(), "repo"))
	data := make([]byte, 3<<20+123)
	for i := range data {
		data[i] = byte(i*131 + i>>11)
	}
	h := repo.Handle{Type: repo.PackFile, Name: strings.Repeat("ab", 32)}
	if err := be.Save(t.Context(), h, data); err != nil {
		t.Fatal(err)
	}
	const start = 4096*5 + 77
	end := int64(len(data) - 50)
	// A range in the page cache is read buffered.
	if _, err := directio.Evict(filepath.Join(be.Location(), string(repo.PackFile), h.Name[:2], h.Name)); err != nil {
		t.Fatal(err)
	}
	err := be.Load(t.Context(), h, start, end-start, func(rd io.Reader) error {
		pr, ok := rd.(repo.PlacedReader)
		if !ok {
			t.Skip("the file system does not do direct I/O here")
		}
		buf := directio.AllocHuge(4 << 20)
		defer buf.Free()
		pos := int64(start)
		for _, p := range []struct{ skip, n int64 }{{0, 1}, {0, 4095}, {3, 9000}, {1 << 20, 700 << 10}, {100, -1}} {
			if p.n < 0 {
				p.n = end - (pos + p.skip) // the rest of the range
			}
			pad, err := pr.ReadPlaced(buf.B, p.skip, int(p.n))
			if err != nil {
				return fmt.Errorf("skip %d, n %d: %w", p.skip, p.n, err)
			}
			off := pos + p.skip
			if pad != int(off%directio.Align) || !bytes.Equal(buf.B[pad:pad+int(p.n)], data[off:off+p.n]) {
				return fmt.Errorf("skip %d, n %d: pad %d, or the bytes differ", p.skip, p.n, pad)
			}
			pos = off + p.n
		}
		if _, err := pr.ReadPlaced(buf.B, 0, 1); !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("a read past the range: %v, want io.ErrUnexpectedEOF", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	err = be.Load(t.Context(), h, start, end-start, func(rd io.Reader) error {
		if _, err := rd.(repo.PlacedReader).ReadPlaced(make([]byte, 4096), 0, 5000); err == nil {
			return errors.New("a read into a buffer too small did not fail")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A large range whose pages are all in the page cache is read buffered
// (one copy, no I/O), the same bytes.
func TestReadCachedRangeBuffered(t *testing.T) {
	be := create(t, filepath.Join(t.TempDir(), "repo"))
	data := make([]byte, 2<<20+5)
	for i := range data {
		data[i] = byte(i*7 + i>>9)
	}
	h := repo.Handle{Type: repo.PackFile, Name: strings.Repeat("cd", 32)}
	if err := be.Save(t.Context(), h, data); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(be.Location(), string(repo.PackFile), h.Name[:2], h.Name)
	if _, err := os.ReadFile(name); err != nil { // into the page cache
		t.Fatal(err)
	}
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	cached := directio.Resident(f, 100, int64(len(data))-200)
	f.Close()
	if !cached {
		t.Skip("the kernel cannot tell what is in the page cache")
	}
	err = be.Load(t.Context(), h, 100, int64(len(data))-200, func(rd io.Reader) error {
		if _, ok := rd.(repo.PlacedReader); ok {
			return errors.New("a range in the page cache is read with direct I/O")
		}
		got, err := io.ReadAll(rd)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, data[100:len(data)-100]) {
			return errors.New("the bytes differ")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
