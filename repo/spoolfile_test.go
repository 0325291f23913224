package repo_test

import (
	"bytes"
	"context"
	"errors"
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
	data, err := io.ReadAll(io.NewSectionReader(src, 0, size))
	if err != nil {
		return err
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
