package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/snapbackup/snap/internal/testserver"
)

// runProc is a `snap run` started by a test, logging JSON to stderr.
type runProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	mu     sync.Mutex
	logs   []map[string]any // snap's JSON log lines
	output strings.Builder  // everything on stdout and stderr, the server's too
	done   chan struct{}    // closed when snap exited and its output ended
	code   int
}

// startRun starts `snap run` with args in e's environment, logging JSON at
// level info.
func startRun(t *testing.T, e *env, args ...string) *runProc {
	t.Helper()
	return startSnap(t, e, append([]string{"run", "--log-format", "json"}, args...)...)
}

// startSnap starts a long-running snap command (args start with its
// name) in e's environment, logging at level info.
func startSnap(t *testing.T, e *env, args ...string) *runProc {
	t.Helper()
	p := &runProc{t: t, done: make(chan struct{})}
	p.cmd = exec.Command(snapBin, append(args[:1:1], append([]string{"--log-level", "info"}, args[1:]...)...)...)
	p.cmd.Env = append(os.Environ(), e.vars...)
	// An os.Pipe, not an io.Writer: exec would wait for every holder of
	// the pipe, the server too, before Wait returned.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	err = p.cmd.Start()
	pw.Close()
	if err != nil {
		pr.Close()
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer pr.Close()
		sc := bufio.NewScanner(pr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var m map[string]any
			p.mu.Lock()
			p.output.WriteString(sc.Text() + "\n")
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] != nil {
				p.logs = append(p.logs, m)
			}
			p.mu.Unlock()
		}
	}()
	go func() {
		err := p.cmd.Wait()
		// The output ends when the server has exited too; snap waits for
		// it, unless something went wrong.
		select {
		case <-scanned:
		case <-time.After(2 * time.Second):
		}
		p.code = 0
		if ee, ok := err.(*exec.ExitError); ok {
			p.code = ee.ExitCode()
		} else if err != nil {
			p.code = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			// The test failed or forgot to stop it.
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				p.cmd.Process.Kill()
				<-p.done
			}
			// Never leave a server behind (it runs in its own process
			// group); check the pid is still ours first.
			if pid := p.serverPID(); pid > 0 {
				if cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.Contains(string(cmdline), p.cmd.Args[len(p.cmd.Args)-1]) {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if t.Failed() {
			t.Logf("snap run output:\n%s", p.out())
		}
	})
	return p
}

func (p *runProc) out() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// find returns the log lines whose message starts with msg.
func (p *runProc) find(msg string) []map[string]any {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []map[string]any
	for _, m := range p.logs {
		if s, _ := m["msg"].(string); strings.HasPrefix(s, msg) {
			out = append(out, m)
		}
	}
	return out
}

// waitLog waits for a log line whose message starts with msg.
func (p *runProc) waitLog(msg string, timeout time.Duration) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l := p.find(msg); len(l) > 0 {
			return l[0]
		}
		select {
		case <-p.done:
			if l := p.find(msg); len(l) > 0 {
				return l[0]
			}
			p.t.Fatalf("snap run exited (%d) before logging %q", p.code, msg)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("snap run did not log %q within %v", msg, timeout)
		}
	}
}

func (p *runProc) serverPID() int {
	for _, l := range p.find("server started") {
		if pid, ok := l["pid"].(float64); ok {
			return int(pid)
		}
	}
	return 0
}

func (p *runProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits for snap run to exit and returns its exit status.
func (p *runProc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(timeout):
		p.t.Fatalf("snap run did not exit within %v", timeout)
		return 0
	}
}

// metrics reads the samples of the status endpoint.
func (p *runProc) metrics(addr string) map[string]float64 {
	p.t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "#") {
			continue
		}
		name, v, _ := strings.Cut(sc.Text(), " ")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			p.t.Fatalf("metrics line %q", sc.Text())
		}
		out[name] = f
	}
	return out
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

type lsJSON struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	Host string    `json:"host"`
}

// latestSnapshot is the newest snapshot in the repository.
func latestSnapshot(t *testing.T, e *env) (lsJSON, int) {
	t.Helper()
	var snaps []lsJSON
	e.ok(&snaps, "ls", "--json")
	if len(snaps) == 0 {
		t.Fatal("no snapshots")
	}
	last := snaps[0]
	for _, s := range snaps {
		if s.Time.After(last.Time) {
			last = s
		}
	}
	return last, len(snaps)
}

// ack is one write the writer sent; at is when the server acknowledged it
// (zero if it never did).
type ack struct {
	key, val string
	at       time.Time
}

