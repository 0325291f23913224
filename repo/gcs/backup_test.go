package gcs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/retry"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// faultRetry makes retries quick and cuts stalled requests off after a
// second, so a test with many faults stays short.
func faultRetry(log *slog.Logger) retry.Options {
	return retry.Options{
		Log:            log,
		MaxElapsed:     time.Minute,
		InitialBackoff: 5 * time.Millisecond,
		MaxBackoff:     100 * time.Millisecond,
		Timeout:        time.Second,
		MinRate:        16 << 20,
	}
}

// newFaultyEmulator starts an emulator behind a faults handler.
func newFaultyEmulator(t *testing.T, rate float64) (*emulator, *faults) {
	var f *faults
	emu := newEmulator(t, func(next http.Handler) http.Handler {
		f = newFaults(next, rate, 7)
		return f
	})
	t.Cleanup(func() { close(f.stop) }) // before the server closes: cleanups run last first
	return emu, f
}

// TestConformanceFaulty runs the conformance suite through the faults, with
// the retry decorator: a caller must not see them.
func TestConformanceFaulty(t *testing.T) {
	emu, f := newFaultyEmulator(t, 0.15)
	t.Cleanup(func() {
		total, failed, kinds := f.stats()
		t.Logf("%d requests, %d failed (%s)", total, failed, kinds)
	})
	backendtest.Run(t, func(t *testing.T) repo.Backend {
		return retry.New(emu.open(t, emu.bucket(), "p"), faultRetry(nil))
	})
}

// countingHandler counts log records.
type countingHandler struct {
	slog.Handler
	n *atomic.Int64
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.n.Add(1)
	return nil
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }

// dirSource freezes a directory with a fixed listing, as a server
// answering FREEZE would.
type dirSource struct {
	dir   string
	reply []any
}

func (d *dirSource) Info() source.Info {
	return source.Info{Kind: "rocksdb-freeze", Address: "test", DataDir: d.dir}
}

func (d *dirSource) Freeze(context.Context) (*source.Frozen, error) {
	l, err := source.ParseFreezeReply(d.reply)
	if err != nil {
		return nil, err
	}
	return source.NewFrozen(l, d.dir, nil), nil
}

// database writes a directory shaped like a RocksDB one and returns what a
// snapshot of it holds.
func database(t *testing.T, rng *rand.Rand, dir string, sizes ...int) (*dirSource, map[string][]byte) {
	files := map[string][]byte{}
	src := &dirSource{dir: dir}
	for i, n := range sizes {
		data := make([]byte, n)
		for j := range data {
			if i%2 == 0 {
				data[j] = byte(rng.Uint32())
			} else {
				data[j] = "snap backup "[rng.IntN(12)]
			}
		}
		name := fmt.Sprintf("%06d.sst", 10+i)
		files[name] = data
		src.reply = append(src.reply, "/"+name)
	}
	wal := bytes.Repeat([]byte("put key value;"), 20000)
	files["000099.log"] = wal
	files["MANIFEST-000005"] = []byte(strings.Repeat("manifest", 64))
	files["CURRENT"] = []byte("MANIFEST-000005\n")
	src.reply = append(src.reply, fmt.Sprintf("/000099.log:%d", len(wal)), "/MANIFEST-000005:512", "/CURRENT")
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return src, files
}

