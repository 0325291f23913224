package repo_test

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/local"
	"github.com/snapbackup/snap/repo/mem"
)

// keyBackends are the backends the key tests run on: in memory, and a
// real directory.
func keyBackends(t *testing.T) map[string]repo.Backend {
	t.Helper()
	dir := t.TempDir()
	lb, err := local.Create(dir + "/repo")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lb.Close() })
	return map[string]repo.Backend{"mem": mem.New(), "local": lb}
}

func exclusive(t *testing.T, r *repo.Repository) *repo.Lock {
	t.Helper()
	lk, err := r.Lock(t.Context(), repo.LockOptions{Exclusive: true, Command: "key", RefreshEvery: -1})
	if err != nil {
		t.Fatalf("lock: %v", err)
	}
	t.Cleanup(func() { lk.Unlock(t.Context()) })
	return lk
}

func openWith(t *testing.T, be repo.Backend, pw string) (*repo.Repository, error) {
	t.Helper()
	r, err := repo.Open(t.Context(), be, pw, repo.Options{})
	if err == nil {
		t.Cleanup(func() { r.Close() })
	}
	return r, err
}

func keyIDs(t *testing.T, be repo.Backend) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	for name := range list(t, be, repo.KeyFile) {
		ids[name] = true
	}
	return ids
}

