package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/snapshot"
)

// metrics are what one snap process reports about its work: the Go and
// process collectors and snap's own series, on a registry of its own (not
// the global one, so tests in one process stay apart). snap run and snap
// follow serve them on --listen; the one-shot commands push them with
// --metrics-push (metrics_push.go). A nil *metrics records nothing.
//
// The vectors without labels are vectors so that a series appears only
// once it has a value: a backup's push reports no prune result, and snap
// run without --follow no follow lag of 0.
type metrics struct {
	reg *prometheus.Registry

	backupDuration, restoreDuration    *prometheus.HistogramVec // kind
	backupBytesRead, backupBytesStored *prometheus.CounterVec   // kind
	lastSuccess                        *prometheus.GaugeVec     // operation, kind
	pruneRemoved, pruneKept            *prometheus.GaugeVec
	checkErrors                        *prometheus.GaugeVec
	followLag, followLastStored        *prometheus.GaugeVec
	followObjects, followBytes         *prometheus.CounterVec
}

// durationBuckets span a small checkpoint (a tenth of a second) to a
// large database's first backup (two hours).
var durationBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200}

func newMetrics() *metrics {
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	histogram := func(name, help string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: durationBuckets}, []string{"kind"})
	}
	m := &metrics{
		reg:               prometheus.NewRegistry(),
		backupDuration:    histogram("snap_backup_duration_seconds", "How long backups that saved a snapshot took, by source kind."),
		restoreDuration:   histogram("snap_restore_duration_seconds", "How long restores that completed took, by source kind."),
		backupBytesRead:   counter("snap_backup_bytes_read_total", "Bytes backups read from the source, by source kind (of backups that saved a snapshot).", "kind"),
		backupBytesStored: counter("snap_backup_bytes_stored_total", "Bytes backups wrote to packs in the repository, by source kind (of backups that saved a snapshot).", "kind"),
		lastSuccess: gauge("snap_last_success_timestamp_seconds", "When an operation last succeeded, in seconds since the Unix epoch; kind is the source kind, empty for prune and check.",
			"operation", "kind"),
		pruneRemoved:     gauge("snap_prune_snapshots_removed", "Snapshots the last prune removed."),
		pruneKept:        gauge("snap_prune_snapshots_kept", "Snapshots the last prune kept."),
		checkErrors:      gauge("snap_check_errors", "Errors the last check found (0: the repository is whole)."),
		followLag:        gauge("snap_follow_lag_seconds", "How long the bytes of the last stored tail object waited: from when they can have been written to when the object was stored."),
		followLastStored: gauge("snap_follow_last_stored_timestamp_seconds", "The newest moment of the chain that is stored (restore --at reaches it), in seconds since the Unix epoch."),
		followObjects:    counter("snap_follow_tail_objects_total", "Tail objects follow stored (marks without bytes too)."),
		followBytes:      counter("snap_follow_tail_bytes_total", "Bytes of the AOF follow shipped in tail objects."),
	}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.backupDuration, m.restoreDuration, m.backupBytesRead, m.backupBytesStored, m.lastSuccess,
		m.pruneRemoved, m.pruneKept, m.checkErrors, m.followLag, m.followLastStored, m.followObjects, m.followBytes)
	return m
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1e3 }

// backupDone records a backup of kind that took took and ended at end.
// sn is nil if it saved no snapshot; err is set if it failed, also after
// saving one (ending the freeze failed). A partial snapshot (files changed
// while they were read) is not a success.
func (m *metrics) backupDone(kind string, took time.Duration, end time.Time, sn *snapshot.Snapshot, err error) {
	if m == nil || sn == nil {
		return
	}
	m.backupDuration.WithLabelValues(kind).Observe(took.Seconds())
	m.backupBytesRead.WithLabelValues(kind).Add(float64(sn.Summary.BytesRead))
	m.backupBytesStored.WithLabelValues(kind).Add(float64(sn.Summary.BytesStored))
	if err == nil && !sn.Partial {
		m.lastSuccess.WithLabelValues("backup", kind).Set(unixSeconds(end))
	}
}

// backupKind makes the series of kind's backups start at 0, for rate().
func (m *metrics) backupKind(kind string) {
	if m == nil {
		return
	}
	m.backupBytesRead.WithLabelValues(kind)
	m.backupBytesStored.WithLabelValues(kind)
}

// restoreDone records a restore of kind that completed.
func (m *metrics) restoreDone(kind string, took time.Duration, end time.Time) {
	if m == nil {
		return
	}
	m.restoreDuration.WithLabelValues(kind).Observe(took.Seconds())
	m.lastSuccess.WithLabelValues("restore", kind).Set(unixSeconds(end))
}

