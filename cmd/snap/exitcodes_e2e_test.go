//go:build unix

package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/local"
)

// jsonErr decodes a failed --json command's stdout: exactly
// {"error": "...", "code": N}.
func jsonErr(t *testing.T, r result) (string, int) {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &obj); err != nil || len(obj) != 2 {
		t.Fatalf("stdout is not {\"error\", \"code\"}: %v\n%s", err, r.stdout)
	}
	msg, _ := obj["error"].(string)
	code, _ := obj["code"].(float64)
	if msg == "" || !strings.Contains(r.stderr, "snap: "+msg) {
		t.Fatalf("error %q on stdout, stderr %q: want the same message on both", msg, r.stderr)
	}
	return msg, int(code)
}

// TestExitCodes makes each documented exit code happen for real.
func TestExitCodes(t *testing.T) {
	e := newEnv(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "f"), []byte("data"), 0o644)

	// 10: nothing at the location, an empty directory, a file.
	empty := t.TempDir()
	file := filepath.Join(empty, "file")
	os.WriteFile(file, nil, 0o644)
	for _, loc := range []string{e.repo, empty, file} {
		if r := e.run("ls", "--repo", loc); r.code != 10 || !strings.Contains(r.stderr, "no snap repository at "+loc+" (run snap init)") {
			t.Errorf("ls --repo %s: exit %d, %s; want 10", loc, r.code, r.stderr)
		}
	}
	r := e.run("--json", "backup", "--source", "dir", "--path", src)
	if msg, code := jsonErr(t, r); r.code != 10 || code != 10 || !strings.HasPrefix(msg, "no snap repository at ") {
		t.Errorf("backup --json without a repository: exit %d, %s", r.code, r.stdout)
	}

	e.ok(nil, "init", "--kdf-memory", "8", "--kdf-time", "1")

	// 12: a wrong password.
	wrong := &env{t: t, repo: e.repo, vars: append(append([]string{}, e.vars...), "SNAP_PASSWORD=wrong")}
	if r := wrong.run("ls"); r.code != 12 || !strings.Contains(r.stderr, "wrong password") {
		t.Errorf("ls with a wrong password: exit %d, %s; want 12", r.code, r.stderr)
	}
	r = wrong.run("ls", "--json")
	if msg, code := jsonErr(t, r); r.code != 12 || code != 12 || !strings.Contains(msg, "wrong password") {
		t.Errorf("ls --json with a wrong password: exit %d, %s", r.code, r.stdout)
	}

	// 11: another process holds an exclusive lock (this test, as prune).
	ctx := context.Background()
	be, err := local.Open(e.repo)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repo.Open(ctx, be, "correct horse", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	lk, err := rp.Lock(ctx, repo.LockOptions{Exclusive: true, Command: "prune", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"backup", "--source", "dir", "--path", src},
		{"check", "--retry-lock", "1s"},
		{"prune", "--keep-last", "1"},
	} {
		r := e.run(args...)
		if r.code != 11 || !strings.Contains(r.stderr, "repository is locked: exclusive lock by prune") {
			t.Errorf("snap %s under an exclusive lock: exit %d, %s; want 11", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	r = e.run("check", "--json")
	if msg, code := jsonErr(t, r); r.code != 11 || code != 11 || !strings.Contains(msg, "repository is locked") {
		t.Errorf("check --json under an exclusive lock: exit %d, %s", r.code, r.stdout)
	}

	// 130: SIGINT or SIGTERM while the command waits for the lock.
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		if code := interruptWhileLocked(t, e, sig); code != 130 {
			t.Errorf("backup --retry-lock interrupted by %v: exit %d, want 130", sig, code)
		}
	}
	lk.Unlock(ctx)
	e.ok(nil, "backup", "--source", "dir", "--path", src)

	// 3: a partial snapshot (--allow-changes; the hook starts a writer
	// that appends to a file every few milliseconds, so reading its 16 MiB
	// spans some appends). --json prints the backup's result, not an
	// error object. (A writer much faster than this can fail the backup:
	// --allow-changes takes a file that changed after it was planned as it
	// is then, and gives up if it changes again before it is opened.)
	journal := filepath.Join(src, "journal")
	os.WriteFile(journal, make([]byte, 16<<20), 0o644)
	grower := "(i=0; while [ $i -lt 200 ]; do head -c 65536 /dev/zero >> " + journal + "; sleep 0.005; i=$((i+1)); done) >/dev/null 2>&1 &"
	r = e.run("backup", "--source", "dir", "--path", src, "--before", grower+" sleep 0.05", "--allow-changes", "--json")
	var b struct {
		SnapshotID string `json:"snapshot_id"`
		Partial    bool   `json:"partial"`
		Error      string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &b); err != nil || r.code != 3 || !b.Partial || b.Error != "" || b.SnapshotID == "" ||
		!strings.Contains(r.stderr, "backup incomplete: snapshot "+b.SnapshotID[:8]+" is marked partial") {
		t.Errorf("backup --allow-changes of a changing directory: exit %d, %v\nstdout: %s\nstderr: %s", r.code, err, r.stdout, r.stderr)
	}
	waitStable(t, journal)

	// --help documents the codes.
	if r := e.ok(nil, "--help"); !strings.Contains(r.stdout, "Exit codes: 0 success") || !strings.Contains(r.stdout, "12 wrong password") {
		t.Errorf("--help does not list the exit codes:\n%s", r.stdout)
	}
}

// interruptWhileLocked starts a check that waits for the lock, sends it
// sig once it says it waits, and returns its exit code.
func interruptWhileLocked(t *testing.T, e *env, sig syscall.Signal) int {
	t.Helper()
	cmd := exec.Command(snapBin, "check", "--retry-lock", "5m", "--log-level", "info")
	cmd.Env = append(os.Environ(), e.vars...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waiting := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			if !found && strings.Contains(sc.Text(), "repository is locked; waiting") {
				found = true
				waiting <- true
			}
		}
		if !found {
			waiting <- false
		}
	}()
	select {
	case ok := <-waiting:
		if !ok {
			cmd.Wait()
			t.Fatalf("check ended without waiting for the lock")
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("check did not wait for the lock")
	}
	cmd.Process.Signal(sig)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0
}

// waitStable waits until the file stops growing: the --before hook's
// writer has ended.
func waitStable(t *testing.T, path string) {
	t.Helper()
	for last, stable := int64(-1), 0; stable < 5; time.Sleep(100 * time.Millisecond) {
		if size := fileSize(t, path); size == last {
			stable++
		} else {
			last, stable = size, 0
		}
	}
}
