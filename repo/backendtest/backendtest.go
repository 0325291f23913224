// Package backendtest is the conformance suite every repo.Backend must pass.
// A backend's tests call Run with a constructor for an empty backend.
package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/snapbackup/snap/repo"
)

// Run checks the guarantees documented on repo.Backend. newBackend must
// return an empty backend; Run calls it once per subtest, from subtests
// running in parallel, and closes the result when the subtest ends.
func Run(t *testing.T, newBackend func(t *testing.T) repo.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, be repo.Backend)
	}{
		{"Location", testLocation},
		{"SaveLoad", testSaveLoad},
		{"LoadRange", testLoadRange},
		{"LoadPastEnd", testLoadPastEnd},
		{"Missing", testMissing},
		{"SaveExisting", testSaveExisting},
		{"List", testList},
		{"Remove", testRemove},
		{"LoadFnError", testLoadFnError},
		{"ListFnError", testListFnError},
		{"LoadFnRestarts", testLoadFnRestarts},
		{"ConcurrentSaveSameName", testConcurrentSaveSameName},
		{"ConcurrentDifferentNames", testConcurrentDifferentNames},
		{"Empty", testEmpty},
		{"CancelledContext", testCancelledContext},
		{"InvalidHandle", testInvalidHandle},
		{"LoadLargeRange", testLoadLargeRange},
		{"Spool", testSpool},
		{"SpoolExisting", testSpoolExisting},
		{"SpoolAbort", testSpoolAbort},
		{"SaveFrom", testSaveFrom},
		{"TailNames", testTailNames},
		{"ListPrefix", testListPrefix},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			be := newBackend(t)
			t.Cleanup(func() {
				if err := be.Close(); err != nil {
					t.Errorf("close: %v", err)
				}
			})
			tt.fn(t, be)
		})
	}
}

