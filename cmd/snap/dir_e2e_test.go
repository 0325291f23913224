//go:build unix

package main_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapbackup/snap/internal/testserver"
)

// testpebble builds the Pebble v2 helper (internal/testpebble) once per
// test binary run.
func testpebble(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(filepath.Dir(snapBin), "testpebble")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if out, err := exec.Command("go", "build", "-o", bin, "../../internal/testpebble").CombinedOutput(); err != nil {
		t.Fatalf("build testpebble: %v\n%s", err, out)
	}
	return bin
}

func runTool(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, stderr)
	}
	return string(out)
}

// pebbleKeys checks that the Pebble database in dir holds exactly the keys
// k%08d for i in [0, n).
func pebbleKeys(t *testing.T, pebble, dir string, n int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(runTool(t, pebble, "scan", dir), "\n"), "\n")
	if n == 0 && len(lines) == 1 && lines[0] == "" {
		return
	}
	if len(lines) != n {
		t.Fatalf("%s holds %d keys, want %d", dir, len(lines), n)
	}
	for i, l := range lines {
		if k, _, _ := strings.Cut(l, "\t"); k != fmt.Sprintf("k%08d", i) {
			t.Fatalf("%s key %d is %q", dir, i, k)
		}
	}
}

// TestEndToEndDirPebble backs up checkpoints of a real Pebble v2 database
// and the closed database itself, restores each snapshot and opens it with
// Pebble: every key of that moment and none later. The second checkpoint
// hard-links the first's tables, and its backup reads only new files. A
// backup of the database while it is open is refused, naming the process.
func TestEndToEndDirPebble(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	pebble := testpebble(t)
	work := t.TempDir()
	db, ckpt := filepath.Join(work, "db"), filepath.Join(work, "ckpt")
	e := newEnv(t)
	e.ok(nil, "init")

	backup := func(path string, extra ...string) backupJSON {
		var b backupJSON
		e.ok(&b, append([]string{"backup", "--source", "dir", "--path", path, "--json"}, extra...)...)
		return b
	}
	runTool(t, pebble, "put", db, "k", "0", "20000")
	before := "rm -rf " + ckpt + " && " + pebble + " checkpoint " + db + " " + ckpt
	first := backup(ckpt, "--before", before, "--after", "rm -rf "+ckpt)
	if _, err := os.Stat(ckpt); !os.IsNotExist(err) {
		t.Fatalf("--after did not remove the checkpoint: %v", err)
	}
	runTool(t, pebble, "put", db, "k", "20000", "2000")
	second := backup(ckpt, "--before", before)
	if second.Parent != first.SnapshotID {
		t.Fatalf("second backup's parent %s, want %s", second.Parent, first.SnapshotID)
	}
	// Only the new table, the WAL, the MANIFEST and OPTIONS are read.
	if second.BytesRead*3 > first.BytesRead {
		t.Fatalf("second checkpoint's backup read %d bytes, the first's %d: the hard-linked tables were read again", second.BytesRead, first.BytesRead)
	}
	t.Logf("checkpoint backups: first read %d bytes, second %d of %d", first.BytesRead, second.BytesRead, second.Bytes)

	closed := backup(db) // Pebble's LOCK is there, free
	for _, c := range []struct {
		id   string
		keys int
	}{{first.SnapshotID, 20000}, {second.SnapshotID, 22000}, {closed.SnapshotID, 22000}} {
		target := filepath.Join(t.TempDir(), "restored")
		e.ok(nil, "restore", c.id, "--target", target)
		pebbleKeys(t, pebble, target, c.keys)
	}
	again := filepath.Join(t.TempDir(), "again")
	e.ok(nil, "restore", second.SnapshotID, "--target", again)
	sameTree(t, ckpt, again, true)

	// The database is open: refused, nothing stored.
	hold := exec.Command(pebble, "hold", db)
	stdin, _ := hold.StdinPipe()
	out, _ := hold.StdoutPipe()
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { stdin.Close(); hold.Wait() }()
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || !strings.HasPrefix(line, "open ") {
		t.Fatalf("testpebble hold: %q %v", line, err)
	}
	r := e.run("backup", "--source", "dir", "--path", db)
	want := fmt.Sprintf("%s is in use by process %d", db, hold.Process.Pid)
	if r.code != 1 || !strings.Contains(r.stderr, want) {
		t.Fatalf("backup of an open Pebble database: exit %d, %s; want %q", r.code, r.stderr, want)
	}
	var ls []struct {
		Source struct{ Kind string } `json:"source"`
	}
	e.ok(&ls, "ls", "--json")
	if len(ls) != 3 || ls[0].Source.Kind != "dir" {
		t.Fatalf("ls after the refused backup: %+v", ls)
	}
}

