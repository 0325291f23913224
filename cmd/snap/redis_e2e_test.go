//go:build unix

package main_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/internal/testredis"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/local"
	"github.com/snapbackup/snap/snapshot"
)

// followProc is a `snap follow` started by a test.
type followProc struct {
	t    *testing.T
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer // its stdout and stderr
	done chan struct{}
	code int
}

func (p *followProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *followProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// startFollow starts `snap follow` of srv as host in e's environment,
// logging at level info, and waits until it started or continued a
// chain. The test's cleanup kills it if the test did not stop it, and
// prints its output if the test failed.
func startFollow(t *testing.T, e *env, srv *testredis.Server, host string, args ...string) *followProc {
	t.Helper()
	p := &followProc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(snapBin, append([]string{"follow", "--server", srv.Addr, "--data", srv.Dir, "--host", host}, args...)...)
	// The last value of a variable wins: info, over newEnv's warn.
	p.cmd.Env = append(append(os.Environ(), e.vars...), "SNAP_LOG_LEVEL=info")
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := p.cmd.Wait()
		var ee *exec.ExitError
		switch {
		case errors.As(err, &ee):
			p.code = ee.ExitCode()
		case err != nil:
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("snap follow output:\n%s", p.output())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.output(), "started a chain") && !strings.Contains(p.output(), "continuing chain") {
		select {
		case <-p.done:
			t.Fatalf("snap follow exited %d before it started a chain:\n%s", p.code, p.output())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("snap follow did not start a chain within 30s:\n%s", p.output())
		}
	}
	return p
}

// stop sends SIGTERM and fails the test unless follow exits 0 within a
// minute.
func (p *followProc) stop() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		p.t.Fatalf("snap follow did not exit within a minute of SIGTERM")
	}
	if p.code != 0 {
		p.t.Fatalf("snap follow exited %d after SIGTERM, want 0", p.code)
	}
}

// redisEnv is a user environment with an initialised local repository,
// whose key derivation is cheap: these tests run snap many times.
func redisEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.ok(nil, "init", "--kdf-memory", "8", "--kdf-time", "1")
	return e
}

// redisValue is a value of about 100 bytes, seeded, so a failure
// reproduces.
func redisValue(rng *mrand.Rand, key string) string {
	b := make([]byte, 40)
	for i := range b {
		b[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[rng.IntN(36)]
	}
	return fmt.Sprintf("%s|%s|%s", key, b, strings.Repeat("v", 100-len(key)-len(b)-2))
}

// setKeys SETs n keys prefix0..prefix<n-1> in pipelines of batch, pause
// apart, and records them in want.
func setKeys(t *testing.T, c *redis.Client, rng *mrand.Rand, want map[string]string, prefix string, n, batch int, pause time.Duration) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < n; {
		if i > 0 {
			time.Sleep(pause)
		}
		p := c.Pipeline()
		for j := 0; j < batch && i < n; i, j = i+1, j+1 {
			k := prefix + strconv.Itoa(i)
			v := redisValue(rng, k)
			want[k] = v
			p.Set(ctx, k, v, 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// setTx sets name-a and name-b in one MULTI/EXEC and records them.
func setTx(c *redis.Client, want map[string]string, name string, v string) error {
	ctx := context.Background()
	_, err := c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, name+"-a", v, 0)
		p.Set(ctx, name+"-b", v, 0)
		return nil
	})
	if err == nil && want != nil {
		want[name+"-a"], want[name+"-b"] = v, v
	}
	return err
}

// dumpRedis returns every key of the server and its (string) value.
func dumpRedis(t *testing.T, c *redis.Client) map[string]string {
	t.Helper()
	ctx := context.Background()
	var keys []string
	var cursor uint64
	for {
		ks, next, err := c.Scan(ctx, cursor, "*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, ks...)
		if cursor = next; cursor == 0 {
			break
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	got := make(map[string]string, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		vals, err := c.MGet(ctx, keys[:n]...).Result()
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				t.Fatalf("key %s vanished or is not a string: %v", keys[i], v)
			}
			got[keys[i]] = s
		}
		keys = keys[n:]
	}
	return got
}

// diffState says how got differs from want, with a few examples; "" if
// they are equal.
func diffState(want, got map[string]string) string {
	var missing, extra, wrong []string
	for k, v := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing = append(missing, k)
		case g != v:
			wrong = append(wrong, fmt.Sprintf("%s=%q (want %q)", k, g, v))
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			extra = append(extra, k)
		}
	}
	if len(missing)+len(extra)+len(wrong) == 0 {
		return ""
	}
	ex := func(s []string) []string {
		slices.Sort(s)
		return s[:min(len(s), 5)]
	}
	return fmt.Sprintf("%d keys, want %d: %d missing %v, %d unexpected %v, %d wrong %v",
		len(got), len(want), len(missing), ex(missing), len(extra), ex(extra), len(wrong), ex(wrong))
}

