//go:build unix

package main_test

import (
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/internal/testredis"
)

// TestRedisPruneChains: retention keeps a chain from its oldest kept base
// on. After rewrites gave the chain several bases, prune --keep-last 1
// removes the older bases and every tail object only they needed; the
// chain then starts at the kept base, restores to any later second as
// before, refuses an earlier one, and check passes. Forgetting every
// base of a chain removes all its tail objects.
func TestRedisPruneChains(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis"), Timestamps: true})
	c := srv.Client()
	rng := mrand.New(mrand.NewPCG(21, 22))
	e := redisEnv(t)
	f := startFollow(t, e, srv, "cache-1", "--interval", "100ms")

	want := map[string]string{}
	setKeys(t, c, rng, want, "a", 500, 100, 0)
	time.Sleep(300 * time.Millisecond)
	early := time.Now()
	sleepUntil(early.Truncate(time.Second).Add(1100 * time.Millisecond))
	for i := 0; i < 2; i++ {
		srv.RewriteAOF(t)
		setKeys(t, c, rng, want, "r"+strconv.Itoa(i), 300, 100, 0)
		// Follow stores the rewrite's base once the old incr file is in.
		deadline := time.Now().Add(20 * time.Second)
		for !strings.Contains(f.output(), "stored the base of a rewrite") || strings.Count(f.output(), "stored the base of a rewrite") < i+1 {
			if time.Now().After(deadline) {
				t.Fatalf("follow stored no base after rewrite %d", i+1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	setKeys(t, c, rng, want, "z", 200, 100, 0)
	time.Sleep(300 * time.Millisecond)
	f.stop()

	before := oneChain(t, e, "cache-1")
	if before.Bases != 3 {
		t.Fatalf("chain before prune: %+v; want 3 bases (the first and two rewrites)", before)
	}
	tailsBefore := countFiles(t, filepath.Join(e.repo, "tails"))
	e.ok(nil, "prune", "--keep-last", "1")
	after := oneChain(t, e, "cache-1")
	if after.Bases != 1 || !after.From.After(before.From) || !after.To.Equal(before.To) {
		t.Fatalf("chain after prune --keep-last 1: %+v (before: %+v)", after, before)
	}
	if n := countFiles(t, filepath.Join(e.repo, "tails")); n >= tailsBefore {
		t.Fatalf("prune left %d tail objects of %d", n, tailsBefore)
	}
	e.ok(nil, "check", "--read-data")
	got, _ := restoreRedis(t, e, true, "--latest")
	if d := diffState(want, got); d != "" {
		t.Fatalf("restore --latest after prune: %s", d)
	}
	r := e.run("restore", "--at", strconv.FormatInt(early.Unix(), 10), "--target", filepath.Join(t.TempDir(), "old"))
	if r.code != 1 || !strings.Contains(r.stderr, "before the first restorable second") {
		t.Fatalf("restore --at a second only a forgotten base covered: exit %d, %s", r.code, r.stderr)
	}

	// A chain none of whose bases is kept goes whole.
	e.ok(nil, "prune", "--keep-tag", "none-has-this")
	if n := countFiles(t, filepath.Join(e.repo, "tails")); n != 0 {
		t.Fatalf("prune of every base left %d tail objects", n)
	}
	var chains []chainLs
	e.ok(&chains, "ls", "--chains", "--json")
	if len(chains) != 0 {
		t.Fatalf("chains after every base was forgotten: %+v", chains)
	}
	e.ok(nil, "check")
}

func countFiles(t *testing.T, dir string) int {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, en := range entries {
		if !strings.HasPrefix(en.Name(), ".") {
			n++
		}
	}
	return n
}