// pruneDone records a prune that completed; a dry run changed nothing
// and is not recorded.
func (m *metrics) pruneDone(res *snapshot.PruneResult, end time.Time) {
	if m == nil || res.DryRun {
		return
	}
	m.pruneRemoved.WithLabelValues().Set(float64(res.Stats.SnapshotsRemoved))
	m.pruneKept.WithLabelValues().Set(float64(res.Stats.SnapshotsKept))
	m.lastSuccess.WithLabelValues("prune", "").Set(unixSeconds(end))
}

// checkDone records a check that ran; it succeeded if it found no errors.
func (m *metrics) checkDone(res *snapshot.CheckResult, end time.Time) {
	if m == nil {
		return
	}
	m.checkErrors.WithLabelValues().Set(float64(res.ErrorCount))
	if res.OK() {
		m.lastSuccess.WithLabelValues("check", "").Set(unixSeconds(end))
	}
}

// followStarting makes follow's counters start at 0.
func (m *metrics) followStarting() {
	if m == nil {
		return
	}
	m.followObjects.WithLabelValues()
	m.followBytes.WithLabelValues()
}

// shipped records one stored tail object (chain.FollowOptions.Shipped).
func (m *metrics) shipped(s chain.Shipped) {
	if m == nil {
		return
	}
	m.followLag.WithLabelValues().Set(max(s.Saved.Sub(s.Since), 0).Seconds())
	m.followLastStored.WithLabelValues().Set(unixSeconds(s.Ref.Time()))
	m.followObjects.WithLabelValues().Inc()
	m.followBytes.WithLabelValues().Add(float64(s.Ref.End - s.Ref.Offset))
}

// runState is what snap run reports about its backups on /healthz and,
// as a prometheus.Collector, the snap_backups_total and snap_last_*
// series of /metrics.
type runState struct {
	mu       sync.Mutex
	phase    string
	last     *backupRecord // the last backup attempt
	saved    *backupRecord // the last one that saved a snapshot
	ok, errs int64
}

type backupRecord struct {
	kind         string
	start, end   time.Time
	snapshotID   string
	snapshotTime time.Time
	bytes        int64
	err          string
}

func newRunState() *runState { return &runState{phase: "starting"} }

func (s *runState) setPhase(p string) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// record notes one backup attempt. A snapshot saved with an error (ending
// the freeze failed) counts as saved but not as a success.
func (s *runState) record(kind string, start, end time.Time, sn *snapshot.Snapshot, err error) {
	rec := &backupRecord{kind: kind, start: start, end: end}
	if sn != nil {
		rec.snapshotID, rec.snapshotTime, rec.bytes = sn.ID.String(), sn.Time, sn.Summary.Bytes
	}
	if err != nil {
		rec.err = err.Error()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = rec
	if sn != nil {
		s.saved = rec
	}
	if err != nil {
		s.errs++
	} else {
		s.ok++
	}
}

// The series runState reports: the names and meanings /metrics had before
// snap used client_golang.
var (
	descBackups       = prometheus.NewDesc("snap_backups_total", "Backups snap run attempted, by result.", []string{"result"}, nil)
	descLastEnd       = prometheus.NewDesc("snap_last_backup_timestamp_seconds", "When the last backup attempt ended, in seconds since the Unix epoch.", nil, nil)
	descLastDuration  = prometheus.NewDesc("snap_last_backup_duration_seconds", "How long the last backup attempt took.", nil, nil)
	descLastSuccess   = prometheus.NewDesc("snap_last_backup_success", "1 if the last backup attempt saved a snapshot and ended its freeze, else 0.", nil, nil)
	descLastBytes     = prometheus.NewDesc("snap_last_backup_bytes", "Bytes of the database in the last saved snapshot.", nil, nil)
	descLastSnapshotT = prometheus.NewDesc("snap_last_snapshot_timestamp_seconds", "When the server was frozen for the last saved snapshot, in seconds since the Unix epoch: the age of the newest restorable state.", nil, nil)
)

func (s *runState) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBackups, descLastEnd, descLastDuration, descLastSuccess, descLastBytes, descLastSnapshotT} {
		ch <- d
	}
}

