package main

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

// flatten turns metric families into samples keyed as the text format
// writes them: name{label="value",...} with the labels sorted, and the
// _count, _sum and _bucket series of summaries and histograms.
func flatten(fams []*dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	key := func(name string, labels []*dto.LabelPair, extra ...string) string {
		var ls []string
		for _, l := range labels {
			ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
		}
		for i := 0; i+1 < len(extra); i += 2 {
			ls = append(ls, extra[i]+"="+strconv.Quote(extra[i+1]))
		}
		if len(ls) == 0 {
			return name
		}
		slices.Sort(ls)
		return name + "{" + strings.Join(ls, ",") + "}"
	}
	for _, f := range fams {
		name := f.GetName()
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				out[key(name, m.Label)] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[key(name, m.Label)] = m.GetGauge().GetValue()
			case dto.MetricType_UNTYPED:
				out[key(name, m.Label)] = m.GetUntyped().GetValue()
			case dto.MetricType_SUMMARY:
				out[key(name+"_count", m.Label)] = float64(m.GetSummary().GetSampleCount())
				out[key(name+"_sum", m.Label)] = m.GetSummary().GetSampleSum()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				out[key(name+"_count", m.Label)] = float64(h.GetSampleCount())
				out[key(name+"_sum", m.Label)] = h.GetSampleSum()
				for _, b := range h.GetBucket() {
					out[key(name+"_bucket", m.Label, "le", strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64))] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}

// parseExposition parses the Prometheus text format, failing the test on
// text Prometheus could not read.
func parseExposition(t *testing.T, r io.Reader) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		t.Fatalf("exposition does not parse: %v", err)
	}
	var list []*dto.MetricFamily
	for _, f := range fams {
		list = append(list, f)
	}
	return flatten(list)
}

// scrape reads g the way a Prometheus server does: through the handler,
// in the text format.
func scrape(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(g, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d %s", rec.Code, rec.Body)
	}
	return parseExposition(t, rec.Body)
}

