package repo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/mem"
)

// streaming is the in-memory backend with SaveFrom, counting its calls.
type streaming struct {
	*mem.Backend
	calls int
}

func (s *streaming) SaveFrom(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64) error {
	s.calls++
	// As repo.SaveFrom reads: an error counts even with all the bytes
	// (a spool's source fails the read of its last bytes if they do not
	// hash to the name), and fewer bytes than size store nothing.
	data := make([]byte, size)
	n, err := src.ReadAt(data, 0)
	if err != nil && err != io.EOF {
		return err
	}
	if int64(n) < size {
		return fmt.Errorf("read %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
	}
	return s.Backend.Save(ctx, h, data)
}

// A backend wrapped in SpoolToFiles passes the backend conformance tests,
// its spools and SaveFrom included.
func TestSpoolToFilesConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) repo.Backend {
		return repo.SpoolToFiles(&streaming{Backend: mem.New()}, t.TempDir())
	})
}

// SpoolToFiles spools an object to a temp file and stores it with
// SaveFrom (or Save, for a backend without it); the temp file is gone
// after Commit and after Abort, and Commit keeps Save's create-only rule.
func TestSpoolToFiles(t *testing.T) {
	rng := newRand(t)
	block := directio.Alloc(1 << 20)
	copy(block, randomBytes(rng, len(block)))
	tail := randomBytes(rng, 1234)
	want := bytes.Join([][]byte{block, block, tail}, nil)
	h := repo.Handle{Type: repo.PackFile, Name: repo.Hash(want).String()}

	for _, streams := range []bool{true, false} {
		dir := t.TempDir()
		s := &streaming{Backend: mem.New()}
		var inner repo.Backend = s.Backend
		if streams {
			inner = s
		}
		be := repo.SpoolToFiles(inner, dir).(repo.Spooler)
		spool := func() repo.Spool {
			t.Helper()
			sp, err := be.Spool(t.Context(), repo.PackFile)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range [][]byte{block, block, tail} {
				if err := sp.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			return sp
		}
		noTemp := func(when string) {
			t.Helper()
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Fatalf("streams %v: %d files left in the spool directory %s", streams, len(ents), when)
			}
		}

		if err := spool().Commit(t.Context(), h); err != nil {
			t.Fatal(err)
		}
		noTemp("after Commit")
		if got := backendtest.LoadAll(t, s.Backend, h); !bytes.Equal(got, want) {
			t.Fatalf("streams %v: stored %d bytes, want the %d spooled", streams, len(got), len(want))
		}
		if streams && s.calls != 1 {
			t.Errorf("SaveFrom called %d times, want 1", s.calls)
		}

		if err := spool().Commit(t.Context(), h); !errors.Is(err, repo.ErrExists) {
			t.Errorf("streams %v: second Commit to %v: %v, want ErrExists", streams, h, err)
		}
		noTemp("after a refused Commit")
		spool().Abort()
		noTemp("after Abort")
		if err := spool().Commit(t.Context(), repo.Handle{Type: repo.IndexFile, Name: h.Name}); err == nil {
			t.Error("a pack spool stored an index file")
		}
		noTemp("after a Commit of the wrong type")
	}

	// A day-old spool file is a killed backup's, and the first Spool
	// removes it; a fresh one and other files stay.
	dir := t.TempDir()
	for _, name := range []string{"snap-spool-old", "snap-spool-new", "other-old"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-25 * time.Hour)
	for _, name := range []string{"snap-spool-old", "other-old"} {
		if err := os.Chtimes(filepath.Join(dir, name), old, old); err != nil {
			t.Fatal(err)
		}
	}
	sp, err := repo.SpoolToFiles(mem.New(), dir).(repo.Spooler).Spool(t.Context(), repo.PackFile)
	if err != nil {
		t.Fatal(err)
	}
	sp.Abort()
	var left []string
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "other-old snap-spool-new" {
		t.Errorf("after the first Spool the directory holds %v, want other-old and snap-spool-new", left)
	}

	gone := repo.SpoolToFiles(mem.New(), filepath.Join(t.TempDir(), "missing")).(repo.Spooler)
	if _, err := gone.Spool(t.Context(), repo.PackFile); err == nil || !strings.Contains(err.Error(), "TMPDIR") {
		t.Errorf("spool into a missing directory: %v, want an error that names TMPDIR", err)
	}
}

// twoPass stores like GCS does: it reads src once for a checksum, then
// again for the upload, and stores only an upload read without error.
// between runs after the first pass.
type twoPass struct {
	*mem.Backend
	between func()
}

func (b *twoPass) SaveFrom(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64) error {
	if _, err := io.Copy(io.Discard, io.NewSectionReader(src, 0, size)); err != nil {
		return err
	}
	b.between()
	data, err := io.ReadAll(io.NewSectionReader(src, 0, size))
	if err != nil {
		return err // an upload abandoned
	}
	return b.Backend.Save(ctx, h, data)
}

