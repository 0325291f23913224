package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/snapbackup/snap/internal/testserver"
)

var snapBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "snap-e2e-bin-")
	if err != nil {
		panic(err)
	}
	snapBin = filepath.Join(dir, "snap")
	if out, err := exec.Command("go", "build", "-tags", "disable_grpc_modules", "-o", snapBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build snap: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one user's environment: a repository and a password.
type env struct {
	t    *testing.T
	repo string
	vars []string
}

func newEnv(t *testing.T) *env {
	dir := t.TempDir()
	e := &env{t: t, repo: filepath.Join(dir, "repo")}
	// snap's own temp files (GCS packs waiting for their upload; a killed
	// backup leaves them) stay inside the test's directory.
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	e.vars = []string{"SNAP_REPO=" + e.repo, "SNAP_PASSWORD=correct horse", "SNAP_LOG_LEVEL=warn", "TMPDIR=" + tmp}
	return e
}

type result struct {
	code           int
	stdout, stderr string
}

func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runCmd(exec.Command(snapBin, args...))
}

// runCmd runs cmd, a snap command line, in e's environment.
func (e *env) runCmd(cmd *exec.Cmd) result {
	e.t.Helper()
	cmd.Env = append(os.Environ(), e.vars...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

// ok runs snap and fails the test unless it exits 0; it decodes --json
// output into v when v is not nil.
func (e *env) ok(v any, args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("snap %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	if v != nil {
		if err := json.Unmarshal([]byte(r.stdout), v); err != nil {
			e.t.Fatalf("snap %s: output is not JSON: %v\n%s", strings.Join(args, " "), err, r.stdout)
		}
	}
	return r
}

type backupJSON struct {
	SnapshotID  string `json:"snapshot_id"`
	Files       int    `json:"files"`
	Bytes       int64  `json:"bytes"`
	BytesRead   int64  `json:"bytes_read"`
	BytesNew    int64  `json:"bytes_new"`
	BytesStored int64  `json:"bytes_stored"`
	BlobsNew    int64  `json:"blobs_new"`
	Parent      string `json:"parent"`
}

type lsFilesJSON struct {
	Files []struct {
		Name   string `json:"name"`
		Role   string `json:"role"`
		Length int64  `json:"length"`
	} `json:"files"`
}

// value makes a JSON-like record, so the data compresses as real data does.
func value(rng *mrand.Rand, key string) string {
	payload := make([]byte, 48)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	return fmt.Sprintf(`{"key":%q,"user":"u%06d","ts":%d,"score":%d,"payload":"%s"}`,
		key, rng.IntN(1e6), 1763700000000+rng.Int64N(1e9), rng.IntN(1e4), hex.EncodeToString(payload))
}

// writeKeys writes n keys prefix%08d starting at from, in MSET batches, and
// records them in want.
func writeKeys(t *testing.T, c *redis.Client, rng *mrand.Rand, want map[string]string, prefix string, from, n int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; {
		var args []any
		for j := 0; j < 500 && i < from+n; j, i = j+1, i+1 {
			k := fmt.Sprintf("%s%08d", prefix, i)
			v := value(rng, k)
			want[k] = v
			args = append(args, k, v)
		}
		if err := c.MSet(ctx, args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

func command(t *testing.T, c *redis.Client, args ...any) {
	t.Helper()
	if err := c.Do(context.Background(), args...).Err(); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

// ldbScan returns every key and value of the database in dir, skipping the
// test server's own "\x00time:" bookkeeping keys.
func ldbScan(t *testing.T, dir string) map[string]string {
	t.Helper()
	out, err := exec.Command("ldb", "--db="+dir, "scan", "--key_hex", "--value_hex").Output()
	if err != nil {
		t.Fatalf("ldb scan %s: %v", dir, err)
	}
	got := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " : ")
		if !ok {
			t.Fatalf("ldb scan: unexpected line %q", sc.Text())
		}
		kb, err1 := hex.DecodeString(strings.TrimPrefix(k, "0x"))
		vb, err2 := hex.DecodeString(strings.TrimPrefix(v, "0x"))
		if err1 != nil || err2 != nil {
			t.Fatalf("ldb scan: bad hex in %q", sc.Text())
		}
		if bytes.HasPrefix(kb, []byte("\x00time:")) {
			continue
		}
		got[string(kb)] = string(vb)
	}
	return got
}

func checkConsistency(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("ldb", "--db="+dir, "checkconsistency").CombinedOutput(); err != nil {
		t.Fatalf("ldb checkconsistency %s: %v\n%s", dir, err, out)
	}
}

// checkRestored compares a restored database with what was written: every
// key of base, and of the "b" keys written during the backup exactly a
// prefix in write order of at least minB keys (the WAL as of the freeze).
func checkRestored(t *testing.T, got, base map[string]string, during []string, duringVals map[string]string, minB int) {
	t.Helper()
	for k, v := range base {
		if got[k] != v {
			t.Fatalf("key %s: restored %q, want %q", k, got[k], v)
		}
	}
	n := 0
	for n < len(during) {
		if _, ok := got[during[n]]; !ok {
			break
		}
		n++
	}
	for _, k := range during[n:] {
		if _, ok := got[k]; ok {
			t.Fatalf("restored %s but not %s written before it: not a prefix of the WAL", k, during[n])
		}
	}
	if n < minB {
		t.Fatalf("restored %d keys written during the backup, but %d were acknowledged before it started", n, minB)
	}
	for _, k := range during[:n] {
		if got[k] != duringVals[k] {
			t.Fatalf("key %s: restored %q, want %q", k, got[k], duringVals[k])
		}
	}
	if len(got) != len(base)+n {
		t.Fatalf("restored %d keys, want %d: unexpected keys", len(got), len(base)+n)
	}
	t.Logf("restored %d keys: %d written before the backup, %d during it (%d acknowledged before it began)", len(got), len(base), n, minB)
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// TestEndToEndRocksDB backs up a live RocksDB server under write load,
// restores into an empty directory and checks the restore with ldb and
// through the server.
func TestEndToEndRocksDB(t *testing.T) {
	bin := testserver.Binary(t)
	if _, err := exec.LookPath("ldb"); err != nil {
		t.Fatal("ldb not found: run make deps (Debian package rocksdb-tools)")
	}
	work := t.TempDir()
	data := filepath.Join(work, "data")
	srv := testserver.Start(t, bin, data, "--write_buffer_size", "4194304", "--level0_file_num_compaction_trigger", "20")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	rng := mrand.New(mrand.NewPCG(1, 2))
	want := map[string]string{}
	for i := range 3 {
		writeKeys(t, c, rng, want, "a", i*12000, 12000)
		command(t, c, "FLUSH")
	}
	writeKeys(t, c, rng, want, "a", 36000, 4000) // stays in the WAL

	e := newEnv(t)
	e.vars = append(e.vars, "SNAP_SERVER="+srv.Addr, "SNAP_DATA="+data)
	e.ok(nil, "init")

	// A writer keeps writing acknowledged keys while the backup runs.
	var (
		mu         sync.Mutex
		during     []string
		duringVals = map[string]string{}
		stop       atomic.Bool
		wg         sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		wrng := mrand.New(mrand.NewPCG(3, 4))
		for i := 0; !stop.Load(); i++ {
			k := fmt.Sprintf("b%08d", i)
			v := value(wrng, k)
			if err := c.Set(context.Background(), k, v, 0).Err(); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			during = append(during, k)
			duringVals[k] = v
			mu.Unlock()
		}
	}()
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	ackedBefore := len(during)
	mu.Unlock()
	var b1 backupJSON
	e.ok(&b1, "backup", "--json")
	time.Sleep(100 * time.Millisecond) // the WAL grows past its listed length
	stop.Store(true)
	wg.Wait()

	var ls lsFilesJSON
	e.ok(&ls, "ls", "--json", b1.SnapshotID)
	roles := map[string]int{}
	shorter := map[string]bool{}
	// The WAL grew with the writes after the freeze, the MANIFEST grows
	// with a flush (which, the freeze being over, may delete the WAL).
	for _, role := range []string{"wal", "manifest"} {
		if role == "manifest" {
			command(t, c, "FLUSH")
		}
		for _, f := range ls.Files {
			if f.Role == role {
				if size := fileSize(t, filepath.Join(data, f.Name)); f.Length < size {
					shorter[f.Role] = true
				}
			}
		}
	}
	for _, f := range ls.Files {
		roles[f.Role]++
	}
	if roles["table"] < 3 || roles["manifest"] != 1 || roles["current"] != 1 || roles["wal"] < 1 || roles["options"] < 1 {
		t.Fatalf("snapshot roles %v: want several tables, a manifest, CURRENT, OPTIONS and a WAL", roles)
	}
	if !shorter["wal"] || !shorter["manifest"] {
		t.Fatalf("listed WAL/MANIFEST shorter than on disk: %v; the test did not exercise exact lengths", shorter)
	}
	if b1.BytesRead != b1.Bytes || b1.Files != len(ls.Files) {
		t.Fatalf("first backup: %+v", b1)
	}

	restored := filepath.Join(work, "restored")
	e.ok(nil, "restore", "--latest", "--target", restored)
	checkConsistency(t, restored)
	mu.Lock()
	checkRestored(t, ldbScan(t, restored), want, during, duringVals, ackedBefore)
	mu.Unlock()

	// Second backup after more writes: reads only the new tables and the
	// tails of the append-only files.
	before := map[string]int64{}
	for _, f := range ls.Files {
		before[f.Name] = f.Length
	}
	writeKeys(t, c, rng, want, "c", 0, 12000)
	command(t, c, "FLUSH")
	var b2 backupJSON
	e.ok(&b2, "backup", "--json")
	var ls2 lsFilesJSON
	e.ok(&ls2, "ls", "--json", b2.SnapshotID)
	var newTables, appendOnly int64
	for _, f := range ls2.Files {
		_, old := before[f.Name]
		switch {
		case f.Role == "wal" || f.Role == "manifest":
			appendOnly += f.Length
		case f.Role == "current":
			appendOnly += f.Length
		case !old:
			newTables += f.Length
		}
	}
	if b2.Parent != b1.SnapshotID {
		t.Fatalf("second backup's parent %q, want %q", b2.Parent, b1.SnapshotID)
	}
	if b2.BytesRead < newTables || b2.BytesRead > newTables+appendOnly {
		t.Fatalf("second backup read %d bytes; new tables hold %d and the append-only files %d: it read unchanged tables", b2.BytesRead, newTables, appendOnly)
	}
	if b2.BytesNew > b2.BytesRead+64<<10 {
		t.Fatalf("second backup stored %d new bytes of %d read", b2.BytesNew, b2.BytesRead)
	}
	t.Logf("first backup: read %d, stored %d; second: database %d bytes, read %d (new tables %d), new %d",
		b1.BytesRead, b1.BytesStored, b2.Bytes, b2.BytesRead, newTables, b2.BytesNew)

	// Restore the second snapshot, then serve it.
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	var rj struct {
		Result string `json:"result"`
		Files  int    `json:"files"`
	}
	e.ok(&rj, "restore", "--latest", "--json") // --target defaults to SNAP_DATA
	if rj.Result != "restored" || rj.Files != len(ls2.Files) {
		t.Fatalf("restore: %+v", rj)
	}
	checkConsistency(t, data)
	e.ok(&rj, "restore", "--latest", "--json", "--skip-existing")
	if rj.Result != "skipped" {
		t.Fatalf("restore --skip-existing over a database: %+v", rj)
	}
	if r := e.run("restore", "--latest"); r.code != 1 || !strings.Contains(r.stderr, "CURRENT exists") {
		t.Fatalf("restore over a database: exit %d, %s", r.code, r.stderr)
	}
	srv2 := testserver.Start(t, bin, data)
	c2 := redis.NewClient(&redis.Options{Addr: srv2.Addr})
	defer c2.Close()
	ctx := context.Background()
	for k, v := range want {
		if rng.IntN(50) != 0 { // a sample through the server; ldb saw all
			continue
		}
		got, err := c2.Get(ctx, k).Result()
		if err != nil || got != v {
			t.Fatalf("GET %s after restore: %q, %v", k, got, err)
		}
	}
	secs, err := c2.Do(ctx, "SHCARD", "time", "3600").Int64()
	if err != nil || secs < 1 {
		t.Fatalf("SHCARD time 3600 after restore: %d, %v", secs, err)
	}
}

func randomFile(t *testing.T, path string, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return b
}
