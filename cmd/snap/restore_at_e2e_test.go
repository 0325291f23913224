//go:build unix

package main_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRestoreAtOtherKinds: for the kinds without a chain, --at picks the
// newest snapshot taken in TIME's second or before, and refuses a TIME
// before the first.
func TestRestoreAtOtherKinds(t *testing.T) {
	e := newEnv(t)
	e.ok(nil, "init", "--kdf-memory", "8", "--kdf-time", "1")
	src := filepath.Join(t.TempDir(), "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	var ids []string
	var times []time.Time
	for i, content := range []string{"first", "second"} {
		if err := os.WriteFile(filepath.Join(src, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		var b backupJSON
		e.ok(&b, "backup", "--json", "--source", "dir", "--path", src, "--host", "h")
		ids = append(ids, b.SnapshotID)
		var ls []struct {
			ID   string    `json:"id"`
			Time time.Time `json:"time"`
		}
		e.ok(&ls, "ls", "--json")
		times = append(times, ls[i].Time)
		// The next snapshot is in a later second, so a second between
		// them names only the first.
		time.Sleep(time.Until(ls[i].Time.Truncate(time.Second).Add(1100 * time.Millisecond)))
	}
	restoreAt := func(at string) (string, result) {
		target := filepath.Join(t.TempDir(), "out")
		return target, e.run("restore", "--at", at, "--host", "h", "--target", target)
	}
	for _, c := range []struct {
		at   string
		want string
	}{
		{strconv.FormatInt(times[0].Unix(), 10), "first"},
		{times[0].UTC().Add(time.Millisecond).Format(time.RFC3339Nano), "first"},
		{times[1].UTC().Format(time.RFC3339Nano), "second"},
		{times[1].Add(time.Hour).Format(time.RFC3339), "second"},
	} {
		target, r := restoreAt(c.at)
		if r.code != 0 {
			t.Fatalf("restore --at %s: exit %d\n%s", c.at, r.code, r.stderr)
		}
		got, err := os.ReadFile(filepath.Join(target, "f"))
		if err != nil || string(got) != c.want {
			t.Fatalf("restore --at %s: f = %q, %v; want %q", c.at, got, err, c.want)
		}
	}
	target, r := restoreAt(times[0].Add(-time.Hour).Format(time.RFC3339))
	if r.code != 1 || !strings.Contains(r.stderr, "in or before the second") {
		t.Fatalf("restore --at before the first snapshot: exit %d, %s", r.code, r.stderr)
	}
	if entries, _ := os.ReadDir(target); len(entries) > 0 {
		t.Fatalf("restore --at before the first snapshot wrote %d entries", len(entries))
	}
	for _, bad := range []string{"yesterday", "2026-13-01T00:00:00Z", "-5"} {
		if _, r := restoreAt(bad); r.code != 2 {
			t.Fatalf("restore --at %q: exit %d, want 2 (usage)\n%s", bad, r.code, r.stderr)
		}
	}
	if r := e.run("restore", "--at", "1", "--latest", "--target", t.TempDir()); r.code != 2 {
		t.Fatalf("--at with --latest: exit %d, want 2", r.code)
	}
	if len(ids) != 2 || ids[0] == ids[1] {
		t.Fatalf("snapshots %v", ids)
	}
}
