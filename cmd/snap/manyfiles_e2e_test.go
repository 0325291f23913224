package main_test

import (
	"context"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/snapbackup/snap/internal/testserver"
)

// manyFilesLimit is the descriptor limit snap runs under, far below the
// number of tables in the database.
const manyFilesLimit = 256

// runLimited runs snap with RLIMIT_NOFILE lowered to n, through the shell's
// ulimit, so that this process keeps its own limit.
func (e *env) runLimited(n int, args ...string) result {
	e.t.Helper()
	script := fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, n)
	r := e.runCmd(exec.Command("sh", append([]string{"-c", script, snapBin}, args...)...))
	if r.code != 0 {
		e.t.Fatalf("snap %s under ulimit -n %d: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), n, r.code, r.stdout, r.stderr)
	}
	return r
}

// fastDir returns a new directory in memory (/dev/shm) where there is
// one, else dir: the server fsyncs every table it flushes, which on a
// disk took the most of the test's time.
func fastDir(t *testing.T, dir string) string {
	t.Helper()
	shm, err := os.MkdirTemp("/dev/shm", "snap-e2e-")
	if err != nil {
		return dir
	}
	t.Cleanup(func() { os.RemoveAll(shm) })
	return shm
}

// TestEndToEndManyFiles backs up and restores a RocksDB of more tables
// than snap may open files: both must keep a bounded number open.
func TestEndToEndManyFiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a database of thousands of tables")
	}
	bin := testserver.Binary(t)
	if _, err := exec.LookPath("ldb"); err != nil {
		t.Fatal("ldb not found: run make deps (Debian package rocksdb-tools)")
	}
	const tables = 3000
	work := t.TempDir()
	data := filepath.Join(fastDir(t, work), "data")
	// A trigger no level 0 reaches keeps every flushed table in place.
	srv := testserver.Start(t, bin, data, "--level0_file_num_compaction_trigger", "100000", "--time_tick", "0")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	ctx := context.Background()
	rng := mrand.New(mrand.NewPCG(11, 12))
	want := map[string]string{}
	start := time.Now()
	// A few keys and a FLUSH per table, pipelined in batches.
	for i := 0; i < tables; {
		p := c.Pipeline()
		for j := 0; j < 100 && i < tables; j, i = j+1, i+1 {
			var args []any
			for k := range 3 {
				key := fmt.Sprintf("m%05d-%d", i, k)
				v := value(rng, key)
				want[key] = v
				args = append(args, key, v)
			}
			p.MSet(ctx, args...)
			p.Do(ctx, "FLUSH")
		}
		cmds, err := p.Exec(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, cmd := range cmds {
			if cmd.Err() != nil {
				t.Fatalf("%v: %v", cmd.Args(), cmd.Err())
			}
		}
	}
	ssts, err := filepath.Glob(filepath.Join(data, "*.sst"))
	if err != nil {
		t.Fatal(err)
	}
	if len(ssts) < tables {
		t.Fatalf("%d tables after %d flushes: something merged them", len(ssts), tables)
	}
	t.Logf("%d tables written in %v", len(ssts), time.Since(start).Round(time.Millisecond))

	e := newEnv(t)
	e.vars = append(e.vars, "SNAP_SERVER="+srv.Addr, "SNAP_DATA="+data)
	e.ok(nil, "init")
	start = time.Now()
	e.runLimited(manyFilesLimit, "backup")
	t.Logf("backup under ulimit -n %d: %v", manyFilesLimit, time.Since(start).Round(time.Millisecond))

	restored := filepath.Join(work, "restored")
	start = time.Now()
	e.runLimited(manyFilesLimit, "restore", "--latest", "--target", restored)
	t.Logf("restore under ulimit -n %d: %v", manyFilesLimit, time.Since(start).Round(time.Millisecond))
	checkConsistency(t, restored)
	got := ldbScan(t, restored)
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key %s: restored %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("restored %d keys, want %d", len(got), len(want))
	}
}