// restoredJSON is what snap restore --json says of a redis restore.
type restoredJSON struct {
	SnapshotID string    `json:"snapshot_id"`
	Result     string    `json:"result"`
	Chain      string    `json:"chain"`
	At         time.Time `json:"at"`
	TailBytes  int64     `json:"tail_bytes"`
	Tails      int       `json:"tail_objects"`
	Dropped    int64     `json:"dropped_commands"`
}

// restoreRedis runs snap restore args into a new Redis dir, checks the
// AOF with redis-check-aof, serves it with a second redis-server and
// returns its data (the server is stopped again) and what restore said.
func restoreRedis(t *testing.T, e *env, timestamps bool, args ...string) (map[string]string, restoredJSON) {
	t.Helper()
	target := filepath.Join(t.TempDir(), "restored")
	var rj restoredJSON
	e.ok(&rj, append([]string{"restore", "--json", "--target", target}, args...)...)
	if rj.Result != "restored" {
		t.Fatalf("snap restore %v: %+v", args, rj)
	}
	testredis.CheckAOF(t, filepath.Join(target, "appendonlydir"))
	srv := testredis.Start(t, testredis.Options{Dir: target, Timestamps: timestamps})
	got := dumpRedis(t, srv.Client())
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	return got, rj
}

type chainLs struct {
	Host  string      `json:"host"`
	Src   string      `json:"source"`
	Chain string      `json:"chain"`
	From  time.Time   `json:"from"`
	To    time.Time   `json:"to"`
	Gaps  []chain.Gap `json:"gaps"`
	Bases int         `json:"bases"`
	Tails int         `json:"tail_objects"`
}

// oneChain runs snap ls --chains --json and fails the test unless the
// repository holds exactly one chain, of host, without gaps.
func oneChain(t *testing.T, e *env, host string) chainLs {
	t.Helper()
	var chains []chainLs
	e.ok(&chains, "ls", "--chains", "--json")
	if len(chains) != 1 || chains[0].Host != host || chains[0].Src != "redis" || len(chains[0].Gaps) != 0 || chains[0].Gaps == nil {
		t.Fatalf("snap ls --chains --json: %+v; want one redis chain of %s with \"gaps\": []", chains, host)
	}
	return chains[0]
}

// persistenceInfo returns the server's INFO persistence field name.
func persistenceInfo(t *testing.T, c *redis.Client, name string) string {
	t.Helper()
	s, err := c.Info(context.Background(), "persistence").Result()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(s) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	t.Fatalf("INFO persistence has no %s:\n%s", name, s)
	return ""
}

func sleepUntil(at time.Time) { time.Sleep(time.Until(at)) }

