package gcs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/gcs"
	"github.com/snapbackup/snap/repo/retry"
)

// emulator is fake-gcs-server in process, served by a test HTTP server so
// that tests can put a handler in front of it.
type emulator struct {
	srv     *fakestorage.Server
	url     string
	buckets atomic.Int64
}

// newEmulator starts an emulator; wrap, if not nil, puts a handler in
// front of it.
func newEmulator(t *testing.T, wrap func(http.Handler) http.Handler) *emulator {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{NoListener: true, Scheme: "http"})
	if err != nil {
		t.Fatal(err)
	}
	h := srv.HTTPHandler()
	if wrap != nil {
		h = wrap(h)
	}
	hs := httptest.NewServer(h)
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		srv.Stop()
	})
	return &emulator{srv: srv, url: hs.URL}
}

// bucket creates a new empty bucket.
func (e *emulator) bucket() string {
	name := fmt.Sprintf("bucket-%d", e.buckets.Add(1))
	e.srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name})
	return name
}

func (e *emulator) options() gcs.Options {
	return gcs.Options{ClientOptions: []option.ClientOption{
		option.WithEndpoint(e.url + "/storage/v1/"),
		option.WithoutAuthentication(),
	}}
}

func (e *emulator) open(t *testing.T, bucket, prefix string) *gcs.Backend {
	t.Helper()
	be, err := gcs.Open(context.Background(), bucket, prefix, e.options())
	if err != nil {
		t.Fatal(err)
	}
	return be
}

func TestConformance(t *testing.T) {
	emu := newEmulator(t, nil)
	for _, prefix := range []string{"", "repos/db-7"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T) repo.Backend {
				return emu.open(t, emu.bucket(), prefix)
			})
		})
	}
}

