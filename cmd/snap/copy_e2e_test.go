package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyJSON is what snap copy --json prints.
type copyJSON struct {
	From   string `json:"from"`
	To     string `json:"to"`
	Copied []struct {
		Source string `json:"source_id"`
		ID     string `json:"id"`
	} `json:"copied"`
	SnapshotsCopied  int   `json:"snapshots_copied"`
	SnapshotsSkipped int   `json:"snapshots_skipped"`
	BlobsRead        int64 `json:"blobs_read"`
	BlobsKnown       int64 `json:"blobs_known"`
	BlobsNew         int64 `json:"blobs_new"`
}

type adminLsJSON []struct {
	ID     string   `json:"id"`
	Time   string   `json:"time"`
	Host   string   `json:"host"`
	Tags   []string `json:"tags"`
	Source struct {
		Kind    string `json:"kind"`
		DataDir string `json:"data_dir"`
	} `json:"source"`
	Original string `json:"original"`
	Repaired bool   `json:"repaired"`
}

// adminTree makes a directory to back up with --source dir: files of
// several chunks, a small one, a subdirectory.
func adminTree(t *testing.T) string {
	t.Helper()
	src := filepath.Join(t.TempDir(), "db")
	if err := os.MkdirAll(filepath.Join(src, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, n := range []int{3 << 20, 2 << 20, 1 << 20} {
		randomFile(t, filepath.Join(src, fmt.Sprintf("%06d.sst", i+1)), n)
	}
	randomFile(t, filepath.Join(src, "sub", "small"), 1000)
	if err := os.WriteFile(filepath.Join(src, "CURRENT"), []byte("MANIFEST-000001\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return src
}

// cheapInit makes a repository whose password costs little to try, with
// small chunks and packs so a few MiB make many of each.
var cheapInit = []string{"init", "--kdf-memory", "8", "--kdf-time", "1", "--pack-size", "1", "--chunk-min", "64", "--chunk-avg", "128", "--chunk-max", "512"}

// TestCopyLocalGCS copies a local repository into one on the GCS
// emulator (other password, other chunker sizes) and back into a new
// local one: every copy restores byte for byte with its time, host and
// tags; a second copy copies nothing and reads no chunk; a new snapshot
// is copied reading only its new chunks.
func TestCopyLocalGCS(t *testing.T) {
	gcs := startFakeGCS(t)
	gcs.createBucket("snap-copy")
	src := adminTree(t)

	loc := newEnv(t)
	loc.ok(nil, cheapInit...)
	loc.ok(nil, "backup", "--source", "dir", "--path", src, "--host", "db-7", "--tag", "nightly")
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	g := gcsEnv(t, gcs, "gs://snap-copy/dst")
	g.vars = append(g.vars, "SNAP_PASSWORD=other password")
	g.ok(nil, "init", "--kdf-memory", "8", "--kdf-time", "1", "--chunk-min", "128", "--chunk-avg", "256", "--chunk-max", "1024")
	var c copyJSON
	g.ok(&c, "copy", "--from-repo", loc.repo, "--from-password-file", pwFile, "--json")
	if c.SnapshotsCopied != 1 || c.SnapshotsSkipped != 0 || c.BlobsRead == 0 || c.BlobsNew == 0 || c.From != loc.repo {
		t.Fatalf("first copy: %+v", c)
	}
	var ls, gls adminLsJSON
	loc.ok(&ls, "ls", "--json")
	g.ok(&gls, "ls", "--json")
	if len(gls) != 1 || gls[0].Original != ls[0].ID || gls[0].Time != ls[0].Time || gls[0].Host != "db-7" ||
		strings.Join(gls[0].Tags, ",") != "nightly" || gls[0].Source != ls[0].Source {
		t.Fatalf("copy %+v of %+v", gls, ls)
	}
	target := filepath.Join(t.TempDir(), "r1")
	g.ok(nil, "restore", gls[0].ID[:8], "--target", target)
	sameTree(t, src, target, true)
	g.ok(nil, "check", "--read-data")

	// Again: nothing new.
	c = copyJSON{}
	g.ok(&c, "copy", "--from-repo", loc.repo, "--from-password-file", pwFile, "--json")
	if c.SnapshotsCopied != 0 || c.SnapshotsSkipped != 1 || c.BlobsRead != 0 || c.BlobsNew != 0 {
		t.Errorf("second copy: %+v", c)
	}
	if r := g.ok(nil, "copy", "--from-repo", loc.repo, "--from-password-file", pwFile); !strings.Contains(r.stdout, "0 snapshots copied") {
		t.Errorf("third copy says: %s", r.stdout)
	}

	// A new table: the next copy reads its chunks, not the old ones.
	randomFile(t, filepath.Join(src, "000004.sst"), 512<<10)
	loc.ok(nil, "backup", "--source", "dir", "--path", src, "--host", "db-7")
	c = copyJSON{}
	g.ok(&c, "copy", "--from-repo", loc.repo, "--from-password-file", pwFile, "--json", "--host", "db-7", "--latest")
	if c.SnapshotsCopied != 1 || c.BlobsKnown == 0 || c.BlobsRead == 0 || c.BlobsRead > 8 {
		// 512 KiB at most 512 KiB a chunk, at least 64: 1 to 8 chunks.
		t.Errorf("copy of the second snapshot: %+v", c)
	}
	gls = nil
	g.ok(&gls, "ls", "--json")
	target = filepath.Join(t.TempDir(), "r2")
	g.ok(nil, "restore", "--latest", "--target", target)
	sameTree(t, src, target, true)

	// From GCS into a new local repository, with its own password.
	back := newEnv(t)
	back.vars = append(back.vars, "SNAP_PASSWORD=third", "STORAGE_EMULATOR_HOST="+gcs.host, "SNAP_FROM_PASSWORD=other password")
	back.ok(nil, cheapInit...)
	c = copyJSON{}
	back.ok(&c, "copy", "--from-repo", g.repo, "--json")
	if c.SnapshotsCopied != 2 {
		t.Fatalf("copy from GCS: %+v", c)
	}
	var bls adminLsJSON
	back.ok(&bls, "ls", "--json")
	if len(bls) != 2 || bls[0].Original != ls[0].ID || bls[0].Time != ls[0].Time {
		t.Errorf("a copy of a copy: %+v; want the first repository's %s as original", bls, ls[0].ID)
	}
	target = filepath.Join(t.TempDir(), "r3")
	back.ok(nil, "restore", "--latest", "--target", target)
	sameTree(t, src, target, true)
	back.ok(nil, "check", "--read-data")

	// And back into the first: both are there already.
	loc.vars = append(loc.vars, "STORAGE_EMULATOR_HOST="+gcs.host, "SNAP_FROM_PASSWORD=other password")
	c = copyJSON{}
	loc.ok(&c, "copy", "--from-repo", g.repo, "--json")
	if c.SnapshotsCopied != 0 || c.SnapshotsSkipped != 2 || c.BlobsRead != 0 {
		t.Errorf("copy back into the original repository: %+v", c)
	}
	gcs.checkWhole("snap-copy", "dst/")
}

// TestCopyBadInput: a wrong source password, a source that is no
// repository, the repository itself, no --from-repo: clear errors, and
// the destination is unchanged.
func TestCopyBadInput(t *testing.T) {
	src := adminTree(t)
	from := newEnv(t)
	from.ok(nil, cheapInit...)
	from.ok(nil, "backup", "--source", "dir", "--path", src)
	e := newEnv(t)
	e.ok(nil, cheapInit...)
	wrong := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrong, []byte("not it\n"), 0o600)
	empty := t.TempDir()
	before := listDir(t, e.repo)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--from-repo", from.repo, "--from-password-file", wrong}, 1, "source repository (--from-repo): wrong password"},
		{[]string{"--from-repo", empty}, 1, "source repository (--from-repo): no snap repository at " + empty},
		{[]string{"--from-repo", filepath.Join(empty, "missing")}, 1, "source repository (--from-repo): no snap repository"},
		{[]string{"--from-repo", from.repo, "--from-password-file", filepath.Join(empty, "nofile")}, 1, "read --from-password-file"},
		{[]string{"--from-repo", from.repo, "abcdef12"}, 1, `no snapshot found with id "abcdef12"`},
		{[]string{"--from-repo", e.repo}, 2, "is --repo itself"},
		{[]string{}, 2, "copy needs --from-repo"},
		{[]string{"--from-repo", from.repo, "--latest", "abcd"}, 2, "not both"},
	} {
		r := e.run(append([]string{"copy"}, tc.args...)...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("copy %s: exit %d, %s; want %d and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.code, tc.msg)
		}
	}
	// --json: the error as the one document.
	r := e.run("copy", "--json", "--from-repo", from.repo, "--from-password-file", wrong)
	if msg, code := jsonErr(t, r); code != 1 || !strings.Contains(msg, "wrong password") {
		t.Errorf("copy --json with a wrong source password: %s", r.stdout)
	}
	if after := listDir(t, e.repo); strings.Join(after, "\n") != strings.Join(before, "\n") {
		t.Errorf("the destination changed:\nbefore %v\nafter  %v", before, after)
	}
	var ls adminLsJSON
	e.ok(&ls, "ls", "--json")
	if len(ls) != 0 {
		t.Errorf("%d snapshots in the destination", len(ls))
	}
}

// listDir lists every file under dir but lock files.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.Contains(p, "/locks/") {
			out = append(out, strings.TrimPrefix(p, dir))
		}
		return nil
	})
	return out
}
