package snapshot_test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/limit"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// manyFiles makes a data directory of n small tables, two large enough to
// be read with direct I/O, a MANIFEST and CURRENT, and returns its source
// and what a restore must hold.
func manyFiles(t *testing.T, n int) (*dirSource, map[string][]byte) {
	rng := rand.New(rand.NewPCG(uint64(n), 31))
	dir := t.TempDir()
	files := map[string][]byte{}
	for i := range n {
		size := rng.IntN(12 << 10)
		switch i {
		case 0:
			size = 0
		case 1, 2:
			size = 3<<19 + rng.IntN(1000)
		}
		files[fmt.Sprintf("%06d.sst", 10+i)] = compressible(rng, size)
	}
	files["MANIFEST-000005"] = randBytes(rng, 700)
	files["CURRENT"] = []byte("MANIFEST-000005\n")
	src := &dirSource{dir: dir, reply: []any{"/MANIFEST-000005:700"}}
	for name, data := range files {
		writeFile(t, dir, name, data)
		if name != "MANIFEST-000005" {
			src.reply = append(src.reply, "/"+name)
		}
	}
	return src, files
}

// A backup of more files than it reads at once has no more open than
// that: it plans the listing without opening it.
func TestBackupOpensFewFiles(t *testing.T) {
	src, files := manyFiles(t, 400)
	r := newRepo(t, mem.New())
	stop := snapshot.WatchFDs(t, src.dir)
	// Paced, so that the reading takes long enough to be watched.
	sn, err := snapshot.Backup(context.Background(), r, src, snapshot.BackupOptions{
		Host: "h", Readers: 3, ReadLimit: limit.NewLimiter(16 << 20),
	})
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	if peak > 3 || peak == 0 {
		t.Fatalf("%d of %d files open at once with 3 readers; want 1 to 3", peak, len(files))
	}
	t.Logf("%d files, at most %d open", len(files), peak)
	restoreInto(t, r, sn, files, 8)
}

// A restore of more files than it may keep open writes each exactly, with
// never more open than its window.
func TestRestoreOpensFewFiles(t *testing.T) {
	src, files := manyFiles(t, 300)
	r := newRepo(t, mem.New())
	sn := backup(t, r, src, false)
	for _, window := range []int{8, 2, 1000} {
		restoreInto(t, r, sn, files, window)
	}
}

// restoreInto restores sn into a new directory with at most window files
// open, and checks that bound and every byte.
func restoreInto(t *testing.T, r *repo.Repository, sn *snapshot.Snapshot, want map[string][]byte, window int) {
	t.Helper()
	target := filepath.Join(t.TempDir(), "restored")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	stop := snapshot.WatchFDs(t, target)
	err := snapshot.Restore(context.Background(), r, sn, snapshot.RestoreOptions{Target: target, Cores: 2, OpenFiles: window})
	peak := stop()
	if err != nil {
		t.Fatal(err)
	}
	if peak > window || peak == 0 {
		t.Fatalf("%d of %d files open at once with a window of %d", peak, len(want), window)
	}
	t.Logf("window %d: at most %d of %d files open", window, peak, len(want))
	entries, err := os.ReadDir(target)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Fatalf("restored %d files, want %d", len(entries), len(want))
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(target, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("window %d: %s: restored %d bytes differ from the %d expected", window, name, len(got), len(data))
		}
	}
}
