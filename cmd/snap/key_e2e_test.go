package main_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// as is e with another password.
func (e *env) as(password string) *env {
	c := *e
	c.vars = append(slices.Clone(e.vars), "SNAP_PASSWORD="+password)
	return &c
}

type keyListJSON struct {
	ID      string    `json:"id"`
	Host    string    `json:"host"`
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Current bool      `json:"current"`
}

// keys lists the repository's keys with e's password.
func (e *env) keys() []keyListJSON {
	e.t.Helper()
	var ks []keyListJSON
	e.ok(&ks, "key", "list", "--json")
	return ks
}

func currentKey(t *testing.T, ks []keyListJSON) string {
	t.Helper()
	var cur []string
	for _, k := range ks {
		if k.Current {
			cur = append(cur, k.ID)
		}
	}
	if len(cur) != 1 {
		t.Fatalf("%d current keys in %+v, want 1", len(cur), ks)
	}
	return cur[0]
}

func writePassword(t *testing.T, pw string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(f, []byte(pw+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// fails runs snap, which must exit with code and say want on stderr.
func (e *env) fails(code int, want string, args ...string) {
	e.t.Helper()
	r := e.run(args...)
	if r.code != code || !strings.Contains(r.stderr, want) {
		e.t.Errorf("snap %s: exit %d, stderr %q; want exit %d saying %q", strings.Join(args, " "), r.code, r.stderr, code, want)
	}
}

func TestKeyEndToEnd(t *testing.T) { keyEndToEnd(t, newEnv(t)) }

func TestKeyGCS(t *testing.T) {
	gcs := startFakeGCS(t)
	gcs.createBucket("snap-keys")
	keyEndToEnd(t, gcsEnv(t, gcs, "gs://snap-keys/r"))
}

// keyEndToEnd adds, removes and replaces passwords, and tries every
// password after each step: the ones with a key read the snapshot, the
// others get exit 12. Refused changes exit 1 and change nothing.
func keyEndToEnd(t *testing.T, e *env) {
	pw1 := e.as("correct horse")
	pw1.ok(nil, "init", "--kdf-memory", "8", "--kdf-time", "1")
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "f"), []byte("the data every password must read"), 0o644); err != nil {
		t.Fatal(err)
	}
	var b backupJSON
	pw1.ok(&b, "backup", "--source", "dir", "--path", data, "--json")
	// opens checks that exactly the passwords in open open the repository
	// and read the snapshot.
	opens := func(step string, open []string, closed []string) {
		t.Helper()
		for _, pw := range open {
			var ls lsFilesJSON
			if r := e.as(pw).run("ls", b.SnapshotID, "--json"); r.code != 0 {
				t.Errorf("%s: ls with %q: exit %d, %s", step, pw, r.code, r.stderr)
			} else if e.as(pw).ok(&ls, "ls", b.SnapshotID, "--json"); len(ls.Files) != 1 || ls.Files[0].Length != 33 {
				t.Errorf("%s: ls with %q: %+v", step, pw, ls)
			}
		}
		for _, pw := range closed {
			if r := e.as(pw).run("ls"); r.code != 12 || !strings.Contains(r.stderr, "wrong password") {
				t.Errorf("%s: ls with %q: exit %d, %q; want 12, wrong password", step, pw, r.code, r.stderr)
			}
		}
	}
	first := pw1.keys()
	if len(first) != 1 || !first[0].Current {
		t.Fatalf("keys after init: %+v", first)
	}
	k1 := first[0].ID

	// add
	var added struct {
		Added keyListJSON `json:"added"`
	}
	pw1.ok(&added, "key", "add", "--new-password-file", writePassword(t, "second"), "--json")
	k2 := added.Added.ID
	host, _ := os.Hostname()
	ks := pw1.keys()
	if len(ks) != 2 || ks[0].ID != k1 || ks[1].ID != k2 || currentKey(t, ks) != k1 || ks[1].Host != host || ks[1].Created.IsZero() {
		t.Fatalf("keys after add, with the first password: %+v (added %s)", ks, k2)
	}
	if got := currentKey(t, e.as("second").keys()); got != k2 {
		t.Errorf("with the second password the current key is %s, want %s", got, k2)
	}
	opens("add", []string{"correct horse", "second"}, []string{"third", "wrong"})

	// bad input: an error, exit 1 (12 for a wrong password), nothing changed
	pw1.fails(1, "is the key in use", "key", "remove", k1)
	pw1.fails(1, "is the key in use", "key", "remove", k1[:5])
	pw1.fails(1, `no key with id "0000"`, "key", "remove", "0000")
	pw1.fails(1, "too short", "key", "remove", "ab")
	pw1.fails(2, "one key id", "key", "remove")
	pw1.fails(2, "--new-password-file", "key", "add") // stdin is not a terminal
	pw1.fails(1, "is empty", "key", "add", "--new-password-file", writePassword(t, ""))
	e.as("wrong").fails(12, "wrong password", "key", "remove", k2)
	e.as("wrong").fails(12, "wrong password", "key", "passwd", "--new-password-file", writePassword(t, "x"))
	if r := pw1.run("key", "remove", k1, "--json"); r.code != 1 || !strings.Contains(r.stdout, `"code":1`) {
		t.Errorf("key remove --json of the current key: exit %d, stdout %q", r.code, r.stdout)
	}
	if got := pw1.keys(); !slices.Equal(got, ks) {
		t.Errorf("refused changes changed the keys: %+v, then %+v", ks, got)
	}
	opens("refused changes", []string{"correct horse", "second"}, nil)

	// passwd with the second password: its key goes, the third's comes
	var changed struct {
		Added   keyListJSON `json:"added"`
		Removed keyListJSON `json:"removed"`
	}
	e.as("second").ok(&changed, "key", "passwd", "--new-password-file", writePassword(t, "third"), "--json")
	k3 := changed.Added.ID
	if changed.Removed.ID != k2 || !changed.Added.Current || k3 == k2 || k3 == k1 {
		t.Errorf("passwd: %+v", changed)
	}
	ks = e.as("third").keys()
	if len(ks) != 2 || ks[0].ID != k1 || ks[1].ID != k3 || currentKey(t, ks) != k3 {
		t.Errorf("keys after passwd: %+v", ks)
	}
	opens("passwd", []string{"correct horse", "third"}, []string{"second"})

	// remove the first key with the third password, by prefix
	var removed struct {
		Removed keyListJSON `json:"removed"`
	}
	e.as("third").ok(&removed, "key", "remove", k1[:8], "--json")
	if removed.Removed.ID != k1 {
		t.Errorf("removed %+v, want %s", removed, k1)
	}
	opens("remove", []string{"third"}, []string{"correct horse", "second"})

	// the last key stays
	e.as("third").fails(1, "last key", "key", "remove", k3)
	if ks := e.as("third").keys(); len(ks) != 1 || ks[0].ID != k3 {
		t.Errorf("keys after removing the last was refused: %+v", ks)
	}
	r := e.as("third").ok(nil, "key", "list")
	if !strings.Contains(r.stdout, "*  "+k3[:8]) || !strings.Contains(r.stdout, "1 key ") {
		t.Errorf("key list:\n%s", r.stdout)
	}
	opens("the last key", []string{"third"}, []string{"correct horse", "second"})
}