// TestEndToEndDirRocksDB backs up a RocksDB checkpoint made by ldb and the
// closed database; the restored copies pass ldb checkconsistency and hold
// every key.
func TestEndToEndDirRocksDB(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	testserver.RequireRocksDB(t)
	work := t.TempDir()
	db, ckpt := filepath.Join(work, "db"), filepath.Join(work, "ckpt")
	rng := mrand.New(mrand.NewPCG(15, 15))
	want := map[string]string{}
	for batch := range 3 {
		args := []string{"--db=" + db, "--create_if_missing", "batchput"}
		for i := range 2000 {
			k := fmt.Sprintf("r%06d", batch*1500+i)
			v := value(rng, k)
			want[k] = v
			args = append(args, k, v)
		}
		if out, err := exec.Command("ldb", args...).CombinedOutput(); err != nil {
			t.Fatalf("ldb batchput: %v\n%s", err, out)
		}
	}
	if out, err := exec.Command("ldb", "--db="+db, "checkpoint", "--checkpoint_dir="+ckpt).CombinedOutput(); err != nil {
		t.Fatalf("ldb checkpoint: %v\n%s", err, out)
	}
	e := newEnv(t)
	e.ok(nil, "init")
	for _, dir := range []string{ckpt, db} {
		var b backupJSON
		e.ok(&b, "backup", "--source", "dir", "--path", dir, "--json")
		target := filepath.Join(t.TempDir(), "restored")
		e.ok(nil, "restore", b.SnapshotID, "--target", target)
		checkConsistency(t, target)
		got := ldbScan(t, target)
		if len(got) != len(want) {
			t.Fatalf("%s restored with %d keys, want %d", dir, len(got), len(want))
		}
		for k, v := range want {
			if got[k] != v {
				t.Fatalf("%s: key %s restored as %q", dir, k, got[k])
			}
		}
	}
}

// TestEndToEndDirTree backs up a fjall-like tree (nested partitions,
// journals, segments, a version file) with every kind of entry, restores it
// and compares contents and metadata; then the bad input: a non-empty
// target, a file that changes while it is read, a missing directory.
func TestEndToEndDirTree(t *testing.T) {
	src := filepath.Join(t.TempDir(), "fjall")
	rng := mrand.New(mrand.NewPCG(16, 16))
	write := func(name string, n int, mode fs.FileMode) {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(16)) // compressible
		}
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("version", 24, 0o644)
	write("journals/0", 300<<10, 0o644)
	write("journals/1", 2<<20, 0o644)
	for _, part := range []string{"default", "users", "users.idx"} {
		for seg := range 3 {
			write(fmt.Sprintf("partitions/%s/segments/%d", part, seg), 100<<10+rng.IntN(1<<20), 0o444)
		}
		write("partitions/"+part+"/config", 100, 0o600)
		write("partitions/"+part+"/levels", 200, 0o600)
	}
	if err := os.MkdirAll(filepath.Join(src, "partitions", "deleted", "segments"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("partitions/default", filepath.Join(src, "current")); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(src, "partitions/users/segments/0"), filepath.Join(src, "partitions/users.idx/segments/shared")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(src, "partitions", "users.idx"), 0o750); err != nil {
		t.Fatal(err)
	}
	old := time.Date(2025, 3, 4, 5, 6, 7, 890, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "journals", "0"), old, old); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(src, "partitions"), old, old); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	e.ok(nil, "init")
	var b backupJSON
	e.ok(&b, "backup", "--source", "dir", "--path", src, "--json")
	target := filepath.Join(t.TempDir(), "restored")
	e.ok(nil, "restore", "--latest", "--target", target)
	sameTree(t, src, target, true)
	var lsOut struct {
		Snapshot struct {
			Source struct {
				Kind    string `json:"kind"`
				DataDir string `json:"data_dir"`
			} `json:"source"`
		} `json:"snapshot"`
	}
	e.ok(&lsOut, "ls", b.SnapshotID, "--json")
	if lsOut.Snapshot.Source.Kind != "dir" || lsOut.Snapshot.Source.DataDir != src {
		t.Fatalf("ls: %+v", lsOut)
	}

	// A non-empty target is refused; --skip-existing makes that a success.
	r := e.run("restore", "--latest", "--target", target)
	if r.code != 1 || !strings.Contains(r.stderr, "is not empty") {
		t.Fatalf("restore into a non-empty target: exit %d, %s", r.code, r.stderr)
	}
	e.ok(nil, "restore", "--latest", "--target", target, "--skip-existing")

	// A file that changes while it is read (the --before hook starts a
	// writer that appends to a journal): the backup fails and saves
	// nothing; with --allow-changes it is saved, marked partial.
	// It appends before the hook returns and then without pause for as
	// long as snap runs ($PPID of the hook's shell), and the read is
	// slowed to 4 MiB/s, so the journal's read takes half a second: the
	// writer cannot finish or be kept off the CPU for the whole of it,
	// however loaded the machine.
	j1 := filepath.Join(src, "journals", "1")
	grower := "echo x >> " + j1 + "; (while kill -0 $PPID; do echo x >> " + j1 + "; done) >/dev/null 2>&1 &"
	r = e.run("backup", "--source", "dir", "--path", src, "--before", grower+" sleep 0.05", "--force", "--limit-read", "4MiB")
	if r.code != 1 || !strings.Contains(r.stderr, "changed while it was read") {
		t.Fatalf("backup of a changing directory: exit %d, %s", r.code, r.stderr)
	}
	r = e.run("backup", "--source", "dir", "--path", src, "--before", grower+" sleep 0.05", "--force", "--allow-changes", "--json", "--limit-read", "4MiB")
	var pj struct{ Partial bool }
	if err := json.Unmarshal([]byte(r.stdout), &pj); err != nil || !pj.Partial || r.code != 3 { // saved, but incomplete
		t.Fatalf("backup --allow-changes of a changing directory: partial=%v %v\n%s", pj.Partial, err, r.stdout)
	}
	ls := e.ok(nil, "ls")
	if !strings.Contains(ls.stdout, "(partial)") {
		t.Fatalf("ls does not mark the partial snapshot:\n%s", ls.stdout)
	}
	// The writers end: the journal stops growing.
	journal := filepath.Join(src, "journals", "1")
	for last, stable := int64(-1), 0; stable < 5; time.Sleep(100 * time.Millisecond) {
		if size := fileSize(t, journal); size == last {
			stable++
		} else {
			last, stable = size, 0
		}
	}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--path", filepath.Join(src, "missing")}, "does not exist"},
		{[]string{"--path", filepath.Join(src, "version")}, "is not a directory"},
		{[]string{}, "needs --path"},
		{[]string{"--path", src, "--before", "echo no checkpoint today >&2; exit 4"}, "no checkpoint today"},
	} {
		r := e.run(append([]string{"backup", "--source", "dir"}, c.args...)...)
		if r.code == 0 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("backup %v: exit %d, %s; want %q", c.args, r.code, r.stderr, c.want)
		}
	}
}

