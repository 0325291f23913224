package backendtest

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
)

// testLoadLargeRange reads ranges of a multi-MiB object the ways callers
// do: whole into an aligned buffer (a restore reading a pack), from
// unaligned offsets, and in small pieces. Backends may take another path
// for large ranges (local reads them around the page cache).
func testLoadLargeRange(t *testing.T, be repo.Backend) {
	r := rng(t)
	const size = 3<<20 + 4097
	data := randBytes(r, size)
	h := repo.Handle{Type: repo.PackFile, Name: randName(r)}
	mustSave(t, be, h, data)

	for _, tc := range []struct{ offset, length int64 }{
		{0, 0},
		{0, size},
		{4096, 2 << 20},
		{1, 2 << 20},
		{4095, size - 4095},
		{12345, 1<<20 + 1},
		{size - (1<<20 + 3), 0},
		{1 << 20, 1 << 20},
	} {
		end := int64(size)
		if tc.length > 0 {
			end = tc.offset + tc.length
		}
		want := data[tc.offset:end]
		for _, mode := range []string{"aligned", "unaligned", "small"} {
			var got []byte
			err := be.Load(t.Context(), h, tc.offset, tc.length, func(rd io.Reader) error {
				switch mode {
				case "aligned":
					got = directio.Alloc(len(want))
				case "unaligned":
					got = directio.Alloc(len(want) + 1)[1:]
				case "small":
					var out bytes.Buffer
					_, err := io.CopyBuffer(&out, struct{ io.Reader }{rd}, make([]byte, 1000))
					got = out.Bytes()
					return err
				}
				_, err := io.ReadFull(rd, got)
				if err == nil {
					// Nothing past the range.
					if n, err := rd.Read(make([]byte, 1)); n != 0 || err != io.EOF {
						return errors.New("reader goes past the range")
					}
				}
				return err
			})
			if err != nil {
				t.Errorf("load offset %d length %d (%s): %v", tc.offset, tc.length, mode, err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("load offset %d length %d (%s): got %d bytes, want %d, or content differs",
					tc.offset, tc.length, mode, len(got), len(want))
			}
		}
	}
}

func spooler(t *testing.T, be repo.Backend) repo.Spooler {
	sp, ok := repo.As[repo.Spooler](be)
	if !ok {
		t.Skipf("%T does not spool", be)
	}
	return sp
}

// writeSpool writes data to a new spool the way the packer does: aligned
// blocks, then a tail.
func writeSpool(t *testing.T, sp repo.Spooler, typ repo.FileType, data []byte) repo.Spool {
	t.Helper()
	s, err := sp.Spool(t.Context(), typ)
	if err != nil {
		t.Fatalf("spool: %v", err)
	}
	const block = 64 << 10
	buf := directio.Alloc(block)
	for len(data) > 0 {
		n := copy(buf, data)
		if err := s.Write(buf[:n]); err != nil {
			t.Fatalf("spool write: %v", err)
		}
		data = data[n:]
	}
	return s
}

func testSpool(t *testing.T, be repo.Backend) {
	sp := spooler(t, be)
	r := rng(t)
	for _, size := range []int{0, 1, 4096, 64<<10 + 1, 300<<10 + 17} {
		data := randBytes(r, size)
		// A spool may check that what it stores hashes to its name, as
		// a pack's does.
		h := repo.Handle{Type: repo.PackFile, Name: repo.Hash(data).String()}
		s := writeSpool(t, sp, repo.PackFile, data)
		// Nothing is visible before Commit.
		if _, err := be.Stat(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
			t.Fatalf("stat before commit: %v", err)
		}
		if err := s.Commit(t.Context(), h); err != nil {
			t.Fatalf("commit %d bytes: %v", size, err)
		}
		s.Abort() // a no-op after Commit
		checkContent(t, be, h, data)
	}
	// A spool stores only its own type.
	s := writeSpool(t, sp, repo.PackFile, []byte("x"))
	if err := s.Commit(t.Context(), repo.Handle{Type: repo.IndexFile, Name: randName(r)}); err == nil {
		t.Fatal("a pack spool committed an index file")
	}
	names := listNames(t, be, repo.PackFile)
	if len(names) != 5 {
		t.Fatalf("listed %d packs, want the 5 committed: %v", len(names), names)
	}
	if n := len(listNames(t, be, repo.IndexFile)); n != 0 {
		t.Fatalf("listed %d index files, want none", n)
	}
}

func testSpoolExisting(t *testing.T, be repo.Backend) {
	sp := spooler(t, be)
	r := rng(t)
	spooled := randBytes(r, 7000)
	h := repo.Handle{Type: repo.PackFile, Name: repo.Hash(spooled).String()}
	orig := randBytes(r, 5000)
	mustSave(t, be, h, orig)
	s := writeSpool(t, sp, repo.PackFile, spooled)
	if err := s.Commit(t.Context(), h); !errors.Is(err, repo.ErrExists) {
		t.Fatalf("commit over an existing object: %v, want ErrExists", err)
	}
	checkContent(t, be, h, orig)
}

func testSpoolAbort(t *testing.T, be repo.Backend) {
	sp := spooler(t, be)
	r := rng(t)
	s := writeSpool(t, sp, repo.PackFile, randBytes(r, 100<<10))
	s.Abort()
	s.Abort()
	if err := s.Commit(t.Context(), repo.Handle{Type: repo.PackFile, Name: randName(r)}); err == nil {
		t.Fatal("commit after abort succeeded")
	}
	if names := listNames(t, be, repo.PackFile); len(names) != 0 {
		t.Fatalf("packs after abort: %v", names)
	}
}

// testSaveFrom: a StreamSaver stores what its reader holds, with Save's
// create-only rule, and a reader shorter than the size it was given stores
// nothing.
func testSaveFrom(t *testing.T, be repo.Backend) {
	ss, ok := repo.As[repo.StreamSaver](be)
	if !ok {
		t.Skip("not a StreamSaver")
	}
	r := rng(t)
	for _, size := range []int{0, 1, 300<<10 + 17, 3<<20 + 5} {
		data := randBytes(r, size)
		h := repo.Handle{Type: repo.PackFile, Name: randName(r)}
		if err := ss.SaveFrom(t.Context(), h, bytes.NewReader(data), int64(size)); err != nil {
			t.Fatalf("SaveFrom %d bytes: %v", size, err)
		}
		checkContent(t, be, h, data)
		other := randBytes(r, 100)
		if err := ss.SaveFrom(t.Context(), h, bytes.NewReader(other), 100); !errors.Is(err, repo.ErrExists) {
			t.Errorf("SaveFrom over %v: %v, want ErrExists", h, err)
		}
		checkContent(t, be, h, data)
	}
	h := repo.Handle{Type: repo.PackFile, Name: randName(r)}
	if err := ss.SaveFrom(t.Context(), h, bytes.NewReader(randBytes(r, 1000)), 5000); err == nil {
		t.Error("SaveFrom of a reader shorter than its size succeeded")
	}
	if _, err := be.Stat(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("stat after a short SaveFrom: %v, want ErrNotFound", err)
	}
}