// TestRedisFollowRestoreAt follows a server through phases of writes,
// with automatic and forced AOF rewrites between and inside them, and
// restores the second after each phase: each restore holds exactly the
// phases up to it, whole transactions, and a valid AOF.
func TestRedisFollowRestoreAt(t *testing.T) {
	testredis.Require(t)
	const (
		phases    = 5
		keys      = 2000 // per phase: about 250 KB of AOF, past the 64kb rewrite trigger
		rewriteAt = 3    // BGREWRITEAOF before this phase
		interval  = 200 * time.Millisecond
	)
	for _, timestamps := range []bool{false, true} {
		t.Run(fmt.Sprintf("timestamps=%v", timestamps), func(t *testing.T) {
			srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis"), Timestamps: timestamps,
				Args: []string{"auto-aof-rewrite-min-size", "64kb", "auto-aof-rewrite-percentage", "100"}})
			c := srv.Client()
			e := redisEnv(t)
			f := startFollow(t, e, srv, "cache-1", "--interval", interval.String())

			rng := mrand.New(mrand.NewPCG(7, 8))
			want := map[string]string{}
			states := make([]map[string]string, phases)
			cuts := make([]int64, phases) // unix seconds
			for i := range phases {
				if i > 0 {
					// Every mark read before cuts[i-1]+1 s was read before
					// this phase's first write.
					sleepUntil(time.Unix(cuts[i-1]+1, 0).Add(150 * time.Millisecond))
				}
				if i == rewriteAt {
					srv.RewriteAOF(t)
				}
				// In pieces: an automatic rewrite (Redis checks every 100 ms)
				// starts in the middle of a phase, while writes go on.
				setKeys(t, c, rng, want, fmt.Sprintf("k%d-", i), keys, 250, 25*time.Millisecond)
				if err := c.Set(context.Background(), "counter", i, 0).Err(); err != nil {
					t.Fatal(err)
				}
				want["counter"] = strconv.Itoa(i)
				if err := setTx(c, want, fmt.Sprintf("tx%d", i), fmt.Sprintf("phase %d", i)); err != nil {
					t.Fatal(err)
				}
				// The second after the one follow read the phase in (its
				// next tick, and slack): the same with or without #TS:
				// annotations, so the restore holds exactly the phases
				// so far either way (TestRedisRestoreAtSecondInPieces is
				// about the writes of a second that follow read after it).
				cuts[i] = time.Now().Add(interval + 300*time.Millisecond).Unix()
				states[i] = maps.Clone(want)
			}
			rewrites, _ := strconv.Atoi(persistenceInfo(t, c, "aof_rewrites"))
			if rewrites < 2 {
				t.Fatalf("aof_rewrites %d: want the forced rewrite and at least one automatic one\n%s", rewrites, srv.LogTail())
			}
			sleepUntil(time.Unix(cuts[phases-1]+1, 0).Add(interval))
			f.stop()

			ch := oneChain(t, e, "cache-1")
			if ch.From.Unix() > cuts[0] || ch.To.Unix() < cuts[phases-1] {
				t.Fatalf("chain covers %s to %s; want at least %s to %s", ch.From, ch.To, time.Unix(cuts[0], 0), time.Unix(cuts[phases-1], 0))
			}
			if ch.Bases < 2 {
				t.Fatalf("chain has %d base snapshots after %d rewrites", ch.Bases, rewrites)
			}
			t.Logf("%d rewrites; chain %s to %s, %d bases, %d tail objects", rewrites, ch.From.Format(time.RFC3339Nano), ch.To.Format(time.RFC3339Nano), ch.Bases, ch.Tails)

			bases := map[string]bool{}
			var tailBytes int64
			for i := range phases {
				got, rj := restoreRedis(t, e, timestamps, "--at", strconv.FormatInt(cuts[i], 10))
				checkTxs(t, got, phases)
				if d := diffState(states[i], got); d != "" {
					t.Fatalf("restore --at %d (after phase %d): %s", cuts[i], i, d)
				}
				bases[rj.SnapshotID] = true
				tailBytes += rj.TailBytes
			}
			got, _ := restoreRedis(t, e, timestamps, "--latest")
			if d := diffState(states[phases-1], got); d != "" {
				t.Fatalf("restore --latest: %s", d)
			}
			// Else the test did not exercise what it is about.
			if len(bases) < 2 || tailBytes == 0 {
				t.Fatalf("the restores used %d base snapshots and %d tail bytes: want several bases and some tail bytes", len(bases), tailBytes)
			}
		})
	}
}

// checkTxs checks that of each transaction tx<i> of n both keys or
// neither were restored.
func checkTxs(t *testing.T, got map[string]string, n int) {
	t.Helper()
	for i := range n {
		_, a := got[fmt.Sprintf("tx%d-a", i)]
		_, b := got[fmt.Sprintf("tx%d-b", i)]
		if a != b {
			t.Fatalf("transaction tx%d restored in part: tx%d-a %v, tx%d-b %v", i, i, a, i, b)
		}
	}
}