// TestBackupRestoreThroughFaults backs up and restores through a link on
// which a fifth of all requests fail: the retries must hide every failure,
// and the bucket must afterwards hold only whole objects.
func TestBackupRestoreThroughFaults(t *testing.T) {
	emu, f := newFaultyEmulator(t, 0.2)
	bucket := emu.bucket()
	var retries atomic.Int64
	log := slog.New(countingHandler{n: &retries})
	open := func() repo.Backend {
		return retry.New(emu.open(t, bucket, "prod/db-7"), faultRetry(log))
	}
	ctx := t.Context()
	init := repo.InitOptions{
		ChunkerMin: 16 << 10, ChunkerAvg: 64 << 10, ChunkerMax: 256 << 10,
		PackSize: 1 << 20,
		KDF:      repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
	}
	be := open()
	defer be.Close()
	r, err := repo.Init(ctx, be, "pw", init, repo.Options{Connections: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	rng := rand.New(rand.NewPCG(3, 3))
	dir := t.TempDir()
	src, files := database(t, rng, dir, 8<<20, 1<<20, 4<<20)
	first, err := snapshot.Backup(ctx, r, src, snapshot.BackupOptions{Host: "h"})
	if err != nil {
		t.Fatalf("backup through faults: %v", err)
	}
	// The database moves on: a new table and a longer WAL.
	files2 := map[string][]byte{}
	for k, v := range files {
		files2[k] = v
	}
	src2, more := database(t, rng, t.TempDir(), 1, 1, 1, 2<<20)
	for k, v := range more {
		if _, ok := files2[k]; !ok {
			files2[k] = v
		}
	}
	for _, name := range []string{"000010.sst", "000011.sst", "000012.sst"} {
		os.WriteFile(filepath.Join(src2.dir, name), files[name], 0o600)
	}
	second, err := snapshot.Backup(ctx, r, src2, snapshot.BackupOptions{Host: "h"})
	if err != nil {
		t.Fatalf("second backup through faults: %v", err)
	}

	// A new process restores both.
	be2 := open()
	defer be2.Close()
	r2, err := repo.Open(ctx, be2, "pw", repo.Options{Connections: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	snaps, err := snapshot.List(ctx, r2)
	if err != nil || len(snaps) != 2 {
		t.Fatalf("list snapshots: %d, %v", len(snaps), err)
	}
	for _, c := range []struct {
		sn    *snapshot.Snapshot
		files map[string][]byte
	}{{first, files}, {second, files2}} {
		sn, err := snapshot.Load(ctx, r2, c.sn.ID)
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(t.TempDir(), "restore")
		if err := snapshot.Restore(ctx, r2, sn, snapshot.RestoreOptions{Target: target}); err != nil {
			t.Fatalf("restore through faults: %v", err)
		}
		for name, want := range c.files {
			got, err := os.ReadFile(filepath.Join(target, name))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("restored %s differs (%v)", name, err)
			}
		}
	}

	total, failed, kinds := f.stats()
	t.Logf("%d requests, %d failed (%s), %d retries", total, failed, kinds, retries.Load())
	if total < 50 || float64(failed) < 0.1*float64(total) {
		t.Errorf("only %d of %d requests failed; the test wants at least 10%%", failed, total)
	}

	// Check, without faults, that every stored object is whole: each is
	// named by the hash of its bytes.
	f.setRate(0)
	checkObjects(t, open(), r2)

	// And snap check --read-data, with the faults back on.
	f.setRate(0.2)
	be3 := open()
	defer be3.Close()
	r3, err := repo.Open(ctx, be3, "pw", repo.Options{Connections: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer r3.Close()
	res, err := snapshot.Check(ctx, r3, snapshot.CheckOptions{ReadData: true})
	if err != nil {
		t.Fatalf("check --read-data through faults: %v", err)
	}
	if len(res.Errors) > 0 {
		t.Fatalf("check --read-data found problems: %+v", res.Errors)
	}
}

// checkObjects loads every content-addressed object and compares its hash
// with its name, and checks that every pack the index names is there.
func checkObjects(t *testing.T, be repo.Backend, r *repo.Repository) {
	t.Helper()
	ctx := t.Context()
	defer be.Close()
	packs := map[string]bool{}
	for _, typ := range []repo.FileType{repo.KeyFile, repo.SnapshotFile, repo.IndexFile, repo.PackFile} {
		var names []string
		if err := be.List(ctx, typ, func(fi repo.FileInfo) error {
			names = append(names, fi.Name)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			h := repo.Handle{Type: typ, Name: name}
			err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
				data, err := io.ReadAll(rd)
				if err != nil {
					return err
				}
				want := name
				if typ == repo.SnapshotFile || typ == repo.IndexFile {
					// <owner>-<hash> in a version 2 repository
					_, id, ok := repo.ParseObjectName(typ, name)
					if !ok {
						return fmt.Errorf("not a name of the layout")
					}
					want = id.String()
				}
				if got := repo.Hash(data).String(); got != want {
					return fmt.Errorf("content hashes to %s", got)
				}
				return nil
			})
			if err != nil {
				t.Errorf("%v: %v", h, err)
			}
			if typ == repo.PackFile {
				packs[name] = true
			}
		}
	}
	for _, id := range r.Index().Packs() {
		if !packs[id.String()] {
			t.Errorf("pack %s is indexed but not stored", id)
		}
	}
	t.Logf("checked %d packs", len(packs))
}

// TestSaveLostResponse stores an upload and then loses GCS's answer: the
// retry finds the object (412) and, since its bytes are the ones saved,
// reports success. A single-request upload, unlike a resumable one, can be
// failed after forwarding without confusing the emulator.
func TestSaveLostResponse(t *testing.T) {
	var lost atomic.Int32
	emu := newEmulator(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isUpload(r) && lost.Add(1) == 1 {
				next.ServeHTTP(httptest.NewRecorder(), r)
				writeError(w, http.StatusBadGateway)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	be := retry.New(emu.open(t, emu.bucket(), "p"), faultRetry(nil))
	defer be.Close()
	data := bytes.Repeat([]byte("pack"), 1<<18)
	h := repo.Handle{Type: repo.PackFile, Name: repo.Hash(data).String()}
	if err := be.Save(t.Context(), h, data); err != nil {
		t.Fatalf("save whose response was lost: %v", err)
	}
	if n := lost.Load(); n != 2 {
		t.Errorf("%d upload attempts, want 2", n)
	}
	// Other bytes under the name are still refused.
	if err := be.Save(t.Context(), h, data[1:]); !errors.Is(err, repo.ErrExists) {
		t.Errorf("save of other bytes: got %v, want ErrExists", err)
	}
}
