package source

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
)

// fakeServer is a miniredis server with FREEZE and, optionally, THAW.
type fakeServer struct {
	addr    string
	freezes atomic.Int32
	thaws   atomic.Int32

	mu         sync.Mutex
	freezePeer *server.Peer
	thawPeer   *server.Peer
}

// newFakeServer registers FREEZE answered by freeze (unless nil) and THAW
// answered by thaw (unless nil).
func newFakeServer(t *testing.T, freeze, thaw func(c *server.Peer)) *fakeServer {
	t.Helper()
	m := miniredis.RunT(t)
	s := &fakeServer{addr: m.Addr()}
	if freeze != nil {
		err := m.Server().Register("FREEZE", func(c *server.Peer, cmd string, args []string) {
			s.freezes.Add(1)
			s.mu.Lock()
			s.freezePeer = c
			s.mu.Unlock()
			freeze(c)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if thaw != nil {
		err := m.Server().Register("THAW", func(c *server.Peer, cmd string, args []string) {
			s.thaws.Add(1)
			s.mu.Lock()
			s.thawPeer = c
			s.mu.Unlock()
			thaw(c)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func replyStrings(entries ...string) func(c *server.Peer) {
	return func(c *server.Peer) { c.WriteStrings(entries) }
}

func replyOK(c *server.Peer) { c.WriteOK() }

var briefEntries = []string{"/000056.sst", "/CURRENT", "/MANIFEST-000046:514", "/OPTIONS-000048", "/000051.log:63"}

// briefDir is a data directory holding the files of briefEntries.
func briefDir(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	dir, contents := writeFiles(t, map[string]int{
		"000056.sst": 3000, "MANIFEST-000046": 600, "OPTIONS-000048": 200, "000051.log": 100,
	})
	// The live CURRENT already names a newer manifest.
	if err := os.WriteFile(filepath.Join(dir, "CURRENT"), []byte("MANIFEST-000099\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, contents
}

func TestRedisFreezeRelease(t *testing.T) {
	s := newFakeServer(t, replyStrings(briefEntries...), replyOK)
	dir, contents := briefDir(t)
	src := NewRedis(s.addr, dir, nil)
	if got := src.Info(); got != (Info{Kind: KindFreeze, Address: s.addr, DataDir: dir}) {
		t.Errorf("Info = %+v", got)
	}

	frozen, err := src.Freeze(t.Context())
	if err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if frozen.Dir != dir {
		t.Errorf("Dir = %q, want %q", frozen.Dir, dir)
	}
	want := map[string][]byte{
		"000056.sst":      contents["000056.sst"],
		"CURRENT":         []byte("MANIFEST-000046\n"),
		"MANIFEST-000046": contents["MANIFEST-000046"][:514],
		"OPTIONS-000048":  contents["OPTIONS-000048"],
		"000051.log":      contents["000051.log"][:63],
	}
	if len(frozen.Listing.Files) != len(want) {
		t.Fatalf("listing has %d files, want %d", len(frozen.Listing.Files), len(want))
	}
	for _, f := range frozen.Listing.Files {
		r, err := frozen.Open(f)
		if err != nil {
			t.Fatalf("Open %s: %v", f.Name, err)
		}
		if got := readAll(t, r); !bytes.Equal(got, want[f.Name]) {
			t.Errorf("%s: read %d bytes, want %d (content differs)", f.Name, len(got), len(want[f.Name]))
		}
		r.Close()
	}
	if n := s.thaws.Load(); n != 0 {
		t.Fatalf("THAW sent %d times before Release", n)
	}

	if err := frozen.Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if err := frozen.Release(t.Context()); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if f, th := s.freezes.Load(), s.thaws.Load(); f != 1 || th != 1 {
		t.Errorf("FREEZE sent %d times, THAW %d times; want 1 and 1", f, th)
	}
	s.mu.Lock()
	samePeer := s.freezePeer == s.thawPeer
	s.mu.Unlock()
	if !samePeer {
		t.Error("THAW went over another connection than FREEZE")
	}

	// The source can freeze again after a release.
	frozen, err = src.Freeze(t.Context())
	if err != nil {
		t.Fatalf("second Freeze: %v", err)
	}
	if err := frozen.Release(t.Context()); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func TestRedisReleaseCancelledContext(t *testing.T) {
	s := newFakeServer(t, replyStrings(briefEntries...), replyOK)
	dir, _ := briefDir(t)
	ctx, cancel := context.WithCancel(t.Context())
	frozen, err := NewRedis(s.addr, dir, nil).Freeze(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel() // the backup failed or was interrupted
	if err := frozen.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if n := s.thaws.Load(); n != 1 {
		t.Errorf("THAW sent %d times, want 1", n)
	}
}

func TestRedisReleaseWithoutThaw(t *testing.T) {
	s := newFakeServer(t, replyStrings(briefEntries...), nil)
	dir, _ := briefDir(t)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	frozen, err := NewRedis(s.addr, dir, log).Freeze(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if err := frozen.Release(t.Context()); err != nil {
		t.Fatalf("Release on a server without THAW: %v", err)
	}
	if !strings.Contains(logs.String(), "level=INFO") || !strings.Contains(logs.String(), "no THAW") {
		t.Errorf("log %q does not say at info level that the server has no THAW", logs.String())
	}
}

func TestRedisThawRefused(t *testing.T) {
	s := newFakeServer(t, replyStrings(briefEntries...), func(c *server.Peer) { c.WriteError("ERR cannot thaw") })
	dir, _ := briefDir(t)
	frozen, err := NewRedis(s.addr, dir, nil).Freeze(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	err = frozen.Release(t.Context())
	if err == nil || !strings.Contains(err.Error(), s.addr) || !strings.Contains(err.Error(), "ERR cannot thaw") {
		t.Fatalf("Release = %v, want an error naming the server and its reply", err)
	}
	if n := s.thaws.Load(); n != 1 {
		t.Errorf("THAW sent %d times, want 1 (an error reply is not retried)", n)
	}
}

func TestRedisFreezeFailureThaws(t *testing.T) {
	tests := []struct {
		name   string
		freeze func(c *server.Peer) // nil: the server does not know FREEZE
		want   []string
	}{
		{"malformed entry", replyStrings("/000056.sst", "/CURRENT", "/MANIFEST-000046"),
			[]string{`entry 3 "/MANIFEST-000046": manifest without a byte length`}},
		{"traversal", replyStrings("/CURRENT", "/MANIFEST-000046:5", "/../../etc/passwd"),
			[]string{"entry 3", "'/'"}},
		{"no manifest", replyStrings("/CURRENT", "/000056.sst"), []string{"no MANIFEST"}},
		{"empty array", func(c *server.Peer) { c.WriteLen(0) }, []string{"empty array"}},
		{"nil", func(c *server.Peer) { c.WriteNull() }, []string{"nil"}},
		{"integer", func(c *server.Peer) { c.WriteInt(5) }, []string{"int64"}},
		{"status", replyOK, []string{`string "OK"`}},
		{"nested array", func(c *server.Peer) { c.WriteLen(1); c.WriteLen(0) }, []string{"entry 1"}},
		{"error reply", func(c *server.Peer) { c.WriteError("ERR disk on fire") }, []string{"refused FREEZE", "disk on fire"}},
		{"unknown command", nil, []string{"does not support FREEZE", "sada-sliding"}},
		{"connection dropped", func(c *server.Peer) { c.Close() }, []string{"FREEZE at"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFakeServer(t, tt.freeze, replyOK)
			dir, _ := briefDir(t)
			frozen, err := NewRedis(s.addr, dir, nil).Freeze(t.Context())
			if err == nil {
				frozen.Release(t.Context())
				t.Fatal("Freeze succeeded")
			}
			if frozen != nil {
				t.Error("Freeze returned a listing with its error")
			}
			for _, w := range append(tt.want, s.addr) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if n := s.thaws.Load(); n != 1 {
				t.Errorf("THAW sent %d times after a failed FREEZE, want 1", n)
			}
		})
	}
}

func TestRedisFreezeFailureThawFails(t *testing.T) {
	s := newFakeServer(t, replyStrings("/CURRENT"), func(c *server.Peer) { c.WriteError("ERR thaw broken") })
	dir, _ := briefDir(t)
	_, err := NewRedis(s.addr, dir, nil).Freeze(t.Context())
	if err == nil || !strings.Contains(err.Error(), "no MANIFEST") || !strings.Contains(err.Error(), "thaw broken") {
		t.Fatalf("Freeze = %v, want both the reply error and the THAW error", err)
	}
}

func TestRedisUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now

	start := time.Now()
	frozen, err := NewRedis(addr, t.TempDir(), nil).Freeze(t.Context())
	if err == nil {
		frozen.Release(t.Context())
		t.Fatal("Freeze succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("took %v to report a refused connection", d)
	}
	for _, w := range []string{addr, "--server", "SNAP_SERVER", "connect"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
}

func TestRedisBadDataDir(t *testing.T) {
	s := newFakeServer(t, replyStrings(briefEntries...), replyOK)
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	for _, dir := range []string{"", filepath.Join(t.TempDir(), "missing"), file} {
		frozen, err := NewRedis(s.addr, dir, nil).Freeze(t.Context())
		if err == nil {
			frozen.Release(t.Context())
			t.Errorf("Freeze with data dir %q succeeded", dir)
			continue
		}
		if !strings.Contains(err.Error(), "data directory") {
			t.Errorf("error %q does not mention the data directory", err)
		}
	}
	if n := s.freezes.Load(); n != 0 {
		t.Errorf("FREEZE sent %d times, want none before the data directory is checked", n)
	}
}