// TestRedisBackupOneShot: snap backup --source redis stores a chain of one
// base snapshot that restores as it was taken, by id or as the latest; a
// server without appendonly is refused.
func TestRedisBackupOneShot(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis")})
	c := srv.Client()
	ctx := context.Background()
	rng := mrand.New(mrand.NewPCG(9, 10))
	want := map[string]string{}
	setKeys(t, c, rng, want, "a", 3000, 500, 0)
	if err := setTx(c, want, "tx0", "one"); err != nil {
		t.Fatal(err)
	}
	e := redisEnv(t)
	backup := []string{"backup", "--json", "--source", "redis", "--server", srv.Addr, "--data", srv.Dir, "--host", "cache-1"}
	var b1 backupJSON
	e.ok(&b1, backup...)
	first := maps.Clone(want)
	if gc, err := c.ConfigGet(ctx, "aof-disable-auto-gc").Result(); err != nil || gc["aof-disable-auto-gc"] != "no" {
		t.Fatalf("after the backup aof-disable-auto-gc is %v (%v), want no again", gc, err)
	}

	// The second backup holds a rewrite's base and what came after.
	srv.RewriteAOF(t)
	setKeys(t, c, rng, want, "b", 1000, 500, 0)
	if err := c.Del(ctx, "a0").Err(); err != nil {
		t.Fatal(err)
	}
	delete(want, "a0")
	var b2 backupJSON
	e.ok(&b2, backup...)

	got, rj := restoreRedis(t, e, false, b1.SnapshotID)
	if d := diffState(first, got); d != "" {
		t.Fatalf("restore %s: %s", b1.SnapshotID, d)
	}
	if rj.SnapshotID != b1.SnapshotID || rj.TailBytes != 0 {
		t.Fatalf("restore %s: %+v", b1.SnapshotID, rj)
	}
	got, rj = restoreRedis(t, e, false, "--latest")
	if d := diffState(want, got); d != "" {
		t.Fatalf("restore --latest: %s", d)
	}
	if rj.SnapshotID != b2.SnapshotID {
		t.Fatalf("restore --latest restored %s, want the second backup %s", rj.SnapshotID, b2.SnapshotID)
	}

	if err := c.ConfigSet(ctx, "appendonly", "no").Err(); err != nil {
		t.Fatal(err)
	}
	if r := e.run(backup...); r.code != 1 || !strings.Contains(r.stderr, "appendonly") {
		t.Fatalf("backup of a server with appendonly no: exit %d, %s", r.code, r.stderr)
	}
}