// rng returns a generator seeded from the test name, so each subtest sees
// the same data on every run.
func rng(t *testing.T) *rand.Rand {
	var seed uint64 = 14695981039346656037 // FNV-1a
	for _, c := range []byte(t.Name()) {
		seed = (seed ^ uint64(c)) * 1099511628211
	}
	return rand.New(rand.NewPCG(seed, 0x5eed))
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// randName returns a 64-digit hex name, like an object ID.
func randName(r *rand.Rand) string {
	return fmt.Sprintf("%016x%016x%016x%016x", r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64())
}

// randNameFor returns a name of the form objects of typ have: an ID, or
// for a tail a prefix, '-' and an ID.
func randNameFor(r *rand.Rand, typ repo.FileType) string {
	if typ == repo.TailFile {
		return fmt.Sprintf("%08x-%d-%d-n-%s", r.Uint32(), r.IntN(10), r.Uint64(), randName(r))
	}
	return randName(r)
}

// LoadAll returns the whole object h of be and fails t on an error: for
// the tests of backends and of what stores through them.
func LoadAll(t testing.TB, be repo.Backend, h repo.Handle) []byte {
	t.Helper()
	data, err := load(t.Context(), be, h, 0, 0)
	if err != nil {
		t.Fatalf("load %v: %v", h, err)
	}
	return data
}

// load reads h[offset:offset+length]; fn starts over on every call, as
// the contract requires.
func load(ctx context.Context, be repo.Backend, h repo.Handle, offset, length int64) ([]byte, error) {
	var buf []byte
	err := be.Load(ctx, h, offset, length, func(rd io.Reader) error {
		var err error
		buf, err = io.ReadAll(rd)
		return err
	})
	return buf, err
}

func mustSave(t *testing.T, be repo.Backend, h repo.Handle, data []byte) {
	t.Helper()
	if err := be.Save(t.Context(), h, data); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
}

func checkContent(t *testing.T, be repo.Backend, h repo.Handle, want []byte) {
	t.Helper()
	got, err := load(t.Context(), be, h, 0, 0)
	if err != nil {
		t.Fatalf("load %v: %v", h, err)
	}
	if len(got) != len(want) {
		t.Fatalf("load %v: got %d bytes, want %d", h, len(got), len(want))
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("load %v: content differs", h)
	}
}

func listNames(t *testing.T, be repo.Backend, typ repo.FileType) map[string]int64 {
	t.Helper()
	var mu sync.Mutex
	names := make(map[string]int64)
	err := be.List(t.Context(), typ, func(fi repo.FileInfo) error {
		mu.Lock()
		defer mu.Unlock()
		if _, ok := names[fi.Name]; ok {
			return fmt.Errorf("%s listed twice", fi.Name)
		}
		names[fi.Name] = fi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", typ, err)
	}
	return names
}

func testLocation(t *testing.T, be repo.Backend) {
	if be.Location() == "" {
		t.Error("Location is empty")
	}
}

func testSaveLoad(t *testing.T, be repo.Backend) {
	r := rng(t)
	for _, typ := range repo.AllFileTypes {
		for _, size := range []int{1, 100, 1<<20 + 7} {
			h := repo.Handle{Type: typ, Name: randNameFor(r, typ)}
			if typ == repo.ConfigFile {
				if size != 100 {
					continue // only one config
				}
				h.Name = ""
			}
			data := randBytes(r, size)
			mustSave(t, be, h, data)
			checkContent(t, be, h, data)
			fi, err := be.Stat(t.Context(), h)
			if err != nil {
				t.Fatalf("stat %v: %v", h, err)
			}
			if fi.Size != int64(size) || fi.Name != h.Name {
				t.Errorf("stat %v = %+v, want name %q size %d", h, fi, h.Name, size)
			}
		}
	}
}

func testLoadRange(t *testing.T, be repo.Backend) {
	r := rng(t)
	const size = 10000
	data := randBytes(r, size)
	h := repo.Handle{Type: repo.PackFile, Name: randName(r)}
	mustSave(t, be, h, data)

	for _, tc := range []struct{ offset, length int64 }{
		{0, 0},
		{0, 1},
		{0, 100},
		{0, size},
		{1, 0},
		{1234, 0},
		{size - 1, 0},
		{1234, 1},
		{1234, 4321},
		{size - 100, 100},
		{size - 1, 1},
		{size - 100, 0},
	} {
		got, err := load(t.Context(), be, h, tc.offset, tc.length)
		if err != nil {
			t.Errorf("load offset %d length %d: %v", tc.offset, tc.length, err)
			continue
		}
		end := int64(size)
		if tc.length > 0 {
			end = tc.offset + tc.length
		}
		if want := data[tc.offset:end]; !bytes.Equal(got, want) {
			t.Errorf("load offset %d length %d: got %d bytes, want %d, or content differs",
				tc.offset, tc.length, len(got), len(want))
		}
	}
}

func testLoadPastEnd(t *testing.T, be repo.Backend) {
	r := rng(t)
	const size = 1000
	h := repo.Handle{Type: repo.PackFile, Name: randName(r)}
	mustSave(t, be, h, randBytes(r, size))

	for _, tc := range []struct{ offset, length int64 }{
		{0, size + 1},
		{size - 1, 2},
		{size, 1},
		{size + 1, 0},
		{size + 1, 1},
		{size * 10, 10},
		{-1, 1},
		{0, -1},
	} {
		got, err := load(t.Context(), be, h, tc.offset, tc.length)
		if err == nil {
			t.Errorf("load offset %d length %d of %d-byte object: no error, got %d bytes",
				tc.offset, tc.length, size, len(got))
		} else if errors.Is(err, repo.ErrNotFound) {
			t.Errorf("load offset %d length %d: error wraps ErrNotFound, but the object exists: %v",
				tc.offset, tc.length, err)
		}
	}
}

func testMissing(t *testing.T, be repo.Backend) {
	r := rng(t)
	// An object of another type with the same name must not be found.
	name := randName(r)
	mustSave(t, be, repo.Handle{Type: repo.IndexFile, Name: name}, []byte("x"))

	for _, h := range []repo.Handle{
		{Type: repo.PackFile, Name: name},
		{Type: repo.SnapshotFile, Name: randName(r)},
		{Type: repo.ConfigFile},
	} {
		called := false
		err := be.Load(t.Context(), h, 0, 0, func(io.Reader) error { called = true; return nil })
		if !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("load missing %v: got %v, want ErrNotFound", h, err)
		}
		if called {
			t.Errorf("load missing %v: fn was called", h)
		}
		if _, err := be.Stat(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("stat missing %v: got %v, want ErrNotFound", h, err)
		}
		if err := be.Remove(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("remove missing %v: got %v, want ErrNotFound", h, err)
		}
	}
}

func testSaveExisting(t *testing.T, be repo.Backend) {
	r := rng(t)
	for _, typ := range repo.AllFileTypes {
		h := repo.Handle{Type: typ, Name: randNameFor(r, typ)}
		if typ == repo.ConfigFile {
			h.Name = ""
		}
		orig := randBytes(r, 1000)
		mustSave(t, be, h, orig)
		for _, other := range [][]byte{randBytes(r, 1000), randBytes(r, 10), randBytes(r, 5000), {}} {
			err := be.Save(t.Context(), h, other)
			if !errors.Is(err, repo.ErrExists) {
				t.Errorf("save existing %v: got %v, want ErrExists", h, err)
			}
		}
		checkContent(t, be, h, orig)
	}
}

func testList(t *testing.T, be repo.Backend) {
	r := rng(t)
	want := make(map[repo.FileType]map[string]int64)
	for _, typ := range repo.AllFileTypes {
		want[typ] = make(map[string]int64)
	}
	// Enough packs to spread over many prefixes, and a few that share one.
	for i := range 40 {
		name := randName(r)
		if i%10 == 0 {
			name = "ab" + name[2:]
		}
		want[repo.PackFile][name] = int64(r.IntN(300))
	}
	for _, typ := range []repo.FileType{repo.KeyFile, repo.IndexFile, repo.SnapshotFile, repo.TailFile} {
		for range 5 {
			want[typ][randNameFor(r, typ)] = int64(r.IntN(300))
		}
	}
	want[repo.ConfigFile][""] = 42
	// LockFile stays empty.

	prefixes := make(map[string]bool)
	for name := range want[repo.PackFile] {
		prefixes[name[:2]] = true
	}
	if len(prefixes) < 10 {
		t.Fatalf("test data covers only %d pack prefixes", len(prefixes))
	}

	for typ, objs := range want {
		for name, size := range objs {
			mustSave(t, be, repo.Handle{Type: typ, Name: name}, randBytes(r, int(size)))
		}
	}
	for _, typ := range repo.AllFileTypes {
		got := listNames(t, be, typ)
		if !mapsEqual(got, want[typ]) {
			t.Errorf("list %s:\n got %v\nwant %v", typ, got, want[typ])
		}
	}
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func testRemove(t *testing.T, be repo.Backend) {
	r := rng(t)
	keep := repo.Handle{Type: repo.PackFile, Name: randName(r)}
	mustSave(t, be, keep, randBytes(r, 10))
	for _, typ := range repo.AllFileTypes {
		h := repo.Handle{Type: typ, Name: randNameFor(r, typ)}
		if typ == repo.ConfigFile {
			h.Name = ""
		}
		mustSave(t, be, h, randBytes(r, 100))
		if err := be.Remove(t.Context(), h); err != nil {
			t.Fatalf("remove %v: %v", h, err)
		}
		if _, err := be.Stat(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("stat removed %v: got %v, want ErrNotFound", h, err)
		}
		if _, err := load(t.Context(), be, h, 0, 0); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("load removed %v: got %v, want ErrNotFound", h, err)
		}
		if _, ok := listNames(t, be, typ)[h.Name]; ok {
			t.Errorf("removed %v still listed", h)
		}
		if err := be.Remove(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("remove %v twice: got %v, want ErrNotFound", h, err)
		}
		// The name is free again (lock files are reused this way).
		data := randBytes(r, 50)
		mustSave(t, be, h, data)
		checkContent(t, be, h, data)
	}
	if _, err := be.Stat(t.Context(), keep); err != nil {
		t.Errorf("stat %v after removing others: %v", keep, err)
	}
}

func testLoadFnError(t *testing.T, be repo.Backend) {
	r := rng(t)
	h := repo.Handle{Type: repo.IndexFile, Name: randName(r)}
	mustSave(t, be, h, randBytes(r, 100))
	errFn := errors.New("fn failed")
	for _, rg := range [][2]int64{{0, 0}, {10, 20}} {
		err := be.Load(t.Context(), h, rg[0], rg[1], func(rd io.Reader) error {
			if _, err := io.ReadFull(rd, make([]byte, 5)); err != nil {
				return err
			}
			return errFn
		})
		if !errors.Is(err, errFn) {
			t.Errorf("load with failing fn: got %v, want %v", err, errFn)
		}
	}
}

func testListFnError(t *testing.T, be repo.Backend) {
	r := rng(t)
	for range 3 {
		mustSave(t, be, repo.Handle{Type: repo.SnapshotFile, Name: randName(r)}, randBytes(r, 10))
	}
	errFn := errors.New("fn failed")
	calls := 0
	err := be.List(t.Context(), repo.SnapshotFile, func(repo.FileInfo) error {
		calls++
		return errFn
	})
	if !errors.Is(err, errFn) {
		t.Errorf("list with failing fn: got %v, want %v", err, errFn)
	}
	if calls != 1 {
		t.Errorf("list went on after fn failed: fn called %d times", calls)
	}
}

// testLoadFnRestarts checks that each Load hands fn a fresh reader of the
// whole range, also when the same object is loaded repeatedly.
func testLoadFnRestarts(t *testing.T, be repo.Backend) {
	r := rng(t)
	data := randBytes(r, 3000)
	h := repo.Handle{Type: repo.PackFile, Name: randName(r)}
	mustSave(t, be, h, data)
	for range 3 {
		// Read only part of the stream; the next Load must not see the rest.
		err := be.Load(t.Context(), h, 100, 200, func(rd io.Reader) error {
			buf := make([]byte, 10)
			if _, err := io.ReadFull(rd, buf); err != nil {
				return err
			}
			if !bytes.Equal(buf, data[100:110]) {
				return errors.New("wrong bytes at start of range")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("partial load: %v", err)
		}
	}
}

func testConcurrentSaveSameName(t *testing.T, be repo.Backend) {
	r := rng(t)
	const writers = 8
	for range 5 {
		h := repo.Handle{Type: repo.PackFile, Name: randName(r)}
		contents := make([][]byte, writers)
		for i := range contents {
			contents[i] = randBytes(r, 64<<10+i)
		}
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			errs    = make([]error, writers)
			success atomic.Int32
		)
		for i := range writers {
			wg.Go(func() {
				<-start
				errs[i] = be.Save(t.Context(), h, contents[i])
				if errs[i] == nil {
					success.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()

		if n := success.Load(); n != 1 {
			t.Fatalf("%d of %d concurrent saves of %v succeeded, want 1 (errors: %v)", n, writers, h, errs)
		}
		winner := slices.IndexFunc(errs, func(err error) bool { return err == nil })
		for i, err := range errs {
			if err != nil && !errors.Is(err, repo.ErrExists) {
				t.Errorf("concurrent save %d: got %v, want ErrExists", i, err)
			}
		}
		checkContent(t, be, h, contents[winner])
		if got := listNames(t, be, repo.PackFile); got[h.Name] != int64(len(contents[winner])) {
			t.Errorf("list after concurrent saves: %v", got)
		}
	}
}

func testConcurrentDifferentNames(t *testing.T, be repo.Backend) {
	r := rng(t)
	const workers, perWorker = 16, 8
	type object struct {
		h    repo.Handle
		data []byte
	}
	objs := make([][]object, workers)
	for w := range objs {
		for range perWorker {
			typ := []repo.FileType{repo.PackFile, repo.IndexFile, repo.SnapshotFile, repo.TailFile}[r.IntN(4)]
			objs[w] = append(objs[w], object{repo.Handle{Type: typ, Name: randNameFor(r, typ)}, randBytes(r, r.IntN(20000))})
		}
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for _, o := range objs[w] {
				if err := be.Save(t.Context(), o.h, o.data); err != nil {
					t.Errorf("save %v: %v", o.h, err)
					return
				}
				got, err := load(t.Context(), be, o.h, 0, 0)
				if err != nil {
					t.Errorf("load %v: %v", o.h, err)
					return
				}
				if !bytes.Equal(got, o.data) {
					t.Errorf("load %v: content differs", o.h)
				}
			}
		})
	}
	// Listing while others write must not fail.
	wg.Go(func() {
		for range 5 {
			if err := be.List(t.Context(), repo.PackFile, func(repo.FileInfo) error { return nil }); err != nil {
				t.Errorf("list during saves: %v", err)
			}
		}
	})
	wg.Wait()
	if t.Failed() {
		return
	}
	total := 0
	for _, typ := range []repo.FileType{repo.PackFile, repo.IndexFile, repo.SnapshotFile, repo.TailFile} {
		total += len(listNames(t, be, typ))
	}
	if total != workers*perWorker {
		t.Errorf("listed %d objects, want %d", total, workers*perWorker)
	}
}

func testEmpty(t *testing.T, be repo.Backend) {
	r := rng(t)
	for _, data := range [][]byte{{}, nil} {
		h := repo.Handle{Type: repo.LockFile, Name: randName(r)}
		mustSave(t, be, h, data)
		got, err := load(t.Context(), be, h, 0, 0)
		if err != nil {
			t.Fatalf("load empty: %v", err)
		}
		if len(got) != 0 {
			t.Errorf("load empty: got %d bytes", len(got))
		}
		if _, err := load(t.Context(), be, h, 0, 1); err == nil {
			t.Error("load 1 byte of empty object: no error")
		}
		fi, err := be.Stat(t.Context(), h)
		if err != nil {
			t.Fatalf("stat empty: %v", err)
		}
		if fi.Size != 0 {
			t.Errorf("stat empty: size %d", fi.Size)
		}
		if size, ok := listNames(t, be, repo.LockFile)[h.Name]; !ok || size != 0 {
			t.Errorf("list empty: listed %v, size %d", ok, size)
		}
		if err := be.Save(t.Context(), h, nil); !errors.Is(err, repo.ErrExists) {
			t.Errorf("save existing empty: got %v, want ErrExists", err)
		}
	}
}

func testCancelledContext(t *testing.T, be repo.Backend) {
	r := rng(t)
	existing := repo.Handle{Type: repo.IndexFile, Name: randName(r)}
	mustSave(t, be, existing, randBytes(r, 100))

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	check := func(op string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with cancelled context: got %v, want context.Canceled", op, err)
		}
	}

	fresh := repo.Handle{Type: repo.IndexFile, Name: randName(r)}
	check("save", be.Save(ctx, fresh, randBytes(r, 100)))
	if _, err := be.Stat(t.Context(), fresh); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("stat after cancelled save: got %v, want ErrNotFound", err)
	}
	called := false
	check("load", be.Load(ctx, existing, 0, 0, func(io.Reader) error { called = true; return nil }))
	if called {
		t.Error("load with cancelled context called fn")
	}
	_, err := be.Stat(ctx, existing)
	check("stat", err)
	check("list", be.List(ctx, repo.IndexFile, func(repo.FileInfo) error { return nil }))
	check("remove", be.Remove(ctx, existing))
	if _, err := be.Stat(t.Context(), existing); err != nil {
		t.Errorf("stat after cancelled remove: %v", err)
	}
}

func testInvalidHandle(t *testing.T, be repo.Backend) {
	for _, h := range []repo.Handle{
		{Type: repo.PackFile, Name: ""},
		{Type: repo.IndexFile, Name: "a/b"},
		{Type: repo.IndexFile, Name: ".."},
		{Type: repo.SnapshotFile, Name: "../config"},
		{Type: repo.TailFile, Name: "../config"},
		{Type: repo.TailFile, Name: "ab/cd-" + strings.Repeat("0", 64)},
		{Type: repo.TailFile, Name: ".tmp-" + strings.Repeat("0", 64)},
		{Type: repo.KeyFile, Name: "/etc"},
		{Type: repo.ConfigFile, Name: "x"},
		{Type: "bogus", Name: "abcd"},
		{Type: "", Name: "abcd"},
	} {
		if err := be.Save(t.Context(), h, []byte("x")); err == nil {
			t.Errorf("save %#v: no error", h)
		}
		if _, err := load(t.Context(), be, h, 0, 0); err == nil {
			t.Errorf("load %#v: no error", h)
		}
		if _, err := be.Stat(t.Context(), h); err == nil {
			t.Errorf("stat %#v: no error", h)
		}
		if err := be.Remove(t.Context(), h); err == nil {
			t.Errorf("remove %#v: no error", h)
		}
	}
	if err := be.List(t.Context(), "bogus", func(repo.FileInfo) error { return nil }); err == nil {
		t.Error("list of unknown type: no error")
	}
	// Nothing may have been stored anywhere.
	for _, typ := range repo.AllFileTypes {
		if got := listNames(t, be, typ); len(got) != 0 {
			t.Errorf("list %s after invalid saves: %v", typ, got)
		}
	}
}

// testTailNames stores tails under the names a follower gives them: a
// prefix of digits, letters, '-' and '.', then '-' and a hash. Each is
// stored, listed and removed under exactly that name, and is no other
// type's object.
func testTailNames(t *testing.T, be repo.Backend) {
	r := rng(t)
	hash := randName(r)
	names := []string{
		"0123abcd-3-100-200-1700000000000-n-" + hash,
		"0123abcd-3-100-200-1700000000000-n-" + randName(r), // same prefix
		"redis.host-7.example-" + randName(r),
		strings.Repeat("z", 160) + "-" + randName(r), // the longest prefix
		hash, // a tail named like any other object
	}
	want := make(map[string]int64)
	for i, name := range names {
		h := repo.Handle{Type: repo.TailFile, Name: name}
		data := randBytes(r, 100+i)
		mustSave(t, be, h, data)
		checkContent(t, be, h, data)
		want[name] = int64(len(data))
	}
	if err := be.Save(t.Context(), repo.Handle{Type: repo.TailFile, Name: names[0]}, []byte("again")); !errors.Is(err, repo.ErrExists) {
		t.Errorf("save existing tail: got %v, want ErrExists", err)
	}
	if got := listNames(t, be, repo.TailFile); !mapsEqual(got, want) {
		t.Errorf("list tails:\n got %v\nwant %v", got, want)
	}
	for _, typ := range []repo.FileType{repo.SnapshotFile, repo.LockFile, repo.IndexFile} {
		if got := listNames(t, be, typ); len(got) != 0 {
			t.Errorf("list %s after saving tails: %v", typ, got)
		}
	}
	h := repo.Handle{Type: repo.TailFile, Name: names[0]}
	if err := be.Remove(t.Context(), h); err != nil {
		t.Fatalf("remove %v: %v", h, err)
	}
	if err := be.Remove(t.Context(), h); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("remove %v twice: got %v, want ErrNotFound", h, err)
	}
	delete(want, names[0])
	if got := listNames(t, be, repo.TailFile); !mapsEqual(got, want) {
		t.Errorf("list tails after a remove:\n got %v\nwant %v", got, want)
	}
}

// testListPrefix: repo.ListPrefix (the backend's PrefixLister, or List and
// a filter) lists exactly the names with the prefix, of the type asked,
// with their sizes; a prefix nothing has lists nothing, and fn's error
// ends the listing and comes back as it is.
func testListPrefix(t *testing.T, be repo.Backend) {
	r := rng(t)
	want := map[string]int64{}
	for i := range 6 {
		owner := []string{"0123456789abcdef", "fedcba9876543210", "shared"}[i%3]
		h := repo.Handle{Type: repo.IndexFile, Name: owner + "-" + randName(r)}
		data := randBytes(r, 10+i)
		mustSave(t, be, h, data)
		if owner == "0123456789abcdef" {
			want[h.Name] = int64(len(data))
		}
	}
	// Same prefix, another type: not listed.
	mustSave(t, be, repo.Handle{Type: repo.SnapshotFile, Name: "0123456789abcdef-" + randName(r)}, randBytes(r, 5))
	got := map[string]int64{}
	if err := repo.ListPrefix(t.Context(), be, repo.IndexFile, "0123456789abcdef-", func(fi repo.FileInfo) error {
		got[fi.Name] = fi.Size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !mapsEqual(got, want) {
		t.Errorf("ListPrefix listed %v, want %v", got, want)
	}
	n := 0
	if err := repo.ListPrefix(t.Context(), be, repo.IndexFile, "00-", func(repo.FileInfo) error {
		n++
		return nil
	}); err != nil || n != 0 {
		t.Errorf("ListPrefix of an absent prefix: %d names, %v; want none, nil", n, err)
	}
	errFn := errors.New("fn failed")
	calls := 0
	err := repo.ListPrefix(t.Context(), be, repo.IndexFile, "shared-", func(repo.FileInfo) error {
		calls++
		return errFn
	})
	if !errors.Is(err, errFn) || calls != 1 {
		t.Errorf("ListPrefix with failing fn: %v after %d calls, want %v after 1", err, calls, errFn)
	}
}
