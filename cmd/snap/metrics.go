package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snapbackup/snap/snapshot"
)

// runState is what snap run reports about itself on /healthz and /metrics.
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

// writeMetrics writes the Prometheus text exposition format (version
// 0.0.4). The last_* series appear once there is something to report.
func (s *runState) writeMetrics(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	metric := func(name, typ, help string, samples ...string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
		for _, sm := range samples {
			fmt.Fprintf(&b, "%s%s\n", name, sm)
		}
	}
	metric("snap_backups_total", "counter", "Backups snap run attempted, by result.",
		`{result="ok"} `+strconv.FormatInt(s.ok, 10), `{result="error"} `+strconv.FormatInt(s.errs, 10))
	if l := s.last; l != nil {
		success := "0"
		if l.err == "" {
			success = "1"
		}
		metric("snap_last_backup_timestamp_seconds", "gauge", "When the last backup attempt ended, in seconds since the Unix epoch.", " "+unixSeconds(l.end))
		metric("snap_last_backup_duration_seconds", "gauge", "How long the last backup attempt took.", " "+formatFloat(l.end.Sub(l.start).Seconds()))
		metric("snap_last_backup_success", "gauge", "1 if the last backup attempt saved a snapshot and ended its freeze, else 0.", " "+success)
	}
	if sv := s.saved; sv != nil {
		metric("snap_last_backup_bytes", "gauge", "Bytes of the database in the last saved snapshot.", " "+strconv.FormatInt(sv.bytes, 10))
		metric("snap_last_snapshot_timestamp_seconds", "gauge", "When the server was frozen for the last saved snapshot, in seconds since the Unix epoch: the age of the newest restorable state.", " "+unixSeconds(sv.snapshotTime))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func unixSeconds(t time.Time) string { return formatFloat(float64(t.UnixMilli()) / 1e3) }

// formatFloat writes a float the way the Prometheus text format reads it.
func formatFloat(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

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

// serveStatus serves /healthz and /metrics on addr until the returned stop
// is called, and returns the address it listens on. It listens before
// returning, so a busy port fails start-up.
func serveStatus(addr string, st *runState, serverAddr string, ping func(context.Context) error, log *slog.Logger) (bound string, stop func(), err error) {
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
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		st.writeMetrics(w)
	})
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