// Collect reports the backup counts, and the last_* series once there is
// something to report.
func (s *runState) Collect(ch chan<- prometheus.Metric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descBackups, prometheus.CounterValue, float64(s.ok), "ok")
	ch <- prometheus.MustNewConstMetric(descBackups, prometheus.CounterValue, float64(s.errs), "error")
	if l := s.last; l != nil {
		success := 0.0
		if l.err == "" {
			success = 1
		}
		ch <- prometheus.MustNewConstMetric(descLastEnd, prometheus.GaugeValue, unixSeconds(l.end))
		ch <- prometheus.MustNewConstMetric(descLastDuration, prometheus.GaugeValue, l.end.Sub(l.start).Seconds())
		ch <- prometheus.MustNewConstMetric(descLastSuccess, prometheus.GaugeValue, success)
	}
	if sv := s.saved; sv != nil {
		ch <- prometheus.MustNewConstMetric(descLastBytes, prometheus.GaugeValue, float64(sv.bytes))
		ch <- prometheus.MustNewConstMetric(descLastSnapshotT, prometheus.GaugeValue, unixSeconds(sv.snapshotTime))
	}
}

type healthJSON struct {
	Status     string           `json:"status"` // "ok" or "unhealthy"
	Phase      string           `json:"phase"`
	Server     serverHealth     `json:"server"`
	LastBackup *lastBackupJSON  `json:"last_backup,omitempty"`
	Backups    map[string]int64 `json:"backups"`
}

type serverHealth struct {
	Address string `json:"address"`
	Ping    string `json:"ping"` // "ok" or the error
}

type lastBackupJSON struct {
	Kind            string     `json:"kind"`
	End             time.Time  `json:"end"`
	DurationSeconds float64    `json:"duration_seconds"`
	Success         bool       `json:"success"`
	Snapshot        string     `json:"snapshot,omitempty"`
	Error           string     `json:"error,omitempty"`
	LastSnapshot    string     `json:"last_snapshot,omitempty"`
	LastSnapshotAt  *time.Time `json:"last_snapshot_time,omitempty"`
}

// health reports healthy when the server answered PING (pingErr is nil)
// and the last backup, if any, did not fail.
func (s *runState) health(addr string, pingErr error) (int, healthJSON) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := healthJSON{Status: "ok", Phase: s.phase, Server: serverHealth{Address: addr, Ping: "ok"},
		Backups: map[string]int64{"ok": s.ok, "error": s.errs}}
	code := http.StatusOK
	if pingErr != nil {
		h.Server.Ping = pingErr.Error()
		h.Status, code = "unhealthy", http.StatusServiceUnavailable
	}
	if l := s.last; l != nil {
		lb := &lastBackupJSON{Kind: l.kind, End: l.end, DurationSeconds: l.end.Sub(l.start).Seconds(),
			Success: l.err == "", Snapshot: l.snapshotID, Error: l.err}
		if sv := s.saved; sv != nil {
			t := sv.snapshotTime
			lb.LastSnapshot, lb.LastSnapshotAt = sv.snapshotID, &t
		}
		h.LastBackup = lb
		if l.err != "" {
			h.Status, code = "unhealthy", http.StatusServiceUnavailable
		}
	}
	return code, h
}

// checkListen refuses a --listen address that is not HOST:PORT, a usage
// error; one this machine cannot bind (a busy port, an address it does
// not have) is found when serveStatus listens.
func checkListen(addr string) error {
	bad := func(why string) error {
		return cli.Exit(fmt.Sprintf("--listen %q: %s; want HOST:PORT, like 127.0.0.1:9100 or :9100", addr, why), exitUsage)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return bad(strings.TrimPrefix(err.Error(), "address "+addr+": "))
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return bad(fmt.Sprintf("port %q is not a number from 0 to 65535", port))
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if strings.Trim(host, "0123456789.") == "" || strings.Contains(host, ":") {
		return bad(fmt.Sprintf("%s is not an IP address", host))
	}
	if !validHostname(host) {
		return bad(fmt.Sprintf("%q is neither an IP address nor a host name", host))
	}
	return nil
}

// validHostname reports whether h is a DNS name: labels of letters,
// digits and inner hyphens.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// serveStatus serves /healthz (from st) and /metrics (from g) on addr
// until the returned stop is called, and returns the address it listens
// on. It listens before returning, so a busy port fails start-up.
func serveStatus(addr string, st *runState, g prometheus.Gatherer, serverAddr string, ping func(context.Context) error, log *slog.Logger) (bound string, stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("--listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		code, h := st.health(serverAddr, ping(r.Context()))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(h)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError)}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status endpoint stopped", "err", err)
		}
	}()
	log.Info("serving /healthz and /metrics", "address", ln.Addr().String())
	return ln.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}, nil
}
