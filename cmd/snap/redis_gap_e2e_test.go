//go:build unix

package main_test

import (
	mrand "math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapbackup/snap/internal/testredis"
)

// TestRedisFollowGapNewChain: when the server rewrote its AOF and deleted
// the old files while follow was not running, the chain cannot be
// continued; follow says so, starts a new chain with a fresh base, and
// each chain restores what it holds.
func TestRedisFollowGapNewChain(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis")})
	c := srv.Client()
	rng := mrand.New(mrand.NewPCG(31, 32))
	e := redisEnv(t)
	want := map[string]string{}

	f := startFollow(t, e, srv, "cache-1", "--interval", "100ms")
	setKeys(t, c, rng, want, "a", 300, 100, 0)
	f.stop()
	// follow set aof-disable-auto-gc back to no: this rewrite deletes the
	// incr file the chain ends in, with writes follow never saw.
	setKeys(t, c, rng, want, "b", 200, 100, 0)
	srv.RewriteAOF(t)
	setKeys(t, c, rng, want, "c", 200, 100, 0)

	f = startFollow(t, e, srv, "cache-1", "--interval", "100ms")
	if out := f.output(); !strings.Contains(out, "starting a new chain") || !strings.Contains(out, "started a chain") {
		t.Fatalf("follow after the files were rewritten away:\n%s", out)
	}
	setKeys(t, c, rng, want, "d", 100, 100, 0)
	f.stop()

	var chains []chainLs
	e.ok(&chains, "ls", "--chains", "--json")
	if len(chains) != 2 || chains[0].Chain == chains[1].Chain || !chains[1].From.After(chains[0].To) {
		t.Fatalf("chains: %+v; want two, the second after the first", chains)
	}
	got, rj := restoreRedis(t, e, false, "--latest")
	if d := diffState(want, got); d != "" {
		t.Fatalf("restore --latest: %s", d)
	}
	if rj.Chain != chains[1].Chain {
		t.Fatalf("restore --latest used chain %s, want the new one %s", rj.Chain, chains[1].Chain)
	}
}