// TestRedisFollowSurvives: follow goes on across a restart of the server
// and an outage of the repository, loses nothing and leaves one chain
// without gaps.
func TestRedisFollowSurvives(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis")})
	c := srv.Client()
	e := redisEnv(t)
	f := startFollow(t, e, srv, "cache-1", "--interval", "200ms")
	rng := mrand.New(mrand.NewPCG(11, 12))
	want := map[string]string{}
	setKeys(t, c, rng, want, "a", 1000, 100, 20*time.Millisecond)

	srv.Restart(t)
	setKeys(t, c, rng, want, "b", 1000, 100, 20*time.Millisecond)
	// The restarted server read aof-disable-auto-gc no from its config;
	// follow sets it to yes again, so a rewrite keeps what is not shipped.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		gc, err := c.ConfigGet(context.Background(), "aof-disable-auto-gc").Result()
		if err == nil && gc["aof-disable-auto-gc"] == "yes" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("aof-disable-auto-gc %v (%v) 10 s after the restart; follow should set it to yes again", gc, err)
		}
	}

	// The repository's tails directory becomes a file: every save of a
	// tail object fails for three seconds while the writes go on.
	tails := filepath.Join(e.repo, string(repo.TailFile))
	if err := os.Rename(tails, tails+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tails, []byte("not a directory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	type batch struct {
		prefix     string
		start, end time.Time
	}
	var during []batch
	for b := range 30 {
		if b > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		start, prefix := time.Now(), fmt.Sprintf("c%d-", b)
		setKeys(t, c, rng, want, prefix, 50, 50, 0)
		during = append(during, batch{prefix, start, time.Now()})
	}
	if !strings.Contains(f.output(), "cannot store a tail object") {
		t.Fatalf("follow did not notice the outage:\n%s", f.output())
	}
	if err := os.Remove(tails); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tails+".away", tails); err != nil {
		t.Fatal(err)
	}
	setKeys(t, c, rng, want, "d", 500, 100, 20*time.Millisecond)
	written := time.Now()

	// Follow catches up by itself: the chain's end passes the last write.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if ch := oneChain(t, e, "cache-1"); ch.To.After(written) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("follow did not catch up within 30 s of the outage's end:\n%s", f.output())
		}
		time.Sleep(200 * time.Millisecond)
	}
	f.stop()
	oneChain(t, e, "cache-1")
	got, _ := restoreRedis(t, e, false, "--latest")
	if d := diffState(want, got); d != "" {
		t.Fatalf("restore --latest: %s", d)
	}

	// The ticks kept their times while the repository was away: a second
	// in the middle of the outage restores what follow read by its end.
	s := during[0].start.Unix() + 1
	end := time.Unix(s+1, 0)
	got, _ = restoreRedis(t, e, false, "--at", strconv.FormatInt(s, 10))
	for _, b := range during {
		n := 0
		for k := range 50 {
			if _, ok := got[b.prefix+strconv.Itoa(k)]; ok {
				n++
			}
		}
		switch {
		case b.end.Before(end.Add(-500*time.Millisecond)) && n != 50:
			t.Fatalf("restore --at %d: %d of the 50 keys %s* written by %s", s, n, b.prefix, b.end.Format(time.RFC3339Nano))
		case b.start.After(end.Add(50*time.Millisecond)) && n != 0:
			t.Fatalf("restore --at %d: %d of the 50 keys %s* written after %s", s, n, b.prefix, b.start.Format(time.RFC3339Nano))
		}
	}
	for _, k := range []string{"a0", "b999"} {
		if got[k] != want[k] {
			t.Fatalf("restore --at %d: %s is %q, want %q", s, k, got[k], want[k])
		}
	}
}

// TestRedisTransactionsWhole: of transactions written all the time, a
// restore to any second holds each whole or not at all, and they form a
// prefix of the order they were acknowledged in.
func TestRedisTransactionsWhole(t *testing.T) {
	const interval = 100 * time.Millisecond
	srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis"), Timestamps: true})
	c := srv.Client()
	e := redisEnv(t)
	// Pieces of 16 KiB hold about seven transactions: most tail objects
	// end inside one.
	f := startFollow(t, e, srv, "cache-1", "--interval", interval.String(), "--chunk-size", "16KiB")

	var (
		mu           sync.Mutex
		starts, acks []time.Time
		stop         atomic.Bool
		wg           sync.WaitGroup
		pad          = strings.Repeat("x", 1000)
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; !stop.Load(); n++ {
			start := time.Now()
			if err := setTx(c, nil, fmt.Sprintf("tx%d", n), strconv.Itoa(n)+pad); err != nil {
				t.Error(err)
				return
			}
			ack := time.Now()
			mu.Lock()
			starts, acks = append(starts, start), append(acks, ack)
			mu.Unlock()
			time.Sleep(time.Millisecond) // some hundred objects a second, not thousands
		}
	}()
	time.Sleep(4500 * time.Millisecond) // the load, not an assertion
	stop.Store(true)
	wg.Wait()
	if t.Failed() {
		return
	}
	f.stop()
	ch := oneChain(t, e, "cache-1")
	t.Logf("%d transactions; chain %s to %s, %d tail objects", len(acks), ch.From.Format(time.RFC3339Nano), ch.To.Format(time.RFC3339Nano), ch.Tails)

	checked, dropped := 0, int64(0)
	for s := ch.From.Unix() + 1; s < ch.To.Unix(); s++ {
		got, rj := restoreRedis(t, e, true, "--at", strconv.FormatInt(s, 10))
		end := time.Unix(s+1, 0)
		m := 0
		for ; m < len(acks); m++ {
			_, a := got[fmt.Sprintf("tx%d-a", m)]
			if !a {
				break
			}
		}
		for n := range acks {
			va, a := got[fmt.Sprintf("tx%d-a", n)]
			vb, b := got[fmt.Sprintf("tx%d-b", n)]
			switch {
			case a != b:
				t.Fatalf("restore --at %d: transaction %d restored in part (a %v, b %v); %d commands dropped", s, n, a, b, rj.Dropped)
			case a && n >= m:
				t.Fatalf("restore --at %d: transaction %d restored, %d not: not a prefix", s, n, m)
			case a && (va != strconv.Itoa(n)+pad || vb != va):
				t.Fatalf("restore --at %d: transaction %d has values %.10q, %.10q", s, n, va, vb)
			}
		}
		if len(got) != 2*m {
			t.Fatalf("restore --at %d: %d keys for %d transactions", s, len(got), m)
		}
		// Every transaction follow read before the second ended is in (one
		// tick after its acknowledgement, and some slack), none begun
		// after it.
		for n := range acks {
			if acks[n].Before(end.Add(-interval-300*time.Millisecond)) && n >= m {
				t.Fatalf("restore --at %d holds %d transactions; %d was acknowledged at %s", s, m, n, acks[n].Format(time.RFC3339Nano))
			}
			if starts[n].After(end.Add(50*time.Millisecond)) && n < m {
				t.Fatalf("restore --at %d holds %d transactions; %d began at %s, after the second", s, m, n, starts[n].Format(time.RFC3339Nano))
			}
		}
		dropped += rj.Dropped
		checked++
	}
	if checked < 3 {
		t.Fatalf("restored %d seconds of the chain, want at least 3", checked)
	}
	t.Logf("restored %d seconds; the cuts left out %d commands of transactions open at them", checked, dropped)
}

