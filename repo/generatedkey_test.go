package repo_test

import (
	"errors"
	"strings"
	"testing"

	. "github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
)

func TestParseGeneratedKey(t *testing.T) {
	k, err := NewGeneratedKey()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k, "snapkey1:") || len(k) != len("snapkey1:")+43 {
		t.Fatalf("generated key %q", k)
	}
	if k2, _ := NewGeneratedKey(); k2 == k {
		t.Fatal("two generated keys are the same")
	}
	if !IsGeneratedKey(k) {
		t.Fatalf("%q does not parse", k)
	}
	rest := strings.TrimPrefix(k, "snapkey1:")
	for _, bad := range []string{
		"", "snapkey1:", rest, "snapkey2:" + rest, "SNAPKEY1:" + rest, " " + k, k + "\n", k + "=",
		k[:len(k)-1], k + "A", "snapkey1:" + strings.Repeat("+", 43), "snapkey1:" + strings.Repeat("/", 43),
		// 43 characters whose last one has bits past the 32 bytes: not
		// the canonical encoding, so not a key snap made.
		"snapkey1:" + strings.Repeat("A", 42) + "B",
	} {
		if IsGeneratedKey(bad) {
			t.Errorf("%q parsed as a generated key", bad)
		}
	}
	if !IsGeneratedKey("snapkey1:" + strings.Repeat("A", 43)) {
		t.Error("an all-zero key in the canonical form did not parse")
	}
}

// TestGeneratedKeyNoStretching: a generated key opens its key file
// without Argon2id, and a password never runs a generated key's file; a
// password of a generated key's form still opens its Argon2id key file.
func TestGeneratedKeyNoStretching(t *testing.T) {
	ctx := t.Context()
	be := mem.New()
	gen, err := NewGeneratedKey()
	if err != nil {
		t.Fatal(err)
	}
	cheap := KDFParams{Time: 1, MemoryKiB: 8, Threads: 1}
	r, err := Init(ctx, be, gen, InitOptions{GeneratedKey: true, KDF: cheap}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	lk, err := r.Lock(ctx, LockOptions{Exclusive: true, Command: "key", RefreshEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Unlock(ctx)
	// A password of the generated form (someone chose it as a password):
	// an Argon2id key file, made before the generated one is tried.
	lookalike, _ := NewGeneratedKey()
	if _, err := r.AddKey(ctx, lk, lookalike); err != nil {
		t.Fatal(err)
	}
	if _, err := r.AddKey(ctx, lk, "a password"); err != nil {
		t.Fatal(err)
	}
	keys, err := r.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	generated := 0
	for _, k := range keys {
		if k.Generated {
			generated++
		}
	}
	if len(keys) != 3 || generated != 1 {
		t.Fatalf("keys %+v: want 3, one generated", keys)
	}

	// runs counts the Argon2id runs of an open with pw.
	runs := func(pw string) (int64, *Repository, error) {
		t.Helper()
		before := Argon2Runs()
		r2, err := Open(ctx, be, pw, Options{})
		if err == nil {
			t.Cleanup(func() { r2.Close() })
		}
		return Argon2Runs() - before, r2, err
	}
	current := func(r2 *Repository) bool {
		t.Helper()
		keys, err := r2.ListKeys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if k.Current {
				return k.Generated
			}
		}
		t.Fatalf("no current key in %+v", keys)
		return false
	}
	n, r2, err := runs(gen)
	if err != nil || n != 0 || r2.Config().ID != r.Config().ID || !current(r2) {
		t.Errorf("open with the generated key: %d Argon2id runs, %v; want none, and its key current", n, err)
	}
	// The Argon2id files are tried after the generated one, in listing
	// order: one or both.
	for _, pw := range []string{lookalike, "a password"} {
		n, r2, err := runs(pw)
		if err != nil || n < 1 || n > 2 || r2.Config().ID != r.Config().ID || current(r2) {
			t.Errorf("open with %q: %d Argon2id runs, %v; want 1 or 2, and its key current", pw, n, err)
		}
	}
	// A wrong password runs the two Argon2id files and not the generated one.
	wrongGen, _ := NewGeneratedKey()
	for _, pw := range []string{"wrong", wrongGen} {
		if n, _, err := runs(pw); !errors.Is(err, ErrWrongPassword) || n != 2 {
			t.Errorf("open with %q: %d Argon2id runs, %v; want 2 and ErrWrongPassword", pw, n, err)
		}
	}
}

// TestGeneratedKeyOnly: a repository whose keys are all generated says so
// to a password, without running a KDF.
func TestGeneratedKeyOnly(t *testing.T) {
	ctx := t.Context()
	be := mem.New()
	gen, _ := NewGeneratedKey()
	if _, err := Init(ctx, be, "not a generated key", InitOptions{GeneratedKey: true}, Options{}); err == nil || !strings.Contains(err.Error(), "not a generated key") {
		t.Errorf("init with a password as a generated key: %v", err)
	}
	r, err := Init(ctx, be, gen, InitOptions{GeneratedKey: true}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	before := Argon2Runs()
	_, err = Open(ctx, be, "a password", Options{})
	if !errors.Is(err, ErrWrongPassword) || !strings.Contains(err.Error(), "all generated keys") {
		t.Errorf("open with a password: %v", err)
	}
	if n := Argon2Runs() - before; n != 0 {
		t.Errorf("open with a password ran Argon2id %d times on generated keys' files", n)
	}
	// One character changed is another key.
	c := byte('A')
	if gen[10] == c {
		c = 'B'
	}
	other := gen[:10] + string(c) + gen[11:]
	if !IsGeneratedKey(other) {
		t.Fatalf("%q is not a generated key", other)
	}
	if _, err := Open(ctx, be, other, Options{}); !errors.Is(err, ErrWrongPassword) {
		t.Errorf("open with %q (one character changed): %v", other, err)
	}
}
