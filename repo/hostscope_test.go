package repo_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/faulty"
	"github.com/snapbackup/snap/repo/mem"
)

// fleet is a version 2 repository with blobs written by hosts a and b
// (scoped writers) and by an unscoped writer (shared index files).
type fleet struct {
	be        *mem.Backend
	a, b, sh  []repo.ID
	tagA      string
	tagB      string
	plainOf   map[repo.ID][]byte
	indexOfB  []string
	indexOfSh []string
}

func newFleet(t *testing.T, version int) *fleet {
	t.Helper()
	f := &fleet{be: mem.New(), plainOf: map[repo.ID][]byte{}}
	o := smallOptions()
	o.FormatVersion = version
	r := initRepo(t, f.be, o)
	rng := newRand(t)
	save := func(host string, n int) []repo.ID {
		w := openRepo(t, f.be)
		if host != "" {
			w.ScopeTo(host)
		}
		var ids []repo.ID
		for range n {
			b := randomBytes(rng, 2000)
			id := w.BlobID(b)
			if _, err := w.SaveBlob(t.Context(), repo.DataBlob, id, b); err != nil {
				t.Fatal(err)
			}
			f.plainOf[id] = b
			ids = append(ids, id)
		}
		if err := w.Flush(t.Context()); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	f.tagA, f.tagB = r.HostTag("a"), r.HostTag("b")
	f.sh = save("", 3)
	f.a = save("a", 3)
	f.b = save("b", 3)
	for name := range list(t, f.be, repo.IndexFile) {
		switch {
		case strings.HasPrefix(name, f.tagB+"-"):
			f.indexOfB = append(f.indexOfB, name)
		case strings.HasPrefix(name, repo.SharedOwner+"-"):
			f.indexOfSh = append(f.indexOfSh, name)
		}
	}
	return f
}

// TestScopedLoadIndex: a reader scoped to host a reads only the shared
// index files and a's, knows nothing of b's blobs until a lookup misses,
// and then finds them; in a version 1 repository the scope changes
// nothing.
func TestScopedLoadIndex(t *testing.T) {
	f := newFleet(t, 2)
	if len(f.indexOfB) == 0 || len(f.indexOfSh) == 0 {
		t.Fatalf("index files of b %v, shared %v: want some of each", f.indexOfB, f.indexOfSh)
	}
	fb := faulty.New(f.be)
	r := openRepo(t, fb)
	r.ScopeTo("a")
	if err := r.LoadIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range append(f.a, f.sh...) {
		if !r.Known(id) {
			t.Errorf("blob %s of a or shared is not known", id.Str())
		}
	}
	for _, id := range f.b {
		if r.Known(id) {
			t.Errorf("blob %s of b is known to a reader scoped to a", id.Str())
		}
	}
	for _, c := range fb.Calls() {
		if c.Op == faulty.OpLoad && c.Handle.Type == repo.IndexFile && strings.HasPrefix(c.Handle.Name, f.tagB) {
			t.Errorf("scoped LoadIndex read %s", c.Handle)
		}
	}
	// A miss loads the other hosts' files once.
	got, err := r.LoadBlob(t.Context(), f.b[1], nil)
	if err != nil || string(got) != string(f.plainOf[f.b[1]]) {
		t.Fatalf("load b's blob through a scoped reader: %v", err)
	}

	v1 := newFleet(t, 1)
	r1 := openRepo(t, v1.be)
	r1.ScopeTo("a")
	if err := r1.LoadIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, id := range append(append(v1.a, v1.b...), v1.sh...) {
		if !r1.Known(id) {
			t.Errorf("version 1: blob %s not known to a scoped reader", id.Str())
		}
	}
	for name := range list(t, v1.be, repo.IndexFile) {
		if _, err := repo.ParseID(name); err != nil {
			t.Errorf("version 1: index file %s not named by its hash", name)
		}
	}
}

// TestScopedDamagedOtherHost: a damaged index file of host b does not
// stop a reader scoped to a: its load never reads it, and a miss that
// makes it read the other files skips it; the full load check uses names
// it.
func TestScopedDamagedOtherHost(t *testing.T) {
	f := newFleet(t, 2)
	h := repo.Handle{Type: repo.IndexFile, Name: f.indexOfB[0]}
	if err := f.be.Remove(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	if err := f.be.Save(t.Context(), h, []byte("damaged")); err != nil {
		t.Fatal(err)
	}
	r := openRepo(t, f.be)
	r.ScopeTo("a")
	if err := r.LoadIndex(t.Context()); err != nil {
		t.Fatalf("scoped load with another host's file damaged: %v", err)
	}
	if _, err := r.LoadBlob(t.Context(), f.a[0], nil); err != nil {
		t.Fatal(err)
	}
	// b's blobs were all in the damaged file: the miss is reported as not
	// indexed, not as the damage.
	if _, err := r.LoadBlob(t.Context(), f.b[0], nil); !errors.Is(err, repo.ErrNotIndexed) {
		t.Errorf("load of a blob only the damaged file names: %v, want ErrNotIndexed", err)
	}
	if err := r.LoadMissing(t.Context()); err != nil {
		t.Errorf("LoadMissing with a damaged file of another host: %v", err)
	}

	var named []string
	full := openRepo(t, f.be)
	if _, err := full.LoadIndexFiles(t.Context(), func(si repo.StoredIndex, err error) error {
		named = append(named, si.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(named) != 1 || named[0] != f.indexOfB[0] {
		t.Errorf("full load reported %v, want %s", named, f.indexOfB[0])
	}
}

// TestScopedRefreshSeesPrune: a scoped reader's RefreshIndex notices a
// prune that rewrote the index (a new shared file superseding its files)
// and loads again, so it no longer takes the old files' packs for stored.
func TestScopedRefreshSeesPrune(t *testing.T) {
	f := newFleet(t, 2)
	r := openRepo(t, f.be)
	r.ScopeTo("a")
	if err := r.LoadIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A prune-like rewrite: a's pack (all of a's blobs) goes, b's stay in
	// a new b file; the shared file last, superseding every old one.
	pruner := openRepo(t, f.be)
	set, err := pruner.LoadIndexFiles(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	var supersedes []repo.ID
	var keepB, keepShared []repo.PackBlobs
	for _, si := range set.Files {
		supersedes = append(supersedes, si.ID)
		for _, p := range si.Data.Packs {
			switch si.Owner {
			case f.tagB:
				keepB = append(keepB, p)
			case repo.SharedOwner:
				keepShared = append(keepShared, p)
			}
		}
	}
	if _, err := pruner.SaveIndexAs(t.Context(), f.tagB, &repo.IndexData{Packs: keepB}); err != nil {
		t.Fatal(err)
	}
	if _, err := pruner.SaveIndexAs(t.Context(), repo.SharedOwner, &repo.IndexData{Packs: keepShared, Supersedes: supersedes}); err != nil {
		t.Fatal(err)
	}
	if err := r.RefreshIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	if r.Known(f.a[0]) {
		t.Error("after a prune dropped it, a's blob is still known to the scoped reader")
	}
	if !r.Known(f.sh[0]) || r.Known(f.b[0]) {
		t.Error("after the refresh the scoped reader knows not what shared files name, or what b's do")
	}
	// A prune killed before it removed the old files: a new reader parks
	// the shared file, but still leaves out the files it supersedes.
	fresh := openRepo(t, f.be)
	fresh.ScopeTo("a")
	if err := fresh.LoadIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	if fresh.Index().Has(f.a[0]) || fresh.Known(f.a[0]) {
		t.Error("a file the parked shared file supersedes was loaded")
	}
}

// TestScopedParksShared: a scoped load reads the shared files but adds
// their blobs only when needed: a lookup or Known that misses adds them,
// and so does the saver once the new data passes their size; below that a
// blob only they name is written again (the bounded loss prune merges).
func TestScopedParksShared(t *testing.T) {
	f := newFleet(t, 2)
	// A small blob of the shared files, to save again below the threshold.
	w := openRepo(t, f.be)
	small := []byte("tiny shared blob")
	smallID := w.BlobID(small)
	if _, err := w.SaveBlob(t.Context(), repo.DataBlob, smallID, small); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	open := func() (*repo.Repository, *faulty.Backend) {
		fb := faulty.New(f.be)
		r := openRepo(t, fb)
		r.ScopeTo("a")
		if err := r.LoadIndex(t.Context()); err != nil {
			t.Fatal(err)
		}
		if r.Index().Has(f.sh[0]) || !r.Index().Has(f.a[0]) {
			t.Fatal("after a scoped load the index has a shared blob, or lacks one of a's")
		}
		return r, fb
	}
	sharedLoads := func(fb *faulty.Backend) int {
		n := 0
		for _, c := range fb.Calls() {
			if c.Op == faulty.OpLoad && c.Handle.Type == repo.IndexFile && strings.HasPrefix(c.Handle.Name, repo.SharedOwner+"-") {
				n++
			}
		}
		return n
	}

	r, fb := open()
	if _, ok := r.Lookup(f.sh[1]); !ok {
		t.Error("a lookup of a parked blob missed")
	}
	if !r.Index().Has(f.sh[0]) {
		t.Error("after a lookup missed, the parked files were not added")
	}
	if n := sharedLoads(fb); n != len(f.indexOfSh)+1 {
		t.Errorf("shared index files read %d times, want once each (%d)", n, len(f.indexOfSh)+1)
	}

	r, _ = open()
	if !r.Known(f.sh[2]) {
		t.Error("Known missed a parked blob")
	}

	r, _ = open()
	isNew, err := r.SaveBlob(t.Context(), repo.DataBlob, smallID, small)
	if err != nil || !isNew {
		t.Fatalf("a small blob only a parked file names: new %v, %v; want written again", isNew, err)
	}
	if r.Index().Has(f.sh[0]) {
		t.Fatal("the parked files were added for a blob smaller than they are")
	}
	big := f.plainOf[f.sh[0]]
	if isNew, err := r.SaveBlob(t.Context(), repo.DataBlob, f.sh[0], big); err != nil || isNew {
		t.Errorf("a blob past the parked files' size: new %v, %v; want it found once they are added", isNew, err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestParseObjectName: both layouts' names, and what is not one.
func TestParseObjectName(t *testing.T) {
	hash := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		t     repo.FileType
		name  string
		owner string
		ok    bool
	}{
		{repo.IndexFile, hash, "", true},
		{repo.IndexFile, "shared-" + hash, "shared", true},
		{repo.IndexFile, "0123456789abcdef-" + hash, "0123456789abcdef", true},
		{repo.SnapshotFile, "0123456789abcdef-" + hash, "0123456789abcdef", true},
		{repo.SnapshotFile, "shared-" + hash, "", false},
		{repo.IndexFile, "0123456789ABCDEF-" + hash, "", false},
		{repo.IndexFile, "0123456789abcde-" + hash, "", false},
		{repo.IndexFile, "host-" + hash, "", false},
		{repo.IndexFile, "shared-" + hash[:63], "", false},
		{repo.IndexFile, strings.ToUpper(hash), "", false},
	} {
		owner, id, ok := repo.ParseObjectName(tc.t, tc.name)
		if ok != tc.ok || owner != tc.owner || ok && id.String() != hash {
			t.Errorf("ParseObjectName(%s, %q) = %q, %s, %v; want %q, %v", tc.t, tc.name, owner, id.Str(), ok, tc.owner, tc.ok)
		}
	}
}

// FuzzParseObjectName: a name from a listing is accepted only in one of
// the layout's forms, and then it is exactly that form of what it
// returns.
func FuzzParseObjectName(f *testing.F) {
	hash := strings.Repeat("0f", 32)
	for _, s := range []string{hash, "shared-" + hash, "0123456789abcdef-" + hash, "-" + hash, "shared--" + hash, "x"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, name string, index bool) {
		typ := repo.SnapshotFile
		if index {
			typ = repo.IndexFile
		}
		owner, id, ok := repo.ParseObjectName(typ, name)
		if !ok {
			return
		}
		want := id.String()
		if owner != "" {
			want = owner + "-" + want
		}
		if name != want {
			t.Fatalf("%q parsed as owner %q, id %s", name, owner, id)
		}
		if owner == repo.SharedOwner && !index {
			t.Fatalf("snapshot %q accepted with the shared owner", name)
		}
		if owner != "" && owner != repo.SharedOwner && len(owner) != repo.HostTagLen {
			t.Fatalf("owner %q of %q is not a host tag", owner, name)
		}
	})
}
