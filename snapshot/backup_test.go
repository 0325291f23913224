package snapshot_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/snapbackup/snap/chunker"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/limit"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// Small sizes so that a few MiB of test data make many chunks and packs.
var testInit = repo.InitOptions{
	ChunkerMin: 16 << 10, ChunkerAvg: 64 << 10, ChunkerMax: 256 << 10,
	PackSize: 1 << 20,
	KDF:      repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
}

func newRepo(t *testing.T, be repo.Backend) *repo.Repository {
	t.Helper()
	r, err := repo.Init(context.Background(), be, "pw", testInit, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// reopen opens the repository afresh, as a new process would.
func reopen(t *testing.T, be repo.Backend) *repo.Repository {
	t.Helper()
	ctx := context.Background()
	r, err := repo.Open(ctx, be, "pw", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// dirSource freezes a directory with a listing the test controls, like a
// server answering FREEZE would.
type dirSource struct {
	dir      string
	reply    []any
	freezes  atomic.Int32
	releases atomic.Int32
}

func (d *dirSource) Info() source.Info {
	return source.Info{Kind: "rocksdb-freeze", Address: "test", DataDir: d.dir}
}

func (d *dirSource) Freeze(context.Context) (*source.Frozen, error) {
	l, err := source.ParseFreezeReply(d.reply)
	if err != nil {
		return nil, err
	}
	d.freezes.Add(1)
	return source.NewFrozen(l, d.dir, func(context.Context) error {
		d.releases.Add(1)
		return nil
	}), nil
}

func (d *dirSource) balanced(t *testing.T) {
	t.Helper()
	if f, r := d.freezes.Load(), d.releases.Load(); f != r {
		t.Fatalf("%d freezes but %d releases", f, r)
	}
}

func randBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// compressible makes text-like data zstd can shrink.
func compressible(rng *rand.Rand, n int) []byte {
	var buf bytes.Buffer
	for buf.Len() < n {
		fmt.Fprintf(&buf, `{"id":%d,"user":"u%05d","ts":%d,"payload":"%x"}`+"\n", rng.Int64(), rng.IntN(50000), rng.Int64N(1<<40), randBytes(rng, 8))
	}
	return buf.Bytes()[:n]
}

func writeFile(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func appendFile(t *testing.T, dir, name string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// fixture is a data directory shaped like a RocksDB one: tables, a WAL and
// a MANIFEST longer on disk than listed, a CURRENT that already names a
// newer MANIFEST.
type fixture struct {
	dir   string
	files map[string][]byte // what the snapshot must hold
	src   *dirSource
}

func newFixture(t *testing.T, seed uint64) *fixture {
	rng := rand.New(rand.NewPCG(seed, seed))
	dir := t.TempDir()
	fx := &fixture{dir: dir, files: map[string][]byte{}}
	for i, n := range []int{3 << 20, 1 << 20, 700 << 10} {
		name := fmt.Sprintf("%06d.sst", 10+i)
		data := randBytes(rng, n)
		if i == 1 {
			data = compressible(rng, n)
		}
		writeFile(t, dir, name, data)
		fx.files[name] = data
	}
	wal := compressible(rng, 900<<10)
	writeFile(t, dir, "000013.log", append(wal, randBytes(rng, 5000)...)) // tail not yet listed
	fx.files["000013.log"] = wal
	man := randBytes(rng, 514)
	writeFile(t, dir, "MANIFEST-000005", append(man, 1, 2, 3))
	fx.files["MANIFEST-000005"] = man
	writeFile(t, dir, "CURRENT", []byte("MANIFEST-000099\n")) // newer than listed
	fx.files["CURRENT"] = []byte("MANIFEST-000005\n")
	opts := compressible(rng, 6000)
	writeFile(t, dir, "OPTIONS-000007", opts)
	fx.files["OPTIONS-000007"] = opts
	fx.src = &dirSource{dir: dir}
	fx.relist()
	return fx
}

// relist sets the FREEZE reply from fx.files.
func (fx *fixture) relist() {
	fx.src.reply = nil
	for name, data := range fx.files {
		switch source.Classify(name) {
		case source.RoleWAL, source.RoleManifest:
			fx.src.reply = append(fx.src.reply, fmt.Sprintf("/%s:%d", name, len(data)))
		default:
			fx.src.reply = append(fx.src.reply, "/"+name)
		}
	}
}

func backup(t *testing.T, r *repo.Repository, src source.Source, force bool) *snapshot.Snapshot {
	t.Helper()
	sn, err := snapshot.Backup(context.Background(), r, src, snapshot.BackupOptions{Host: "h", Force: force})
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// checkRestore restores sn into a new directory and compares every file.
func checkRestore(t *testing.T, r *repo.Repository, sn *snapshot.Snapshot, want map[string][]byte) string {
	t.Helper()
	target := filepath.Join(t.TempDir(), "restored")
	if err := snapshot.Restore(context.Background(), r, sn, snapshot.RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	compareDir(t, target, want)
	return target
}

// compareDir checks that dir holds exactly the files of want.
func compareDir(t *testing.T, target string, want map[string][]byte) {
	t.Helper()
	entries, err := os.ReadDir(target)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("restored %d files %v, want %d", len(entries), names, len(want))
	}
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(target, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: restored %d bytes differ from the %d expected", name, len(got), len(data))
		}
	}
}

func TestBackupRestoreRoundTrip(t *testing.T) {
	fx := newFixture(t, 1)
	be := mem.New()
	r := newRepo(t, be)
	sn := backup(t, r, fx.src, false)
	fx.src.balanced(t)
	var total int64
	for _, d := range fx.files {
		total += int64(len(d))
	}
	if sn.Summary.Files != len(fx.files) || sn.Summary.Bytes != total || sn.Summary.BytesRead != total {
		t.Fatalf("summary %+v, want %d files, %d bytes, all read", sn.Summary, len(fx.files), total)
	}
	if sn.Summary.BytesStored >= total {
		t.Errorf("stored %d bytes for %d: compressible data did not shrink", sn.Summary.BytesStored, total)
	}
	// A new process sees the same.
	checkRestore(t, reopen(t, be), sn, fx.files)
}

func TestIncrementalReadsOnlyNewBytes(t *testing.T) {
	fx := newFixture(t, 2)
	be := mem.New()
	r := newRepo(t, be)
	first := backup(t, r, fx.src, false)
	tree1, err := snapshot.LoadTree(context.Background(), r, first.Tree)
	if err != nil {
		t.Fatal(err)
	}
	lastChunk := map[string]int64{}
	for _, f := range tree1.Files {
		lastChunk[f.Name] = int64(f.Sizes[len(f.Sizes)-1])
	}

	rng := rand.New(rand.NewPCG(9, 9))
	// The server wrote more: the WAL grew (the unlisted tail is now listed
	// plus more), the MANIFEST grew, and a flush made a new table.
	walOnDisk, _ := os.ReadFile(filepath.Join(fx.dir, "000013.log"))
	more := compressible(rng, 200<<10)
	appendFile(t, fx.dir, "000013.log", more)
	oldWAL := int64(len(fx.files["000013.log"]))
	fx.files["000013.log"] = append(walOnDisk, more...)
	appendFile(t, fx.dir, "MANIFEST-000005", []byte("more manifest"))
	manOnDisk, _ := os.ReadFile(filepath.Join(fx.dir, "MANIFEST-000005"))
	oldMan := int64(len(fx.files["MANIFEST-000005"]))
	fx.files["MANIFEST-000005"] = manOnDisk
	newSST := randBytes(rng, 1<<20)
	writeFile(t, fx.dir, "000014.sst", newSST)
	fx.files["000014.sst"] = newSST
	fx.relist()

	r2 := reopen(t, be)
	second := backup(t, r2, fx.src, false)
	want := int64(len(newSST)) +
		int64(len(fx.files["000013.log"])) - (oldWAL - lastChunk["000013.log"]) +
		int64(len(manOnDisk)) - (oldMan - lastChunk["MANIFEST-000005"]) +
		int64(len("MANIFEST-000005\n"))
	if second.Summary.BytesRead != want {
		t.Fatalf("incremental read %d bytes, want exactly %d (new table, WAL and MANIFEST tails from their last chunk, CURRENT)", second.Summary.BytesRead, want)
	}
	if second.Parent == nil || *second.Parent != first.ID {
		t.Fatalf("parent %v, want %s", second.Parent, first.ID.Str())
	}
	// New chunks: the new table's, the re-cut WAL and MANIFEST tails, the
	// tree. Far fewer bytes than the database.
	if second.Summary.BytesNew > want+64<<10 {
		t.Fatalf("stored %d new bytes, more than the %d read", second.Summary.BytesNew, want)
	}
	checkRestore(t, r2, second, fx.files)
	// The first snapshot still restores as it was.
	checkRestore(t, r2, first, map[string][]byte{
		"000010.sst": fx.files["000010.sst"], "000011.sst": fx.files["000011.sst"], "000012.sst": fx.files["000012.sst"],
		"000013.log": fx.files["000013.log"][:oldWAL], "MANIFEST-000005": manOnDisk[:oldMan],
		"CURRENT": []byte("MANIFEST-000005\n"), "OPTIONS-000007": fx.files["OPTIONS-000007"],
	})

	forced := backup(t, r2, fx.src, true)
	var total int64
	for _, d := range fx.files {
		total += int64(len(d))
	}
	if forced.Summary.BytesRead != total || forced.Summary.BlobsNew != 0 {
		t.Fatalf("--force read %d of %d bytes and stored %d new blobs; want all read and nothing new (the tree is the same blob)", forced.Summary.BytesRead, total, forced.Summary.BlobsNew)
	}
}

func TestReplacedFileIsReadAgain(t *testing.T) {
	fx := newFixture(t, 3)
	be := mem.New()
	r := newRepo(t, be)
	backup(t, r, fx.src, false)
	// Same name and size, new content and inode: must not be taken from the parent.
	data := randBytes(rand.New(rand.NewPCG(4, 4)), len(fx.files["000011.sst"]))
	tmp := filepath.Join(fx.dir, "tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(fx.dir, "000011.sst")); err != nil {
		t.Fatal(err)
	}
	fx.files["000011.sst"] = data
	sn := backup(t, r, fx.src, false)
	if sn.Summary.BytesRead < int64(len(data)) {
		t.Fatalf("read %d bytes; the replaced table (%d bytes) was not read", sn.Summary.BytesRead, len(data))
	}
	checkRestore(t, r, sn, fx.files)
}

// TestBackupCutsLikeChunker checks that the reader, which feeds the chunker
// a block at a time, stores every file in the chunks the chunker cuts from
// the whole file: for sizes around the chunker's limits, an empty WAL, with
// one reader and several, paced or not, and for files that grew and are
// read from their last chunk. The repository format depends on it.
func TestBackupCutsLikeChunker(t *testing.T) {
	const min, avg, max = 16 << 10, 64 << 10, 256 << 10 // testInit
	rng := rand.New(rand.NewPCG(13, 13))
	fx := newFixture(t, 13)
	dir, files := fx.dir, fx.files
	for i, n := range []int{1, min - 1, min, min + 1, avg, max - 1, max, max + 1, 3*max + 5, 5 << 20} {
		data := randBytes(rng, n)
		if i%3 == 1 {
			data = compressible(rng, n)
		}
		name := fmt.Sprintf("%06d.sst", 100+i)
		writeFile(t, dir, name, data)
		files[name] = data
	}
	zeros := make([]byte, 2*max+3) // cut at max
	writeFile(t, dir, "000200.sst", zeros)
	files["000200.sst"] = zeros
	writeFile(t, dir, "000201.log", nil)
	files["000201.log"] = nil
	wal := compressible(rng, 700<<10)
	writeFile(t, dir, "000202.log", wal)
	files["000202.log"] = wal
	fx.relist()
	src := fx.src

	check := func(t *testing.T, r *repo.Repository, sn *snapshot.Snapshot) {
		t.Helper()
		ch, err := chunker.New(r.ChunkerParams())
		if err != nil {
			t.Fatal(err)
		}
		tree, err := snapshot.LoadTree(context.Background(), r, sn.Tree)
		if err != nil {
			t.Fatal(err)
		}
		if len(tree.Files) != len(files) {
			t.Fatalf("%d files in the tree, want %d", len(tree.Files), len(files))
		}
		for _, f := range tree.Files {
			var got []int
			for _, n := range f.Sizes {
				got = append(got, int(n))
			}
			if want := ch.Split(files[f.Name]); !slices.Equal(got, want) {
				t.Errorf("%s: chunks %v, the chunker cuts %v", f.Name, got, want)
			}
		}
	}
	for _, o := range []snapshot.BackupOptions{
		{Readers: 1},
		{Readers: 3, Workers: 1},
		{ReadLimit: limit.NewLimiter(1 << 30)},
	} {
		t.Run(fmt.Sprintf("readers=%d,limit=%d", o.Readers, o.ReadLimit.Rate()), func(t *testing.T) {
			o.Host = "h"
			r := newRepo(t, mem.New())
			sn, err := snapshot.Backup(context.Background(), r, src, o)
			if err != nil {
				t.Fatal(err)
			}
			check(t, r, sn)
			checkRestore(t, r, sn, files)
		})
	}

	// The WAL grows; the next backup reads it from the start of its last
	// chunk and must cut the rest as the whole file would be cut.
	r := newRepo(t, mem.New())
	backup(t, r, src, false)
	more := compressible(rng, 300<<10)
	appendFile(t, dir, "000202.log", more)
	files["000202.log"] = append(wal, more...)
	fx.relist()
	sn := backup(t, r, src, false)
	if sn.Summary.BytesRead >= int64(len(files["000202.log"])) {
		t.Fatalf("read %d bytes: the grown WAL was read whole", sn.Summary.BytesRead)
	}
	check(t, r, sn)
	checkRestore(t, r, sn, files)
}

func TestBackupBadListing(t *testing.T) {
	cases := []struct {
		name  string
		setup func(fx *fixture)
		want  string
	}{
		{"missing file", func(fx *fixture) { os.Remove(filepath.Join(fx.dir, "000011.sst")) }, "000011.sst"},
		{"short WAL", func(fx *fixture) {
			fx.src.reply = append(fx.src.reply[:0:0], fx.src.reply...)
			for i, e := range fx.src.reply {
				if strings.HasPrefix(e.(string), "/000013.log:") {
					fx.src.reply[i] = "/000013.log:99999999"
				}
			}
		}, "shorter than the 99999999 bytes the server listed"},
		{"malformed reply", func(fx *fixture) { fx.src.reply = append(fx.src.reply, "/../etc/passwd") }, "passwd"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fx := newFixture(t, 5)
			tc.setup(fx)
			be := mem.New()
			r := newRepo(t, be)
			_, err := snapshot.Backup(context.Background(), r, fx.src, snapshot.BackupOptions{Host: "h"})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			fx.src.balanced(t)
			assertNoSnapshots(t, be)
		})
	}
}

func assertNoSnapshots(t *testing.T, be repo.Backend) {
	t.Helper()
	n := 0
	be.List(context.Background(), repo.SnapshotFile, func(repo.FileInfo) error { n++; return nil })
	if n != 0 {
		t.Fatalf("%d snapshots written by a failed backup", n)
	}
}

// TestWriteOrder checks the invariant packs, then index, then snapshot.
func TestWriteOrder(t *testing.T) {
	fx := newFixture(t, 6)
	fb := faulty.New(mem.New())
	r := newRepo(t, fb)
	backup(t, r, fx.src, false)
	var saves []repo.Handle
	for _, c := range fb.Calls() {
		if c.Op == faulty.OpSave && c.Err == nil {
			saves = append(saves, c.Handle)
		}
	}
	last := saves[len(saves)-1]
	if last.Type != repo.SnapshotFile {
		t.Fatalf("last write is %s, want the snapshot", last)
	}
	seenIndex := false
	for _, h := range saves[:len(saves)-1] {
		switch h.Type {
		case repo.IndexFile:
			seenIndex = true
		case repo.PackFile:
			if seenIndex {
				t.Fatalf("pack %s written after the index (single index expected for this size)", h)
			}
		case repo.SnapshotFile:
			t.Fatalf("a second snapshot write %s", h)
		}
	}
	if !seenIndex {
		t.Fatal("no index written")
	}
}

// TestInterruptedBackup fails the Nth storage call for every N until the
// backup succeeds: each failure leaves no snapshot, the freeze ended, and a
// repository where the next backup and a restore of an earlier snapshot
// succeed.
func TestInterruptedBackup(t *testing.T) {
	fx := newFixture(t, 7)
	inner := mem.New()
	fb := faulty.New(inner)
	r := newRepo(t, fb)
	first := backup(t, r, fx.src, false)
	rng := rand.New(rand.NewPCG(8, 8))
	newSST := randBytes(rng, 2<<20)
	writeFile(t, fx.dir, "000020.sst", newSST)
	fx.files["000020.sst"] = newSST
	fx.relist()
	injected := errors.New("injected failure")
	for n := 0; ; n++ {
		if n > 500 {
			t.Fatal("backup never succeeded")
		}
		fb.FailAfter(n, injected)
		rn, err := repo.Open(context.Background(), fb, "pw", repo.Options{})
		if err == nil {
			if err = rn.LoadIndex(context.Background()); err == nil {
				_, err = snapshot.Backup(context.Background(), rn, fx.src, snapshot.BackupOptions{Host: "h"})
			}
			rn.Close()
		}
		fb.FailAfter(-1, nil)
		fx.src.balanced(t)
		if err == nil {
			t.Logf("backup succeeded when the first %d storage calls were allowed", n)
			break
		}
		if !errors.Is(err, injected) {
			t.Fatalf("n=%d: %v", n, err)
		}
		// The earlier snapshot still restores from what is stored.
		r2 := reopen(t, inner)
		snaps, err := snapshot.List(context.Background(), r2)
		if err != nil {
			t.Fatalf("n=%d: %v", n, err)
		}
		if len(snaps) != 1 {
			t.Fatalf("n=%d: %d snapshots after a failed backup", n, len(snaps))
		}
		if n%7 == 0 { // restores are the slow part; a sample suffices
			want := map[string][]byte{}
			for k, v := range fx.files {
				if k != "000020.sst" {
					want[k] = v
				}
			}
			checkRestore(t, r2, first, want)
		}
	}
	r2 := reopen(t, inner)
	snaps, _ := snapshot.List(context.Background(), r2)
	checkRestore(t, r2, snaps[len(snaps)-1], fx.files)
}

func TestRestoreRefusesExistingFiles(t *testing.T) {
	fx := newFixture(t, 10)
	r := newRepo(t, mem.New())
	sn := backup(t, r, fx.src, false)
	ctx := context.Background()

	target := t.TempDir()
	writeFile(t, target, "CURRENT", []byte("MANIFEST-000001\n"))
	err := snapshot.Restore(ctx, r, sn, snapshot.RestoreOptions{Target: target})
	if !errors.Is(err, snapshot.ErrTargetHasDatabase) {
		t.Fatalf("restore over a database: %v", err)
	}

	target = t.TempDir()
	writeFile(t, target, "000010.sst", []byte("precious"))
	err = snapshot.Restore(ctx, r, sn, snapshot.RestoreOptions{Target: target})
	if err == nil || !strings.Contains(err.Error(), "000010.sst") {
		t.Fatalf("restore over a file: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(target, "000010.sst")); string(got) != "precious" {
		t.Fatal("restore changed a file it refused to overwrite")
	}
}

// TestRestoreAfterInterruptedRestore simulates a restore killed after some
// files were written: the marker lets the next restore replace them, and
// without CURRENT the directory never looked like a database.
func TestRestoreAfterInterruptedRestore(t *testing.T) {
	fx := newFixture(t, 11)
	r := newRepo(t, mem.New())
	sn := backup(t, r, fx.src, false)
	target := checkRestore(t, r, sn, fx.files)
	// Turn the finished restore into an interrupted one.
	if err := os.Remove(filepath.Join(target, "CURRENT")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, target, "000011.sst", []byte("half written"))
	var names []string
	for n := range fx.files {
		names = append(names, fmt.Sprintf("%q", n))
	}
	writeFile(t, target, ".snap-restore", []byte(fmt.Sprintf(`{"snapshot":"%s","files":[%s]}`, sn.ID, strings.Join(names, ","))))
	if err := snapshot.Restore(context.Background(), r, sn, snapshot.RestoreOptions{Target: target}); err != nil {
		t.Fatal(err)
	}
	for name, data := range fx.files {
		got, _ := os.ReadFile(filepath.Join(target, name))
		if !bytes.Equal(got, data) {
			t.Fatalf("%s differs after the second restore", name)
		}
	}
	if _, err := os.Stat(filepath.Join(target, ".snap-restore")); !os.IsNotExist(err) {
		t.Fatalf("marker left behind: %v", err)
	}
}

// TestRestoreCorruptPack flips one byte in every pack in turn... one is
// enough: the restore must fail naming the pack, and leave no CURRENT.
func TestRestoreCorruptPack(t *testing.T) {
	fx := newFixture(t, 12)
	be := mem.New()
	r := newRepo(t, be)
	sn := backup(t, r, fx.src, false)
	ctx := context.Background()
	var packs []repo.FileInfo
	be.List(ctx, repo.PackFile, func(fi repo.FileInfo) error { packs = append(packs, fi); return nil })
	for _, p := range packs {
		h := repo.Handle{Type: repo.PackFile, Name: p.Name}
		var data []byte
		be.Load(ctx, h, 0, 0, func(rd io.Reader) error { data, _ = io.ReadAll(rd); return nil })
		data[len(data)/3] ^= 0x40
		be.Remove(ctx, h)
		if err := be.Save(ctx, h, data); err != nil {
			t.Fatal(err)
		}
		break
	}
	target := filepath.Join(t.TempDir(), "r")
	err := snapshot.Restore(ctx, reopen(t, be), sn, snapshot.RestoreOptions{Target: target})
	if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), packs[0].Name) {
		t.Fatalf("restore from a corrupt pack: %v", err)
	}
	if _, err := os.Stat(filepath.Join(target, "CURRENT")); !os.IsNotExist(err) {
		t.Fatal("a failed restore left CURRENT")
	}
}
