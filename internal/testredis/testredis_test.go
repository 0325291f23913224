package testredis

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestVersionMajor(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want int
		ok   bool
	}{
		{"Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c971a948f0\n", 7, true},
		{"Redis server v=6.2.14 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=1\n", 6, true},
		{"Redis server v=10.1.0 sha=0\n", 10, true},
		{"Valkey server v=8.0.1 sha=0\n", 8, true},
		{"redis-server: command not found", 0, false},
		{"", 0, false},
	} {
		if got, ok := versionMajor(tc.out); got != tc.want || ok != tc.ok {
			t.Errorf("versionMajor(%q) = %d, %v; want %d, %v", tc.out, got, ok, tc.want, tc.ok)
		}
	}
}

func TestCommand(t *testing.T) {
	args, err := Command(Options{Dir: "/d", Timestamps: true, Args: []string{"auto-aof-rewrite-min-size", "64kb", "--aof-disable-auto-gc", "yes"}}, 7000, "/l/redis.log")
	if err != nil {
		t.Fatal(err)
	}
	line := strings.Join(args, " ")
	for _, want := range []string{"redis-server ", "--port 7000", "--bind 127.0.0.1", "--dir /d", "--appendonly yes", "--appendfsync always",
		"--save  ", "--daemonize no", "--logfile /l/redis.log", "--aof-timestamp-enabled yes",
		"--auto-aof-rewrite-min-size 64kb", "--aof-disable-auto-gc yes"} {
		if !strings.Contains(line, want) {
			t.Errorf("command %q lacks %q", line, want)
		}
	}
	if _, err := Command(Options{}, 1, "l"); err == nil {
		t.Error("no Dir: no error")
	}
	if _, err := Command(Options{Dir: "/d", Args: []string{"maxmemory"}}, 1, "l"); err == nil {
		t.Error("odd Args: no error")
	}
}

// TestServer: what a test does with a server (write, rewrite, restart,
// check the AOF) works, and what was acknowledged survives a restart.
func TestServer(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "redis")
	s := Start(t, Options{Dir: dir, Timestamps: true, Args: []string{"auto-aof-rewrite-min-size", "64kb"}})
	ctx := t.Context()
	c := s.Client()
	if got, err := c.ConfigGet(ctx, "auto-aof-rewrite-min-size").Result(); err != nil || got["auto-aof-rewrite-min-size"] != "65536" {
		t.Errorf("CONFIG GET auto-aof-rewrite-min-size: %v, %v", got, err)
	}
	for i := range 5 {
		if err := c.Set(ctx, fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i), 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// The first write annotates; later ones only when the second changed
	// (so an incr file begun by a rewrite may start without one).
	incr := aofFiles(t, s.Dir, ".incr.aof")
	if len(incr) != 1 {
		t.Fatalf("incr files %q, want one", incr)
	}
	if data, err := os.ReadFile(incr[0]); err != nil || !strings.HasPrefix(string(data), "#TS:") {
		t.Errorf("incr file with timestamps starts %.20q (%v), want #TS:", data, err)
	}
	s.RewriteAOF(t)
	if err := c.Set(ctx, "after", "rewrite", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got := aofFiles(t, s.Dir, ".incr.aof"); len(got) != 1 || got[0] == incr[0] {
		t.Errorf("incr files after a rewrite: %q, want one new one", got)
	}

	port := s.Port
	s.Restart(t)
	if s.Port != port {
		t.Errorf("restarted on port %d, was %d", s.Port, port)
	}
	for i := range 5 {
		if got, err := c.Get(ctx, fmt.Sprintf("k%d", i)).Result(); err != nil || got != fmt.Sprintf("v%d", i) {
			t.Errorf("GET k%d after restart: %q, %v", i, got, err)
		}
	}
	if got, err := c.Get(ctx, "after").Result(); err != nil || got != "rewrite" {
		t.Errorf("GET after after restart: %q, %v", got, err)
	}
	CheckAOF(t, filepath.Join(s.Dir, "appendonlydir"))
	if !strings.Contains(s.LogTail(), "Ready to accept connections") {
		t.Errorf("log tail:\n%s", s.LogTail())
	}

	if err := s.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second stop: %v", err)
	}
	if err := ping(s.Addr); err == nil {
		t.Error("the server answers after Stop")
	}
}

