package repo_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/mem"
)

func TestNamedRoundTrip(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	ctx := t.Context()
	const prefix = "0123abcd-3-100-200-1700000000000-n"
	plains := [][]byte{textBytes(rng, 5000), randomBytes(rng, 300), {}}
	want := map[string][]byte{}
	for _, plain := range plains {
		name, err := r.SaveNamed(ctx, repo.TailFile, prefix, plain)
		if err != nil {
			t.Fatalf("save named: %v", err)
		}
		p, id, ok := repo.SplitNamed(name)
		if !ok || p != prefix {
			t.Fatalf("SplitNamed(%q) = %q, %v, %v", name, p, id, ok)
		}
		stored := backendtest.LoadAll(t, be, repo.Handle{Type: repo.TailFile, Name: name})
		if repo.Hash(stored) != id || len(stored) != len(plain)+repo.Overhead {
			t.Errorf("%s is not the sealed plaintext named by its hash", name)
		}
		want[name] = plain
	}
	// A stray object, which ListNamed skips.
	if err := be.Save(ctx, repo.Handle{Type: repo.TailFile, Name: "README"}, []byte("x")); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	if err := r.ListNamed(ctx, repo.TailFile, func(name string, size int64) error {
		got[name] = size
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("list named: %v, want the %d saved", got, len(want))
	}
	for name, plain := range want {
		size, ok := got[name]
		if !ok || size != int64(len(plain)+repo.Overhead) {
			t.Errorf("list named: %s listed %v with size %d", name, ok, size)
		}
		for _, size := range []int64{size, -1} {
			data, err := r.LoadNamed(ctx, repo.TailFile, name, size)
			if err != nil || !bytes.Equal(data, plain) {
				t.Errorf("load named %s (size %d): %d bytes, %v", name, size, len(data), err)
			}
		}
	}
	for name := range want {
		if err := r.RemoveNamed(ctx, repo.TailFile, name); err != nil {
			t.Fatalf("remove named %s: %v", name, err)
		}
		if err := r.RemoveNamed(ctx, repo.TailFile, name); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("remove named %s twice: %v, want ErrNotFound", name, err)
		}
		if _, err := r.LoadNamed(ctx, repo.TailFile, name, -1); !errors.Is(err, repo.ErrNotFound) {
			t.Errorf("load removed %s: %v, want ErrNotFound", name, err)
		}
	}
	if n := len(list(t, be, repo.TailFile)); n != 1 {
		t.Errorf("%d tail objects left, want the stray one", n)
	}
}

func TestNamedCorrupt(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	ctx := t.Context()
	plain := textBytes(rng, 2000)
	name, err := r.SaveNamed(ctx, repo.TailFile, "ab-1", plain)
	if err != nil {
		t.Fatal(err)
	}
	h := repo.Handle{Type: repo.TailFile, Name: name}
	orig := backendtest.LoadAll(t, be, h)
	other, err := r.SaveNamed(ctx, repo.TailFile, "ab-2", randomBytes(rng, 100))
	if err != nil {
		t.Fatal(err)
	}
	origOther := backendtest.LoadAll(t, be, repo.Handle{Type: repo.TailFile, Name: other})
	for _, tc := range []struct {
		name   string
		change func([]byte) []byte
	}{
		{"flipped", func(c []byte) []byte { c[50] ^= 1; return c }},
		{"truncated", func(c []byte) []byte { return c[:len(c)-1] }},
		{"swapped", func([]byte) []byte { return bytes.Clone(origOther) }},
		{"empty", func([]byte) []byte { return []byte{} }},
	} {
		rewrite(t, be, h, func([]byte) []byte { return tc.change(bytes.Clone(orig)) })
		_, err := r.LoadNamed(ctx, repo.TailFile, name, -1)
		if !errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "does not match its name") || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want ErrCorrupt naming %s", tc.name, err, name)
		}
	}
	// Named by its hash under a valid prefix, but not sealed with our key.
	forged := randomBytes(rng, 200)
	fname := "ab-3-" + repo.Hash(forged).String()
	if err := be.Save(ctx, repo.Handle{Type: repo.TailFile, Name: fname}, forged); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadNamed(ctx, repo.TailFile, fname, -1); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("forged object: %v, want ErrCorrupt", err)
	}
	// A listing that lies about the size.
	if _, err := r.LoadNamed(ctx, repo.TailFile, other, 10); !errors.Is(err, repo.ErrCorrupt) {
		t.Errorf("load with a short listed size: %v, want ErrCorrupt", err)
	}
}

