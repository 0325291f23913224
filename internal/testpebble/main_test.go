package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestProgram builds testpebble and drives each command once, as the
// end-to-end tests will.
func TestProgram(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a binary")
	}
	bin := filepath.Join(t.TempDir(), "testpebble")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tmp := t.TempDir()
	db := filepath.Join(tmp, "db")
	ckpt := filepath.Join(tmp, "ckpt")

	runOK(t, bin, "put", db, "k", "0", "1000")
	runOK(t, bin, "checkpoint", db, ckpt)
	runOK(t, bin, "put", db, "k", "1000", "1000")
	if ssts, _ := filepath.Glob(filepath.Join(db, "*.sst")); len(ssts) == 0 {
		t.Errorf("no .sst files in %s after put", db)
	}
	checkScan(t, runOK(t, bin, "scan", ckpt), "k", 1000)
	checkScan(t, runOK(t, bin, "scan", db), "k", 2000)

	t.Run("checkpoint exists", func(t *testing.T) {
		msg := runFail(t, bin, "checkpoint", db, ckpt)
		if !strings.Contains(msg, ckpt) {
			t.Errorf("error does not name %s: %s", ckpt, msg)
		}
	})

	t.Run("hold", func(t *testing.T) {
		pid, release := start(t, bin, "open", "hold", db)
		msg := runFail(t, bin, "hold", db)
		if !strings.Contains(msg, "lock") || !strings.Contains(msg, "pid "+strconv.Itoa(pid)) {
			t.Errorf("second hold: error does not name the lock and its holder %d: %s", pid, msg)
		}
		runFail(t, bin, "scan", db) // read-only opens take the lock too
		if got := lockHolder(t, filepath.Join(db, "LOCK")); got != pid {
			t.Errorf("F_GETLK on LOCK: holder %d, want %d", got, pid)
		}
		release()
		checkScan(t, runOK(t, bin, "scan", db), "k", 2000)
	})

	t.Run("lockfile", func(t *testing.T) {
		path := filepath.Join(tmp, "lockme")
		pid, release := start(t, bin, "locked", "lockfile", path)
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
		err = unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk)
		if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EACCES) {
			t.Errorf("F_SETLK while held: %v, want EAGAIN or EACCES", err)
		}
		if got := lockHolder(t, path); got != pid {
			t.Errorf("F_GETLK: holder %d, want %d", got, pid)
		}
		release()
		lk = unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
		if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
			t.Errorf("F_SETLK after release: %v", err)
		}
	})

	// The lock lockfile takes is the one Pebble takes, so it can stand in
	// for a live database.
	t.Run("lockfile conflicts with pebble", func(t *testing.T) {
		pid, release := start(t, bin, "locked", "lockfile", filepath.Join(db, "LOCK"))
		defer release()
		msg := runFail(t, bin, "put", db, "k", "0", "1")
		if !strings.Contains(msg, "pid "+strconv.Itoa(pid)) {
			t.Errorf("put under lockfile: error does not name holder %d: %s", pid, msg)
		}
	})

	t.Run("usage", func(t *testing.T) {
		runFail(t, bin)
		runFail(t, bin, "nosuch")
		runFail(t, bin, "put", db, "k", "x", "1")
		runFail(t, bin, "scan", filepath.Join(tmp, "missing"))
	})
}

func runOK(t *testing.T, bin string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("testpebble %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	if args[0] == "put" && (stdout.Len() > 0 || stderr.Len() > 0) {
		t.Errorf("put printed %q, stderr %q; want nothing", stdout.String(), stderr.String())
	}
	return stdout.String()
}

// runFail runs a command that must fail with status 1 and returns its stderr.
func runFail(t *testing.T, bin string, args ...string) string {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("testpebble %s: %v, want exit status 1", strings.Join(args, " "), err)
	}
	if stderr.Len() == 0 {
		t.Errorf("testpebble %s: empty stderr", strings.Join(args, " "))
	}
	return stderr.String()
}

// start runs a holding command, waits for its "<word> <pid>" line and
// returns the pid and a func that closes its stdin and checks it exits 0.
func start(t *testing.T, bin, word string, args ...string) (int, func()) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	var pid int
	if _, serr := fmt.Sscanf(line, word+" %d\n", &pid); err != nil || serr != nil || pid != cmd.Process.Pid {
		stdin.Close()
		cmd.Wait()
		t.Fatalf("testpebble %s: first line %q (%v), want %q; stderr: %s",
			strings.Join(args, " "), line, err, fmt.Sprintf("%s %d\n", word, cmd.Process.Pid), stderr.String())
	}
	done := false
	release := func() {
		if done {
			return
		}
		done = true
		stdin.Close()
		errc := make(chan error, 1)
		go func() { errc <- cmd.Wait() }()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("testpebble %s after stdin EOF: %v\n%s", strings.Join(args, " "), err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("testpebble %s: still running 10s after stdin EOF", strings.Join(args, " "))
		}
	}
	t.Cleanup(release)
	return pid, release
}

// lockHolder returns the pid F_GETLK reports as holding a lock that
// conflicts with a whole-file write lock on path, or 0.
func lockHolder(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil {
		t.Fatalf("F_GETLK %s: %v", path, err)
	}
	if lk.Type == unix.F_UNLCK {
		return 0
	}
	return int(lk.Pid)
}

func checkScan(t *testing.T, out, prefix string, n int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("scan: %d lines, want %d", len(lines), n)
	}
	for i, line := range lines {
		key := fmt.Sprintf("%s%08d", prefix, i)
		if want := key + "\t" + value(key); line != want {
			t.Fatalf("scan line %d: %q, want %q", i, line, want)
		}
	}
}