func names(es []os.DirEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

// sameTree compares two directory trees entry by entry: type, content,
// symlink text, hard links (within each tree alike), and with meta also
// permissions and mtimes.
func sameTree(t *testing.T, a, b string, meta bool) {
	t.Helper()
	inodesA, inodesB := map[uint64]string{}, map[uint64]string{}
	n := 0
	err := filepath.WalkDir(a, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		if rel == "." {
			return nil
		}
		n++
		q := filepath.Join(b, rel)
		fa, err := os.Lstat(p)
		if err != nil {
			return err
		}
		fb, err := os.Lstat(q)
		if err != nil {
			ea, _ := os.ReadDir(filepath.Dir(p))
			eb, _ := os.ReadDir(filepath.Dir(q))
			return fmt.Errorf("restored tree lacks %s: %w (source dir %v, restored %v)", rel, err, names(ea), names(eb))
		}
		if fa.Mode().Type() != fb.Mode().Type() {
			return fmt.Errorf("%s: type %v, restored %v", rel, fa.Mode().Type(), fb.Mode().Type())
		}
		if meta && fa.Mode()&fs.ModeSymlink == 0 && fa.Mode().Perm() != fb.Mode().Perm() {
			return fmt.Errorf("%s: mode %v, restored %v", rel, fa.Mode(), fb.Mode())
		}
		if meta && !fa.ModTime().Equal(fb.ModTime()) {
			return fmt.Errorf("%s: mtime %v, restored %v", rel, fa.ModTime(), fb.ModTime())
		}
		switch {
		case fa.Mode()&fs.ModeSymlink != 0:
			la, _ := os.Readlink(p)
			lb, _ := os.Readlink(q)
			if la != lb {
				return fmt.Errorf("%s: symlink to %q, restored to %q", rel, la, lb)
			}
		case fa.Mode().IsRegular():
			ca, _ := os.ReadFile(p)
			cb, _ := os.ReadFile(q)
			if !bytes.Equal(ca, cb) {
				return fmt.Errorf("%s: %d bytes, restored %d differ", rel, len(ca), len(cb))
			}
			sa, sb := fa.Sys().(*syscall.Stat_t), fb.Sys().(*syscall.Stat_t)
			if sa.Nlink > 1 {
				if first, ok := inodesA[sa.Ino]; ok && inodesB[sb.Ino] != first {
					return fmt.Errorf("%s: a hard link of %s, restored apart", rel, first)
				}
				inodesA[sa.Ino], inodesB[sb.Ino] = rel, rel
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var m int
	filepath.WalkDir(b, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != b {
			m++
		}
		return nil
	})
	if m != n {
		t.Fatalf("restored tree has %d entries, the source %d", m, n)
	}
}
