package source

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapbackup/snap/internal/directio"
)

// writeFiles creates files named by the map in a new temp dir, each filled
// with seeded random bytes of the given size, and returns the dir and the
// contents.
func writeFiles(t *testing.T, sizes map[string]int) (string, map[string][]byte) {
	t.Helper()
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	contents := map[string][]byte{}
	for name, size := range sizes {
		b := make([]byte, size)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		contents[name] = b
	}
	return dir, contents
}

func readAll(t *testing.T, r *Reader) []byte {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Length()))
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return b
}

func TestReaderExactLength(t *testing.T) {
	dir, contents := writeFiles(t, map[string]int{
		"000056.sst":      5000,
		"000051.log":      3000,
		"MANIFEST-000046": 700,
		"OPTIONS-000048":  0,
	})
	frozen := NewFrozen(Listing{}, dir, nil)
	tests := []struct {
		file File
		want []byte
	}{
		{File{Name: "000056.sst", Role: RoleTable, Length: -1}, contents["000056.sst"]},
		{File{Name: "000056.sst", Role: RoleTable, Length: 5000}, contents["000056.sst"]},
		{File{Name: "000051.log", Role: RoleWAL, Length: 1234}, contents["000051.log"][:1234]},
		{File{Name: "000051.log", Role: RoleWAL, Length: 0}, []byte{}},
		{File{Name: "MANIFEST-000046", Role: RoleManifest, Length: 514}, contents["MANIFEST-000046"][:514]},
		{File{Name: "OPTIONS-000048", Role: RoleOptions, Length: -1}, []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.file.Name, func(t *testing.T) {
			r, err := frozen.Open(tt.file)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer r.Close()
			if r.Length() != int64(len(tt.want)) {
				t.Errorf("Length = %d, want %d", r.Length(), len(tt.want))
			}
			if got := readAll(t, r); !bytes.Equal(got, tt.want) {
				t.Errorf("read %d bytes, want %d (content differs)", len(got), len(tt.want))
			}
			fi, err := os.Stat(filepath.Join(dir, tt.file.Name))
			if err != nil {
				t.Fatal(err)
			}
			id := r.Identity()
			if id.Size != fi.Size() || id.MtimeNs != fi.ModTime().UnixNano() || id.Inode == 0 {
				t.Errorf("Identity = %+v, file size %d mtime %d", id, fi.Size(), fi.ModTime().UnixNano())
			}

			// Reads at and past Length: io.EOF, never the bytes beyond it.
			p := make([]byte, 10)
			if n, err := r.ReadAt(p, r.Length()); n != 0 || err != io.EOF {
				t.Errorf("ReadAt(Length) = %d, %v; want 0, EOF", n, err)
			}
			if r.Length() >= 5 {
				n, err := r.ReadAt(p, r.Length()-5)
				if n != 5 || err != io.EOF || !bytes.Equal(p[:5], tt.want[len(tt.want)-5:]) {
					t.Errorf("ReadAt(Length-5) = %d, %v; want 5, EOF and the last 5 bytes", n, err)
				}
			}
			if _, err := r.ReadAt(p, -1); err == nil {
				t.Error("ReadAt(-1) succeeded")
			}
		})
	}
}

