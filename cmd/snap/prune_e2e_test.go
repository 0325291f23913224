package main_test

import (
	"encoding/json"
	"maps"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/snapbackup/snap/internal/testserver"
)

type pruneStatsJSON struct {
	Stats struct {
		SnapshotsKept    int   `json:"snapshots_kept"`
		SnapshotsRemoved int   `json:"snapshots_removed"`
		PacksDeleted     int   `json:"packs_deleted"`
		PackBytesBefore  int64 `json:"pack_bytes_before"`
		PackBytesAfter   int64 `json:"pack_bytes_after"`
	} `json:"stats"`
}

type checkJSON struct {
	ErrorCount int `json:"error_count"`
	PacksRead  int `json:"packs_read"`
	Packs      int `json:"packs"`
	Errors     []struct {
		Message string `json:"message"`
	} `json:"errors"`
}

// TestEndToEndPruneCheck backs up a live RocksDB server three times,
// prunes the middle snapshot away, proves the repository whole with check
// --read-data and restores both kept snapshots into databases that hold
// exactly the keys they had. Then it removes a pack and check must fail.
func TestEndToEndPruneCheck(t *testing.T) {
	bin := testserver.Binary(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	srv := testserver.Start(t, bin, data, "--write_buffer_size", "4194304", "--level0_file_num_compaction_trigger", "20")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	rng := mrand.New(mrand.NewPCG(7, 7))

	e := newEnv(t)
	e.vars = append(e.vars, "SNAP_SERVER="+srv.Addr, "SNAP_DATA="+data)
	e.ok(nil, "init")

	want := map[string]string{}
	var states []map[string]string
	var ids []string
	for i, prefix := range []string{"a", "b", "c"} {
		writeKeys(t, c, rng, want, prefix, 0, 8000)
		command(t, c, "FLUSH")
		var b backupJSON
		args := []string{"backup", "--json"}
		if i == 0 {
			args = append(args, "--tag", "first")
		}
		e.ok(&b, args...)
		ids = append(ids, b.SnapshotID)
		states = append(states, maps.Clone(want))
	}

	dry := e.ok(nil, "prune", "--keep-last", "1", "--keep-tag", "first", "--dry-run")
	if !strings.Contains(dry.stdout, "would remove  "+ids[1][:8]) || !strings.Contains(dry.stdout, "tag first") {
		t.Fatalf("prune --dry-run:\n%s", dry.stdout)
	}
	var pr pruneStatsJSON
	e.ok(&pr, "prune", "--keep-last", "1", "--keep-tag", "first", "--json")
	if pr.Stats.SnapshotsRemoved != 1 || pr.Stats.SnapshotsKept != 2 || pr.Stats.PackBytesAfter >= pr.Stats.PackBytesBefore {
		t.Fatalf("prune: %+v", pr.Stats)
	}
	t.Logf("prune: pack bytes %d -> %d", pr.Stats.PackBytesBefore, pr.Stats.PackBytesAfter)

	var ck checkJSON
	e.ok(&ck, "check", "--read-data", "--json")
	if ck.ErrorCount != 0 || ck.PacksRead != ck.Packs || ck.Packs == 0 {
		t.Fatalf("check --read-data after prune: %+v", ck)
	}
	for _, i := range []int{0, 2} {
		dir := filepath.Join(work, "restored-"+ids[i][:8])
		e.ok(nil, "restore", ids[i], "--target", dir)
		checkConsistency(t, dir)
		got := ldbScan(t, dir)
		if len(got) != len(states[i]) {
			t.Fatalf("snapshot %d restored %d keys, it had %d", i, len(got), len(states[i]))
		}
		for k, v := range states[i] {
			if got[k] != v {
				t.Fatalf("snapshot %d: key %s restored as %q", i, k, got[k])
			}
		}
	}

	// Damage: a pack goes missing.
	packs, _ := filepath.Glob(filepath.Join(e.repo, "data", "*", "*"))
	if len(packs) == 0 {
		t.Fatal("no packs")
	}
	if err := os.Remove(packs[0]); err != nil {
		t.Fatal(err)
	}
	res := e.run("check", "--json")
	if err := json.Unmarshal([]byte(res.stdout), &ck); err != nil {
		t.Fatalf("check --json: %v\n%s", err, res.stdout)
	}
	if res.code != 1 || ck.ErrorCount == 0 || !strings.Contains(res.stderr, "check found") {
		t.Fatalf("check of a repository with a missing pack: exit %d, %+v, %s", res.code, ck, res.stderr)
	}
}

// TestPruneRemovesOldTempFiles: temp files a killed backup left in a local
// repository are removed by prune once they are older than its margin.
func TestPruneRemovesOldTempFiles(t *testing.T) {
	e := newEnv(t)
	e.ok(nil, "init")
	oldTmp := filepath.Join(e.repo, "data", ".tmp-killed")
	youngTmp := filepath.Join(e.repo, "data", ".tmp-running")
	for _, p := range []string{oldTmp, youngTmp} {
		if err := os.WriteFile(p, make([]byte, 5000), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(oldTmp, old, old); err != nil {
		t.Fatal(err)
	}
	r := e.ok(nil, "prune", "--keep-last", "1")
	if !strings.Contains(r.stdout, "removed 1 temp files") {
		t.Errorf("prune output does not report the temp file:\n%s", r.stdout)
	}
	if _, err := os.Stat(oldTmp); !os.IsNotExist(err) {
		t.Errorf("old temp file: %v, want it gone", err)
	}
	if _, err := os.Stat(youngTmp); err != nil {
		t.Errorf("young temp file: %v, want it kept", err)
	}
}
