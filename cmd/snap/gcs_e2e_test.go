package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/snapbackup/snap/internal/testserver"
	"github.com/snapbackup/snap/repo"
)

// fakeGCSVersion is the emulator the GCS end-to-end tests run.
const fakeGCSVersion = "v1.56.1"

var (
	fakeGCSOnce sync.Once
	fakeGCSBin  string
	fakeGCSErr  error
)

// fakeGCSBinary finds fake-gcs-server on PATH or installs it into a GOBIN
// under the temp directory, kept between runs. It skips the test if that
// fails, unless CI=true: there the tests must run.
func fakeGCSBinary(t *testing.T) string {
	t.Helper()
	fakeGCSOnce.Do(func() {
		if p, err := exec.LookPath("fake-gcs-server"); err == nil {
			fakeGCSBin = p
			return
		}
		gobin := filepath.Join(os.TempDir(), "snap-test-fake-gcs-server-"+fakeGCSVersion)
		fakeGCSBin = filepath.Join(gobin, "fake-gcs-server")
		if _, err := os.Stat(fakeGCSBin); err == nil {
			return
		}
		cmd := exec.Command("go", "install", "github.com/fsouza/fake-gcs-server@"+fakeGCSVersion)
		cmd.Dir = os.TempDir() // outside this module
		cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			fakeGCSErr = fmt.Errorf("go install fake-gcs-server@%s: %v\n%s", fakeGCSVersion, err, out)
		}
	})
	if fakeGCSErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(fakeGCSErr)
		}
		t.Skip(fakeGCSErr)
	}
	return fakeGCSBin
}

// fakeGCS is a standalone fake-gcs-server process with an in-memory store.
type fakeGCS struct {
	t    *testing.T
	host string // 127.0.0.1:port, for STORAGE_EMULATOR_HOST
}

func startFakeGCS(t *testing.T) *fakeGCS {
	t.Helper()
	bin := fakeGCSBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	host := fmt.Sprintf("127.0.0.1:%d", port)
	var logs bytes.Buffer
	cmd := exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", fmt.Sprint(port),
		"-backend", "memory", "-public-host", host, "-log-level", "error")
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("fake-gcs-server output:\n%s", logs.String())
		}
	})
	f := &fakeGCS{t: t, host: host}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + host + "/_internal/healthcheck")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return f
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fake-gcs-server did not start on %s: %v\n%s", host, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (f *fakeGCS) createBucket(name string) {
	f.t.Helper()
	resp, err := http.Post("http://"+f.host+"/storage/v1/b?project=test", "application/json",
		strings.NewReader(fmt.Sprintf(`{"name":%q}`, name)))
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		f.t.Fatalf("create bucket %s: %s\n%s", name, resp.Status, body)
	}
}

// objects lists the objects under prefix: name -> size.
func (f *fakeGCS) objects(bucket, prefix string) map[string]int64 {
	f.t.Helper()
	objs := map[string]int64{}
	token := ""
	for {
		q := url.Values{"prefix": {prefix}, "pageToken": {token}}
		resp, err := http.Get("http://" + f.host + "/storage/v1/b/" + bucket + "/o?" + q.Encode())
		if err != nil {
			f.t.Fatal(err)
		}
		var page struct {
			Items []struct {
				Name string `json:"name"`
				Size int64  `json:"size,string"`
			} `json:"items"`
			NextPageToken string `json:"nextPageToken"`
		}
		err = json.NewDecoder(resp.Body).Decode(&page)
		resp.Body.Close()
		if err != nil {
			f.t.Fatal(err)
		}
		for _, it := range page.Items {
			objs[it.Name] = it.Size
		}
		if page.NextPageToken == "" {
			return objs
		}
		token = page.NextPageToken
	}
}

func (f *fakeGCS) download(bucket, name string) []byte {
	f.t.Helper()
	resp, err := http.Get("http://" + f.host + "/storage/v1/b/" + bucket + "/o/" + url.PathEscape(name) + "?alt=media")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		f.t.Fatalf("download %s: %s %v", name, resp.Status, err)
	}
	return data
}