func TestParseLocation(t *testing.T) {
	for _, tc := range []struct {
		in, bucket, prefix, err string
	}{
		{in: "gs://my-bucket", bucket: "my-bucket"},
		{in: "gs://my-bucket/", bucket: "my-bucket"},
		{in: "gs://my-bucket/snap", bucket: "my-bucket", prefix: "snap"},
		{in: "gs://my_bucket.example.com/a/b/", bucket: "my_bucket.example.com", prefix: "a/b"},
		{in: "gs://", err: "no bucket name"},
		{in: "gs:///prefix", err: "no bucket name"},
		{in: "gs://ab", err: "3 to 63"},
		{in: "gs://My-Bucket", err: "lower-case"},
		{in: "gs://-bucket", err: "start and end"},
		{in: "gs://bucket/a//b", err: "empty path segment"},
		{in: "gs://bucket/a/../b", err: `".." segment`},
		{in: "gs://bucket/a\nb", err: "control character"},
		{in: "s3://bucket", err: "starts with gs://"},
	} {
		bucket, prefix, err := gcs.ParseLocation(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseLocation(%q): got %v, want an error containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || bucket != tc.bucket || prefix != tc.prefix {
			t.Errorf("ParseLocation(%q) = %q, %q, %v; want %q, %q", tc.in, bucket, prefix, err, tc.bucket, tc.prefix)
		}
	}
}

// TestLayout checks the object names in the bucket: the same layout as a
// local repository, under the prefix, and that List skips what does not
// fit it.
func TestLayout(t *testing.T) {
	emu := newEmulator(t, nil)
	bucket := emu.bucket()
	be := emu.open(t, bucket, "/backups/db-7/")
	defer be.Close()
	if got, want := be.Location(), "gs://"+bucket+"/backups/db-7"; got != want {
		t.Errorf("Location = %q, want %q", got, want)
	}
	root := emu.open(t, bucket, "")
	defer root.Close()
	if got, want := root.Location(), "gs://"+bucket; got != want {
		t.Errorf("Location without a prefix = %q, want %q", got, want)
	}
	ctx := t.Context()
	id := strings.Repeat("ab", 32)
	for _, h := range []repo.Handle{
		{Type: repo.ConfigFile},
		{Type: repo.KeyFile, Name: id},
		{Type: repo.PackFile, Name: id},
		{Type: repo.IndexFile, Name: id},
		{Type: repo.SnapshotFile, Name: id},
		{Type: repo.TailFile, Name: id},
		{Type: repo.ClusterFile, Name: id},
		{Type: repo.LockFile, Name: id},
	} {
		if err := be.Save(ctx, h, []byte(h.String())); err != nil {
			t.Fatal(err)
		}
	}
	// Objects another tool or a console left behind.
	for _, name := range []string{
		"backups/db-7/data/ab/README",
		"backups/db-7/data/cd/" + id, // wrong fan-out directory
		"backups/db-7/data/" + id,    // not fanned out
		"backups/db-7/index/sub/" + id,
		"backups/db-7/snapshots/.tmp-1",
		"backups/db-7/snapshots/",
		"backups/db-70/index/" + id, // a sibling prefix
	} {
		emu.srv.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name}, Content: []byte("x")})
	}
	objs, _, err := emu.srv.ListObjectsWithOptions(bucket, fakestorage.ListOptions{Prefix: "backups/db-7/"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, o := range objs {
		names = append(names, o.Name)
	}
	for _, want := range []string{
		"backups/db-7/config",
		"backups/db-7/keys/" + id,
		"backups/db-7/data/ab/" + id,
		"backups/db-7/index/" + id,
		"backups/db-7/snapshots/" + id,
		"backups/db-7/tails/" + id,
		"backups/db-7/cluster/" + id,
		"backups/db-7/locks/" + id,
	} {
		if !slices.Contains(names, want) {
			t.Errorf("object %s missing; bucket holds %q", want, names)
		}
	}
	for _, typ := range repo.AllFileTypes {
		var got []string
		err := be.List(ctx, typ, func(fi repo.FileInfo) error {
			got = append(got, fi.Name)
			if since := time.Since(fi.ModTime); since < -time.Minute || since > time.Minute {
				t.Errorf("list %s: %s has ModTime %v", typ, fi.Name, fi.ModTime)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []string{id}
		h := repo.Handle{Type: typ, Name: id}
		if typ == repo.ConfigFile {
			want = []string{""}
			h.Name = ""
		}
		if fi, err := be.Stat(ctx, h); err != nil || time.Since(fi.ModTime) > time.Minute {
			t.Errorf("stat %v: %+v, %v", h, fi, err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("list %s = %q, want %q", typ, got, want)
		}
	}
}

func TestLoadAtEnd(t *testing.T) {
	emu := newEmulator(t, nil)
	be := emu.open(t, emu.bucket(), "")
	defer be.Close()
	h := repo.Handle{Type: repo.PackFile, Name: strings.Repeat("cd", 32)}
	if err := be.Save(t.Context(), h, []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	// Offset at the end, to the end: nothing, and not an error (as on a
	// local repository).
	err := be.Load(t.Context(), h, 10, 0, func(rd io.Reader) error {
		b, err := io.ReadAll(rd)
		if len(b) != 0 {
			return fmt.Errorf("read %d bytes", len(b))
		}
		return err
	})
	if err != nil {
		t.Errorf("load at the end: %v", err)
	}
}

// TestErrors checks that errors name the bucket and object, say what to do
// about permanent ones and mark transient ones.
func TestErrors(t *testing.T) {
	var status atomic.Int32 // answer every request with this, if not 0
	emu := newEmulator(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if code := int(status.Load()); code != 0 {
				writeError(w, code)
				return
			}
			next.ServeHTTP(w, r)
		})
	})
	bucket := emu.bucket()
	ctx := t.Context()
	h := repo.Handle{Type: repo.IndexFile, Name: strings.Repeat("ef", 32)}
	object := "gs://" + bucket + "/p/index/" + h.Name

	be := emu.open(t, bucket, "p")
	defer be.Close()
	_, err := be.Stat(ctx, h)
	if !errors.Is(err, repo.ErrNotFound) || !strings.Contains(err.Error(), object) {
		t.Errorf("stat missing object: got %v, want ErrNotFound naming %s", err, object)
	}
	err = be.Load(ctx, h, 0, 0, func(io.Reader) error { return nil })
	if !errors.Is(err, repo.ErrNotFound) || !strings.Contains(err.Error(), object) {
		t.Errorf("load missing object: got %v, want ErrNotFound naming %s", err, object)
	}

	// A wrong bucket name is not "no repository": the config's absence
	// is explained.
	missing := emu.open(t, "no-such-bucket", "p")
	defer missing.Close()
	_, err = missing.Stat(ctx, repo.Handle{Type: repo.ConfigFile})
	if err == nil || errors.Is(err, repo.ErrNotFound) || !strings.Contains(err.Error(), `bucket "no-such-bucket" not found`) ||
		!strings.Contains(err.Error(), "check the bucket name") {
		t.Errorf("stat config in a missing bucket: got %v", err)
	}
	err = missing.Save(ctx, h, []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "no-such-bucket") || retry.IsTransient(err) {
		t.Errorf("save in a missing bucket: got %v", err)
	}

	for _, tc := range []struct {
		code      int
		hint      string
		transient bool
	}{
		{http.StatusForbidden, "roles/storage.objectUser", false},
		{http.StatusUnauthorized, "GOOGLE_APPLICATION_CREDENTIALS", false},
		{http.StatusBadRequest, "check the bucket name", false},
		{http.StatusRequestTimeout, "", true},
		{http.StatusTooManyRequests, "", true},
		{http.StatusInternalServerError, "", true},
		{http.StatusServiceUnavailable, "", true},
	} {
		status.Store(int32(tc.code))
		errs := map[string]error{"save": be.Save(ctx, h, []byte("x"))}
		_, errs["stat"] = be.Stat(ctx, h)
		errs["load"] = be.Load(ctx, h, 0, 0, func(io.Reader) error { return nil })
		errs["remove"] = be.Remove(ctx, h)
		errs["list"] = be.List(ctx, repo.IndexFile, func(repo.FileInfo) error { return nil })
		for op, err := range errs {
			msg := fmt.Sprint(err)
			if err == nil || !strings.Contains(msg, "gs://"+bucket+"/p/index/") || !strings.Contains(msg, tc.hint) {
				t.Errorf("%s with HTTP %d: got %v; want an error naming the object with hint %q", op, tc.code, err, tc.hint)
			}
			if retry.IsTransient(err) != tc.transient {
				t.Errorf("%s with HTTP %d: transient = %v, want %v", op, tc.code, !tc.transient, tc.transient)
			}
		}
	}
	status.Store(0)
	if _, err := be.Stat(ctx, h); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("after the errors: stat = %v, want ErrNotFound (nothing stored)", err)
	}
}

// writeError answers like GCS does.
func writeError(w http.ResponseWriter, code int) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"error":{"code":%d,"message":"injected: %s","errors":[{"message":"injected","reason":"test"}]}}`,
		code, http.StatusText(code))
}

// isUpload reports whether r uploads an object.
func isUpload(r *http.Request) bool {
	return r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/upload/")
}

// TestCancelledUploadLeavesNothing cancels a Save while GCS receives its
// bytes: no object may appear, neither whole nor partial. This is what a
// backup killed mid-upload leaves (the connection drops the same way).
func TestCancelledUploadLeavesNothing(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	handled := make(chan struct{})
	var held atomic.Bool
	emu := newEmulator(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !isUpload(r) || held.Swap(true) {
				next.ServeHTTP(w, r)
				return
			}
			defer close(handled)
			// Let part of the body through, then hold the rest until the
			// client has given up.
			r.Body = &holdingReader{rd: r.Body, after: 256 << 10, started: started, release: release}
			next.ServeHTTP(w, r)
		})
	})
	bucket := emu.bucket()
	be := emu.open(t, bucket, "p")
	defer be.Close()
	h := repo.Handle{Type: repo.PackFile, Name: strings.Repeat("12", 32)}
	data := bytes.Repeat([]byte("snap"), 1<<20)

	ctx, cancel := context.WithCancel(t.Context())
	saved := make(chan error)
	go func() { saved <- be.Save(ctx, h, data) }()
	<-started
	cancel()
	err := <-saved
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled save: got %v, want context.Canceled", err)
	}
	close(release)
	<-handled
	if _, err := be.Stat(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("stat after a cancelled save: got %v, want ErrNotFound", err)
	}
	objs, _, err := emu.srv.ListObjectsWithOptions(bucket, fakestorage.ListOptions{})
	if err != nil || len(objs) != 0 {
		t.Errorf("bucket after a cancelled save: %d objects (%v)", len(objs), err)
	}
	// The name is free: the next backup stores the object.
	if err := be.Save(t.Context(), h, data); err != nil {
		t.Errorf("save after a cancelled save: %v", err)
	}
}

// holdingReader passes after bytes, then blocks until release.
type holdingReader struct {
	rd      io.ReadCloser
	after   int
	n       int
	started chan struct{}
	release chan struct{}
}

func (r *holdingReader) Read(p []byte) (int, error) {
	if r.n >= r.after {
		if r.started != nil {
			close(r.started)
			r.started = nil
		}
		<-r.release
		return r.rd.Read(p)
	}
	p = p[:min(len(p), r.after-r.n)]
	n, err := r.rd.Read(p)
	r.n += n
	return n, err
}

func (r *holdingReader) Close() error { return r.rd.Close() }

// TestTornUploadRejected garbles one byte of an upload on its way: the
// CRC32C that Save sends makes GCS refuse it, so no object holds other
// bytes than were saved, and the error says the save is worth repeating.
func TestTornUploadRejected(t *testing.T) {
	emu := newEmulator(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isUpload(r) {
				body, _ := io.ReadAll(r.Body)
				body[len(body)/2] ^= 0x20
				r.Body = io.NopCloser(bytes.NewReader(body))
				r.ContentLength = int64(len(body))
			}
			next.ServeHTTP(w, r)
		})
	})
	bucket := emu.bucket()
	be := emu.open(t, bucket, "")
	defer be.Close()
	h := repo.Handle{Type: repo.PackFile, Name: strings.Repeat("34", 32)}
	err := be.Save(t.Context(), h, bytes.Repeat([]byte("0123456789abcdef"), 1<<16))
	if err == nil {
		t.Fatal("a garbled upload was accepted")
	}
	if !retry.IsTransient(err) {
		t.Errorf("garbled upload: %v is not transient", err)
	}
	if _, err := be.Stat(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("stat after a garbled upload: got %v, want ErrNotFound", err)
	}
}

// TestSpoolChangedNotStored: a pack spooled to a temp file whose bytes
// change before they are uploaded, before the CRC32C pass or during the
// upload itself, is not stored under its name. The upload reader fails
// the read of the last bytes when they do not hash to the name, and the
// upload is abandoned, not committed; the name stays free for the next
// backup.
func TestSpoolChangedNotStored(t *testing.T) {
	var (
		mu        sync.Mutex
		onUpload  func() // runs as an upload request arrives, before its body is read
		uploads   int
		handledCh = make(chan struct{}, 10)
	)
	emu := newEmulator(t, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !isUpload(r) {
				next.ServeHTTP(w, r)
				return
			}
			mu.Lock()
			uploads++
			f := onUpload
			onUpload = nil
			mu.Unlock()
			if f != nil {
				f()
			}
			next.ServeHTTP(w, r)
			handledCh <- struct{}{}
		})
	})
	bucket := emu.bucket()
	be := emu.open(t, bucket, "p")
	defer be.Close()

	// 16 MiB: far more than the socket buffers between client and
	// emulator hold, so the upload reads the last bytes from the file only
	// after the emulator started on the request.
	block := directio.Alloc(1 << 20)
	var data []byte
	for i := range 16 {
		for j := range block {
			block[j] = byte(i*7 + j*13 + j>>9)
		}
		data = append(data, block...)
	}
	h := repo.Handle{Type: repo.PackFile, Name: repo.Hash(data).String()}
	dir := t.TempDir()
	spooler := repo.SpoolToFiles(be, dir).(repo.Spooler)
	spool := func() (repo.Spool, string) {
		t.Helper()
		sp, err := spooler.Spool(t.Context(), repo.PackFile)
		if err != nil {
			t.Fatal(err)
		}
		for off := 0; off < len(data); off += len(block) {
			copy(block, data[off:])
			if err := sp.Write(block); err != nil {
				t.Fatal(err)
			}
		}
		files, _ := filepath.Glob(filepath.Join(dir, "snap-spool-*"))
		if len(files) != 1 {
			t.Fatalf("spool files %v, want one", files)
		}
		return sp, files[0]
	}
	flipLast := func(name string) {
		f, err := os.OpenFile(name, os.O_RDWR, 0)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if _, err := f.WriteAt([]byte{data[len(data)-1] ^ 1}, int64(len(data)-1)); err != nil {
			t.Error(err)
		}
	}
	nothingStored := func(when string) {
		t.Helper()
		if _, err := be.Stat(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("stat %s: %v, want ErrNotFound", when, err)
		}
		objs, _, err := emu.srv.ListObjectsWithOptions(bucket, fakestorage.ListOptions{})
		if err != nil || len(objs) != 0 {
			t.Errorf("bucket %s: %d objects (%v)", when, len(objs), err)
		}
	}
	wantChanged := func(err error, file string) {
		t.Helper()
		if !errors.Is(err, repo.ErrSpoolChanged) || !strings.Contains(err.Error(), h.String()) || !strings.Contains(err.Error(), file) {
			t.Errorf("commit: %v; want ErrSpoolChanged naming %s and %s", err, h, file)
		}
		if retry.IsTransient(err) {
			t.Errorf("commit: %v is transient; the file will not heal", err)
		}
	}

	// Changed before the upload: the CRC32C pass finds it, no request is made.
	sp, file := spool()
	flipLast(file)
	wantChanged(sp.Commit(t.Context(), h), file)
	mu.Lock()
	if uploads != 0 {
		t.Errorf("%d uploads of a spool file known to be changed", uploads)
	}
	mu.Unlock()
	nothingStored("after a spool file changed before the upload")

	// Changed while the upload reads it, after the CRC32C pass: GCS would
	// have refused the upload for its CRC32C too, but it is abandoned
	// before it gets that far.
	sp, file = spool()
	mu.Lock()
	onUpload = func() { flipLast(file) }
	mu.Unlock()
	wantChanged(sp.Commit(t.Context(), h), file)
	<-handledCh
	nothingStored("after a spool file changed during the upload")

	// The name is free: the next attempt stores the pack.
	sp, _ = spool()
	if err := sp.Commit(t.Context(), h); err != nil {
		t.Fatalf("commit after the failed ones: %v", err)
	}
	<-handledCh
	if got := backendtest.LoadAll(t, be, h); !bytes.Equal(got, data) {
		t.Errorf("stored %d bytes, want the %d spooled", len(got), len(data))
	}
}