// TestRedisRestoreAtSecondInPieces: a tick whose bytes follow stores in
// several pieces (--chunk-size) and whose time is after the second
// restored still holds writes made in that second; with #TS: annotations
// restore --at brings back all of them, not just those of the first piece.
func TestRedisRestoreAtSecondInPieces(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis"), Timestamps: true})
	c := srv.Client()
	e := redisEnv(t)
	// No tick but the last one, on SIGTERM, after the second.
	f := startFollow(t, e, srv, "cache-1", "--interval", "30s", "--chunk-size", "1KiB")
	s := time.Now().Unix() + 1
	sleepUntil(time.Unix(s, 900*int64(time.Millisecond)))
	want := map[string]string{}
	setKeys(t, c, mrand.New(mrand.NewPCG(15, 16)), want, "k", 50, 50, 0)
	if !time.Now().Before(time.Unix(s+1, 0)) {
		t.Skipf("the writes took past the end of second %d; the test needs them inside it", s)
	}
	sleepUntil(time.Unix(s+1, 200*int64(time.Millisecond)))
	f.stop()
	ch := oneChain(t, e, "cache-1")
	if ch.Tails < 5 {
		t.Fatalf("%d tail objects: want the writes in several pieces", ch.Tails)
	}
	got, rj := restoreRedis(t, e, true, "--at", strconv.FormatInt(s, 10))
	if d := diffState(want, got); d != "" {
		t.Fatalf("restore --at %d (%d tail objects read): %s", s, rj.Tails, d)
	}
}