// checkWhole downloads every object under prefix but config, key and lock
// files and checks that it hashes to its name: no torn or partial object
// was ever stored.
func (f *fakeGCS) checkWhole(bucket, prefix string) int {
	f.t.Helper()
	n := 0
	for name := range f.objects(bucket, prefix) {
		rel := strings.TrimPrefix(name, prefix)
		if rel == "config" || strings.HasPrefix(rel, "locks/") {
			continue
		}
		base := name[strings.LastIndex(name, "/")+1:]
		if strings.HasPrefix(rel, "snapshots/") || strings.HasPrefix(rel, "index/") {
			base = base[strings.LastIndex(base, "-")+1:] // <owner>-<hash> (version 2)
		}
		if got := repo.Hash(f.download(bucket, name)).String(); got != base {
			f.t.Errorf("object %s holds bytes that hash to %s", name, got)
		}
		n++
	}
	return n
}

// gcsEnv is an env whose repository is gs://bucket/prefix on the emulator.
func gcsEnv(t *testing.T, f *fakeGCS, location string) *env {
	e := newEnv(t)
	e.repo = location
	e.vars = append(e.vars, "SNAP_REPO="+location, "STORAGE_EMULATOR_HOST="+f.host)
	return e
}

// TestGCSEndToEnd drives the binary against a standalone emulator: init,
// backup, ls, restore --latest, and the bytes come back.
func TestGCSEndToEnd(t *testing.T) {
	gcs := startFakeGCS(t)
	gcs.createBucket("snap-e2e")
	srv := newFakeServer(t)
	dir := dataDir(t)
	srv.list(goodListing...)
	e := gcsEnv(t, gcs, "gs://snap-e2e/prod/db-7")
	e.vars = append(e.vars, "SNAP_SERVER="+srv.m.Addr(), "SNAP_DATA="+dir)

	if r := e.ok(nil, "init"); !strings.Contains(r.stdout, "gs://snap-e2e/prod/db-7") {
		t.Errorf("init does not name the bucket: %s", r.stdout)
	}
	if r := e.run("init"); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
		t.Errorf("second init: exit %d, %s", r.code, r.stderr)
	}
	var b backupJSON
	e.ok(&b, "backup", "--json")
	if b.Files != len(goodListing) || b.BytesNew == 0 {
		t.Errorf("backup: %+v", b)
	}
	var snaps []struct {
		ID string `json:"id"`
	}
	e.ok(&snaps, "ls", "--json")
	if len(snaps) != 1 || snaps[0].ID != b.SnapshotID {
		t.Fatalf("ls: %+v, want snapshot %s", snaps, b.SnapshotID)
	}
	target := filepath.Join(t.TempDir(), "restored")
	e.ok(nil, "restore", "--latest", "--target", target)
	want := map[string]int64{"000010.sst": -1, "OPTIONS-000007": -1, "MANIFEST-000005": 514, "000011.log": 4000}
	for name, n := range want {
		orig, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if n >= 0 {
			orig = orig[:n]
		}
		got, err := os.ReadFile(filepath.Join(target, name))
		if err != nil || !bytes.Equal(got, orig) {
			t.Errorf("restored %s differs from the snapshot's %d bytes (%v)", name, len(orig), err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(target, "CURRENT")); err != nil || string(got) != "MANIFEST-000005\n" {
		t.Errorf("restored CURRENT = %q, %v", got, err)
	}

	// The layout in the bucket, under the prefix and nowhere else.
	objs := gcs.objects("snap-e2e", "")
	kinds := map[string]int{}
	for name := range objs {
		rel, ok := strings.CutPrefix(name, "prod/db-7/")
		if !ok {
			t.Errorf("object %s outside the prefix", name)
			continue
		}
		kind, _, _ := strings.Cut(rel, "/")
		kinds[kind]++
	}
	for _, k := range []string{"config", "keys", "data", "index", "snapshots"} {
		if kinds[k] == 0 {
			t.Errorf("no %s object in the bucket: %v", k, kinds)
		}
	}
	gcs.checkWhole("snap-e2e", "prod/db-7/")

	// Wrong bucket, wrong prefix: clear errors.
	bad := gcsEnv(t, gcs, "gs://no-such-bucket/prod")
	if r := bad.run("ls"); r.code != 1 || !strings.Contains(r.stderr, `bucket "no-such-bucket" not found`) {
		t.Errorf("ls in a missing bucket: exit %d, %s", r.code, r.stderr)
	}
	empty := gcsEnv(t, gcs, "gs://snap-e2e/staging")
	if r := empty.run("ls"); r.code != 10 || !strings.Contains(r.stderr, "no snap repository at gs://snap-e2e/staging") {
		t.Errorf("ls where there is no repository: exit %d, %s", r.code, r.stderr)
	}
}

// TestGCSKilledBackup kills a backup with SIGKILL while its uploads are in
// flight: no partial object appears, and the next backup and a restore
// work.
func TestGCSKilledBackup(t *testing.T) {
	gcs := startFakeGCS(t)
	gcs.createBucket("snap-kill")
	srv := newFakeServer(t)
	dir := dataDir(t)
	srv.list(goodListing...)
	e := gcsEnv(t, gcs, "gs://snap-kill/r")
	e.vars = append(e.vars, "SNAP_SERVER="+srv.m.Addr(), "SNAP_DATA="+dir)
	e.ok(nil, "init", "--pack-size", "1")
	var first backupJSON
	e.ok(&first, "backup", "--json")

	big := randomFile(t, filepath.Join(dir, "000012.sst"), 96<<20)
	srv.list(append(goodListing, "/000012.sst")...)
	countPacks := func() int {
		n := 0
		for name := range gcs.objects("snap-kill", "r/data/") {
			if name != "" {
				n++
			}
		}
		return n
	}
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			t.Skip("the backup finished before it could be killed five times; machine too fast for this test")
		}
		cmd := exec.Command(snapBin, "backup")
		cmd.Env = append(os.Environ(), e.vars...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		before := countPacks()
		deadline := time.Now().Add(60 * time.Second)
		for countPacks() < before+5 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok && ee.ExitCode() == -1 {
			t.Logf("killed the backup with %d packs stored", countPacks()-before)
			break
		}
	}
	if n := e.snapshots(); n != 1 {
		t.Fatalf("%d snapshots after a killed backup, want 1", n)
	}
	n := gcs.checkWhole("snap-kill", "r/")
	t.Logf("%d objects in the bucket after the kill, all whole", n)

	target := filepath.Join(t.TempDir(), "first")
	e.ok(nil, "restore", first.SnapshotID, "--target", target)
	var second backupJSON
	e.ok(&second, "backup", "--json")
	target2 := filepath.Join(t.TempDir(), "second")
	e.ok(nil, "restore", "--latest", "--target", target2)
	got, err := os.ReadFile(filepath.Join(target2, "000012.sst"))
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("restored 000012.sst differs (%v)", err)
	}
	t.Logf("the backup after the kill stored %d new bytes of %d", second.BytesNew, len(big))
}

