//go:build unix

package main_test

import (
	"encoding/json"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type diffJSON struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Added []struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Bytes int64  `json:"bytes"`
	} `json:"added"`
	Removed []struct {
		Name  string `json:"name"`
		Bytes int64  `json:"bytes"`
	} `json:"removed"`
	Changed []struct {
		Name     string   `json:"name"`
		OldBytes int64    `json:"old_bytes"`
		NewBytes int64    `json:"new_bytes"`
		What     []string `json:"what"`
	} `json:"changed"`
	Appended []struct {
		Name     string `json:"name"`
		OldBytes int64  `json:"old_bytes"`
		NewBytes int64  `json:"new_bytes"`
		Appended int64  `json:"appended"`
	} `json:"appended"`
	Summary struct {
		Added, Removed, Changed, Appended int
		AddedBytes                        int64 `json:"added_bytes"`
		AppendedBytes                     int64 `json:"appended_bytes"`
		NewBytes                          int64 `json:"new_bytes"`
		NewChunks                         int   `json:"new_chunks"`
	} `json:"summary"`
}

// TestDiffDirSnapshots: two snapshots of a directory, between which a
// file was added, one removed, one changed, one rewritten while it grew,
// one appended to and one only chmod-ed.
func TestDiffDirSnapshots(t *testing.T) {
	e := newEnv(t)
	e.ok(nil, "init", "--kdf-memory", "8", "--kdf-time", "1", "--chunk-min", "16", "--chunk-avg", "64", "--chunk-max", "256")
	rng := mrand.New(mrand.NewPCG(21, 2))
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	src := filepath.Join(t.TempDir(), "src")
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("keep.txt", []byte("unchanged"))
	write("gone.txt", []byte("bye"))
	write("changed.txt", data(3<<10))
	grow := data(1 << 20)
	write("sub/grow.log", grow)
	rewrite := data(200 << 10)
	write("rewrite.bin", rewrite)
	var a, b backupJSON
	e.ok(&a, "backup", "--json", "--source", "dir", "--path", src)

	os.Remove(filepath.Join(src, "gone.txt"))
	write("changed.txt", data(3<<10))
	write("sub/grow.log", append(grow, data(100<<10)...))
	rewrite[10] ^= 1 // in its first chunk
	write("rewrite.bin", append(rewrite, data(10<<10)...))
	write("sub/new.txt", data(50<<10))
	if err := os.Chmod(filepath.Join(src, "keep.txt"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.ok(&b, "backup", "--json", "--source", "dir", "--path", src)

	// Text: one line per entry, then the summary; ids as prefixes.
	r := e.ok(nil, "diff", a.SnapshotID[:8], b.SnapshotID[:10])
	want := []string{
		"M changed.txt  3.0 KiB -> 3.0 KiB (mtime)",
		"- gone.txt  3 B",
		"M rewrite.bin  200.0 KiB -> 210.0 KiB (mtime)",
		"> sub/grow.log  +100.0 KiB (1.0 MiB -> 1.1 MiB)",
		"+ sub/new.txt  50.0 KiB",
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != len(want)+1 || strings.Join(lines[:len(want)], "\n") != strings.Join(want, "\n") ||
		!strings.HasPrefix(lines[len(want)], a.SnapshotID[:8]+" -> "+b.SnapshotID[:8]+": 1 added (50.0 KiB), 1 removed (3 B), 2 changed, 1 appended (+100.0 KiB); ") {
		t.Fatalf("diff:\n%s\nwant:\n%s\n(and a summary)", r.stdout, strings.Join(want, "\n"))
	}
	// --metadata adds the chmod and the directory whose mtime changed.
	r = e.ok(nil, "diff", "--metadata", a.SnapshotID, b.SnapshotID)
	for _, l := range []string{"U keep.txt (mode)\n", "U sub/ (mtime)\n"} {
		if !strings.Contains(r.stdout, l) {
			t.Errorf("diff --metadata lacks %q:\n%s", l, r.stdout)
		}
	}

	var d diffJSON
	e.ok(&d, "diff", "--json", a.SnapshotID[:8], b.SnapshotID[:8])
	if d.From != a.SnapshotID || d.To != b.SnapshotID || len(d.Added) != 1 || d.Added[0].Name != "sub/new.txt" || d.Added[0].Type != "file" ||
		d.Added[0].Bytes != 50<<10 || len(d.Removed) != 1 || d.Removed[0].Name != "gone.txt" || d.Removed[0].Bytes != 3 ||
		len(d.Changed) != 2 || d.Changed[0].Name != "changed.txt" || d.Changed[1].Name != "rewrite.bin" || d.Changed[1].NewBytes != 210<<10 ||
		len(d.Appended) != 1 || d.Appended[0].Name != "sub/grow.log" || d.Appended[0].OldBytes != 1<<20 || d.Appended[0].Appended != 100<<10 ||
		d.Summary.Added != 1 || d.Summary.Removed != 1 || d.Summary.Changed != 2 || d.Summary.Appended != 1 || d.Summary.AppendedBytes != 100<<10 {
		t.Fatalf("diff --json: %+v", d)
	}
	// The repository held only the first snapshot's blobs, so the second's
	// backup stored as new exactly these chunks, and its tree.
	tree := b.BytesNew - d.Summary.NewBytes
	if b.BlobsNew != int64(d.Summary.NewChunks)+1 || tree <= 0 || tree > 64<<10 ||
		d.Summary.NewBytes < (50+3+100)<<10 || d.Summary.NewBytes > (50+3+100+210+256)<<10 {
		t.Errorf("diff: %d bytes new in %d chunks; the backup stored %d new bytes in %d blobs", d.Summary.NewBytes, d.Summary.NewChunks, b.BytesNew, b.BlobsNew)
	}
	// A snapshot against itself: nothing.
	r = e.ok(nil, "diff", b.SnapshotID[:8], b.SnapshotID[:8])
	if !strings.HasPrefix(r.stdout, b.SnapshotID[:8]+" -> "+b.SnapshotID[:8]+": 0 added (0 B), 0 removed (0 B), 0 changed, 0 appended (+0 B); 0 B in 0 chunks") {
		t.Errorf("diff of a snapshot with itself:\n%s", r.stdout)
	}

	// Unknown and too short ids, and the wrong number of ids.
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"diff", "deadbeef", b.SnapshotID}, 1, `no snapshot found with id "deadbeef"`},
		{[]string{"diff", a.SnapshotID, "ab"}, 1, `snapshot id "ab" is too short`},
		{[]string{"diff", a.SnapshotID}, 2, "diff takes two snapshot ids"},
	} {
		r := e.run(c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) || r.stdout != "" {
			t.Errorf("snap %s: exit %d, %s; want exit %d and %q", strings.Join(c.args, " "), r.code, r.stderr, c.code, c.want)
		}
	}
	r = e.run("diff", "--json", "deadbeef", b.SnapshotID)
	var je map[string]any
	err := json.Unmarshal([]byte(r.stdout), &je)
	if msg, _ := je["error"].(string); err != nil || r.code != 1 || je["code"] != float64(1) || !strings.Contains(msg, `no snapshot found with id "deadbeef"`) {
		t.Errorf("diff --json with an unknown id: exit %d, %v\n%s", r.code, err, r.stdout)
	}
}
