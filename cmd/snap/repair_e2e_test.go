package main_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/local"
)

// openLocal opens e's local repository in the test process.
func openLocal(t *testing.T, e *env) *repo.Repository {
	t.Helper()
	be, err := local.Open(e.repo)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(context.Background(), be, "correct horse", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func objectFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() && !strings.HasPrefix(fi.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// TestRepairIndexE2E loses every index file, then damages the new one:
// after each repair index, check --read-data passes and every snapshot
// restores. Under another process's exclusive lock repair changes
// nothing.
func TestRepairIndexE2E(t *testing.T) {
	src := adminTree(t)
	e := newEnv(t)
	e.ok(nil, cheapInit...)
	e.ok(nil, "backup", "--source", "dir", "--path", src)
	randomFile(t, filepath.Join(src, "000009.sst"), 700<<10)
	e.ok(nil, "backup", "--source", "dir", "--path", src)

	indexDir := filepath.Join(e.repo, "index")
	for _, p := range objectFiles(t, indexDir) {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	if r := e.run("check"); r.code != 1 {
		t.Fatalf("check without an index: exit %d, %s", r.code, r.stdout)
	}
	var res struct {
		Packs          int   `json:"packs"`
		HeadersRead    int   `json:"pack_headers_read"`
		DamagedPacks   []any `json:"damaged_packs"`
		IndexesWritten int   `json:"index_files_written"`
		IndexesRemoved int   `json:"index_files_removed"`
		DamagedIndex   []any `json:"damaged_index_files"`
	}
	e.ok(&res, "repair", "index", "--json")
	if res.Packs == 0 || res.HeadersRead != res.Packs || len(res.DamagedPacks) != 0 || res.IndexesWritten != 1 || res.IndexesRemoved != 0 {
		t.Fatalf("repair index: %+v", res)
	}
	e.ok(nil, "check", "--read-data")
	var snaps adminLsJSON
	e.ok(&snaps, "ls", "--json")
	for _, sn := range snaps {
		e.ok(nil, "restore", sn.ID, "--target", filepath.Join(t.TempDir(), "r"))
	}
	target := filepath.Join(t.TempDir(), "latest")
	e.ok(nil, "restore", "--latest", "--target", target)
	sameTree(t, src, target, true)

	// A damaged index file (a flipped byte): reported, replaced.
	files := objectFiles(t, indexDir)
	if len(files) != 1 {
		t.Fatalf("%d index files", len(files))
	}
	data, _ := os.ReadFile(files[0])
	data[len(data)/2] ^= 1
	os.Chmod(files[0], 0o644)
	if err := os.WriteFile(files[0], data, 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.ok(nil, "repair", "index")
	if !strings.Contains(r.stdout, "does not load (removed)") || !strings.Contains(r.stdout, "wrote 1 index files, removed 1") {
		t.Errorf("repair of a damaged index file says:\n%s", r.stdout)
	}
	e.ok(nil, "check", "--read-data")
	target = filepath.Join(t.TempDir(), "latest2")
	e.ok(nil, "restore", "--latest", "--target", target)
	sameTree(t, src, target, true)

	// Another process holds the exclusive lock: exit 11, nothing changed.
	rp := openLocal(t, e)
	lk, err := rp.Lock(context.Background(), repo.LockOptions{Exclusive: true, Command: "prune", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	before := objectFiles(t, indexDir)
	for _, what := range []string{"index", "snapshots"} {
		r := e.run("repair", what, "--retry-lock", "1s")
		if r.code != 11 || !strings.Contains(r.stderr, "repository is locked: exclusive lock by prune") {
			t.Errorf("repair %s under an exclusive lock: exit %d, %s", what, r.code, r.stderr)
		}
	}
	lk.Unlock(context.Background())
	if after := objectFiles(t, indexDir); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("index files changed under the lock: %v, %v", before, after)
	}
	for _, args := range [][]string{{"repair"}, {"repair", "packs"}, {"repair", "index", "--dry-run"}, {"repair", "snapshots", "--read-all-packs"}} {
		if r := e.run(args...); r.code != 2 {
			t.Errorf("snap %s: exit %d, want 2", strings.Join(args, " "), r.code)
		}
	}
}

// TestRepairSnapshotsE2E deletes a pack that one file's chunks are in:
// repair index drops it, repair snapshots --dry-run says what goes,
// repair snapshots replaces the snapshot by one marked repaired, check
// --read-data passes and the other files restore.
func TestRepairSnapshotsE2E(t *testing.T) {
	src := adminTree(t)
	e := newEnv(t)
	e.ok(nil, cheapInit...)
	e.ok(nil, "backup", "--source", "dir", "--path", src, "--tag", "nightly", "--host", "db-7")
	var snaps adminLsJSON
	e.ok(&snaps, "ls", "--json")

	// The pack of the small file's chunk goes; the files whose chunks
	// share it go with it (repair says which).
	r := openLocal(t, e)
	ctx := context.Background()
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	small, _ := os.ReadFile(filepath.Join(src, "sub", "small"))
	loc, ok := r.Index().Lookup(r.BlobID(small))
	if !ok {
		t.Fatal("the small file's chunk is not indexed")
	}
	pack := loc.Pack.String()
	if err := os.Remove(filepath.Join(e.repo, "data", pack[:2], pack)); err != nil {
		t.Fatal(err)
	}
	e.ok(nil, "repair", "index")
	if r := e.run("check"); r.code != 1 {
		t.Fatalf("check after losing a pack: exit %d", r.code)
	}
	before := objectFiles(t, filepath.Join(e.repo, "snapshots"))
	dry := e.ok(nil, "repair", "snapshots", "--dry-run")
	if !strings.Contains(dry.stdout, "would be dropped sub/small") || !strings.Contains(dry.stdout, "nothing changed") {
		t.Errorf("dry run says:\n%s", dry.stdout)
	}
	if after := objectFiles(t, filepath.Join(e.repo, "snapshots")); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Errorf("the dry run changed the snapshots")
	}
	var res struct {
		Repaired []struct {
			ID      string `json:"id"`
			NewID   string `json:"new_id"`
			Dropped []struct {
				Name string `json:"name"`
			} `json:"dropped"`
		} `json:"repaired"`
	}
	e.ok(&res, "repair", "snapshots", "--json")
	if len(res.Repaired) != 1 || res.Repaired[0].ID != snaps[0].ID || res.Repaired[0].NewID == "" {
		t.Fatalf("repair snapshots: %+v", res)
	}
	var names []string
	for _, d := range res.Repaired[0].Dropped {
		names = append(names, d.Name)
	}
	if !strings.Contains(strings.Join(names, ","), "sub/small") {
		t.Errorf("dropped %v, want sub/small among them", names)
	}
	e.ok(nil, "check", "--read-data")
	var after adminLsJSON
	e.ok(&after, "ls", "--json")
	if len(after) != 1 || after[0].ID != res.Repaired[0].NewID || !after[0].Repaired || after[0].Time != snaps[0].Time ||
		after[0].Host != "db-7" || strings.Join(after[0].Tags, ",") != "nightly" {
		t.Errorf("after repair: %+v, before %+v", after, snaps)
	}
	if out := e.ok(nil, "ls"); !strings.Contains(out.stdout, "nightly,(repaired)") {
		t.Errorf("ls does not mark the snapshot repaired:\n%s", out.stdout)
	}
	target := filepath.Join(t.TempDir(), "r")
	e.ok(nil, "restore", "--latest", "--target", target)
	dropped := map[string]bool{}
	for _, n := range names {
		dropped[filepath.FromSlash(n)] = true
	}
	filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		got, rerr := os.ReadFile(filepath.Join(target, rel))
		switch {
		case dropped[rel]:
			if rerr == nil {
				t.Errorf("%s was dropped but restored", rel)
			}
		default:
			want, _ := os.ReadFile(p)
			if rerr != nil || !bytes.Equal(got, want) {
				t.Errorf("untouched file %s: %v", rel, rerr)
			}
		}
		return nil
	})
	// Nothing left to do.
	if r := e.ok(nil, "repair", "snapshots"); !strings.Contains(r.stdout, "0 of 1 snapshots repaired") {
		t.Errorf("second repair says:\n%s", r.stdout)
	}
}