func TestNamedBadNames(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	ctx := t.Context()
	hash := strings.Repeat("ab", 32)
	for _, prefix := range []string{
		"",
		"-ab",
		".ab",
		".tmp",
		"a..b",
		"AB",
		"a_b",
		"a/b",
		"a b",
		"é",
		strings.Repeat("a", 161),
	} {
		if name, err := r.SaveNamed(ctx, repo.TailFile, prefix, []byte("x")); err == nil {
			t.Errorf("save named with prefix %q: stored %s", prefix, name)
		}
		if _, _, ok := repo.SplitNamed(prefix + "-" + hash); ok {
			t.Errorf("SplitNamed accepts prefix %q", prefix)
		}
	}
	for _, prefix := range []string{"a", "0", "a-", "a.b", "0123abcd-3-100-200-1700000000000-n", strings.Repeat("z", 160)} {
		if _, err := r.SaveNamed(ctx, repo.TailFile, prefix, []byte("x")); err != nil {
			t.Errorf("save named with prefix %q: %v", prefix, err)
		}
	}
	if n := len(list(t, be, repo.TailFile)); n != 6 {
		t.Errorf("%d tail objects stored, want 6", n)
	}
	if _, err := r.SaveNamed(ctx, repo.TailFile, "ab", make([]byte, 16<<20)); err == nil || !strings.Contains(err.Error(), "a tail object") {
		t.Errorf("save a tail over the bound: %v", err)
	}
	if _, err := r.SaveNamed(ctx, repo.TailFile, "ab", make([]byte, 16<<20-repo.Overhead)); err != nil {
		t.Errorf("save a tail at the bound: %v", err)
	}
	for _, name := range []string{
		hash,                          // no prefix
		"ab-" + hash[:63],             // short hash
		"ab-" + strings.ToUpper(hash), // not lower case
		"ab-" + hash + "-1",           // hash not last
		"ab_" + hash,
		"Ab-" + hash,
		"-" + hash,
	} {
		if p, _, ok := repo.SplitNamed(name); ok {
			t.Errorf("SplitNamed(%q) = %q, ok", name, p)
		}
		if _, err := r.LoadNamed(ctx, repo.TailFile, name, -1); err == nil || errors.Is(err, repo.ErrNotFound) {
			t.Errorf("load named %q: %v, want a refusal", name, err)
		}
		if err := r.RemoveNamed(ctx, repo.TailFile, name); err == nil || errors.Is(err, repo.ErrNotFound) {
			t.Errorf("remove named %q: %v, want a refusal", name, err)
		}
	}
	if p, id, ok := repo.SplitNamed("a-b-" + hash); !ok || p != "a-b" || id.String() != hash {
		t.Errorf("SplitNamed splits at the last '-': %q, %v, %v", p, id, ok)
	}
}

// TestSaveAs: objects named by what they are round-trip, never overwrite,
// and do not open under another name or another repository's key.
func TestSaveAs(t *testing.T) {
	be := mem.New()
	r := initRepo(t, be, smallOptions())
	ctx := t.Context()
	const name = "shop+request"
	if _, err := r.LoadAs(ctx, repo.ClusterFile, name, -1); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("absent: %v", err)
	}
	if err := r.SaveAs(ctx, repo.ClusterFile, name, []byte("first")); err != nil {
		t.Fatal(err)
	}
	if err := r.SaveAs(ctx, repo.ClusterFile, name, []byte("second")); !errors.Is(err, repo.ErrExists) {
		t.Fatalf("overwrite: %v", err)
	}
	got, err := r.LoadAs(ctx, repo.ClusterFile, name, -1)
	if err != nil || string(got) != "first" {
		t.Fatalf("load: %q, %v", got, err)
	}
	// The same bytes under another name do not open.
	stored := backendtest.LoadAll(t, be, repo.Handle{Type: repo.ClusterFile, Name: name})
	if err := be.Save(ctx, repo.Handle{Type: repo.ClusterFile, Name: "shop+group+x"}, stored); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LoadAs(ctx, repo.ClusterFile, "shop+group+x", -1); !errors.Is(err, repo.ErrCorrupt) {
		t.Fatalf("moved object: %v", err)
	}
	var names []string
	if err := r.ListAs(ctx, repo.ClusterFile, func(fi repo.FileInfo) error { names = append(names, fi.Name); return nil }); err != nil || len(names) != 2 {
		t.Fatalf("list: %v, %v", names, err)
	}
	if err := r.RemoveAs(ctx, repo.ClusterFile, name); err != nil {
		t.Fatal(err)
	}
	if err := r.RemoveAs(ctx, repo.ClusterFile, name); !errors.Is(err, repo.ErrNotFound) {
		t.Fatalf("second remove: %v", err)
	}
	for _, bad := range []string{"", "../x", "a/b", ".hidden", "-x", "A", "a b", strings.Repeat("a", 201)} {
		if err := r.SaveAs(ctx, repo.ClusterFile, bad, nil); err == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if err := r.SaveAs(ctx, repo.SnapshotFile, "shop", nil); err == nil {
		t.Error("SaveAs wrote a snapshot under a chosen name")
	}
}
