package snapshot_test

// Decoders of what comes from storage: they must never panic and must
// accept only what satisfies the invariants of docs/design.md. Helpers here
// start with "dec" so they cannot clash with the other test files.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

func decID(b ...byte) repo.ID {
	var id repo.ID
	copy(id[:], b)
	return id
}

func decSnapshotJSON(t testing.TB, edit func(m map[string]any)) []byte {
	t.Helper()
	parent := decID(9, 9)
	sn := snapshot.Snapshot{
		Version: 1, Time: time.Date(2026, 11, 21, 16, 26, 52, 597e6, time.UTC), Host: "db-7",
		Tags: []string{"nightly"}, Parent: &parent,
		Source:  snapshot.Source{Kind: "rocksdb-freeze", Address: "127.0.0.1:9015", DataDir: "/data"},
		Tree:    decID(1, 2, 3),
		Summary: snapshot.Summary{Files: 7, Bytes: 7204180},
		Program: "snap 1.0",
	}
	b, err := json.Marshal(sn)
	if err != nil {
		t.Fatal(err)
	}
	if edit == nil {
		return b
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecode(t *testing.T) {
	sn, err := snapshot.Decode(decSnapshotJSON(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if sn.Host != "db-7" || sn.Tree != decID(1, 2, 3) || sn.Parent == nil || *sn.Parent != decID(9, 9) ||
		!sn.Time.Equal(time.Date(2026, 11, 21, 16, 26, 52, 597e6, time.UTC)) || sn.Summary.Bytes != 7204180 {
		t.Errorf("decoded %+v", sn)
	}
	// The example from docs/design.md, "Snapshots and trees".
	doc := `{"version": 1, "time": "2026-11-21T16:26:52.597Z", "host": "db-7",
 "tags": ["nightly"], "parent": "` + strings.Repeat("ab", 32) + `",
 "source": {"kind": "rocksdb-freeze", "address": "127.0.0.1:9015", "data_dir": "/data"},
 "tree": "` + strings.Repeat("cd", 32) + `",
 "summary": {"files": 7, "bytes": 7204180, "bytes_read": 724, "bytes_new": 2496,
             "bytes_stored": 1351, "blobs_new": 2, "start": "2026-11-21T16:26:52Z", "end": "2026-11-21T16:26:53Z"},
 "program": "snap 1.0"}`
	if sn, err := snapshot.Decode([]byte(doc)); err != nil || sn.Summary.BlobsNew != 2 || sn.Source.DataDir != "/data" {
		t.Errorf("design example: %+v, %v", sn, err)
	}

	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
		msg  string // in the error; every error but "upgrade snap" is ErrCorrupt
	}{
		{"unknown field", decSnapshotJSON(t, func(m map[string]any) { m["future"] = []int{1} }), true, ""},
		{"no parent", decSnapshotJSON(t, func(m map[string]any) { delete(m, "parent") }), true, ""},
		{"empty", nil, false, "JSON"},
		{"not json", []byte("snapshot"), false, "JSON"},
		{"array", []byte("[]"), false, "JSON"},
		{"null", []byte("null"), false, "version 0"},
		{"trailing", append(decSnapshotJSON(t, nil), '}'), false, "JSON"},
		{"version 2", decSnapshotJSON(t, func(m map[string]any) { m["version"] = 2 }), false, "upgrade snap"},
		{"version 0", decSnapshotJSON(t, func(m map[string]any) { m["version"] = 0 }), false, "version 0"},
		{"version -1", decSnapshotJSON(t, func(m map[string]any) { m["version"] = -1 }), false, "version -1"},
		{"no version", decSnapshotJSON(t, func(m map[string]any) { delete(m, "version") }), false, "version 0"},
		{"version string", decSnapshotJSON(t, func(m map[string]any) { m["version"] = "1" }), false, "JSON"},
		{"no tree", decSnapshotJSON(t, func(m map[string]any) { delete(m, "tree") }), false, "no tree"},
		{"null tree id", decSnapshotJSON(t, func(m map[string]any) { m["tree"] = strings.Repeat("0", 64) }), false, "no tree"},
		{"short tree id", decSnapshotJSON(t, func(m map[string]any) { m["tree"] = "abcd" }), false, "JSON"},
		{"upper-case tree id", decSnapshotJSON(t, func(m map[string]any) { m["tree"] = strings.Repeat("AB", 32) }), true, ""},
		{"non-hex tree id", decSnapshotJSON(t, func(m map[string]any) { m["tree"] = strings.Repeat("zz", 32) }), false, "JSON"},
		{"bad parent", decSnapshotJSON(t, func(m map[string]any) { m["parent"] = "x" }), false, "JSON"},
		{"no time", decSnapshotJSON(t, func(m map[string]any) { delete(m, "time") }), false, "no time"},
		{"bad time", decSnapshotJSON(t, func(m map[string]any) { m["time"] = "yesterday" }), false, "JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sn, err := snapshot.Decode(tc.data)
			if tc.ok {
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				return
			}
			if err == nil || sn != nil {
				t.Fatalf("decode: %+v, %v; want an error", sn, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if version := tc.msg == "upgrade snap"; errors.Is(err, repo.ErrCorrupt) == version {
				t.Errorf("error %q: ErrCorrupt is %v", err, !version)
			}
		})
	}
}

func decFile(name string, sizes ...uint32) snapshot.File {
	f := snapshot.File{Name: name, Role: "table", Sizes: sizes, Chunks: []repo.ID{}}
	for i, s := range sizes {
		f.Length += int64(s)
		f.Chunks = append(f.Chunks, decID(byte(len(name)), byte(i), 1))
	}
	return f
}

func decTreeJSON(t testing.TB, files ...snapshot.File) []byte {
	t.Helper()
	b, err := json.Marshal(snapshot.Tree{Version: 1, Files: files})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeTree(t *testing.T) {
	good := []snapshot.File{
		decFile("000056.sst", 1<<20, 300),
		decFile("CURRENT", 16),
		decFile("MANIFEST-000046", 7),
		decFile("000057.log"), // empty
		decFile("..."),
		decFile("a..b", 1),
		decFile("ü ö.sst", 1),
	}
	tr, err := snapshot.DecodeTree(decTreeJSON(t, good...))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Version != 1 || len(tr.Files) != len(good) || tr.Files[0].Length != 1<<20+300 || tr.Files[0].Chunks[1] != good[0].Chunks[1] {
		t.Errorf("decoded %+v", tr)
	}
	doc := `{"version": 1, "files": [
  {"name": "000056.sst", "role": "table", "length": 2398258,
   "identity": {"size": 2398258, "mtime_ns": 1763742412000000000, "inode": 1234},
   "chunks": ["` + strings.Repeat("ab", 32) + `", "` + strings.Repeat("cd", 32) + `"], "sizes": [1048576, 1349682]}]}`
	if tr, err := snapshot.DecodeTree([]byte(doc)); err != nil || tr.Files[0].Identity == nil || tr.Files[0].Identity.Inode != 1234 {
		t.Errorf("design example: %+v, %v", tr, err)
	}

	with := func(change func(f *snapshot.File)) []byte {
		f := decFile("000056.sst", 100, 200)
		change(&f)
		return decTreeJSON(t, decFile("CURRENT", 16), f)
	}
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
		msg  string
	}{
		{"no files", []byte(`{"version":1}`), true, ""},
		{"null files", []byte(`{"version":1,"files":null}`), true, ""},
		{"empty files", []byte(`{"version":1,"files":[]}`), true, ""},
		{"unknown field", []byte(`{"version":1,"files":[],"future":{}}`), true, ""},
		{"empty", nil, false, "JSON"},
		{"not json", []byte("tree"), false, "JSON"},
		{"version 3", []byte(`{"version":3,"files":[]}`), false, "upgrade snap"},
		{"version 0", []byte(`{"version":0,"files":[]}`), false, "version 0"},
		{"no version", []byte(`{"files":[]}`), false, "version 0"},
		{"duplicate name", decTreeJSON(t, decFile("a", 1), decFile("b", 1), decFile("a", 2)), false, "duplicate"},
		{"empty name", with(func(f *snapshot.File) { f.Name = "" }), false, "empty file name"},
		{"dot", with(func(f *snapshot.File) { f.Name = "." }), false, "is not a file name"},
		{"dot dot", with(func(f *snapshot.File) { f.Name = ".." }), false, "is not a file name"},
		{"slash", with(func(f *snapshot.File) { f.Name = "a/b" }), false, "contains '/'"},
		{"parent path", with(func(f *snapshot.File) { f.Name = "../CURRENT" }), false, "contains '/'"},
		{"absolute", with(func(f *snapshot.File) { f.Name = "/etc/passwd" }), false, "contains '/'"},
		{"backslash", with(func(f *snapshot.File) { f.Name = `..\x` }), false, `contains '\'`},
		{"nul", with(func(f *snapshot.File) { f.Name = "a\x00" }), false, "NUL"},
		{"newline", with(func(f *snapshot.File) { f.Name = "a\nb" }), false, "control"},
		{"del", with(func(f *snapshot.File) { f.Name = "a\x7f" }), false, "control"},
		{"c1 control", with(func(f *snapshot.File) { f.Name = "a\u009b" }), false, "control"}, // CSI: a terminal escape
		{"more chunks", with(func(f *snapshot.File) { f.Chunks = append(f.Chunks, decID(7)) }), false, "3 chunks but 2 sizes"},
		{"more sizes", with(func(f *snapshot.File) { f.Sizes = append(f.Sizes, 5); f.Length += 5 }), false, "2 chunks but 3 sizes"},
		{"no sizes", with(func(f *snapshot.File) { f.Sizes = nil }), false, "2 chunks but 0 sizes"},
		{"zero size", with(func(f *snapshot.File) { f.Sizes[0], f.Length = 0, 200 }), false, "empty chunk"},
		{"length short", with(func(f *snapshot.File) { f.Length-- }), false, "chunks hold 300 bytes, length is 299"},
		{"length long", with(func(f *snapshot.File) { f.Length++ }), false, "chunks hold 300 bytes, length is 301"},
		{"length negative", with(func(f *snapshot.File) { f.Chunks, f.Sizes, f.Length = nil, nil, -1 }), false, "length is -1"},
		{"negative size", []byte(`{"version":1,"files":[{"name":"a","length":0,"chunks":["` + strings.Repeat("ab", 32) + `"],"sizes":[-1]}]}`), false, "JSON"},
		{"size over 32 bits", []byte(`{"version":1,"files":[{"name":"a","length":4294967296,"chunks":["` + strings.Repeat("ab", 32) + `"],"sizes":[4294967296]}]}`), false, "JSON"},
		{"bad chunk id", []byte(`{"version":1,"files":[{"name":"a","length":1,"chunks":["abcd"],"sizes":[1]}]}`), false, "JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := snapshot.DecodeTree(tc.data)
			if tc.ok {
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				return
			}
			if err == nil || tr != nil {
				t.Fatalf("decode: %+v, %v; want an error", tr, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
			if version := tc.msg == "upgrade snap"; errors.Is(err, repo.ErrCorrupt) == version {
				t.Errorf("error %q: ErrCorrupt is %v", err, !version)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(decSnapshotJSON(f, nil))
	f.Add(decSnapshotJSON(f, func(m map[string]any) { delete(m, "parent"); m["tags"] = nil }))
	f.Add(decSnapshotJSON(f, func(m map[string]any) { m["version"] = 2 }))
	// A copy that was repaired (snap copy, snap repair snapshots), and a
	// malformed original.
	f.Add(decSnapshotJSON(f, func(m map[string]any) { m["original"] = strings.Repeat("5b", 32); m["repaired"] = true }))
	f.Add(decSnapshotJSON(f, func(m map[string]any) { m["original"] = "5b5b"; m["repaired"] = "yes" }))
	f.Add([]byte(`{"version":1,"time":"2026-01-01T00:00:00Z","tree":"` + strings.Repeat("0a", 32) + `"}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sn, err := snapshot.Decode(data)
		if err != nil {
			if sn != nil {
				t.Fatal("snapshot and error")
			}
			return
		}
		if sn.Version != 1 || sn.Tree.IsNull() || sn.Time.IsZero() {
			t.Fatalf("accepted %+v", sn)
		}
		// What was accepted survives a round trip unchanged.
		b1, err := json.Marshal(sn)
		if err != nil {
			t.Fatalf("marshal accepted snapshot: %v", err)
		}
		sn2, err := snapshot.Decode(b1)
		if err != nil {
			t.Fatalf("re-encoded snapshot does not decode: %v\n%s", err, b1)
		}
		b2, err := json.Marshal(sn2)
		if err != nil || !bytes.Equal(b1, b2) {
			t.Fatalf("round trip changed the snapshot:\n%s\n%s", b1, b2)
		}
	})
}

func FuzzDecodeTree(f *testing.F) {
	f.Add(decTreeJSON(f, decFile("000056.sst", 1<<20, 300), decFile("CURRENT", 16), decFile("000057.log")))
	f.Add(decTreeJSON(f))
	f.Add([]byte(`{"version":1,"files":[{"name":"a","length":1,"chunks":["` + strings.Repeat("ab", 32) + `"],"sizes":[1]},{"name":"a","length":0}]}`))
	f.Add([]byte(`{"version":1,"files":[{"name":"..","length":0},{"name":"a/b","length":0},{"name":"\u0000","length":0}]}`))
	f.Add([]byte(`{"version":3}`))
	f.Add([]byte(`{"version":2,"files":[{"name":"d","type":"dir","length":0},{"name":"d/a","length":0},{"name":"d/l","type":"symlink","target":"/etc","length":0},{"name":"d/h","type":"hardlink","target":"d/a","length":0}]}`))
	f.Add([]byte(`{"version":2,"files":[{"name":"l","type":"symlink","target":"/etc","length":0},{"name":"l/passwd","length":0}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tr, err := snapshot.DecodeTree(data)
		if err != nil {
			if tr != nil {
				t.Fatal("tree and error")
			}
			return
		}
		if tr.Version != 1 && tr.Version != 2 {
			t.Fatalf("accepted version %d", tr.Version)
		}
		if err := tr.Validate(); err != nil {
			t.Fatalf("accepted a tree that does not validate: %v", err)
		}
		names := map[string]bool{}
		types := map[string]string{}
		for _, f := range tr.Files {
			// A restore writes dir/name: it must stay in dir, and (version
			// 2) every directory on the way is one the restore made.
			if !filepath.IsLocal(f.Name) || filepath.Join("/restore", f.Name) == "/restore" || filepath.Clean(f.Name) != f.Name {
				t.Fatalf("accepted unsafe name %q", f.Name)
			}
			if tr.Version == 1 && filepath.Base(f.Name) != f.Name {
				t.Fatalf("version 1 tree with a nested name %q", f.Name)
			}
			if d := filepath.Dir(f.Name); d != "." && types[d] != "dir" {
				t.Fatalf("accepted %q under %q, which is no directory listed before it", f.Name, d)
			}
			types[f.Name] = f.Type
			if names[f.Name] {
				t.Fatalf("accepted duplicate name %q", f.Name)
			}
			names[f.Name] = true
			var sum int64
			for _, s := range f.Sizes {
				if s == 0 {
					t.Fatalf("file %q: accepted an empty chunk", f.Name)
				}
				sum += int64(s)
			}
			if len(f.Chunks) != len(f.Sizes) || sum != f.Length {
				t.Fatalf("file %q: %d chunks, %d sizes, %d bytes, length %d", f.Name, len(f.Chunks), len(f.Sizes), sum, f.Length)
			}
		}
		b1, err := json.Marshal(tr)
		if err != nil {
			t.Fatal(err)
		}
		tr2, err := snapshot.DecodeTree(b1)
		if err != nil {
			t.Fatalf("re-encoded tree does not decode: %v", err)
		}
		if b2, _ := json.Marshal(tr2); !bytes.Equal(b1, b2) {
			t.Fatalf("round trip changed the tree:\n%s\n%s", b1, b2)
		}
	})
}

func decSnaps(ids ...repo.ID) []*snapshot.Snapshot {
	var out []*snapshot.Snapshot
	for i, id := range ids {
		out = append(out, &snapshot.Snapshot{ID: id, Host: fmt.Sprintf("h%d", i%2),
			Time: time.Date(2026, 1, 1+i, 0, 0, 0, 0, time.UTC)})
	}
	return out
}

func TestFind(t *testing.T) {
	snaps := decSnaps(
		decID(0xab, 0xcd, 0x12, 0x34),
		decID(0xab, 0xcd, 0x56, 0x78),
		decID(0xab, 0xce, 0x00, 0x01),
		decID(0x01, 0x23, 0x45, 0x67),
	)
	for _, tc := range []struct {
		prefix string
		want   int    // index into snaps; -1 for an error
		msg    string // in the error
	}{
		{"abcd1", 0, ""},
		{"ABCD1234", 0, ""},
		{"abcd5", 1, ""},
		{"abce", 2, ""},
		{"0123", 3, ""},
		{snaps[1].ID.String(), 1, ""},
		{strings.ToUpper(snaps[2].ID.String()), 2, ""},
		{"abcd", -1, "ambiguous"},
		{"abc", -1, "too short"},
		{"ab", -1, "too short"},
		{"", -1, "too short"},
		{"ffff", -1, "no snapshot"},
		{"abcd9", -1, "no snapshot"},
		{"zzzz", -1, "no snapshot"},
		{snaps[1].ID.String() + "0", -1, "no snapshot"},
	} {
		sn, err := snapshot.Find(snaps, tc.prefix)
		if tc.want >= 0 {
			if err != nil || sn != snaps[tc.want] {
				t.Errorf("Find(%q) = %v, %v; want snapshot %d", tc.prefix, sn, err, tc.want)
			}
			continue
		}
		if err == nil || sn != nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("Find(%q) = %v, %v; want an error saying %q", tc.prefix, sn, err, tc.msg)
		}
		if tc.msg == "no snapshot" && !errors.Is(err, snapshot.ErrNoSnapshot) {
			t.Errorf("Find(%q): %v is not ErrNoSnapshot", tc.prefix, err)
		}
	}
	if sn, err := snapshot.Find(nil, "abcd"); !errors.Is(err, snapshot.ErrNoSnapshot) || sn != nil {
		t.Errorf("Find in no snapshots: %v, %v", sn, err)
	}
}

func TestLatest(t *testing.T) {
	snaps := decSnaps(decID(1), decID(2), decID(3), decID(4)) // oldest first; hosts h0 h1 h0 h1
	host := func(h string) func(*snapshot.Snapshot) bool {
		return func(sn *snapshot.Snapshot) bool { return sn.Host == h }
	}
	for _, tc := range []struct {
		name  string
		snaps []*snapshot.Snapshot
		match func(*snapshot.Snapshot) bool
		want  *snapshot.Snapshot
	}{
		{"any", snaps, nil, snaps[3]},
		{"host h0", snaps, host("h0"), snaps[2]},
		{"host h1", snaps, host("h1"), snaps[3]},
		{"no match", snaps, host("h2"), nil},
		{"empty", nil, nil, nil},
		{"one", snaps[:1], host("h0"), snaps[0]},
	} {
		if got := snapshot.Latest(tc.snaps, tc.match); got != tc.want {
			t.Errorf("%s: Latest = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func decRepo(t *testing.T, be repo.Backend) *repo.Repository {
	t.Helper()
	r, err := repo.Init(t.Context(), be, "pw", repo.InitOptions{
		ChunkerMin: 16 << 10, ChunkerAvg: 64 << 10, ChunkerMax: 256 << 10, PackSize: 1 << 20,
		KDF: repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
	}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// Save, Load and List through a repository; List sorts oldest first and
// refuses a tampered snapshot.
func TestSaveLoadList(t *testing.T) {
	be := mem.New()
	r := decRepo(t, be)
	base := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	var saved []*snapshot.Snapshot
	for _, d := range []time.Duration{3, 1, 2, 2} {
		sn := &snapshot.Snapshot{Time: base.Add(d * time.Hour), Host: fmt.Sprintf("h%d", len(saved)), Tree: decID(byte(d))}
		if err := snapshot.Save(t.Context(), r, sn); err != nil {
			t.Fatal(err)
		}
		if sn.Version != 1 || sn.ID.IsNull() {
			t.Fatalf("saved snapshot: version %d, id %v", sn.Version, sn.ID)
		}
		got, err := snapshot.Load(t.Context(), r, sn.ID)
		if err != nil || got.ID != sn.ID || got.Host != sn.Host || !got.Time.Equal(sn.Time) {
			t.Fatalf("load %v: %+v, %v", sn.ID.Str(), got, err)
		}
		saved = append(saved, sn)
	}
	list, err := snapshot.List(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != len(saved) {
		t.Fatalf("listed %d snapshots, saved %d", len(list), len(saved))
	}
	if !slices.IsSortedFunc(list, func(a, b *snapshot.Snapshot) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID.String(), b.ID.String())
	}) || list[0].ID != saved[1].ID || list[3].ID != saved[0].ID {
		t.Errorf("list is not oldest first")
	}
	if latest := snapshot.Latest(list, nil); latest.ID != saved[0].ID {
		t.Errorf("latest is %v, want %v", latest.ID.Str(), saved[0].ID.Str())
	}

	// A snapshot changed in storage.
	h := repo.Handle{Type: repo.SnapshotFile, Name: saved[2].Name}
	if err := be.Remove(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(t.Context(), h, []byte("tampered")); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.List(t.Context(), r); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("list with a tampered snapshot: %v, want ErrCorrupt", err)
	}
}

func TestSaveLoadTree(t *testing.T) {
	r := decRepo(t, mem.New())
	tr := &snapshot.Tree{Files: []snapshot.File{decFile("000056.sst", 1<<20, 300), decFile("CURRENT", 16)}}
	id, err := snapshot.SaveTree(t.Context(), r, tr)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	got, err := snapshot.LoadTree(t.Context(), r, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1 || len(got.Files) != 2 || got.Files[0].Length != 1<<20+300 || got.Files[1].Name != "CURRENT" {
		t.Errorf("loaded %+v", got)
	}
	if _, err := snapshot.SaveTree(t.Context(), r, &snapshot.Tree{Files: []snapshot.File{decFile("a/b", 1)}}); err == nil {
		t.Error("saved a tree with a path in a name")
	}
	// A tree blob that is a valid blob but not a valid tree.
	bad := decTreeJSON(t, decFile("x", 1), decFile("x", 2))
	badID := r.BlobID(bad)
	if _, err := r.SaveBlob(t.Context(), repo.TreeBlob, badID, bad); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := snapshot.LoadTree(t.Context(), r, badID); !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "duplicate") {
		t.Errorf("load invalid tree: %v, want ErrCorrupt", err)
	}
}
