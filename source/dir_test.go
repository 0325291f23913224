//go:build unix

package source

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMain lets the test binary stand in for a store that holds its LOCK
// file: fcntl locks are per process, so the holder must be another one.
func TestMain(m *testing.M) {
	if path := os.Getenv("SNAP_TEST_HOLD_LOCK"); path != "" {
		holdLock(path)
		return
	}
	os.Exit(m.Run())
}

// holdLock takes a write lock on path as RocksDB does, says so on stdout
// and keeps it until stdin closes.
func holdLock(path string) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK}
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("locked %d\n", os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
}

// startHolder runs a process that holds the store's lock on path.
func startHolder(t *testing.T, path string) int {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SNAP_TEST_HOLD_LOCK="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "locked ") {
		t.Fatalf("lock holder: %q, %v", line, err)
	}
	return cmd.Process.Pid
}

func mkfile(t *testing.T, path, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestDirListing: every kind of entry, parents first, hard links as later
// names of the first, special files left out, the lock file served from
// memory.
func TestDirListing(t *testing.T) {
	dir := t.TempDir()
	mkfile(t, filepath.Join(dir, "LOCK"), "", 0o644)
	mkfile(t, filepath.Join(dir, "CURRENT"), "MANIFEST-000001\n", 0o644)
	mkfile(t, filepath.Join(dir, "part", "a", "000001.sst"), "table", 0o600)
	mkfile(t, filepath.Join(dir, "run.sh"), "#!/bin/sh\n", 0o755)
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "part", "a", "000001.sst"), filepath.Join(dir, "z-link.sst")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../elsewhere", filepath.Join(dir, "part", "ln")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	src := NewDir(dir, DirOptions{LockFile: DefaultLockFile})
	if got := src.Info(); got.Kind != KindDir || got.DataDir != dir {
		t.Fatalf("Info = %+v", got)
	}
	fz, err := src.Freeze(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer fz.Release(context.Background())
	got := map[string]File{}
	var order []string
	for _, f := range fz.Listing.Files {
		got[f.Name] = f
		order = append(order, f.Name)
	}
	want := []string{"CURRENT", "LOCK", "empty", "part", "part/a", "part/a/000001.sst", "part/ln", "run.sh", "z-link.sst"}
	if strings.Join(order, " ") != strings.Join(want, " ") {
		t.Fatalf("listing %v, want %v", order, want)
	}
	if f := got["part/a/000001.sst"]; f.Type != EntryFile || f.Length != 5 || f.Mode != 0o600 || f.Walked == nil || f.Walked.Inode == 0 {
		t.Errorf("table: %+v", f)
	}
	if f := got["run.sh"]; f.Mode != 0o755 {
		t.Errorf("run.sh mode %v", f.Mode)
	}
	if f := got["empty"]; f.Type != EntryDir || f.Mode != 0o700 {
		t.Errorf("empty dir: %+v", f)
	}
	if f := got["part/ln"]; f.Type != EntrySymlink || f.Target != "../elsewhere" {
		t.Errorf("symlink: %+v", f)
	}
	if f := got["z-link.sst"]; f.Type != EntryHardlink || f.Target != "part/a/000001.sst" || f.Length != 0 {
		t.Errorf("hard link: %+v", f)
	}
	if f := got["LOCK"]; f.Content == nil || f.Walked != nil {
		t.Errorf("the lock file must be served from memory, never opened again: %+v", f)
	}
}

// TestDirRefusesLiveStore: another process holds the store's lock; the
// backup fails naming it, and the hooks ran in order, after also then.
func TestDirRefusesLiveStore(t *testing.T) {
	dir := t.TempDir()
	mkfile(t, filepath.Join(dir, "000001.sst"), "x", 0o644)
	pid := startHolder(t, filepath.Join(dir, "LOCK"))
	notes := filepath.Join(t.TempDir(), "notes")
	src := NewDir(dir, DirOptions{LockFile: DefaultLockFile,
		Before: "echo before >> " + notes, After: "echo after:$SNAP_PATH >> " + notes})
	_, err := src.Freeze(context.Background())
	want := fmt.Sprintf("%s is in use by process %d", dir, pid)
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "back up a checkpoint") {
		t.Fatalf("backup of a live store: %v; want %q", err, want)
	}
	if b, _ := os.ReadFile(notes); string(b) != "before\nafter:"+dir+"\n" {
		t.Fatalf("hooks ran as %q", b)
	}
}

// TestDirHoldsLock: while the listing is frozen, a store cannot take its
// write lock; after Release it can.
func TestDirHoldsLock(t *testing.T) {
	dir := t.TempDir()
	mkfile(t, filepath.Join(dir, "LOCK"), "", 0o644)
	fz, err := NewDir(dir, DirOptions{LockFile: DefaultLockFile}).Freeze(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	try := func() error {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "SNAP_TEST_HOLD_LOCK="+filepath.Join(dir, "LOCK"))
		cmd.Stdin = strings.NewReader("") // let go at once
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := try(); err == nil {
		t.Fatal("a store took its lock while the backup held the directory")
	}
	if err := fz.Release(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := try(); err != nil {
		t.Fatalf("after Release: %v", err)
	}
}

func TestDirBadInput(t *testing.T) {
	dir := t.TempDir()
	mkfile(t, filepath.Join(dir, "file"), "x", 0o644)
	loop := filepath.Join(dir, "loop")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing"), "does not exist"},
		{filepath.Join(dir, "file"), "is not a directory"},
		{loop, "too many levels of symbolic links"},
	} {
		_, err := NewDir(c.path, DirOptions{}).Freeze(context.Background())
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.path, err, c.want)
		}
	}
	// A failing --before stops the backup and shows its stderr; --after
	// is not run for a backup that never started reading.
	_, err := NewDir(dir, DirOptions{Before: "echo checkpoint endpoint down >&2; exit 3"}).Freeze(context.Background())
	if err == nil || !strings.Contains(err.Error(), "checkpoint endpoint down") || !strings.Contains(err.Error(), "exit status 3") {
		t.Fatalf("failing --before: %v", err)
	}
}
