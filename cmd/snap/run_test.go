package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/schedule"
	"github.com/snapbackup/snap/snapshot"
)

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func TestRunChildFlag(t *testing.T) {
	argv := []string{"./sada-sliding", "--port", "9015", "-rocksdb_db_path=/data", "--rocksdb_create_if_missing_one_off", "--port=9016", "--", "--port", "1"}
	if v, ok := childFlag(argv, "port"); !ok || v != "9016" {
		t.Errorf("port = %q, %v; want the last one before --", v, ok)
	}
	if v, ok := childFlag(argv, "rocksdb_db_path"); !ok || v != "/data" {
		t.Errorf("rocksdb_db_path = %q, %v", v, ok)
	}
	if _, ok := childFlag(argv, "version_timestamp_ms"); ok {
		t.Error("found a flag that is not there")
	}
	if _, ok := childFlag([]string{"./s", "--port"}, "port"); ok {
		t.Error("a flag without a value has no value")
	}
}

func TestRunUsageErrors(t *testing.T) {
	for _, v := range []string{"SNAP_PASSWORD_FILE", "SNAP_DATA", "SNAP_SERVER", "SNAP_LOG_FORMAT", "SNAP_EVERY", "SNAP_JITTER"} {
		t.Setenv(v, "")
		os.Unsetenv(v)
	}
	t.Setenv("SNAP_PASSWORD", "pw")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "command line after --"},
		{[]string{"run", "--data", "/a", "--", "srv", "--rocksdb_db_path", "/b"}, "another directory"},
		{[]string{"run", "--every", "0s", "--", "srv"}, "--every must be positive"},
		{[]string{"run", "--every", "1m", "--jitter", "1m", "--", "srv"}, "--jitter"},
		{[]string{"run", "--ready-timeout", "0s", "--", "srv"}, "--ready-timeout"},
		{[]string{"run", "--log-format", "xml", "--", "srv"}, "--log-format"},
	}
	for _, tc := range cases {
		var stderr bytes.Buffer
		app := newApp(io.Discard, &stderr)
		err := app.Run(flagsFirst(app, append([]string{"snap", "--repo", t.TempDir()}, tc.args...)))
		if code := exitCode(err, &stderr); code != exitUsage || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("snap %s: exit %d, %q; want %d and %q", strings.Join(tc.args, " "), code, stderr.String(), exitUsage, tc.want)
		}
	}
	// Without a non-interactive password snap run refuses to start.
	os.Unsetenv("SNAP_PASSWORD")
	var stderr bytes.Buffer
	app := newApp(io.Discard, &stderr)
	err := app.Run([]string{"snap", "--repo", t.TempDir(), "run", "--", "srv"})
	if code := exitCode(err, &stderr); code != exitUsage || !strings.Contains(stderr.String(), "SNAP_PASSWORD_FILE") {
		t.Errorf("run without a password: exit %d, %q", code, stderr.String())
	}
}

func TestRunHealthz(t *testing.T) {
	st := newRunState()
	st.setPhase("running")
	var pingErr atomic.Pointer[error]
	refused := errors.New("dial tcp: connection refused")
	pingErr.Store(&refused)
	ping := func(context.Context) error {
		if e := pingErr.Load(); e != nil {
			return *e
		}
		return nil
	}
	m := newMetrics()
	m.reg.MustRegister(st)
	addr, stop, err := serveStatus("127.0.0.1:0", st, m.reg, "127.0.0.1:9015", ping, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	get := func() (int, healthJSON) {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var h healthJSON
		if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("healthz body is not JSON: %v (%s)", err, resp.Header.Get("Content-Type"))
		}
		return resp.StatusCode, h
	}
	if code, h := get(); code != 503 || h.Status != "unhealthy" || !strings.Contains(h.Server.Ping, "refused") {
		t.Errorf("server down: %d %+v", code, h)
	}
	pingErr.Store(nil)
	if code, h := get(); code != 200 || h.Status != "ok" || h.LastBackup != nil || h.Phase != "running" || h.Server.Address != "127.0.0.1:9015" {
		t.Errorf("no backup yet: %d %+v", code, h)
	}
	now := time.Now()
	st.record("scheduled", now, now, nil, errors.New("freeze: refused"))
	if code, h := get(); code != 503 || h.LastBackup == nil || h.LastBackup.Success || h.LastBackup.Error != "freeze: refused" {
		t.Errorf("last backup failed: %d %+v", code, h)
	}
	st.record("scheduled", now, now.Add(time.Second), &snapshot.Snapshot{ID: repo.ID{1}, Time: now}, nil)
	if code, h := get(); code != 200 || !h.LastBackup.Success || h.LastBackup.LastSnapshot == "" || h.Backups["error"] != 1 || h.Backups["ok"] != 1 {
		t.Errorf("last backup saved: %d %+v", code, h)
	}

	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("/metrics Content-Type %q", ct)
	}
	got := parseExposition(t, resp.Body)
	resp.Body.Close()
	if got["snap_last_backup_success"] != 1 || got["go_goroutines"] <= 0 {
		t.Errorf("/metrics after a saved backup: %v", got)
	}

	if _, _, err := serveStatus(addr, st, m.reg, "", ping, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--listen") {
		t.Errorf("listen on a busy port: %v", err)
	}
}

