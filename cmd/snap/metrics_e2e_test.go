//go:build unix

package main_test

import (
	"encoding/json"
	mrand "math/rand/v2"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/snapbackup/snap/internal/testredis"
)

// scrapeText reads /metrics on addr, checks that Prometheus can parse it,
// and returns the samples of the counters and gauges by name{labels}.
func scrapeText(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+strconv.Quote(l.GetValue()))
			}
			key := name
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			}
		}
	}
	return out
}

// waitFollowMetrics scrapes until follow reports shipped bytes, and
// returns the samples.
func waitFollowMetrics(t *testing.T, scrape func() map[string]float64) map[string]float64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := scrape()
		// The counters move as a tail is stored; the gauges of the
		// tick that stored it follow a moment later: wait for both.
		if m["snap_follow_tail_objects_total"] > 0 && m["snap_follow_tail_bytes_total"] > 0 && m["snap_follow_last_stored_timestamp_seconds"] > 0 {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("follow shipped nothing within 30s: %v", m)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkFollowMetrics checks the follow series of m, scraped after
// shipping began at start.
func checkFollowMetrics(t *testing.T, m map[string]float64, start time.Time) {
	t.Helper()
	if lag, ok := m["snap_follow_lag_seconds"]; !ok || lag < 0 || lag > 10 {
		t.Errorf("snap_follow_lag_seconds = %v (present %v), want the lag of a 200ms interval", lag, ok)
	}
	at := time.UnixMilli(int64(m["snap_follow_last_stored_timestamp_seconds"] * 1e3))
	if at.Before(start.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
		t.Errorf("snap_follow_last_stored_timestamp_seconds = %v, not between the writes' start %v and now", at, start)
	}
	for _, name := range []string{"go_goroutines", "process_resident_memory_bytes"} {
		if m[name] <= 0 {
			t.Errorf("%s = %v", name, m[name])
		}
	}
}

// TestFollowListen: snap follow --listen serves the follow gauges and the
// standard collectors on /metrics, and /healthz.
func TestFollowListen(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	testredis.Require(t)
	srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis")})
	e := redisEnv(t)
	listen := "127.0.0.1:" + freePort(t)
	f := startFollow(t, e, srv, "cache-m", "--interval", "200ms", "--listen", listen)
	start := time.Now()
	setKeys(t, srv.Client(), mrand.New(mrand.NewPCG(31, 32)), map[string]string{}, "m", 500, 100, 10*time.Millisecond)
	m := waitFollowMetrics(t, func() map[string]float64 { return scrapeText(t, listen) })
	checkFollowMetrics(t, m, start)
	if _, ok := m[`snap_backups_total{result="ok"}`]; ok {
		t.Error("snap follow reports snap run's scheduled backups")
	}

	resp, err := http.Get("http://" + listen + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Status string `json:"status"`
		Phase  string `json:"phase"`
	}
	json.NewDecoder(resp.Body).Decode(&h)
	resp.Body.Close()
	if resp.StatusCode != 200 || h.Status != "ok" || h.Phase != "running" {
		t.Errorf("/healthz: %d %+v", resp.StatusCode, h)
	}
	f.stop()
}

// TestRunFollowListen: snap run --follow serves the follow gauges beside
// its own series on its --listen.
func TestRunFollowListen(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	testredis.Require(t)
	work := t.TempDir()
	port, err := strconv.Atoi(freePort(t))
	if err != nil {
		t.Fatal(err)
	}
	argv, err := testredis.Command(testredis.Options{Dir: filepath.Join(work, "data")}, port, filepath.Join(work, "redis.log"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	p := startRun(t, e, append([]string{"--follow", "--interval", "200ms", "--init-if-missing", "--host", "h1", "--listen", "127.0.0.1:0", "--"}, argv...)...)
	listen, _ := p.waitLog("serving /healthz", 30*time.Second)["address"].(string)
	p.waitLog("started a chain", 30*time.Second)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + strconv.Itoa(port), DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer c.Close()
	start := time.Now()
	setKeys(t, c, mrand.New(mrand.NewPCG(33, 34)), map[string]string{}, "r", 500, 100, 10*time.Millisecond)
	m := waitFollowMetrics(t, func() map[string]float64 { return p.metrics(listen) })
	checkFollowMetrics(t, m, start)
	if _, ok := m[`snap_backups_total{result="ok"}`]; !ok {
		t.Errorf("snap run's own series are missing: %v", m)
	}
	p.signal(syscall.SIGTERM)
	if code := p.wait(time.Minute); code != 0 {
		t.Fatalf("snap run exited %d", code)
	}
}