// writer keeps writing keys in order, one at a time, until stopped or the
// server goes away.
type writer struct {
	mu   sync.Mutex
	acks []ack
	stop atomic.Bool
	wg   sync.WaitGroup
}

func startWriter(addr string) *writer { return startWriterPrefix(addr, "w") }

// startWriterPrefix is startWriter writing keys that start with prefix.
func startWriterPrefix(addr, prefix string) *writer {
	w := &writer{}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
		defer c.Close()
		rng := mrand.New(mrand.NewPCG(5, 6))
		for i := 0; !w.stop.Load(); i++ {
			k := fmt.Sprintf("%s%08d", prefix, i)
			v := value(rng, k)
			w.mu.Lock()
			w.acks = append(w.acks, ack{key: k, val: v})
			w.mu.Unlock()
			if err := c.Set(context.Background(), k, v, 0).Err(); err != nil {
				return // the server stopped; this write may or may not have landed
			}
			w.mu.Lock()
			w.acks[i].at = time.Now()
			w.mu.Unlock()
		}
	}()
	return w
}

// split returns the keys in write order, their values, and how many were
// acknowledged before cutoff (a prefix, since one client writes in order).
func (w *writer) split(cutoff time.Time) (keys []string, vals map[string]string, before int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	vals = map[string]string{}
	for i, a := range w.acks {
		keys = append(keys, a.key)
		vals[a.key] = a.val
		if !a.at.IsZero() && a.at.Before(cutoff) {
			before = i + 1
		}
	}
	return keys, vals, before
}

// TestRunEndToEnd runs `snap run` over the real RocksDB server under write
// load with flushes and compactions between scheduled backups, stops it,
// wipes the data directory and starts again: the second run restores the
// last snapshot and serves every key acknowledged before its freeze.
func TestRunEndToEnd(t *testing.T) {
	bin := testserver.Binary(t)
	if _, err := exec.LookPath("ldb"); err != nil {
		t.Fatal("ldb not found: run make deps (Debian package rocksdb-tools)")
	}
	e := newEnv(t)
	e.vars = append(e.vars, "SNAP_HOST=run-e2e")
	work := t.TempDir()
	data := filepath.Join(work, "data")
	port := freePort(t)
	addr := "127.0.0.1:" + port
	server := []string{bin, "--port", port, "--rocksdb_db_path", data, "--rocksdb_create_if_missing_one_off",
		"--version_timestamp_ms", "9999999999999", "--write_buffer_size", "262144", "--level0_file_num_compaction_trigger", "20"}

	// First run: no repository, no database.
	p := startRun(t, e, append([]string{"--init-if-missing", "--every", "2s", "--jitter", "200ms", "--listen", "127.0.0.1:0", "--"}, server...)...)
	p.waitLog("created the repository", 20*time.Second)
	p.waitLog("no snapshot to restore", 5*time.Second)
	listen, _ := p.waitLog("serving /healthz", time.Second)["address"].(string)
	p.waitLog("server ready", 20*time.Second)
	upSince := time.Now()

	w := startWriter(addr)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; p.metrics(listen)[`snap_backups_total{result="ok"}`] < 4; i++ {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than 4 backups in 60s: %v", p.metrics(listen))
		}
		time.Sleep(500 * time.Millisecond)
		command(t, c, []string{"FLUSH", "COMPACT"}[i%2]) // tables change between backups
	}
	resp, err := http.Get("http://" + listen + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var health struct {
		Status string `json:"status"`
		Phase  string `json:"phase"`
	}
	json.NewDecoder(resp.Body).Decode(&health)
	resp.Body.Close()
	if resp.StatusCode != 200 || health.Status != "ok" || health.Phase != "running" {
		t.Fatalf("healthz: %d %+v", resp.StatusCode, health)
	}
	m := p.metrics(listen)
	if m["snap_last_backup_success"] != 1 || m["snap_last_backup_bytes"] <= 0 || m[`snap_backups_total{result="error"}`] != 0 {
		t.Fatalf("metrics: %v", m)
	}

	// Stop: the final backup, then the server stops cleanly, then snap.
	p.signal(syscall.SIGTERM)
	if code := p.wait(60 * time.Second); code != 0 {
		t.Fatalf("snap run exited %d after SIGTERM", code)
	}
	firstUp := time.Since(upSince)
	w.stop.Store(true)
	w.wg.Wait()
	var final map[string]any
	for _, l := range p.find("backup saved") {
		if l["kind"] == "final" {
			final = l
		}
	}
	if final == nil {
		t.Fatal("no final backup logged")
	}
	if l := p.find("server exited"); len(l) != 1 || l[0]["status"] != 0.0 {
		t.Fatalf("server exit: %v", l)
	}
	last, n := latestSnapshot(t, e)
	if !strings.HasPrefix(last.ID, final["snapshot"].(string)) || n < 5 {
		t.Fatalf("latest snapshot %s of %d; the final backup saved %v", last.ID, n, final["snapshot"])
	}

	// What the last snapshot must hold: every key acknowledged before its
	// freeze. Its time is taken just after the FREEZE reply arrives, so a
	// write acknowledged in the instants before may still be after the
	// server's listing: allow a margin.
	keys, vals, before := w.split(last.Time.Add(-100 * time.Millisecond))
	if before < 100 {
		t.Fatalf("only %d keys acknowledged before the last freeze", before)
	}
	if err := os.RemoveAll(data); err != nil {
		t.Fatal(err)
	}
	restored := filepath.Join(work, "restored")
	e.ok(nil, "restore", "--latest", "--target", restored)
	checkConsistency(t, restored)
	checkRestored(t, ldbScan(t, restored), map[string]string{}, keys, vals, before)

	// Second run on the wiped directory: it restores, then serves.
	p2 := startRun(t, e, append([]string{"--every", "1h", "--"}, server...)...)
	if got := p2.waitLog("restoring", 20*time.Second)["snapshot"]; !strings.HasPrefix(last.ID, got.(string)) {
		t.Fatalf("second run restores %v, want the latest snapshot %s", got, last.ID)
	}
	p2.waitLog("restored", 20*time.Second)
	p2.waitLog("server ready", 20*time.Second)
	secondUp := time.Now()
	c2 := redis.NewClient(&redis.Options{Addr: addr})
	defer c2.Close()
	ctx := context.Background()
	for i := 0; i < before; i += 500 {
		batch := keys[i:min(i+500, before)]
		got, err := c2.MGet(ctx, batch...).Result()
		if err != nil {
			t.Fatal(err)
		}
		for j, k := range batch {
			if got[j] != vals[k] {
				t.Fatalf("GET %s after the restore: %v, want %q", k, got[j], vals[k])
			}
		}
	}
	secs, err := c2.Do(ctx, "SHCARD", "time", "3600").Int64()
	if err != nil {
		t.Fatal(err)
	}
	// The first run's seconds (up to its last freeze) plus this one's.
	if min := int64(firstUp.Seconds()) - 2; secs < min || secs < int64(time.Since(secondUp).Seconds())+3 {
		t.Fatalf("SHCARD time 3600 = %d after the restore; the first run was up %v", secs, firstUp.Round(time.Second))
	}
	t.Logf("first run up %v, %d snapshots; %d keys written, %d acknowledged before the last freeze; SHCARD time 3600 = %d",
		firstUp.Round(time.Millisecond), n, len(keys), before, secs)

	p2.signal(syscall.SIGTERM)
	if code := p2.wait(60 * time.Second); code != 0 {
		t.Fatalf("second snap run exited %d", code)
	}
	checkConsistency(t, data)
}