// A supervisor test drives a shell script as the server: it notes the
// signals it gets in a file, and "answers PING" once it has set its traps.
type supTest struct {
	t     *testing.T
	sv    *supervisor
	notes string
	sigs  chan os.Signal
	logs  *lockedBuffer
	res   chan supResult
}

type supResult struct {
	code int
	err  error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// trapScript notes HUP, exits 7 on TERM and 8 on INT.
const trapScript = `trap 'echo HUP >> "$NOTES"' HUP
trap 'echo TERM >> "$NOTES"; exit 7' TERM
trap 'echo INT >> "$NOTES"; exit 8' INT
echo ready >> "$NOTES"
while :; do sleep 0.01; done`

func newSupTest(t *testing.T, script string, backup func(context.Context) (*snapshot.Snapshot, error)) *supTest {
	st := &supTest{t: t, notes: filepath.Join(t.TempDir(), "notes"), sigs: make(chan os.Signal, 4), logs: &lockedBuffer{}}
	t.Setenv("NOTES", st.notes)
	st.sv = &supervisor{
		argv: []string{"sh", "-c", script}, addr: "script", stdin: nil, stdout: io.Discard, stderr: st.logs,
		log: slog.New(slog.NewTextHandler(st.logs, nil)), state: newRunState(),
		ping: func(context.Context) error {
			if !strings.Contains(st.read(), "ready") {
				return errors.New("not ready")
			}
			return nil
		},
		backup:       backup,
		sched:        schedule.Interval{Every: time.Hour, Rand: func() float64 { return 0.5 }},
		now:          time.Now,
		readyTimeout: 10 * time.Second, finalTimeout: 10 * time.Second,
		readyInterval: 10 * time.Millisecond, stopGrace: 2 * time.Second,
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("supervisor log:\n%s", st.logs.String())
		}
	})
	return st
}

func (st *supTest) start(last time.Time) {
	st.res = make(chan supResult, 1)
	go func() {
		code, err := st.sv.run(context.Background(), st.sigs, last)
		st.res <- supResult{code, err}
	}()
}

func (st *supTest) read() string {
	b, _ := os.ReadFile(st.notes)
	return string(b)
}

