package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/local"
	"github.com/snapbackup/snap/snapshot"
)

// testRepo makes a local repository with cheap key derivation and sets
// SNAP_PASSWORD for the commands under test.
func testRepo(t *testing.T) (string, *repo.Repository) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "repo")
	be, err := local.Create(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Init(context.Background(), be, "pw", repo.InitOptions{
		ChunkerMin: 16 << 10, ChunkerAvg: 64 << 10, ChunkerMax: 256 << 10, PackSize: 1 << 20,
		KDF: repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
	}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	t.Setenv("SNAP_PASSWORD", "pw")
	t.Setenv("SNAP_PASSWORD_FILE", "")
	return dir, r
}

// addSnapshot stores a snapshot of one file of random chunks at a time.
func addSnapshot(t *testing.T, r *repo.Repository, rng *rand.Rand, at time.Time) *snapshot.Snapshot {
	t.Helper()
	ctx := context.Background()
	f := snapshot.File{Name: "000010.sst", Role: "table"}
	for range 3 {
		c := make([]byte, 10000+rng.IntN(10000))
		for i := range c {
			c[i] = byte(rng.Uint32())
		}
		id := r.BlobID(c)
		if _, err := r.SaveBlob(ctx, repo.DataBlob, id, c); err != nil {
			t.Fatal(err)
		}
		f.Chunks, f.Sizes, f.Length = append(f.Chunks, id), append(f.Sizes, uint32(len(c))), f.Length+int64(len(c))
	}
	tid, err := snapshot.SaveTree(ctx, r, &snapshot.Tree{Files: []snapshot.File{f}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: at, Host: "db-7", Tree: tid, Source: snapshot.Source{Kind: "rocksdb-freeze", Address: "127.0.0.1:9015", DataDir: "/data"}}
	if err := snapshot.Save(ctx, r, sn); err != nil {
		t.Fatal(err)
	}
	return sn
}

// snap runs the command line in process and returns its exit code and
// output.
func snap(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	app := newApp(&out, &errb)
	err := app.RunContext(context.Background(), flagsFirst(app, append([]string{"snap"}, args...)))
	code := exitCode(err, &errb)
	return code, out.String(), errb.String()
}

func countObjects(t *testing.T, dir string, typ repo.FileType) int {
	t.Helper()
	be, err := local.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	be.List(context.Background(), typ, func(repo.FileInfo) error { n++; return nil })
	return n
}

func TestPruneCommand(t *testing.T) {
	dir, r := testRepo(t)
	rng := rand.New(rand.NewPCG(1, 1))
	day := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var snaps []*snapshot.Snapshot
	for i := range 4 {
		snaps = append(snaps, addSnapshot(t, r, rng, day.Add(time.Duration(i)*24*time.Hour)))
	}

	code, out, errs := snap(t, "--repo", dir, "prune", "--keep-daily", "2", "--timezone", "UTC", "--dry-run")
	if code != 0 {
		t.Fatalf("prune --dry-run: exit %d: %s", code, errs)
	}
	for _, want := range []string{
		"keep 2 daily (group by host,source, time zone UTC)",
		"host db-7, source 127.0.0.1:9015 /data:",
		"keep          " + snaps[3].ID.Str(), "daily 2026-05-04",
		"would remove  " + snaps[0].ID.Str(),
		"2 snapshots kept, 2 would be removed",
		"dry run: nothing changed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("dry-run output lacks %q:\n%s", want, out)
		}
	}
	if n := countObjects(t, dir, repo.SnapshotFile); n != 4 {
		t.Fatalf("dry run left %d snapshots", n)
	}

	code, out, errs = snap(t, "--repo", dir, "prune", "--keep-daily", "2", "--timezone", "UTC", "--json")
	if code != 0 {
		t.Fatalf("prune: exit %d: %s", code, errs)
	}
	var res struct {
		DryRun bool `json:"dry_run"`
		Groups []struct {
			Host      string `json:"host"`
			Snapshots []struct {
				ID      string   `json:"id"`
				Keep    bool     `json:"keep"`
				Reasons []string `json:"reasons"`
			} `json:"snapshots"`
		} `json:"groups"`
		Stats snapshot.PruneStats `json:"stats"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("prune --json: %v\n%s", err, out)
	}
	if res.DryRun || len(res.Groups) != 1 || len(res.Groups[0].Snapshots) != 4 || res.Stats.SnapshotsRemoved != 2 || res.Stats.PacksDeleted != 4 {
		t.Fatalf("prune --json: %+v", res)
	}
	if s := res.Groups[0].Snapshots[0]; s.ID != snaps[3].ID.String() || !s.Keep || s.Reasons[0] != "daily 2026-05-04" {
		t.Fatalf("newest snapshot: %+v", s)
	}
	if n := countObjects(t, dir, repo.SnapshotFile); n != 2 {
		t.Fatalf("%d snapshots after prune", n)
	}

	code, out, errs = snap(t, "--repo", dir, "check", "--read-data", "--json")
	var cr snapshot.CheckResult
	if err := json.Unmarshal([]byte(out), &cr); err != nil || code != 0 || !cr.OK() || cr.PacksRead != 4 {
		t.Fatalf("check after prune: exit %d, %v, %+v, %s", code, err, cr, errs)
	}
}

func TestCheckCommandFindsMissingPack(t *testing.T) {
	dir, r := testRepo(t)
	sn := addSnapshot(t, r, rand.New(rand.NewPCG(2, 2)), time.Now())
	code, out, _ := snap(t, "--repo", dir, "check")
	if code != 0 || !strings.Contains(out, "no errors found") {
		t.Fatalf("check: exit %d\n%s", code, out)
	}
	tree, _ := r.Index().Lookup(sn.Tree)
	var data repo.ID
	for _, p := range r.Index().Packs() {
		if p != tree.Pack {
			data = p
		}
	}
	if err := os.Remove(filepath.Join(dir, "data", data.String()[:2], data.String())); err != nil {
		t.Fatal(err)
	}
	code, out, errs := snap(t, "--repo", dir, "check")
	if code != 1 || !strings.Contains(errs, "snap: check found 2 problems") {
		t.Fatalf("check of a damaged repository: exit %d, stderr %s", code, errs)
	}
	for _, want := range []string{
		"error: pack " + data.String() + ": named by the index (3 blobs) but missing from storage",
		"error: snapshot " + sn.ID.String() + ": file 000010.sst: pack " + data.String(),
		"3 of 3 chunks are in a pack missing from storage",
		"2 errors found",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	code, out, _ = snap(t, "--repo", dir, "check", "--json")
	var cr snapshot.CheckResult
	if err := json.Unmarshal([]byte(out), &cr); err != nil || code != 1 || cr.ErrorCount != 2 || cr.Errors[0].Pack == "" {
		t.Fatalf("check --json: exit %d, %v, %+v", code, err, cr)
	}
}

func TestUnlockCommand(t *testing.T) {
	dir, r := testRepo(t)
	ctx := context.Background()
	stale, err := r.Lock(ctx, repo.LockOptions{Exclusive: true, Command: "prune", Host: "db-gone", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	// Not refreshed for an hour, by the storage's clock (the file's mtime).
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "locks", stale.Name()), old, old); err != nil {
		t.Fatal(err)
	}
	live, err := r.Lock(ctx, repo.LockOptions{Command: "backup", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer live.Unlock(ctx)
	code, out, errs := snap(t, "--repo", dir, "unlock")
	if code != 0 || !strings.Contains(out, "removed (stale) exclusive lock by prune on host db-gone") || !strings.Contains(out, "1 locks removed") ||
		!strings.Contains(out, "still held (live): shared lock by backup") {
		t.Fatalf("unlock: exit %d\n%s%s", code, out, errs)
	}
	if n := countObjects(t, dir, repo.LockFile); n != 1 {
		t.Fatalf("%d locks after unlock, want the live one", n)
	}
	code, out, _ = snap(t, "--repo", dir, "unlock", "--remove-all", "--json")
	var res struct{ Removed, Remaining []lockJSON }
	if err := json.Unmarshal([]byte(out), &res); err != nil || code != 0 || len(res.Removed) != 1 || len(res.Remaining) != 0 {
		t.Fatalf("unlock --remove-all: exit %d, %v, %s", code, err, out)
	}
}

func TestPruneCommandLocked(t *testing.T) {
	dir, r := testRepo(t)
	lk, err := r.Lock(context.Background(), repo.LockOptions{Command: "backup", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock(context.Background())
	code, _, errs := snap(t, "--repo", dir, "prune", "--keep-last", "1")
	if code != exitLocked || !strings.Contains(errs, "repository is locked: shared lock by backup") || !strings.Contains(errs, "--retry-lock") {
		t.Fatalf("prune while a backup runs: exit %d, %s", code, errs)
	}
}

func TestPruneCheckUsageErrors(t *testing.T) {
	dir, _ := testRepo(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"prune", "--keep-within", "10s"}, "--keep-within: invalid duration"},
		{[]string{"prune", "--keep-daily", "-3"}, "--keep-daily -3"},
		{[]string{"prune", "--timezone", "Mars/Olympus"}, "--timezone \"Mars/Olympus\""},
		{[]string{"prune", "--group-by", "tags"}, "invalid --group-by"},
		{[]string{"prune", "--max-unused", "150%"}, "--max-unused"},
		{[]string{"check", "--read-data-subset", "7/5"}, "--read-data-subset"},
	} {
		code, _, errs := snap(t, append([]string{"--repo", dir}, tc.args...)...)
		if code != exitUsage || !strings.Contains(errs, tc.want) {
			t.Errorf("snap %s: exit %d, %s; want exit 2 mentioning %q", strings.Join(tc.args, " "), code, errs, tc.want)
		}
	}
}