// TestCheckAOFFails: a torn AOF is reported.
func TestCheckAOFFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "redis")
	s := Start(t, Options{Dir: dir})
	c := s.Client()
	for i := range 3 {
		if err := c.Set(t.Context(), fmt.Sprintf("k%d", i), "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	incr := aofFiles(t, s.Dir, ".incr.aof")
	fi, err := os.Stat(incr[len(incr)-1])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(incr[len(incr)-1], fi.Size()-3); err != nil {
		t.Fatal(err)
	}
	ft := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		CheckAOF(ft, filepath.Join(s.Dir, "appendonlydir"))
	}()
	<-done
	if !ft.failed || !strings.Contains(ft.msg, "is not valid") {
		t.Errorf("CheckAOF of a torn AOF: failed %v, %q", ft.failed, ft.msg)
	}
}

// fakeT records a Fatalf instead of failing the test.
type fakeT struct {
	testing.TB
	failed bool
	msg    string
}

func (f *fakeT) Helper() {}

func (f *fakeT) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fakeT) Fatal(args ...any) {
	f.failed, f.msg = true, fmt.Sprint(args...)
	runtime.Goexit()
}

// TestKill: a killed server is gone at once, and Stop after Kill is fine.
func TestKill(t *testing.T) {
	s := Start(t, Options{Dir: t.TempDir()})
	s.Kill()
	if err := ping(s.Addr); err == nil {
		t.Error("the server answers after Kill")
	}
	if err := s.Stop(); err != nil {
		t.Errorf("stop after kill: %v", err)
	}
}

// TestStartFails: a server that cannot start fails Start with its log.
func TestStartFails(t *testing.T) {
	Require(t)
	ft := &fakeT{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(ft, Options{Dir: t.TempDir(), Args: []string{"no-such-option", "1"}})
	}()
	<-done
	if !ft.failed || !strings.Contains(ft.msg, "no-such-option") {
		t.Errorf("Start with a bad option: failed %v, %q", ft.failed, ft.msg)
	}
}

// TestAutoGC records what Redis 7 does with the files a rewrite replaces
// (docs/design.md relies on it): with aof-disable-auto-gc yes they stay,
// in the manifest as history (type h); setting it back to no removes them
// and their manifest lines.
func TestAutoGC(t *testing.T) {
	s := Start(t, Options{Dir: t.TempDir(), Timestamps: true})
	ctx := t.Context()
	c := s.Client()
	aof := filepath.Join(s.Dir, "appendonlydir")
	if err := c.ConfigSet(ctx, "aof-disable-auto-gc", "yes").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.RewriteAOF(t)
	t.Logf("after BGREWRITEAOF with aof-disable-auto-gc yes:\n%s", listing(t, aof))
	want := []string{
		"file appendonly.aof.2.base.rdb seq 2 type b",
		"file appendonly.aof.1.incr.aof seq 1 type h",
		"file appendonly.aof.1.base.rdb seq 1 type h",
		"file appendonly.aof.2.incr.aof seq 2 type i",
	}
	if got := manifest(t, aof); !slices.Equal(got, want) {
		t.Errorf("manifest:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, f := range []string{"appendonly.aof.1.base.rdb", "appendonly.aof.1.incr.aof"} {
		if _, err := os.Stat(filepath.Join(aof, f)); err != nil {
			t.Errorf("history file: %v", err)
		}
	}
	CheckAOF(t, aof)

	if err := c.ConfigSet(ctx, "aof-disable-auto-gc", "no").Err(); err != nil {
		t.Fatal(err)
	}
	// Redis removes history files in a background thread.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := os.Stat(filepath.Join(aof, "appendonly.aof.1.incr.aof"))
		if errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("after CONFIG SET aof-disable-auto-gc no:\n%s", listing(t, aof))
	want = []string{
		"file appendonly.aof.2.base.rdb seq 2 type b",
		"file appendonly.aof.2.incr.aof seq 2 type i",
	}
	if got := manifest(t, aof); !slices.Equal(got, want) {
		t.Errorf("manifest:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := aofFiles(t, s.Dir, ""); len(got) != 3 {
		t.Errorf("files left: %q, want the base, the incr file and the manifest", got)
	}
}

// aofFiles lists the files in dir/appendonlydir whose names end in
// suffix, sorted.
func aofFiles(t *testing.T, dir, suffix string) []string {
	t.Helper()
	got, err := filepath.Glob(filepath.Join(dir, "appendonlydir", "*"+suffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	return got
}

func manifest(t *testing.T, aof string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(aof, "appendonly.aof.manifest"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// listing is the files of dir with their sizes, and the manifest.
func listing(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%6d %s\n", fi.Size(), e.Name())
	}
	b.WriteString("manifest:\n")
	b.WriteString(strings.Join(manifest(t, dir), "\n"))
	return b.String()
}