func (st *supTest) waitFor(what string, cond func() bool) {
	st.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			st.t.Fatalf("timed out waiting for %s; notes %q", what, st.read())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (st *supTest) result() supResult {
	st.t.Helper()
	select {
	case r := <-st.res:
		return r
	case <-time.After(20 * time.Second):
		st.t.Fatalf("supervisor did not return; notes %q", st.read())
		return supResult{}
	}
}

func fakeSnapshot(now time.Time) *snapshot.Snapshot {
	return &snapshot.Snapshot{ID: repo.ID{1, 2, 3}, Time: now}
}

func TestRunForwardsSignalsAfterFinalBackup(t *testing.T) {
	if signal.Ignored(syscall.SIGHUP) {
		// Under nohup: the script's shell inherits HUP ignored, and a
		// shell cannot trap a signal ignored when it started.
		t.Skip("SIGHUP is ignored in this process (nohup?): the server's shell could not trap it")
	}
	var st *supTest
	var finals atomic.Int32
	st = newSupTest(t, trapScript, func(ctx context.Context) (*snapshot.Snapshot, error) {
		finals.Add(1)
		if strings.Contains(st.read(), "TERM") {
			t.Error("the server got SIGTERM before the final backup")
		}
		return fakeSnapshot(time.Now()), nil
	})
	st.start(time.Now()) // last backup just now: none due for an hour
	st.waitFor("the server's traps", func() bool { return strings.Contains(st.read(), "ready") })
	st.waitFor("phase running", func() bool { _, h := st.sv.state.health("", nil); return h.Phase == "running" })

	st.sigs <- syscall.SIGHUP
	st.waitFor("HUP at the server", func() bool { return strings.Contains(st.read(), "HUP") })
	if finals.Load() != 0 {
		t.Fatal("SIGHUP started a backup")
	}
	st.sigs <- syscall.SIGTERM
	r := st.result()
	if r.err != nil || r.code != 7 {
		t.Fatalf("run = %d, %v; want the server's status 7", r.code, r.err)
	}
	if finals.Load() != 1 || !strings.Contains(st.read(), "TERM") {
		t.Fatalf("%d final backups, notes %q", finals.Load(), st.read())
	}
	if _, h := st.sv.state.health("", nil); h.LastBackup == nil || h.LastBackup.Kind != "final" || !h.LastBackup.Success {
		t.Errorf("state after the final backup: %+v", h.LastBackup)
	}
}

// blockingBackup blocks until its context ends and reports why.
func blockingBackup(started chan<- struct{}, cause *atomic.Value) func(context.Context) (*snapshot.Snapshot, error) {
	return func(ctx context.Context) (*snapshot.Snapshot, error) {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		return nil, ctx.Err()
	}
}

func TestRunSecondSignalAbandonsFinalBackup(t *testing.T) {
	started := make(chan struct{}, 1)
	var cause atomic.Value
	st := newSupTest(t, trapScript, blockingBackup(started, &cause))
	st.start(time.Now())
	st.waitFor("phase running", func() bool { _, h := st.sv.state.health("", nil); return h.Phase == "running" })
	st.sigs <- syscall.SIGINT // as Ctrl-C on a terminal
	<-started
	time.Sleep(50 * time.Millisecond)
	if strings.Contains(st.read(), "INT") {
		t.Fatal("signal passed on before the final backup ended")
	}
	st.sigs <- syscall.SIGTERM
	// The first signal goes to the server, once the backup is abandoned.
	r := st.result()
	if r.err != nil || r.code != 8 || !strings.Contains(st.read(), "INT") || strings.Contains(st.read(), "TERM") {
		t.Fatalf("run = %d, %v; notes %q; want the server's status 8 after SIGINT only", r.code, r.err, st.read())
	}
	if c, _ := cause.Load().(error); !errors.Is(c, errSecondSignal) {
		t.Errorf("backup cancelled because %v, want %v", c, errSecondSignal)
	}
	if _, h := st.sv.state.health("", nil); h.LastBackup == nil || h.LastBackup.Success || h.Backups["error"] != 1 {
		t.Errorf("abandoned final backup not recorded as failed: %+v", h)
	}
}

func TestRunFinalBackupTimeout(t *testing.T) {
	started := make(chan struct{}, 1)
	var cause atomic.Value
	st := newSupTest(t, trapScript, blockingBackup(started, &cause))
	st.sv.finalTimeout = 200 * time.Millisecond
	st.start(time.Now())
	st.waitFor("phase running", func() bool { _, h := st.sv.state.health("", nil); return h.Phase == "running" })
	begin := time.Now()
	st.sigs <- syscall.SIGTERM
	r := st.result()
	if r.err != nil || r.code != 7 {
		t.Fatalf("run = %d, %v", r.code, r.err)
	}
	if el := time.Since(begin); el < 200*time.Millisecond || el > 5*time.Second {
		t.Errorf("stopped %v after SIGTERM with a 200ms final backup timeout", el)
	}
	if c, _ := cause.Load().(error); !errors.Is(c, errFinalTimeout) {
		t.Errorf("final backup cancelled because %v, want %v", c, errFinalTimeout)
	}
}

func TestRunServerExitsDuringBackup(t *testing.T) {
	started := make(chan struct{}, 1)
	var cause atomic.Value
	// The server answers, then dies with status 3 while a backup runs.
	st := newSupTest(t, `echo ready >> "$NOTES"; while [ ! -f "$NOTES.die" ]; do sleep 0.01; done; exit 3`, blockingBackup(started, &cause))
	st.start(time.Time{}) // never backed up: the first backup is due now
	<-started
	os.WriteFile(st.notes+".die", nil, 0o644)
	r := st.result()
	if r.err != nil || r.code != 3 {
		t.Fatalf("run = %d, %v; want the server's status 3", r.code, r.err)
	}
	if c, _ := cause.Load().(error); !errors.Is(c, errServerExited) {
		t.Errorf("backup cancelled because %v, want %v", c, errServerExited)
	}
	if !strings.Contains(st.logs.String(), "server exited by itself") {
		t.Errorf("log does not say the server exited:\n%s", st.logs.String())
	}
}

func TestRunServerKilledBySignal(t *testing.T) {
	st := newSupTest(t, `echo ready >> "$NOTES"; kill -KILL $$`, func(context.Context) (*snapshot.Snapshot, error) { return nil, nil })
	st.start(time.Now())
	if r := st.result(); r.err != nil || r.code != 128+9 {
		t.Fatalf("run = %d, %v; want 137", r.code, r.err)
	}
}

func TestRunReadyTimeout(t *testing.T) {
	st := newSupTest(t, `trap 'echo TERM >> "$NOTES"; exit 0' TERM; while :; do sleep 0.01; done`, func(context.Context) (*snapshot.Snapshot, error) {
		t.Error("backup of a server that never got ready")
		return nil, nil
	})
	st.sv.ping = func(context.Context) error { return errors.New("connection refused") }
	st.sv.readyTimeout = 300 * time.Millisecond
	st.start(time.Time{})
	r := st.result()
	if r.err == nil || !strings.Contains(r.err.Error(), "did not answer PING within --ready-timeout 300ms") || !strings.Contains(r.err.Error(), "connection refused") {
		t.Fatalf("run = %d, %v", r.code, r.err)
	}
	if !strings.Contains(st.read(), "TERM") {
		t.Error("the server was not sent SIGTERM")
	}
}

func TestRunStopBeforeReady(t *testing.T) {
	st := newSupTest(t, trapScript, func(context.Context) (*snapshot.Snapshot, error) {
		t.Error("backup of a server that never got ready")
		return nil, nil
	})
	var pings atomic.Int32
	st.sv.ping = func(context.Context) error { pings.Add(1); return errors.New("loading") }
	st.start(time.Time{})
	st.waitFor("the server's traps", func() bool { return strings.Contains(st.read(), "ready") && pings.Load() > 0 })
	st.sigs <- syscall.SIGTERM
	if r := st.result(); r.err != nil || r.code != 7 {
		t.Fatalf("run = %d, %v", r.code, r.err)
	}
}

func TestRunBackupsNeverOverlap(t *testing.T) {
	var inFlight, maxInFlight, n atomic.Int32
	st := newSupTest(t, trapScript, func(ctx context.Context) (*snapshot.Snapshot, error) {
		if v := inFlight.Add(1); v > maxInFlight.Load() {
			maxInFlight.Store(v)
		}
		defer inFlight.Add(-1)
		time.Sleep(30 * time.Millisecond) // longer than the interval
		n.Add(1)
		if n.Load()%3 == 0 {
			return nil, fmt.Errorf("backup %d failed", n.Load()) // logged, retried
		}
		return fakeSnapshot(time.Now()), nil
	})
	// Every 20ms ± 10ms, seeded.
	st.sv.sched = schedule.Interval{Every: 20 * time.Millisecond, Jitter: 10 * time.Millisecond, Rand: mrand.New(mrand.NewPCG(1, 1)).Float64}
	st.start(time.Time{})
	st.waitFor("six backups", func() bool { return n.Load() >= 6 })
	st.sigs <- syscall.SIGTERM
	if r := st.result(); r.err != nil || r.code != 7 {
		t.Fatalf("run = %d, %v", r.code, r.err)
	}
	if maxInFlight.Load() != 1 {
		t.Errorf("%d backups ran at once", maxInFlight.Load())
	}
	_, h := st.sv.state.health("", nil)
	if h.LastBackup.Kind != "final" || h.Backups["error"] < 1 || h.Backups["ok"] < 4 {
		t.Errorf("after %d backups: %+v", n.Load(), h)
	}
	if !strings.Contains(st.logs.String(), "retrying at the next tick") {
		t.Error("a failed backup was not logged")
	}
}

// TestRunFinalBackupCancelsPrune: SIGTERM during a prune cancels it, and
// the final backup starts once it stopped, within the final timeout.
func TestRunFinalBackupCancelsPrune(t *testing.T) {
	var backups atomic.Int32
	var pruning, pruneDone atomic.Bool
	var cause atomic.Value
	st := newSupTest(t, trapScript, func(ctx context.Context) (*snapshot.Snapshot, error) {
		if backups.Add(1) == 2 && (!pruneDone.Load()) {
			t.Error("the final backup started while the prune still ran")
		}
		return fakeSnapshot(time.Now()), nil
	})
	st.sv.prune = func(ctx context.Context) error {
		pruning.Store(true)
		<-ctx.Done()
		cause.Store(context.Cause(ctx))
		time.Sleep(50 * time.Millisecond) // a prune takes a moment to stop
		pruneDone.Store(true)
		return ctx.Err()
	}
	st.start(time.Time{}) // never backed up: the first backup is due now
	st.waitFor("the prune after the first backup", pruning.Load)
	st.sigs <- syscall.SIGTERM
	r := st.result()
	if r.err != nil || r.code != 7 {
		t.Fatalf("run = %d, %v; want the server's status 7", r.code, r.err)
	}
	if backups.Load() != 2 {
		t.Fatalf("%d backups, want the scheduled one and the final one", backups.Load())
	}
	if c, _ := cause.Load().(error); c == nil || !strings.Contains(c.Error(), "final backup") {
		t.Fatalf("prune cancelled with cause %v", c)
	}
	if !strings.Contains(st.logs.String(), "prune cancelled for the final backup") {
		t.Fatalf("no log line about the cancelled prune:\n%s", st.logs.String())
	}
}