// A spool file that no longer holds what was written to it (a disk error,
// something else writing to it), before the upload or between two reads
// of it, is not stored under the pack's name: Commit fails naming the
// pack and the spool file, and the name stays free.
func TestSpoolCommitChecksReadBack(t *testing.T) {
	rng := newRand(t)
	block := directio.Alloc(1 << 20)
	copy(block, randomBytes(rng, len(block)))
	tail := randomBytes(rng, 777)
	want := bytes.Join([][]byte{block, block, tail}, nil)
	h := repo.Handle{Type: repo.PackFile, Name: repo.Hash(want).String()}

	flip := func(t *testing.T, name string, off int64) {
		t.Helper()
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := []byte{0}
		if _, err := f.ReadAt(b, off); err != nil {
			t.Fatal(err)
		}
		b[0] ^= 0x40
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	truncate := func(t *testing.T, name string, _ int64) {
		t.Helper()
		if err := os.Truncate(name, int64(len(want)-1)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name    string
		backend func(inner *mem.Backend, between func()) repo.Backend
		damage  func(*testing.T, string, int64)
		off     int64
		between bool // damage between the two passes, not before Commit
	}{
		{"Save, first byte", func(m *mem.Backend, _ func()) repo.Backend { return m }, flip, 0, false},
		{"Save, last byte", func(m *mem.Backend, _ func()) repo.Backend { return m }, flip, int64(len(want) - 1), false},
		{"SaveFrom", func(m *mem.Backend, _ func()) repo.Backend { return &streaming{Backend: m} }, flip, 1 << 20, false},
		{"SaveFrom, truncated", func(m *mem.Backend, _ func()) repo.Backend { return &streaming{Backend: m} }, truncate, 0, false},
		{"between passes", func(m *mem.Backend, f func()) repo.Backend { return &twoPass{Backend: m, between: f} }, flip, int64(len(want) / 2), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			inner := mem.New()
			var spoolFile string
			damage := func() { tc.damage(t, spoolFile, tc.off) }
			between := func() {}
			if tc.between {
				between = damage
			}
			sp, err := repo.SpoolToFiles(tc.backend(inner, between), dir).(repo.Spooler).Spool(t.Context(), repo.PackFile)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range [][]byte{block, block, tail} {
				if err := sp.Write(p); err != nil {
					t.Fatal(err)
				}
			}
			files, _ := filepath.Glob(filepath.Join(dir, "snap-spool-*"))
			if len(files) != 1 {
				t.Fatalf("spool files %v, want one", files)
			}
			spoolFile = files[0]
			if !tc.between {
				damage()
			}
			err = sp.Commit(t.Context(), h)
			if !errors.Is(err, repo.ErrSpoolChanged) || !strings.Contains(err.Error(), h.String()) || !strings.Contains(err.Error(), spoolFile) {
				t.Errorf("commit: %v; want ErrSpoolChanged naming %s and %s", err, h, spoolFile)
			}
			if _, err := inner.Stat(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
				t.Errorf("stat after a failed commit: %v, want ErrNotFound", err)
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("%d files left in the spool directory", len(ents))
			}
		})
	}
}

// The reader a spool's upload gets serves passes from the start, in
// order, and refuses reads elsewhere: bytes it hands out of order it
// could not vouch for.
func TestSpoolReadInOrder(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 1000)
	h := repo.Handle{Type: repo.PackFile, Name: repo.Hash(data).String()}
	s := &readerAtBackend{Backend: mem.New(), check: func(src io.ReaderAt, size int64) error {
		buf := make([]byte, 100)
		if _, err := src.ReadAt(buf, 500); err == nil {
			return errors.New("a read out of order was served")
		}
		// A pass from the start is whole again, also in uneven reads.
		var got []byte
		for off := int64(0); off < size; {
			n, err := src.ReadAt(buf[:min(77, int(size-off))], off)
			got = append(got, buf[:n]...)
			off += int64(n)
			if err != nil && (err != io.EOF || off < size) {
				return err
			}
		}
		if !bytes.Equal(got, data) {
			return errors.New("a pass read other bytes")
		}
		// Past the end: EOF, as any ReaderAt.
		if n, err := src.ReadAt(buf, size); n != 0 || err != io.EOF {
			return fmt.Errorf("read at the end: %d, %v", n, err)
		}
		return nil
	}}
	sp, err := repo.SpoolToFiles(s, t.TempDir()).(repo.Spooler).Spool(t.Context(), repo.PackFile)
	if err != nil {
		t.Fatal(err)
	}
	buf := directio.Alloc(len(data))
	copy(buf, data)
	if err := sp.Write(buf[:len(data)]); err != nil {
		t.Fatal(err)
	}
	if err := sp.Commit(t.Context(), h); err != nil {
		t.Fatal(err)
	}
}

// readerAtBackend is a StreamSaver that runs check on its source and
// stores nothing.
type readerAtBackend struct {
	*mem.Backend
	check func(io.ReaderAt, int64) error
}

func (b *readerAtBackend) SaveFrom(ctx context.Context, h repo.Handle, src io.ReaderAt, size int64) error {
	return b.check(src, size)
}