func TestReaderConcurrentReadAt(t *testing.T) {
	dir, contents := writeFiles(t, map[string]int{"000051.log": 1 << 16})
	r, err := NewFrozen(Listing{}, dir, nil).Open(File{Name: "000051.log", Role: RoleWAL, Length: 60000})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			p := make([]byte, 1000)
			for off := int64(g * 1000); off < 60000; off += 8000 {
				n, err := r.ReadAt(p, off)
				if err != nil || n != len(p) || !bytes.Equal(p, contents["000051.log"][off:off+1000]) {
					t.Errorf("ReadAt(%d) = %d, %v or wrong bytes", off, n, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestReaderSynthesizedCurrent(t *testing.T) {
	dir, _ := writeFiles(t, map[string]int{"CURRENT": 0})
	// CURRENT on disk already names a newer manifest; the snapshot must not.
	if err := os.WriteFile(filepath.Join(dir, "CURRENT"), []byte("MANIFEST-000099\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := ParseFreezeReply(briefReply)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewFrozen(l, dir, nil).Open(l.Files[1])
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer r.Close()
	if got := string(readAll(t, r)); got != "MANIFEST-000046\n" {
		t.Errorf("CURRENT = %q", got)
	}
	if r.Length() != 16 || r.Identity() != (Identity{}) {
		t.Errorf("Length %d, Identity %+v; want 16 and zero", r.Length(), r.Identity())
	}

	// Synthesized content does not need the file on disk.
	os.Remove(filepath.Join(dir, "CURRENT"))
	if _, err := NewFrozen(l, dir, nil).Open(l.Files[1]); err != nil {
		t.Errorf("Open without CURRENT on disk: %v", err)
	}
}

func TestReaderOpenErrors(t *testing.T) {
	dir, _ := writeFiles(t, map[string]int{"000051.log": 100, "MANIFEST-000046": 10})
	if err := os.Mkdir(filepath.Join(dir, "000060.sst"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		file   File
		is     error
		substr []string
	}{
		{"shorter than listed", File{Name: "000051.log", Role: RoleWAL, Length: 200}, ErrShortFile,
			[]string{"file 000051.log in " + dir + " is 100 bytes, shorter than the 200 bytes the server listed"}},
		{"one byte short", File{Name: "MANIFEST-000046", Role: RoleManifest, Length: 11}, ErrShortFile,
			[]string{"MANIFEST-000046", "is 10 bytes", "11 bytes"}},
		{"missing", File{Name: "000052.log", Role: RoleWAL, Length: 5}, fs.ErrNotExist,
			[]string{"000052.log", dir, "missing"}},
		{"missing whole file", File{Name: "000061.sst", Role: RoleTable, Length: -1}, fs.ErrNotExist,
			[]string{"000061.sst", dir}},
		{"directory", File{Name: "000060.sst", Role: RoleTable, Length: -1}, nil,
			[]string{"000060.sst", "not a regular file"}},
		{"bad name", File{Name: "../000051.log", Role: RoleWAL, Length: 5}, nil,
			[]string{`".." is not a file name`}},
		{"absolute name", File{Name: "/etc/passwd", Role: RoleOther, Length: -1}, nil,
			[]string{"empty file name"}},
		{"bad length", File{Name: "000051.log", Role: RoleWAL, Length: -7}, nil,
			[]string{"invalid length -7"}},
	}
	frozen := NewFrozen(Listing{}, dir, nil)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := frozen.Open(tt.file)
			if err == nil {
				r.Close()
				t.Fatal("Open succeeded")
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %q is not %v", err, tt.is)
			}
			for _, s := range tt.substr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestReaderTruncatedAfterOpen(t *testing.T) {
	tests := []struct {
		name     string
		file     File
		truncate int64
		readOff  int64
		want     string
	}{
		{"listed WAL", File{Name: "000051.log", Role: RoleWAL, Length: 3000}, 1000, 500,
			"is 1000 bytes, shorter than the 3000 bytes the server listed"},
		{"whole table", File{Name: "000056.sst", Role: RoleTable, Length: -1}, 10, 0,
			"is 10 bytes, shorter than the 4000 bytes it had when opened"},
		{"truncated to zero", File{Name: "000051.log", Role: RoleWAL, Length: 3000}, 0, 2999,
			"is 0 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, contents := writeFiles(t, map[string]int{"000051.log": 4000, "000056.sst": 4000})
			r, err := NewFrozen(Listing{}, dir, nil).Open(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if err := os.Truncate(filepath.Join(dir, tt.file.Name), tt.truncate); err != nil {
				t.Fatal(err)
			}
			p := make([]byte, 1000)
			n, err := r.ReadAt(p, tt.readOff)
			if !errors.Is(err, ErrShortFile) {
				t.Fatalf("ReadAt = %d, %v; want ErrShortFile", n, err)
			}
			var se *ShortFileError
			if !errors.As(err, &se) || se.Name != tt.file.Name || se.Found != tt.truncate {
				t.Errorf("error %#v", err)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), tt.file.Name) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			// Whatever was read is the file's real prefix.
			if !bytes.Equal(p[:n], contents[tt.file.Name][tt.readOff:tt.readOff+int64(n)]) {
				t.Error("partial read returned wrong bytes")
			}
			// A full read never succeeds either.
			if _, err := io.ReadAll(io.NewSectionReader(r, 0, r.Length())); !errors.Is(err, ErrShortFile) {
				t.Errorf("ReadAll: %v, want ErrShortFile", err)
			}
		})
	}
}

func TestReaderIgnoresGrowth(t *testing.T) {
	dir, contents := writeFiles(t, map[string]int{"000051.log": 100})
	r, err := NewFrozen(Listing{}, dir, nil).Open(File{Name: "000051.log", Role: RoleWAL, Length: 80})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := os.OpenFile(filepath.Join(dir, "000051.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte{'x'}, 500))
	f.Close()
	if got := readAll(t, r); !bytes.Equal(got, contents["000051.log"][:80]) {
		t.Errorf("read %d bytes, want the first 80 as listed", len(got))
	}
}

// TestReaderDirectTable: large tables not in the page cache are read
// around it through an aligned block; reads of any size at any offset, in order, out
// of order and concurrently, return the file's bytes, and a table that
// shrinks after open is still a ShortFileError, never a short success.
func TestReaderDirectTable(t *testing.T) {
	const size = 3<<20 + 5
	dir, contents := writeFiles(t, map[string]int{"000070.sst": size})
	want := contents["000070.sst"]
	if _, err := directio.Evict(filepath.Join(dir, "000070.sst")); err != nil { // a table cached whole is read buffered
		t.Fatal(err)
	}
	r, err := NewFrozen(Listing{}, dir, nil).Open(File{Name: "000070.sst", Role: RoleTable, Length: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	t.Logf("direct: %v", r.direct != nil)
	rng := rand.New(rand.NewPCG(3, 4))
	// In order, in the backup's pattern of sizes.
	var got []byte
	for off := int64(0); off < size; {
		n := min(int64(1+rng.IntN(600<<10)), size-off)
		p := make([]byte, n)
		if m, err := r.ReadAt(p, off); m != int(n) || err != nil {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, m, err)
		}
		got = append(got, p...)
		off += n
	}
	if !bytes.Equal(got, want) {
		t.Fatal("sequential reads differ from the file")
	}
	// Anywhere, also past the end.
	for range 200 {
		off := rng.Int64N(size)
		p := make([]byte, rng.IntN(3<<20))
		n, err := r.ReadAt(p, off)
		if end := off + int64(len(p)); end > size {
			if err != io.EOF || int64(n) != size-off {
				t.Fatalf("ReadAt past the end = %d, %v", n, err)
			}
		} else if err != nil || n != len(p) {
			t.Fatalf("ReadAt(%d at %d) = %d, %v", len(p), off, n, err)
		}
		if !bytes.Equal(p[:n], want[off:off+int64(n)]) {
			t.Fatalf("ReadAt(%d at %d): wrong bytes", len(p), off)
		}
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 9))
			for range 50 {
				off := rng.Int64N(size - 1000)
				p := make([]byte, 1000)
				if n, err := r.ReadAt(p, off); n != 1000 || err != nil || !bytes.Equal(p, want[off:off+1000]) {
					t.Errorf("concurrent ReadAt at %d: %d, %v", off, n, err)
					return
				}
			}
		})
	}
	wg.Wait()

	if _, err := r.ReadAt(make([]byte, 10), 0); err != nil { // the block now holds the start
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, "000070.sst"), 2<<20+1); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 1<<20)
	n, err := r.ReadAt(p, 2<<20-100)
	if !errors.Is(err, ErrShortFile) || n != 101 || !bytes.Equal(p[:n], want[2<<20-100:2<<20+1]) {
		t.Fatalf("ReadAt of a shrunk table = %d, %v; want 101 bytes and ErrShortFile", n, err)
	}
}

// Stat gives what Open would, with Open's errors, and keeps nothing open;
// OpenStat then reads exactly the bytes planned, or refuses a file that is
// no longer the one Stat saw.
func TestStatThenOpenStat(t *testing.T) {
	dir, contents := writeFiles(t, map[string]int{
		"000056.sst": 5000, "000051.log": 3000, "MANIFEST-000046": 700, "OPTIONS-000048": 100, "000060.sst": 50,
	})
	if err := os.Mkdir(filepath.Join(dir, "000061.sst"), 0o755); err != nil {
		t.Fatal(err)
	}
	frozen := NewFrozen(Listing{}, dir, nil)
	path := func(name string) string { return filepath.Join(dir, name) }
	tests := []struct {
		name   string
		file   File
		change func(t *testing.T) // between Stat and OpenStat
		read   []byte             // what OpenStat reads; nil: it fails
		is     error
		substr string
	}{
		{name: "table", file: File{Name: "000056.sst", Role: RoleTable, Length: -1}, read: contents["000056.sst"]},
		{name: "grown WAL", file: File{Name: "000051.log", Role: RoleWAL, Length: 2000},
			change: func(t *testing.T) { appendTo(t, path("000051.log"), 500) }, read: contents["000051.log"][:2000]},
		{name: "synthesized", file: File{Name: "CURRENT", Role: RoleCurrent, Content: []byte("MANIFEST-000046\n"), Length: 16},
			read: []byte("MANIFEST-000046\n")},
		{name: "replaced table", file: File{Name: "000056.sst", Role: RoleTable, Length: -1},
			change: func(t *testing.T) { replace(t, path("000056.sst"), contents["000056.sst"]) }, is: ErrFileChanged,
			substr: "000056.sst in " + dir + " was replaced"},
		{name: "replaced WAL", file: File{Name: "000051.log", Role: RoleWAL, Length: 2000},
			change: func(t *testing.T) { replace(t, path("000051.log"), contents["000051.log"]) }, is: ErrFileChanged,
			substr: "replaced"},
		{name: "rewritten options", file: File{Name: "OPTIONS-000048", Role: RoleOptions, Length: -1},
			change: func(t *testing.T) { appendTo(t, path("OPTIONS-000048"), 1) }, is: ErrFileChanged, substr: "changed after it was planned"},
		{name: "touched table", file: File{Name: "000056.sst", Role: RoleTable, Length: -1},
			change: func(t *testing.T) {
				if err := os.Chtimes(path("000056.sst"), time.Time{}, time.Unix(1, 0)); err != nil {
					t.Fatal(err)
				}
			}, is: ErrFileChanged, substr: "changed after it was planned"},
		{name: "shrunk table", file: File{Name: "000056.sst", Role: RoleTable, Length: -1},
			change: func(t *testing.T) { truncate(t, path("000056.sst"), 4000) }, is: ErrShortFile,
			substr: "is 4000 bytes, shorter than the 5000 bytes it had when opened"},
		{name: "shrunk manifest", file: File{Name: "MANIFEST-000046", Role: RoleManifest, Length: 514},
			change: func(t *testing.T) { truncate(t, path("MANIFEST-000046"), 500) }, is: ErrShortFile,
			substr: "is 500 bytes, shorter than the 514 bytes the server listed"},
		{name: "removed", file: File{Name: "000060.sst", Role: RoleTable, Length: -1},
			change: func(t *testing.T) { os.Remove(path("000060.sst")) }, is: fs.ErrNotExist, substr: "missing from"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := frozen.Stat(tt.file)
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			if tt.file.Content == nil {
				fi, err := os.Stat(path(tt.file.Name))
				if err != nil {
					t.Fatal(err)
				}
				if want := identityOf(fi); st.Identity != want || want.Inode == 0 {
					t.Fatalf("Stat identity %+v, the file's %+v", st.Identity, want)
				}
			}
			if want := int64(len(contents[tt.file.Name])); tt.file.Length < 0 && st.Length != want {
				t.Fatalf("Stat length %d, want the size %d", st.Length, want)
			}
			if tt.change != nil {
				tt.change(t)
			}
			r, err := frozen.OpenStat(tt.file, st)
			if tt.read == nil {
				if err == nil {
					r.Close()
					t.Fatal("OpenStat succeeded")
				}
				if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.substr) {
					t.Fatalf("OpenStat: %v; want %v mentioning %q", err, tt.is, tt.substr)
				}
				return
			}
			if err != nil {
				t.Fatalf("OpenStat: %v", err)
			}
			defer r.Close()
			if r.Length() != st.Length {
				t.Errorf("Length %d, planned %d", r.Length(), st.Length)
			}
			if got := readAll(t, r); !bytes.Equal(got, tt.read) {
				t.Errorf("read %d bytes, want %d (content differs)", len(got), len(tt.read))
			}
		})
	}

	// Stat fails as Open does, for the same reasons.
	for _, file := range []File{
		{Name: "000052.log", Role: RoleWAL, Length: 5},
		{Name: "000061.sst", Role: RoleTable, Length: -1},
		{Name: "000051.log", Role: RoleWAL, Length: 99999},
		{Name: "../000051.log", Role: RoleWAL, Length: 5},
		{Name: "000051.log", Role: RoleWAL, Length: -7},
	} {
		_, serr := frozen.Stat(file)
		_, oerr := frozen.Open(file)
		if serr == nil || oerr == nil || serr.Error() != oerr.Error() {
			t.Errorf("%s: Stat error %v, Open error %v; want the same", file.Name, serr, oerr)
		}
	}
}

func appendTo(t *testing.T, path string, n int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(bytes.Repeat([]byte{'x'}, n)); err != nil {
		t.Fatal(err)
	}
}

// replace puts a new file with the same bytes under path's name.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path+".new", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".new", path); err != nil {
		t.Fatal(err)
	}
}

func truncate(t *testing.T, path string, n int64) {
	t.Helper()
	if err := os.Truncate(path, n); err != nil {
		t.Fatal(err)
	}
}
