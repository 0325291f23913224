package main_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/local"
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
	Kind    string    `json:"kind"`
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

// TestKeyGenerated: a repository made with --generate-key opens with the
// key's file and nothing else; generated keys are added to and replace a
// password; a key file is never written over, and a failed change leaves
// no key file behind.
func TestKeyGenerated(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	gen := filepath.Join(dir, "snap.key")
	var out struct {
		KeyFile string `json:"key_file"`
	}
	e.ok(&out, "init", "--generate-key", gen, "--json")
	if out.KeyFile != gen {
		t.Errorf("init --json: key_file %q, want %q", out.KeyFile, gen)
	}
	fi, err := os.Stat(gen)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("generated key file mode %v, want 0600", fi.Mode().Perm())
	}
	text, err := os.ReadFile(gen)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(text), "snapkey1:") || len(text) != len("snapkey1:")+43+1 {
		t.Errorf("generated key file holds %q", text)
	}
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "f"), []byte("read with a generated key"), 0o644); err != nil {
		t.Fatal(err)
	}
	var b backupJSON
	e.ok(&b, "--password-file", gen, "backup", "--source", "dir", "--path", data, "--json")
	// SNAP_PASSWORD gives it as well as the file does.
	g := e.as(strings.TrimSpace(string(text)))
	var ls lsFilesJSON
	g.ok(&ls, "ls", b.SnapshotID, "--json")
	if len(ls.Files) != 1 || ls.Files[0].Length != 25 {
		t.Errorf("ls with the generated key: %+v", ls)
	}
	// The environment's password is not a key of this repository.
	e.fails(12, "all generated keys", "ls")
	ks := g.keys()
	if len(ks) != 1 || ks[0].Kind != "generated" || !ks[0].Current {
		t.Errorf("keys after init --generate-key: %+v", ks)
	}
	// init refuses an existing file, and the key flags with it.
	e2 := newEnv(t)
	e2.fails(1, "the file exists", "init", "--generate-key", gen)
	if r := e2.run("ls"); r.code == 0 {
		t.Errorf("ls after a refused init succeeded: %s", r.stdout)
	}
	e2.fails(2, "has none", "init", "--generate-key", filepath.Join(dir, "k0"), "--kdf-time", "2")
	if got, _ := os.ReadFile(gen); string(got) != string(text) {
		t.Errorf("a refused init changed the key file: %q", got)
	}

	// A password repository gets a generated key, then changes to another.
	p := e2.as("a password")
	p.ok(nil, "init", "--kdf-memory", "8", "--kdf-time", "1")
	g1 := filepath.Join(dir, "g1")
	var added struct {
		Added keyListJSON `json:"added"`
	}
	p.ok(&added, "key", "add", "--generate-key", g1, "--json")
	if added.Added.Kind != "generated" {
		t.Errorf("key add --generate-key: %+v", added)
	}
	gp := e2.as("")
	gp.vars = append(gp.vars, "SNAP_PASSWORD_FILE="+g1)
	if cur := currentKey(t, gp.keys()); cur != added.Added.ID {
		t.Errorf("with the added generated key the current key is %s, want %s", cur, added.Added.ID)
	}
	r := p.ok(nil, "key", "list")
	if !strings.Contains(r.stdout, "KIND") || !strings.Contains(r.stdout, " generated ") || !strings.Contains(r.stdout, " password ") {
		t.Errorf("key list:\n%s", r.stdout)
	}
	p.fails(2, "not both", "key", "add", "--generate-key", filepath.Join(dir, "g2"), "--new-password-file", writePassword(t, "x"))
	p.fails(1, "the file exists", "key", "add", "--generate-key", g1)
	if n := len(p.keys()); n != 2 {
		t.Errorf("%d keys after the refused adds, want 2", n)
	}
	// A change that fails after the key was written leaves no key file:
	// another process holds the exclusive lock.
	be, err := local.Open(e2.repo)
	if err != nil {
		t.Fatal(err)
	}
	rp, err := repo.Open(t.Context(), be, "a password", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	lk, err := rp.Lock(t.Context(), repo.LockOptions{Exclusive: true, Command: "prune", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	g3 := filepath.Join(dir, "g3")
	if r := p.run("key", "add", "--generate-key", g3); r.code != 11 {
		t.Errorf("key add under another's exclusive lock: exit %d, %s; want 11", r.code, r.stderr)
	}
	if _, err := os.Stat(g3); !os.IsNotExist(err) {
		t.Errorf("a failed key add left its generated key file: %v", err)
	}
	lk.Unlock(t.Context())
	g4 := filepath.Join(dir, "g4")
	var changed struct {
		Added   keyListJSON `json:"added"`
		Removed keyListJSON `json:"removed"`
	}
	gp.ok(&changed, "key", "passwd", "--generate-key", g4, "--json")
	if changed.Removed.ID != added.Added.ID || changed.Added.Kind != "generated" || !changed.Added.Current {
		t.Errorf("key passwd --generate-key: %+v", changed)
	}
	gp.fails(12, "wrong password", "ls")
	g4e := e2.as("")
	g4e.vars = append(g4e.vars, "SNAP_PASSWORD_FILE="+g4)
	g4e.ok(nil, "ls")
	p.ok(nil, "ls")
}