// snapSeries returns the snap_ series of samples.
func snapSeries(samples map[string]float64) []string {
	var out []string
	for k := range samples {
		if strings.HasPrefix(k, "snap_") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func TestMetricsStandardCollectors(t *testing.T) {
	m := newMetrics()
	got := scrape(t, m.reg)
	for _, name := range []string{"go_goroutines", "go_memstats_heap_alloc_bytes", "process_resident_memory_bytes", "process_start_time_seconds"} {
		if got[name] <= 0 {
			t.Errorf("%s = %v, want it positive", name, got[name])
		}
	}
	if _, ok := got["go_gc_duration_seconds_count"]; !ok {
		t.Error("no go_gc_duration_seconds") // 0 before the first collection
	}
	// snap's own series appear once they have a value: a backup's push
	// reports no prune and no follow lag of 0.
	if s := snapSeries(got); len(s) != 0 {
		t.Errorf("snap series before anything was recorded: %v", s)
	}
	// A second registry is independent of the first (tests run in one
	// process, each command has its own).
	m.backupDone("dir", time.Second, time.Now(), &snapshot.Snapshot{}, nil)
	if s := snapSeries(scrape(t, newMetrics().reg)); len(s) != 0 {
		t.Errorf("a new registry has %v", s)
	}
}

func TestMetricsRecord(t *testing.T) {
	var none *metrics // records nothing, and does not panic
	none.backupDone("dir", time.Second, time.Now(), &snapshot.Snapshot{}, nil)
	none.restoreDone("dir", time.Second, time.Now())
	none.pruneDone(&snapshot.PruneResult{}, time.Now())
	none.checkDone(&snapshot.CheckResult{}, time.Now())
	none.shipped(chain.Shipped{})
	none.followStarting()
	none.backupKind("dir")

	m := newMetrics()
	t0 := time.Date(2026, 11, 21, 16, 26, 52, 597e6, time.UTC)
	ts := unixSeconds(t0)
	sn := func(read, stored int64) *snapshot.Snapshot {
		return &snapshot.Snapshot{Summary: snapshot.Summary{BytesRead: read, BytesStored: stored}}
	}
	m.backupKind("freeze")
	m.backupDone("dir", 1500*time.Millisecond, t0, sn(1000, 400), nil)
	m.backupDone("dir", 3*time.Second, t0.Add(time.Hour), sn(500, 100), errors.New("end the freeze: refused")) // saved, not a success
	m.backupDone("dir", time.Millisecond, t0.Add(2*time.Hour), nil, errors.New("connect: refused"))            // nothing saved
	partial := sn(0, 0)
	partial.Partial = true
	m.backupDone("dir", 0, t0.Add(3*time.Hour), partial, nil) // saved, files changed: not a success
	m.restoreDone("redis", 20*time.Second, t0.Add(3*time.Hour))
	m.pruneDone(&snapshot.PruneResult{Stats: snapshot.PruneStats{SnapshotsRemoved: 3, SnapshotsKept: 7}}, t0)
	m.pruneDone(&snapshot.PruneResult{DryRun: true, Stats: snapshot.PruneStats{SnapshotsRemoved: 9}}, t0.Add(time.Hour)) // changed nothing
	m.checkDone(&snapshot.CheckResult{ErrorCount: 0}, t0)
	m.checkDone(&snapshot.CheckResult{ErrorCount: 2}, t0.Add(time.Hour)) // not a success
	m.followStarting()
	m.shipped(chain.Shipped{Ref: chain.Ref{Offset: 100, End: 350, T1: t0.UnixMilli()}, Since: t0.Add(-1200 * time.Millisecond), Saved: t0.Add(300 * time.Millisecond)})
	m.shipped(chain.Shipped{Ref: chain.Ref{Offset: 350, End: 350, T1: t0.Add(time.Minute).UnixMilli()}, Since: t0.Add(time.Minute), Saved: t0.Add(time.Minute + 250*time.Millisecond)}) // a mark

	got := scrape(t, m.reg)
	want := map[string]float64{
		`snap_backup_bytes_read_total{kind="dir"}`:                              1500,
		`snap_backup_bytes_stored_total{kind="dir"}`:                            500,
		`snap_backup_bytes_read_total{kind="freeze"}`:                           0,
		`snap_backup_bytes_stored_total{kind="freeze"}`:                         0,
		`snap_backup_duration_seconds_count{kind="dir"}`:                        3,
		`snap_backup_duration_seconds_sum{kind="dir"}`:                          4.5,
		`snap_backup_duration_seconds_bucket{kind="dir",le="1"}`:                1,
		`snap_backup_duration_seconds_bucket{kind="dir",le="2.5"}`:              2,
		`snap_backup_duration_seconds_bucket{kind="dir",le="5"}`:                3,
		`snap_backup_duration_seconds_bucket{kind="dir",le="+Inf"}`:             3,
		`snap_last_success_timestamp_seconds{kind="dir",operation="backup"}`:    ts,
		`snap_restore_duration_seconds_count{kind="redis"}`:                     1,
		`snap_restore_duration_seconds_sum{kind="redis"}`:                       20,
		`snap_last_success_timestamp_seconds{kind="redis",operation="restore"}`: ts + 3*3600,
		`snap_prune_snapshots_removed`:                                          3,
		`snap_prune_snapshots_kept`:                                             7,
		`snap_last_success_timestamp_seconds{kind="",operation="prune"}`:        ts,
		`snap_check_errors`: 2,
		`snap_last_success_timestamp_seconds{kind="",operation="check"}`: ts,
		`snap_follow_lag_seconds`:                   0.25,
		`snap_follow_last_stored_timestamp_seconds`: ts + 60,
		`snap_follow_tail_objects_total`:            2,
		`snap_follow_tail_bytes_total`:              250,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-6 {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	for _, k := range snapSeries(got) {
		if _, ok := want[k]; !ok && !strings.Contains(k, "_bucket{") {
			t.Errorf("unexpected series %s = %v", k, got[k])
		}
	}
}

func TestRunMetricsFormat(t *testing.T) {
	m := newMetrics()
	st := newRunState()
	m.reg.MustRegister(st)
	got := scrape(t, m.reg)
	if s := snapSeries(got); !slices.Equal(s, []string{`snap_backups_total{result="error"}`, `snap_backups_total{result="ok"}`}) ||
		got[`snap_backups_total{result="ok"}`] != 0 || got[`snap_backups_total{result="error"}`] != 0 {
		t.Errorf("before any backup: %v", s)
	}
	if got["go_goroutines"] <= 0 {
		t.Error("no go_goroutines beside snap run's series")
	}

	t0 := time.Date(2026, 11, 21, 16, 26, 52, 597e6, time.UTC)
	sn := &snapshot.Snapshot{ID: repo.ID{0xab}, Time: t0.Add(100 * time.Millisecond), Summary: snapshot.Summary{Bytes: 7204180}}
	st.record("scheduled", t0, t0.Add(1500*time.Millisecond), sn, nil)
	st.record("scheduled", t0.Add(time.Hour), t0.Add(time.Hour+250*time.Millisecond), nil, errors.New("connect: refused"))
	got = scrape(t, m.reg)
	want := map[string]float64{
		`snap_backups_total{result="ok"}`:      1,
		`snap_backups_total{result="error"}`:   1,
		"snap_last_backup_timestamp_seconds":   1795282012.847,
		"snap_last_backup_duration_seconds":    0.25,
		"snap_last_backup_success":             0,
		"snap_last_backup_bytes":               7204180,
		"snap_last_snapshot_timestamp_seconds": 1795278412.697,
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || math.Abs(g-v) > 1e-6 {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	if s := snapSeries(got); len(s) != len(want) {
		t.Errorf("%d snap series, want %d: %v", len(s), len(want), s)
	}
}

func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:9100", true},
		{":9100", true},
		{":0", true},
		{"0.0.0.0:9100", true},
		{"[::1]:9100", true},
		{"localhost:9100", true},
		{"metrics.example.internal:9100", true},
		{"256.0.0.1:1", false},
		{"1.2.3:80", false},
		{"127.0.0.1", false},
		{"127.0.0.1:", false},
		{":65536", false},
		{":-1", false},
		{"127.0.0.1:http", false},
		{"[::1:9100", false},
		{"[fe80::zz]:1", false},
		{"under_score:1", false},
		{"-lead:1", false},
		{"", false},
	} {
		err := checkListen(tc.addr)
		if tc.ok != (err == nil) {
			t.Errorf("checkListen(%q) = %v, want ok %v", tc.addr, err, tc.ok)
		}
		if err != nil && (exitCode(err, io.Discard) != exitUsage || !strings.Contains(err.Error(), "--listen")) {
			t.Errorf("checkListen(%q) = %v: want a usage error naming --listen", tc.addr, err)
		}
	}
}

// TestListenErrors: a --listen address that is not one is a usage error
// (exit 2); one that cannot be bound fails start-up (exit 1), before run
// starts the server or follow opens the repository.
func TestListenErrors(t *testing.T) {
	dir, _ := testRepo(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	started := filepath.Join(t.TempDir(), "started")
	server := []string{"--", "sh", "-c", "touch " + started}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{append([]string{"run", "--listen", "256.0.0.1:1"}, server...), exitUsage, "256.0.0.1 is not an IP address"},
		{append([]string{"run", "--listen", "127.0.0.1"}, server...), exitUsage, "missing port"},
		{append([]string{"run", "--listen", busy.Addr().String(), "--source", "dir", "--path", t.TempDir()}, server...), exitError, "address already in use"},
		{[]string{"follow", "--listen", "256.0.0.1:1"}, exitUsage, "256.0.0.1 is not an IP address"},
		{[]string{"follow", "--listen", ":99999"}, exitUsage, "port"},
		{[]string{"follow", "--listen", busy.Addr().String(), "--server", "127.0.0.1:1"}, exitError, "address already in use"},
	} {
		code, _, stderr := snap(t, append([]string{"--repo", dir}, tc.args...)...)
		if code != tc.code || !strings.Contains(stderr, "--listen") || !strings.Contains(stderr, tc.want) {
			t.Errorf("snap %s: exit %d, %q; want %d and %q", strings.Join(tc.args, " "), code, stderr, tc.code, tc.want)
		}
	}
	if _, err := os.Stat(started); err == nil {
		t.Error("snap run started the server although it could not listen")
	}
}

// pushed is one push a gatewayStub received.
type pushed struct {
	method   string
	grouping map[string]string // job and the grouping labels, from the path
	samples  map[string]float64
}

// gatewayStub stands in for a Pushgateway: it decodes what arrives, in
// whatever format the client sent it, and answers status.
type gatewayStub struct {
	t      *testing.T
	srv    *httptest.Server
	status int
	mu     sync.Mutex
	pushes []pushed
}

func newGatewayStub(t *testing.T) *gatewayStub {
	g := &gatewayStub{t: t, status: http.StatusOK}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := pushed{method: r.Method, grouping: map[string]string{}}
		parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/metrics/"), "/")
		for i := 0; i+1 < len(parts); i += 2 {
			if parts[i+1] == "=" {
				parts[i+1] = "" // an empty value, base64 encoded
			}
			p.grouping[strings.TrimSuffix(parts[i], "@base64")] = parts[i+1]
		}
		dec := expfmt.NewDecoder(r.Body, expfmt.ResponseFormat(r.Header))
		var fams []*dto.MetricFamily
		for {
			f := &dto.MetricFamily{}
			err := dec.Decode(f)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Errorf("push of %s: %v", r.Header.Get("Content-Type"), err)
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fams = append(fams, f)
		}
		p.samples = flatten(fams)
		g.mu.Lock()
		g.pushes = append(g.pushes, p)
		status := g.status
		g.mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

// last returns the last push and fails the test if there were not n.
func (g *gatewayStub) last(n int) pushed {
	g.t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.pushes) != n {
		g.t.Fatalf("%d pushes, want %d", len(g.pushes), n)
	}
	return g.pushes[n-1]
}

// TestMetricsPush: the one-shot commands push their metrics with
// --metrics-push, grouped by host and command: a backup of a small
// directory pushes the bytes it read and stored, a restore its duration,
// a prune what it removed, a check its errors; each also the Go and
// process collectors.
func TestMetricsPush(t *testing.T) {
	dir, _ := testRepo(t)
	gw := newGatewayStub(t)
	data := t.TempDir()
	rng := mrand.New(mrand.NewPCG(3, 4))
	for i, n := range []int{300 << 10, 5000, 17} {
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(data, "f"+strconv.Itoa(i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(args ...string) string {
		t.Helper()
		code, stdout, stderr := snap(t, append([]string{"--repo", dir}, args...)...)
		if code != 0 {
			t.Fatalf("snap %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
		return stdout
	}
	checkCommon := func(p pushed, grouping map[string]string) {
		t.Helper()
		if p.method != http.MethodPost {
			t.Errorf("pushed with %s, want POST (replace only the series pushed)", p.method)
		}
		if !maps(p.grouping, grouping) {
			t.Errorf("grouping %v, want %v", p.grouping, grouping)
		}
		for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
			if p.samples[name] <= 0 {
				t.Errorf("pushed %s = %v", name, p.samples[name])
			}
		}
	}
	before := float64(time.Now().Add(-time.Second).UnixMilli()) / 1e3

	var b struct {
		BytesRead   int64 `json:"bytes_read"`
		BytesStored int64 `json:"bytes_stored"`
	}
	out := run("backup", "--source", "dir", "--path", data, "--host", "db-1", "--json", "--metrics-push", gw.srv.URL)
	if err := json.Unmarshal([]byte(out), &b); err != nil || b.BytesRead < 300<<10 || b.BytesStored <= 0 {
		t.Fatalf("backup --json: %v %s", err, out)
	}
	p := gw.last(1)
	checkCommon(p, map[string]string{"job": "snap", "host": "db-1", "command": "backup", "source": "dir"})
	after := float64(time.Now().Add(time.Second).UnixMilli()) / 1e3
	if got := p.samples[`snap_backup_bytes_read_total{kind="dir"}`]; got != float64(b.BytesRead) {
		t.Errorf("pushed bytes read %v, the backup read %d", got, b.BytesRead)
	}
	if got := p.samples[`snap_backup_bytes_stored_total{kind="dir"}`]; got != float64(b.BytesStored) {
		t.Errorf("pushed bytes stored %v, the backup stored %d", got, b.BytesStored)
	}
	if got := p.samples[`snap_backup_duration_seconds_count{kind="dir"}`]; got != 1 {
		t.Errorf("backup duration count %v", got)
	}
	if ts := p.samples[`snap_last_success_timestamp_seconds{kind="dir",operation="backup"}`]; ts < before || ts > after {
		t.Errorf("last success %v, not between %v and %v", ts, before, after)
	}
	for _, k := range snapSeries(p.samples) {
		if !strings.HasPrefix(k, "snap_backup_") && !strings.HasPrefix(k, "snap_last_success_") {
			t.Errorf("a backup pushed %s = %v", k, p.samples[k])
		}
	}

	run("restore", "--latest", "--target", filepath.Join(t.TempDir(), "restored"), "--metrics-push", gw.srv.URL+"/")
	p = gw.last(2)
	checkCommon(p, map[string]string{"job": "snap", "host": hostname(), "command": "restore"})
	if p.samples[`snap_restore_duration_seconds_count{kind="dir"}`] != 1 || p.samples[`snap_last_success_timestamp_seconds{kind="dir",operation="restore"}`] < before {
		t.Errorf("restore pushed %v", snapSeries(p.samples))
	}

	run("backup", "--source", "dir", "--path", data, "--host", "db-1")
	run("prune", "--keep-last", "1", "--metrics-push", gw.srv.URL)
	p = gw.last(3)
	checkCommon(p, map[string]string{"job": "snap", "host": hostname(), "command": "prune"})
	if p.samples["snap_prune_snapshots_removed"] != 1 || p.samples["snap_prune_snapshots_kept"] != 1 || p.samples[`snap_last_success_timestamp_seconds{kind="",operation="prune"}`] < before {
		t.Errorf("prune pushed %v", p.samples)
	}

	run("check", "--read-data", "--metrics-push", gw.srv.URL)
	p = gw.last(4)
	checkCommon(p, map[string]string{"job": "snap", "host": hostname(), "command": "check"})
	if v, ok := p.samples["snap_check_errors"]; !ok || v != 0 || p.samples[`snap_last_success_timestamp_seconds{kind="",operation="check"}`] < before {
		t.Errorf("check pushed %v", p.samples)
	}

	// A gateway that refuses the push: a warning, and the command's
	// result stands.
	gw.mu.Lock()
	gw.status = http.StatusBadRequest
	gw.mu.Unlock()
	code, _, stderr := snap(t, "--repo", dir, "check", "--metrics-push", gw.srv.URL)
	if code != 0 || !strings.Contains(stderr, "metrics not pushed") || !strings.Contains(stderr, "400") {
		t.Errorf("check with a gateway that answers 400: exit %d, %q", code, stderr)
	}
}

func maps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestMetricsPushBadURL: a URL that cannot be a Pushgateway's is a usage
// error before the command does anything; one where nothing answers only
// warns.
func TestMetricsPushBadURL(t *testing.T) {
	dir, _ := testRepo(t)
	data := t.TempDir()
	os.WriteFile(filepath.Join(data, "f"), []byte("some data"), 0o644)
	for _, u := range []string{"ftp://gw:9091", "http://", "gw:9091", "http://gw:port", "http://gw:9091/?x=1", "://gw"} {
		code, _, stderr := snap(t, "--repo", dir, "backup", "--source", "dir", "--path", data, "--metrics-push", u)
		if code != exitUsage || !strings.Contains(stderr, "--metrics-push") {
			t.Errorf("backup --metrics-push %q: exit %d, %q; want a usage error", u, code, stderr)
		}
	}
	for _, cmd := range [][]string{{"restore", "--latest"}, {"prune"}, {"check"}} {
		code, _, stderr := snap(t, append(append([]string{"--repo", dir}, cmd...), "--metrics-push", "ftp://gw")...)
		if code != exitUsage || !strings.Contains(stderr, "--metrics-push") {
			t.Errorf("%s --metrics-push ftp://gw: exit %d, %q; want a usage error", cmd[0], code, stderr)
		}
	}
	if n := countObjects(t, dir, repo.SnapshotFile); n != 0 {
		t.Fatalf("%d snapshots after usage errors", n)
	}

	// Nothing listens there: the backup still succeeds, with a warning.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := "http://" + ln.Addr().String()
	ln.Close()
	code, _, stderr := snap(t, "--repo", dir, "backup", "--source", "dir", "--path", data, "--metrics-push", gone)
	if code != 0 || !strings.Contains(stderr, "metrics not pushed") {
		t.Errorf("backup with an unreachable gateway: exit %d, %q; want 0 and a warning", code, stderr)
	}
	if n := countObjects(t, dir, repo.SnapshotFile); n != 1 {
		t.Errorf("%d snapshots after the backup", n)
	}
	t.Setenv("SNAP_METRICS_PUSH", gone)
	if code, _, stderr := snap(t, "--repo", dir, "check"); code != 0 || !strings.Contains(stderr, "metrics not pushed") {
		t.Errorf("check with SNAP_METRICS_PUSH unreachable: exit %d, %q", code, stderr)
	}
}