// TestGCSRocksDB backs a live RocksDB server up into the emulator and
// checks the restore with ldb.
func TestGCSRocksDB(t *testing.T) {
	bin := testserver.Binary(t)
	if _, err := exec.LookPath("ldb"); err != nil {
		t.Fatal("ldb not found: run make deps (Debian package rocksdb-tools)")
	}
	gcs := startFakeGCS(t)
	gcs.createBucket("snap-rocksdb")
	data := filepath.Join(t.TempDir(), "data")
	srv := testserver.Start(t, bin, data, "--write_buffer_size", "4194304")
	c := redis.NewClient(&redis.Options{Addr: srv.Addr})
	defer c.Close()
	rng := mrand.New(mrand.NewPCG(5, 6))
	want := map[string]string{}
	for i := range 2 {
		writeKeys(t, c, rng, want, "a", i*10000, 10000)
		command(t, c, "FLUSH")
	}
	writeKeys(t, c, rng, want, "a", 20000, 3000) // stays in the WAL

	e := gcsEnv(t, gcs, "gs://snap-rocksdb/db")
	e.vars = append(e.vars, "SNAP_SERVER="+srv.Addr, "SNAP_DATA="+data)
	e.ok(nil, "init")
	e.ok(nil, "backup")
	writeKeys(t, c, rng, map[string]string{}, "z", 0, 100) // after the snapshot: not restored
	target := filepath.Join(t.TempDir(), "restored")
	e.ok(nil, "restore", "--latest", "--target", target)
	checkConsistency(t, target)
	got := ldbScan(t, target)
	if len(got) != len(want) {
		t.Errorf("restored %d keys, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			t.Fatalf("key %s: restored %q, want %q", k, got[k], v)
		}
	}
}
