package testserver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/snapbackup/snap/internal/testserver"
)

func client(t *testing.T, s *testserver.Server) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// fill writes n keys starting at key number from, values of ~200 seeded
// random letters, mostly with MSET and some with SET.
func fill(ctx context.Context, t *testing.T, c *redis.Client, rng *rand.Rand, from, n int) {
	t.Helper()
	const batch = 500
	for i := from; i < from+n; i += batch {
		var kv []any
		for j := i; j < min(i+batch, from+n); j++ {
			v := make([]byte, 180+rng.IntN(40))
			for k := range v {
				v[k] = 'a' + byte(rng.IntN(26))
			}
			kv = append(kv, fmt.Sprintf("key%06d", j), string(v))
		}
		if (i/batch)%4 == 3 { // every fourth batch one SET at a time
			for k := 0; k < len(kv); k += 2 {
				if err := c.Set(ctx, kv[k].(string), kv[k+1], 0).Err(); err != nil {
					t.Fatalf("SET: %v", err)
				}
			}
			continue
		}
		if err := c.MSet(ctx, kv...).Err(); err != nil {
			t.Fatalf("MSET: %v", err)
		}
	}
}

func do(ctx context.Context, t *testing.T, c *redis.Client, args ...any) any {
	t.Helper()
	v, err := c.Do(ctx, args...).Result()
	if err != nil {
		t.Fatalf("%v: %v", args, err)
	}
	return v
}

type listed struct {
	name   string // without the leading "/"
	length int64  // -1: whole file
}

// parseFreeze checks the FREEZE reply's form and splits off the lengths.
func parseFreeze(t *testing.T, reply []string) []listed {
	t.Helper()
	var out []listed
	for _, r := range reply {
		name, n, hasLen := strings.Cut(r, ":")
		if !strings.HasPrefix(name, "/") || strings.Contains(name[1:], "/") || strings.Contains(name, "..") {
			t.Fatalf("FREEZE entry %q: want /basename", r)
		}
		l := listed{name: name[1:], length: -1}
		if hasLen {
			v, err := strconv.ParseInt(n, 10, 64)
			if err != nil || v < 0 {
				t.Fatalf("FREEZE entry %q: bad length", r)
			}
			l.length = v
		}
		wantLen := strings.HasPrefix(l.name, "MANIFEST-") || strings.HasSuffix(l.name, ".log")
		if hasLen != wantLen {
			t.Fatalf("FREEZE entry %q: length given %v, want %v", r, hasLen, wantLen)
		}
		out = append(out, l)
	}
	return out
}