// TestRedisRestoreBadInput: restores that cannot be done fail with exit 1
// and a clear message, and leave nothing under the target's final name;
// so do backups of an AOF that is not what the manifest says.
func TestRedisRestoreBadInput(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis")})
	c := srv.Client()
	e := redisEnv(t)
	rng := mrand.New(mrand.NewPCG(13, 14))
	setKeys(t, c, rng, map[string]string{}, "a", 500, 500, 0)
	f := startFollow(t, e, srv, "cache-1", "--interval", "200ms")
	setKeys(t, c, rng, map[string]string{}, "b", 500, 100, 50*time.Millisecond)
	f.stop()
	ch := oneChain(t, e, "cache-1")

	// fails runs restore args into a fresh target and checks the failure.
	fails := func(name, msg, target string, args ...string) {
		t.Helper()
		r := e.run(append([]string{"restore", "--target", target}, args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, msg) {
			t.Fatalf("%s: exit %d, stderr %q; want exit 1 and %q", name, r.code, r.stderr, msg)
		}
		if _, err := os.Lstat(filepath.Join(target, "appendonlydir")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: %s/appendonlydir exists after the failed restore (%v)", name, target, err)
		}
	}
	fails("before the chain", "before the first restorable second", t.TempDir(), "--at", strconv.FormatInt(ch.From.Unix()-5, 10))
	fails("after the chain", "after the last restorable second", t.TempDir(), "--at", ch.To.Add(5*time.Second).Format(time.RFC3339))

	// A target that holds an AOF directory already is left as it is.
	target := t.TempDir()
	old := filepath.Join(target, "appendonlydir")
	if err := os.Mkdir(old, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "appendonly.aof.manifest"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := e.run("restore", "--target", target, "--latest")
	if r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("restore into a dir with an AOF: exit %d, %s", r.code, r.stderr)
	}
	if entries, err := os.ReadDir(old); err != nil || len(entries) != 1 {
		t.Fatalf("the existing AOF directory changed: %v, %v", entries, err)
	}
	if b, err := os.ReadFile(filepath.Join(old, "appendonly.aof.manifest")); err != nil || string(b) != "mine\n" {
		t.Fatalf("the existing manifest changed: %q, %v", b, err)
	}

	// A tail object that ends inside a command, stored after the chain's
	// end as snap would store the next one.
	forgeTail(t, e, ch.Chain, "*3\r\n$3\r\nSET\r\n$1\r\nx\r\n$1\r\n")
	fails("a tail object ending inside a command", "ends inside a command", t.TempDir(), "--latest")

	// Backups of an AOF whose manifest does not parse, or names a file
	// that is missing.
	backup := []string{"backup", "--source", "redis", "--server", srv.Addr, "--data", srv.Dir, "--host", "cache-1"}
	aofDir := filepath.Join(srv.Dir, "appendonlydir")
	manifest := filepath.Join(aofDir, "appendonly.aof.manifest")
	good, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(manifest, []byte("file appendonly.aof.1.incr.aof seq\x00 what\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := e.run(backup...); r.code != 1 || !strings.Contains(r.stderr, "manifest") {
		t.Fatalf("backup with a manifest that does not parse: exit %d, %s", r.code, r.stderr)
	}
	if err := os.WriteFile(manifest, good, 0o644); err != nil {
		t.Fatal(err)
	}
	incrs, err := filepath.Glob(filepath.Join(aofDir, "*.incr.aof"))
	if err != nil || len(incrs) != 1 {
		t.Fatalf("incr files %v (%v): want one", incrs, err)
	}
	if err := os.Rename(incrs[0], incrs[0]+".away"); err != nil {
		t.Fatal(err)
	}
	if r := e.run(backup...); r.code != 1 || !strings.Contains(r.stderr, filepath.Base(incrs[0])) {
		t.Fatalf("backup with an incr file missing: exit %d, %s", r.code, r.stderr)
	}
	if err := os.Rename(incrs[0]+".away", incrs[0]); err != nil {
		t.Fatal(err)
	}
	// The failures were the damage's: repaired, the backup works.
	e.ok(nil, backup...)
}

// forgeTail stores after the end of chain id a tail object of data, as
// follow would store the next one.
func forgeTail(t *testing.T, e *env, id, data string) {
	t.Helper()
	ctx := context.Background()
	be, err := local.Open(e.repo)
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, "correct horse", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	snaps, err := snapshot.List(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	chains, err := chain.LoadChains(ctx, r, snaps)
	if err != nil {
		t.Fatal(err)
	}
	var ch *chain.Chain
	for _, c := range chains {
		if c.ID == id {
			ch = c
		}
	}
	if ch == nil || len(ch.Tails) == 0 {
		t.Fatalf("chain %s with tail objects not found in %v", id, chains)
	}
	last, err := chain.Load(ctx, r, ch.Tails[len(ch.Tails)-1])
	if err != nil {
		t.Fatal(err)
	}
	at := last.Times[len(last.Times)-1]
	tl := &chain.Tail{Chain: id, Host: last.Host, File: last.File, Seq: last.Seq, Offset: last.End, End: last.End + int64(len(data)),
		Timestamps: last.Timestamps, Ends: []int64{last.End + int64(len(data))}, Times: []int64{at + 1000}, Sinces: []int64{at},
		Data: []byte(data)}
	if _, err := chain.Save(ctx, r, tl); err != nil {
		t.Fatal(err)
	}
}
