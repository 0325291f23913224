//go:build unix

package main_test

import (
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/snapbackup/snap/internal/testredis"
)

// TestRunFollow: snap run --follow supervises a redis-server and follows
// it; on SIGTERM the server stops first and the rest of its AOF is
// shipped. A new container with an empty Redis dir gets the chain's end
// restored before its server starts.
func TestRunFollow(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	testredis.Require(t)
	work := t.TempDir()
	// The same path both times, as in a container: snap run restores
	// snapshots of this host and data directory.
	data := filepath.Join(work, "data")
	port, err := strconv.Atoi(freePort(t))
	if err != nil {
		t.Fatal(err)
	}
	argv, err := testredis.Command(testredis.Options{Dir: data}, port, filepath.Join(work, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--follow", "--interval", "200ms", "--init-if-missing", "--host", "h1", "--"}, argv...)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	client := func() *redis.Client {
		c := redis.NewClient(&redis.Options{Addr: addr, DisableIdentity: true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
		t.Cleanup(func() { c.Close() })
		return c
	}
	e := newEnv(t) // no repository yet: --init-if-missing makes it

	p := startRun(t, e, args...)
	// See TestRunFollowEarlySIGTERM for a signal before this.
	p.waitLog("started a chain", 30*time.Second)
	c := client()
	rng := mrand.New(mrand.NewPCG(17, 18))
	want := map[string]string{}
	setKeys(t, c, rng, want, "a", 2000, 250, 20*time.Millisecond)
	if err := setTx(c, want, "tx0", "whole"); err != nil {
		t.Fatal(err)
	}
	// The last writes are still to be shipped when the signal comes.
	setKeys(t, c, rng, want, "b", 100, 100, 0)
	p.signal(syscall.SIGTERM)
	if code := p.wait(time.Minute); code != 0 {
		t.Fatalf("snap run exited %d, want the server's 0", code)
	}
	if l := p.find("follow did not ship everything"); len(l) > 0 {
		t.Fatalf("snap run: %v", l)
	}
	ch := oneChain(t, e, "h1")

	// A new container: the Redis dir is empty.
	if err := os.Rename(data, data+".old"); err != nil {
		t.Fatal(err)
	}
	q := startRun(t, e, args...)
	restored := q.waitLog("restored", 30*time.Second)
	q.waitLog("server ready", 30*time.Second)
	out := q.out()
	if r, s := strings.Index(out, `"msg":"restored"`), strings.Index(out, `"msg":"server started"`); r < 0 || s < 0 || r > s {
		t.Fatalf("the restore did not come before the server started:\n%s", out)
	}
	if restored["chain"] != ch.Chain {
		t.Fatalf("restored chain %v, want %s", restored["chain"], ch.Chain)
	}
	if _, err := os.Stat(filepath.Join(data, "appendonlydir", "appendonly.aof.manifest")); err != nil {
		t.Fatal(err)
	}
	if d := diffState(want, dumpRedis(t, client())); d != "" {
		t.Fatalf("the second server: %s", d)
	}
	q.signal(syscall.SIGTERM)
	if code := q.wait(time.Minute); code != 0 {
		t.Fatalf("second snap run exited %d", code)
	}
	// It followed on where the first one stopped: the same chain.
	if ch2 := oneChain(t, e, "h1"); ch2.Chain != ch.Chain || ch2.To.Before(ch.To) {
		t.Fatalf("after the second run: %+v; want chain %s continued", ch2, ch.Chain)
	}
}

// TestRunFollowEarlySIGTERM: what the server wrote before follow got
// going (opened the repository, asked the server for its settings, stored
// the first base) is shipped too when SIGTERM comes then.
func TestRunFollowEarlySIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	testredis.Require(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	port, err := strconv.Atoi(freePort(t))
	if err != nil {
		t.Fatal(err)
	}
	argv, err := testredis.Command(testredis.Options{Dir: data}, port, filepath.Join(work, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	p := startRun(t, e, append([]string{"--follow", "--interval", "200ms", "--init-if-missing", "--host", "h1", "--"}, argv...)...)
	p.waitLog("server ready", 30*time.Second)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer c.Close()
	want := map[string]string{}
	setKeys(t, c, mrand.New(mrand.NewPCG(19, 20)), want, "a", 100, 100, 0)
	p.signal(syscall.SIGTERM)
	if code := p.wait(time.Minute); code != 0 {
		t.Fatalf("snap run exited %d, want the server's 0", code)
	}
	if l := p.find("follow did not ship everything"); len(l) > 0 {
		t.Fatalf("snap run: %v", l)
	}
	oneChain(t, e, "h1")
	got, _ := restoreRedis(t, e, false, "--latest")
	if d := diffState(want, got); d != "" {
		t.Fatalf("restore --latest: %s", d)
	}
}