// TestKeyAddRemovePasswd: every password that has a key opens the
// repository with that key current; a removed one opens nothing.
func TestKeyAddRemovePasswd(t *testing.T) {
	for name, be := range keyBackends(t) {
		t.Run(name, func(t *testing.T) {
			r1 := initRepo(t, be, smallOptions())
			first := r1.KeyID()
			if !keyIDs(t, be)[first] {
				t.Fatalf("KeyID %s is not a key file", first)
			}
			lk := exclusive(t, r1)
			k2, err := r1.AddKey(t.Context(), lk, "second password")
			if err != nil {
				t.Fatal(err)
			}
			k3, err := r1.AddKey(t.Context(), lk, "third password")
			if err != nil {
				t.Fatal(err)
			}
			lk.Unlock(t.Context())
			host, _ := os.Hostname()
			keys, err := r1.ListKeys(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 3 || keys[0].ID != first || keys[1].ID != k2.ID || keys[2].ID != k3.ID {
				t.Fatalf("ListKeys = %+v, want %s, %s, %s in creation order", keys, first, k2.ID, k3.ID)
			}
			for i, k := range keys {
				if k.Current != (i == 0) || k.Host != host || k.Err != nil || k.Created.IsZero() {
					t.Errorf("key %d: %+v (want host %s, current only the first)", i, k, host)
				}
			}
			for pw, want := range map[string]string{password: first, "second password": k2.ID, "third password": k3.ID} {
				r, err := openWith(t, be, pw)
				if err != nil {
					t.Fatalf("open with %q: %v", pw, err)
				}
				if r.KeyID() != want || r.Config().ID != r1.Config().ID {
					t.Errorf("open with %q: key %s of repository %s, want key %s of %s", pw, r.KeyID(), r.Config().ID, want, r1.Config().ID)
				}
			}

			// Remove the second key with the first password, by prefix.
			lk = exclusive(t, r1)
			gone, err := r1.RemoveKey(t.Context(), lk, k2.ID[:6])
			if err != nil {
				t.Fatal(err)
			}
			if gone.ID != k2.ID {
				t.Errorf("removed %s, want %s", gone.ID, k2.ID)
			}
			lk.Unlock(t.Context())
			if _, err := openWith(t, be, "second password"); !errors.Is(err, repo.ErrWrongPassword) {
				t.Errorf("open with the removed password: %v, want ErrWrongPassword", err)
			}

			// passwd with the third password: the third key goes, a new one
			// comes, and the first still opens.
			r3, err := openWith(t, be, "third password")
			if err != nil {
				t.Fatal(err)
			}
			lk = exclusive(t, r3)
			added, removed, err := r3.ChangePassword(t.Context(), lk, "fourth password", false)
			if err != nil {
				t.Fatal(err)
			}
			lk.Unlock(t.Context())
			if removed.ID != k3.ID || !added.Current || r3.KeyID() != added.ID {
				t.Errorf("passwd: added %+v, removed %+v, current %s", added, removed, r3.KeyID())
			}
			if ids := keyIDs(t, be); len(ids) != 2 || !ids[first] || !ids[added.ID] {
				t.Errorf("keys after passwd: %v, want %s and %s", ids, first, added.ID)
			}
			if _, err := openWith(t, be, "third password"); !errors.Is(err, repo.ErrWrongPassword) {
				t.Errorf("open with the replaced password: %v, want ErrWrongPassword", err)
			}
			for _, pw := range []string{password, "fourth password"} {
				if _, err := openWith(t, be, pw); err != nil {
					t.Errorf("open with %q after passwd: %v", pw, err)
				}
			}
		})
	}
}

// TestKeyRemoveRefused: the last key, the key in use, an unknown or
// ambiguous id, a lock that is not exclusive: an error, nothing removed.
func TestKeyRemoveRefused(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	lk := exclusive(t, r)
	if _, err := r.RemoveKey(t.Context(), lk, r.KeyID()); !errors.Is(err, repo.ErrKeyRefused) || !contains(err, "last key") {
		t.Errorf("remove the only key: %v", err)
	}
	k2, err := r.AddKey(t.Context(), lk, "second password")
	if err != nil {
		t.Fatal(err)
	}
	before := keyIDs(t, be)
	cases := []struct{ id, want string }{
		{r.KeyID(), "key in use"},
		{r.KeyID()[:8], "key in use"},
		{"0000", "no key with id"},
		{"ab", "too short"},
		{"zzzz", "no key with id"},
	}
	for _, tc := range cases {
		if _, err := r.RemoveKey(t.Context(), lk, tc.id); err == nil || !contains(err, tc.want) {
			t.Errorf("remove %q: %v, want %q", tc.id, err, tc.want)
		}
	}
	lk.Unlock(t.Context())
	shared, err := r.Lock(t.Context(), repo.LockOptions{Command: "test", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.RemoveKey(t.Context(), shared, k2.ID); err == nil || !contains(err, "exclusive lock") {
		t.Errorf("remove under a shared lock: %v", err)
	}
	if _, err := r.AddKey(t.Context(), shared, "x"); err == nil || !contains(err, "exclusive lock") {
		t.Errorf("add under a shared lock: %v", err)
	}
	shared.Unlock(t.Context())
	if after := keyIDs(t, be); len(after) != len(before) {
		t.Errorf("keys changed by refused removals: %v, then %v", before, after)
	}
	if _, err := openWith(t, be, "second password"); err != nil {
		t.Errorf("open with the second password: %v", err)
	}
}

// TestKeyRemoveEachOther: two processes, opened with different keys,
// each remove the other's key. Whatever the order, one key stays, and
// the loser is told its own key went.
func TestKeyRemoveEachOther(t *testing.T) {
	be := mem.New()
	ra := initRepo(t, be, smallOptions())
	lk := exclusive(t, ra)
	kb, err := ra.AddKey(t.Context(), lk, "password b")
	if err != nil {
		t.Fatal(err)
	}
	lk.Unlock(t.Context())
	rb, err := openWith(t, be, "password b")
	if err != nil {
		t.Fatal(err)
	}
	ka := ra.KeyID()

	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, job := range []struct {
		r     *repo.Repository
		other string
	}{{ra, kb.ID}, {rb, ka}} {
		wg.Go(func() {
			l, err := job.r.Lock(t.Context(), repo.LockOptions{Exclusive: true, Command: "key", RetryFor: time.Minute, RefreshEvery: -1})
			if err != nil {
				errs[i] = err
				return
			}
			defer l.Unlock(t.Context())
			_, errs[i] = job.r.RemoveKey(t.Context(), l, job.other)
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, repo.ErrKeyRefused) || !contains(err, "removed meanwhile"):
			t.Errorf("the losing removal: %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d removals succeeded (%v), want exactly 1", ok, errs)
	}
	if n := len(keyIDs(t, be)); n != 1 {
		t.Fatalf("%d keys left, want 1", n)
	}
	opened := 0
	for _, pw := range []string{password, "password b"} {
		if _, err := openWith(t, be, pw); err == nil {
			opened++
		}
	}
	if opened != 1 {
		t.Errorf("%d passwords open the repository, want 1", opened)
	}
}

// A key file written before the user field existed still opens, and is
// listed without a user.
func TestKeyFileWithoutUser(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	h := repo.Handle{Type: repo.KeyFile, Name: r.KeyID()}
	raw := backendtest.LoadAll(t, be, h)
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	if _, ok := fields["user"]; !ok && os.Getenv("USER") != "" {
		t.Errorf("new key file has no user field: %s", raw)
	}
	delete(fields, "user")
	old, err := json.Marshal(fields)
	if err != nil {
		t.Fatal(err)
	}
	oh := repo.Handle{Type: repo.KeyFile, Name: repo.Hash(old).String()}
	if err := be.Save(t.Context(), oh, old); err != nil {
		t.Fatal(err)
	}
	if err := be.Remove(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	r2, err := openWith(t, be, password)
	if err != nil {
		t.Fatalf("open with a key file without user: %v", err)
	}
	keys, err := r2.ListKeys(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].ID != oh.Name || keys[0].User != "" || !keys[0].Current || keys[0].Err != nil {
		t.Errorf("ListKeys = %+v", keys)
	}
}

func contains(err error, s string) bool {
	return err != nil && strings.Contains(err.Error(), s)
}