// bigDatabase makes a database in dir large enough that a first backup
// takes a while (about 48 MiB of incompressible values in tables).
func bigDatabase(t *testing.T, bin, dir string) {
	t.Helper()
	srv := testserver.Start(t, bin, dir, "--write_buffer_size", "8388608")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	rng := mrand.NewChaCha8([32]byte{1})
	val := make([]byte, 64<<10)
	for i := 0; i < 768; {
		var args []any
		for j := 0; j < 16; j, i = j+1, i+1 {
			rng.Read(val)
			args = append(args, fmt.Sprintf("big%06d", i), string(val))
		}
		if err := c.MSet(context.Background(), args...).Err(); err != nil {
			t.Fatal(err)
		}
	}
	command(t, c, "FLUSH")
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
}

// copyDir copies a database directory (cp keeps it simple).
func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", from, to).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
}

// waitFrozen polls FROZEN until a backup holds a freeze.
func waitFrozen(t *testing.T, addr string, p *runProc) {
	t.Helper()
	p.waitLog("server ready", 20*time.Second)
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if n, err := c.Do(context.Background(), "FROZEN").Int(); err == nil && n > 0 {
			return
		}
		select {
		case <-p.done:
			t.Fatalf("snap run exited (%d) before a backup froze the server", p.code)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no backup froze the server within 30s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// frozenWrapper is a server command that runs the real server and, when it
// gets SIGTERM, records FROZEN (the freezes not yet ended) before passing
// the signal on: what the server looks like the moment snap stops it.
const frozenWrapper = `#!/bin/bash
out=$1; port=$2; shift 2
"$@" &
pid=$!
on_term() {
	exec 3<>/dev/tcp/127.0.0.1/$port && printf '*1\r\n$6\r\nFROZEN\r\n' >&3 && read -r reply <&3
	echo "${reply%$'\r'}" > "$out"
	kill -TERM $pid
}
trap on_term TERM
wait $pid
wait $pid
`

// TestRunSIGTERMDuringBackup stops snap run while a backup holds the
// server frozen: with one SIGTERM the backup completes and a final one
// follows; with two the backup is abandoned. Either way every freeze is
// ended before the server gets the signal, the server exits 0, so does
// snap, and the repository stays valid.
func TestRunSIGTERMDuringBackup(t *testing.T) {
	bin := testserver.Binary(t)
	wrapper := filepath.Join(t.TempDir(), "frozen-wrapper")
	if err := os.WriteFile(wrapper, []byte(frozenWrapper), 0o755); err != nil {
		t.Fatal(err)
	}
	base := filepath.Join(t.TempDir(), "base")
	bigDatabase(t, bin, base)

	for _, tc := range []struct {
		name    string
		signals int
		want    string // the log line of the interrupted backup
	}{
		{"complete", 1, "backup saved"},
		{"abandon", 2, "backup abandoned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.vars = append(e.vars, "SNAP_HOST=run-term")
			work := t.TempDir()
			data := filepath.Join(work, "data")
			copyDir(t, base, data)
			frozen := filepath.Join(work, "frozen")
			port := freePort(t)
			p := startRun(t, e, "--init-if-missing", "--every", "1h", "--jitter", "0s", "--",
				wrapper, frozen, port, bin, "--port", port, "--rocksdb_db_path", data)
			waitFrozen(t, "127.0.0.1:"+port, p)
			for i := range tc.signals {
				if i > 0 {
					time.Sleep(20 * time.Millisecond)
				}
				p.signal(syscall.SIGTERM)
			}
			if code := p.wait(60 * time.Second); code != 0 {
				t.Fatalf("snap run exited %d", code)
			}
			if l := p.find(tc.want); len(l) == 0 || l[0]["kind"] != "scheduled" {
				t.Fatalf("the interrupted backup did not log %q: %v", tc.want, l)
			}
			b, err := os.ReadFile(frozen)
			if err != nil || strings.TrimSpace(string(b)) != ":0" {
				t.Fatalf("FROZEN when the server got SIGTERM: %q, %v; want :0 (every freeze ended)", b, err)
			}
			if l := p.find("server exited"); len(l) != 1 || l[0]["status"] != 0.0 {
				t.Fatalf("server exit: %v", l)
			}
			var snaps []lsJSON
			e.ok(&snaps, "ls", "--json")
			switch tc.signals {
			case 1: // the interrupted backup and the final one
				if len(snaps) != 2 || len(p.find("backup saved")) != 2 {
					t.Fatalf("%d snapshots after SIGTERM during a backup, want 2", len(snaps))
				}
			case 2:
				if len(snaps) != 0 {
					t.Fatalf("%d snapshots after abandoning the only backup", len(snaps))
				}
				// The repository takes the next run's backup.
				p2 := startRun(t, e, "--every", "1h", "--", bin, "--port", port, "--rocksdb_db_path", data)
				p2.waitLog("server ready", 20*time.Second)
				p2.signal(syscall.SIGTERM)
				if code := p2.wait(60 * time.Second); code != 0 || len(p2.find("backup saved")) != 1 {
					t.Fatalf("next run: exit %d, %v", code, p2.find("backup"))
				}
			}
			restored := filepath.Join(work, "restored")
			e.ok(nil, "restore", "--latest", "--target", restored)
			checkConsistency(t, restored)
		})
	}
}

// TestRunServerDiesDuringBackup kills the server while a backup holds it
// frozen: snap run logs the failed backup and exits with the server's
// status; the next run starts on the same directory and backs up.
func TestRunServerDiesDuringBackup(t *testing.T) {
	bin := testserver.Binary(t)
	e := newEnv(t)
	e.vars = append(e.vars, "SNAP_HOST=run-die")
	work := t.TempDir()
	data := filepath.Join(work, "data")
	bigDatabase(t, bin, data)
	port := freePort(t)
	server := []string{bin, "--port", port, "--rocksdb_db_path", data}
	p := startRun(t, e, append([]string{"--init-if-missing", "--every", "1h", "--jitter", "0s", "--"}, server...)...)
	waitFrozen(t, "127.0.0.1:"+port, p)
	if err := syscall.Kill(p.serverPID(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(60 * time.Second); code != 128+9 {
		t.Fatalf("snap run exited %d after the server was killed, want 137", code)
	}
	if l := p.find("backup"); len(l) != 1 || l[0]["level"] != "ERROR" {
		t.Fatalf("backup log: %v", l)
	}
	if l := p.find("server exited by itself"); len(l) != 1 || l[0]["status"] != 137.0 {
		t.Fatalf("server exit: %v", l)
	}
	if !regexp.MustCompile(`snap: server exited with status 137`).MatchString(p.out()) {
		t.Error("snap did not say why it exited")
	}

	p2 := startRun(t, e, append([]string{"--every", "1h", "--"}, server...)...)
	p2.waitLog("the data directory holds a database", 10*time.Second)
	p2.waitLog("server ready", 20*time.Second)
	p2.signal(syscall.SIGTERM)
	if code := p2.wait(60 * time.Second); code != 0 || len(p2.find("backup saved")) != 1 {
		t.Fatalf("next run: exit %d, %v", code, p2.find("backup"))
	}
	restored := filepath.Join(work, "restored")
	e.ok(nil, "restore", "--latest", "--target", restored)
	checkConsistency(t, restored)
}

func TestRunServerNeverAnswers(t *testing.T) {
	e := newEnv(t)
	data := filepath.Join(t.TempDir(), "data")
	start := time.Now()
	r := e.run("run", "--init-if-missing", "--ready-timeout", "1s", "--server", "127.0.0.1:"+freePort(t), "--data", data,
		"--log-format", "json", "--log-level", "info", "--", "sleep", "60")
	if el := time.Since(start); r.code != 1 || el > 15*time.Second {
		t.Fatalf("exit %d after %v; want 1 soon after the 1s ready timeout\n%s", r.code, el, r.stderr)
	}
	if !strings.Contains(r.stderr, "did not answer PING within --ready-timeout 1s") {
		t.Fatalf("no clear error:\n%s", r.stderr)
	}
	m := regexp.MustCompile(`"msg":"server started","pid":(\d+)`).FindStringSubmatch(r.stderr)
	if m == nil {
		t.Fatalf("no server pid in the log:\n%s", r.stderr)
	}
	pid, _ := strconv.Atoi(m[1])
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		syscall.Kill(pid, syscall.SIGKILL)
		t.Fatalf("the server (pid %d) is still running: %v", pid, err)
	}
}

func TestRunDataNotWritable(t *testing.T) {
	e := newEnv(t)
	work := t.TempDir()
	data := filepath.Join(work, "data")
	if err := os.Mkdir(data, 0o555); err != nil {
		t.Fatal(err)
	}
	if os.Getuid() == 0 { // root writes anywhere, except in an immutable directory
		if out, err := exec.Command("chattr", "+i", data).CombinedOutput(); err != nil {
			t.Skipf("running as root and chattr +i failed, so no directory is read-only: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-i", data).Run() })
	}
	marker := filepath.Join(work, "server-started")
	r := e.run("run", "--init-if-missing", "--data", data, "--", "sh", "-c", "touch "+marker+"; sleep 60")
	if r.code != 1 || !strings.Contains(r.stderr, "data directory "+data+" is not writable") || !strings.Contains(r.stderr, "the server was not started") {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("the server was started on a data directory that is not writable")
	}
}

// TestRunPrunes: with a --keep-* policy, snap run prunes after scheduled
// backups, so the repository holds what the policy keeps.
func TestRunPrunes(t *testing.T) {
	bin := testserver.Binary(t)
	e := newEnv(t)
	e.vars = append(e.vars, "SNAP_HOST=run-prune")
	data := filepath.Join(t.TempDir(), "data")
	port := freePort(t)
	p := startRun(t, e, "--init-if-missing", "--every", "1s", "--jitter", "0s",
		"--keep-last", "2", "--prune-every", "1ms", "--final-backup-timeout", "0",
		"--", bin, "--port", port, "--rocksdb_db_path", data, "--rocksdb_create_if_missing_one_off")
	deadline := time.Now().Add(60 * time.Second)
	for len(p.find("pruned")) < 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(60 * time.Second); code != 0 {
		t.Fatalf("snap run exited %d", code)
	}
	pruned := p.find("pruned")
	if len(pruned) < 3 {
		t.Fatalf("%d prunes logged in 60s, want at least 3", len(pruned))
	}
	if backups := len(p.find("backup saved")); backups <= 2 {
		t.Fatalf("only %d backups: nothing for prune to remove", backups)
	}
	var snaps []any
	e.ok(&snaps, "ls", "--json")
	if len(snaps) != 2 {
		t.Fatalf("%d snapshots after prunes with --keep-last 2 (and no final backup)", len(snaps))
	}
	e.ok(nil, "check", "--read-data")
}