func size(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// copyFrozen copies the listed files as a backup would: whole files, the
// listed prefix of MANIFEST and WALs, and CURRENT as the listing implies.
func copyFrozen(t *testing.T, from, to string, files []listed) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	var manifest string
	for _, f := range files {
		if strings.HasPrefix(f.name, "MANIFEST-") {
			manifest = f.name
		}
	}
	for _, f := range files {
		dst := filepath.Join(to, f.name)
		if f.name == "CURRENT" {
			if err := os.WriteFile(dst, []byte(manifest+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		src, err := os.Open(filepath.Join(from, f.name))
		if err != nil {
			t.Fatal(err)
		}
		var r io.Reader = src
		if f.length >= 0 {
			r = io.LimitReader(src, f.length)
		}
		b, err := io.ReadAll(r)
		src.Close()
		if err != nil {
			t.Fatal(err)
		}
		if f.length >= 0 && int64(len(b)) != f.length {
			t.Fatalf("%s: %d bytes on disk, FREEZE listed %d", f.name, len(b), f.length)
		}
		if err := os.WriteFile(dst, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFreezeHoldsFiles(t *testing.T) {
	bin := testserver.Binary(t)
	ctx := context.Background()
	s := testserver.Start(t, bin, filepath.Join(t.TempDir(), "db"))
	c := client(t, s)
	rng := rand.New(rand.NewPCG(1, 2))

	fill(ctx, t, c, rng, 0, 10000)
	do(ctx, t, c, "FLUSH")
	fill(ctx, t, c, rng, 10000, 10000)
	do(ctx, t, c, "FLUSH")
	fill(ctx, t, c, rng, 20000, 1000) // stays in the WAL

	reply, err := c.Do(ctx, "FREEZE").StringSlice()
	if err != nil {
		t.Fatalf("FREEZE: %v", err)
	}
	t.Logf("FREEZE: %q", reply)
	files := parseFreeze(t, reply)
	var ssts, currents, manifests, options, wals []listed
	for _, f := range files {
		switch {
		case strings.HasSuffix(f.name, ".sst"):
			ssts = append(ssts, f)
		case f.name == "CURRENT":
			currents = append(currents, f)
		case strings.HasPrefix(f.name, "MANIFEST-"):
			manifests = append(manifests, f)
		case strings.HasPrefix(f.name, "OPTIONS-"):
			options = append(options, f)
		case strings.HasSuffix(f.name, ".log"):
			wals = append(wals, f)
		default:
			t.Errorf("unexpected file %q in FREEZE reply", f.name)
		}
	}
	if len(ssts) < 2 || len(currents) != 1 || len(manifests) != 1 || len(options) != 1 || len(wals) < 1 {
		t.Fatalf("FREEZE: %d SSTs (want >= 2), %d CURRENT, %d MANIFEST, %d OPTIONS (want 1 each), %d WALs (want >= 1)",
			len(ssts), len(currents), len(manifests), len(options), len(wals))
	}
	for _, f := range append(manifests, wals...) {
		if f.length == 0 {
			t.Errorf("%s listed with length 0", f.name)
		}
		if got := size(t, filepath.Join(s.DataDir, f.name)); got < f.length {
			t.Errorf("%s: %d bytes on disk < listed %d", f.name, got, f.length)
		}
	}
	sstSize := map[string]int64{}
	for _, f := range ssts {
		sstSize[f.name] = size(t, filepath.Join(s.DataDir, f.name))
	}

	// Churn while frozen: nothing listed may go away or shrink.
	fill(ctx, t, c, rng, 0, 10000)
	do(ctx, t, c, "FLUSH")
	do(ctx, t, c, "COMPACT")
	for _, f := range files {
		got := size(t, filepath.Join(s.DataDir, f.name)) // fails if deleted
		if want, ok := sstSize[f.name]; ok && got != want {
			t.Errorf("%s changed size while frozen: %d -> %d", f.name, want, got)
		}
		if f.length >= 0 && got < f.length {
			t.Errorf("%s: %d bytes on disk < listed %d after COMPACT", f.name, got, f.length)
		}
	}

	// A copy of the frozen files is a database RocksDB's own ldb can read.
	t.Run("ldb", func(t *testing.T) {
		ldb, err := exec.LookPath("ldb")
		if err != nil {
			t.Fatalf("ldb not found (Debian package rocksdb-tools: run `make deps`): %v", err)
		}
		cp := filepath.Join(t.TempDir(), "copy")
		copyFrozen(t, s.DataDir, cp, files)
		out, err := exec.Command(ldb, "--db="+cp, "scan").CombinedOutput()
		if err != nil {
			t.Fatalf("ldb scan: %v\n%.2000s", err, out)
		}
		n := strings.Count(string(out), "\nkey0")
		if strings.HasPrefix(string(out), "key0") {
			n++
		}
		if n != 21000 {
			t.Errorf("ldb scan of the frozen copy: %d keys, want 21000", n)
		}
	})

	// Freezes nest: a second FREEZE needs its own THAW.
	do(ctx, t, c, "FREEZE")
	if n := do(ctx, t, c, "FROZEN"); n != int64(2) {
		t.Errorf("FROZEN after two FREEZEs = %v, want 2", n)
	}
	do(ctx, t, c, "THAW")
	do(ctx, t, c, "COMPACT")
	for _, f := range ssts {
		if _, err := os.Stat(filepath.Join(s.DataDir, f.name)); err != nil {
			t.Errorf("%s deleted while one freeze is still open: %v", f.name, err)
		}
	}
	do(ctx, t, c, "THAW")
	if n := do(ctx, t, c, "FROZEN"); n != int64(0) {
		t.Errorf("FROZEN after THAWs = %v, want 0", n)
	}
	do(ctx, t, c, "COMPACT")
	deadline := time.Now().Add(10 * time.Second)
	for {
		gone := 0
		for _, f := range ssts {
			if _, err := os.Stat(filepath.Join(s.DataDir, f.name)); errors.Is(err, os.ErrNotExist) {
				gone++
			}
		}
		if gone > 0 {
			t.Logf("%d of %d frozen SSTs deleted after THAW", gone, len(ssts))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no frozen SST deleted within 10s of THAW + COMPACT")
		}
		time.Sleep(50 * time.Millisecond)
	}

	// THAW without FREEZE is harmless.
	if v := do(ctx, t, c, "THAW"); v != "OK" {
		t.Errorf("THAW without FREEZE = %v, want OK", v)
	}
	if n := do(ctx, t, c, "FROZEN"); n != int64(0) {
		t.Errorf("FROZEN after extra THAW = %v, want 0", n)
	}
}

func TestCommands(t *testing.T) {
	bin := testserver.Binary(t)
	ctx := context.Background()
	s := testserver.Start(t, bin, filepath.Join(t.TempDir(), "db"))
	c := client(t, s)

	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING: %v", err)
	}
	if err := c.Set(ctx, "a", "1", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if err := c.MSet(ctx, "b", "2", "c", "").Err(); err != nil {
		t.Fatalf("MSET: %v", err)
	}
	if v, err := c.Get(ctx, "a").Result(); err != nil || v != "1" {
		t.Errorf("GET a = %q, %v; want 1", v, err)
	}
	if err := c.Get(ctx, "nope").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("GET nope: %v, want redis.Nil", err)
	}
	vals, err := c.MGet(ctx, "a", "nope", "c").Result()
	if err != nil || len(vals) != 3 || vals[0] != "1" || vals[1] != nil || vals[2] != "" {
		t.Errorf("MGET = %#v, %v", vals, err)
	}
	if n, err := c.Del(ctx, "a", "a", "nope", "b").Result(); err != nil || n != 2 {
		t.Errorf("DEL = %d, %v; want 2", n, err)
	}
	if n, err := c.DBSize(ctx).Result(); err != nil || n < 1 {
		t.Errorf("DBSIZE = %d, %v", n, err)
	}
	err = c.Do(ctx, "NOSUCH", "x").Err()
	if err == nil || !strings.Contains(err.Error(), "ERR unknown command 'NOSUCH'") {
		t.Errorf("NOSUCH: %v, want unknown command", err)
	}
	if err := c.Do(ctx, "GET").Err(); err == nil || !strings.Contains(err.Error(), "wrong number of arguments") {
		t.Errorf("GET without key: %v", err)
	}
}

// SHCARD time counts the seconds the server ran, and survives a restart and
// a crash (the time keys are ordinary writes).
func TestShcardTime(t *testing.T) {
	bin := testserver.Binary(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "db")
	s := testserver.Start(t, bin, dir)
	time.Sleep(2 * time.Second)
	shcard := func(s *testserver.Server) int64 {
		n, err := client(t, s).Do(ctx, "SHCARD", "time", "3600").Int64()
		if err != nil {
			t.Fatalf("SHCARD: %v", err)
		}
		return n
	}
	before := shcard(s)
	if before < 1 {
		t.Fatalf("SHCARD time 3600 = %d after 2s, want >= 1", before)
	}
	if err := client(t, s).Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	s2 := testserver.Start(t, bin, dir)
	if after := shcard(s2); after < before {
		t.Errorf("SHCARD after crash and restart = %d, before %d", after, before)
	}
	if v, err := client(t, s2).Get(ctx, "k").Result(); err != nil || v != "v" {
		t.Errorf("GET k after crash = %q, %v", v, err)
	}
	if err := s2.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if err := s2.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestNoDatabaseWithoutCreate(t *testing.T) {
	bin := testserver.Binary(t)
	dir := t.TempDir()
	out, err := exec.Command(bin, "--port", "0", "--rocksdb_db_path", dir).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("want exit 1, got %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "CURRENT is missing") || !strings.Contains(string(out), "--rocksdb_create_if_missing_one_off") {
		t.Errorf("unclear error: %s", out)
	}
}
