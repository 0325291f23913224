//go:build unix

package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRunDirEndToEnd: snap run --source dir supervises any program and
// backs up the checkpoint its --before hook makes, on the schedule and
// once more on SIGTERM; a second container with an empty data directory
// gets the latest checkpoint restored into it before its program starts.
func TestRunDirEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	work := t.TempDir()
	data, ckpt := filepath.Join(work, "data"), filepath.Join(work, "ckpt")
	e := newEnv(t)
	e.vars = append(e.vars, "SNAP_HOST=app-1")
	// The program appends a record every 20 ms; its "checkpoint" is a copy.
	app := `trap 'exit 0' TERM; mkdir -p "$DATA/journal"; i=0; while :; do i=$((i+1)); echo "record $i" >> "$DATA/journal/0"; sleep 0.02; done`
	before := "rm -rf " + ckpt + " && cp -a " + data + " " + ckpt
	args := func(dataDir string) []string {
		return []string{"--init-if-missing", "--source", "dir", "--path", ckpt, "--before", before, "--after", "rm -rf " + ckpt,
			"--data", dataDir, "--every", "1s", "--jitter", "0", "--", "sh", "-c", app}
	}
	t.Setenv("DATA", data)
	p := startRun(t, e, args(data)...)
	p.waitLog("backup saved", 30*time.Second)
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("snap run exited %d\n%s", code, p.out())
	}
	final := p.find("backup saved")
	if len(final) < 2 || final[len(final)-1]["kind"] != "final" {
		t.Fatalf("backups %v: want a scheduled one and the final one", final)
	}
	want, err := os.ReadFile(filepath.Join(data, "journal", "0"))
	if err != nil {
		t.Fatal(err)
	}

	// A new container: empty data directory, the same host and --path.
	data2 := filepath.Join(work, "data2")
	t.Setenv("DATA", data2)
	q := startRun(t, e, args(data2)...)
	q.waitLog("restored", 30*time.Second)
	q.waitLog("server started", 10*time.Second)
	q.signal(syscall.SIGTERM)
	if code := q.wait(30 * time.Second); code != 0 {
		t.Fatalf("second snap run exited %d\n%s", code, q.out())
	}
	got, err := os.ReadFile(filepath.Join(data2, "journal", "0"))
	if err != nil {
		t.Fatal(err)
	}
	// The final backup's checkpoint was taken after the program last
	// wrote, or while it still did: the restored journal is the original's
	// first part, most of it, and the program went on from there.
	if len(got) < len(want)/2 || !strings.HasPrefix(string(got), string(want[:len(want)/2])) {
		t.Fatalf("restored journal has %d bytes, the original %d, and is not its prefix", len(got), len(want))
	}
}
