package main_test

import (
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// threeSnapshots is a repository with three dir snapshots of known
// content. Every file is smaller than the 16 KiB minimum chunk, so it is
// one chunk, and random, so it is stored uncompressed:
//
//	[0]: a (10000 bytes), b (12000), c (5000)
//	[1]: a, b, d (8000); c deleted
//	[2]: the same directory again, unchanged: the same tree as [1]
type threeSnapshots struct {
	ids   [3]string
	packs func() int // pack objects in the repository
}

var threeSizes = map[string]int{"a": 10000, "b": 12000, "c": 5000, "d": 8000}

func newThreeSnapshots(t *testing.T, e *env, packs func() int) threeSnapshots {
	t.Helper()
	e.ok(nil, "init", "--kdf-memory", "8", "--kdf-time", "1", "--chunk-min", "16", "--chunk-avg", "64", "--chunk-max", "256")
	data := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	rng := mrand.NewChaCha8([32]byte{20})
	write := func(name string) {
		b := make([]byte, threeSizes[name])
		rng.Read(b)
		if err := os.WriteFile(filepath.Join(data, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fx := threeSnapshots{packs: packs}
	backup := func(i int) {
		var b backupJSON
		e.ok(&b, "backup", "--source", "dir", "--path", data, "--json")
		fx.ids[i] = b.SnapshotID
	}
	for _, n := range []string{"a", "b", "c"} {
		write(n)
	}
	backup(0)
	if err := os.Remove(filepath.Join(data, "c")); err != nil {
		t.Fatal(err)
	}
	write("d")
	backup(1)
	backup(2)
	return fx
}

// lsIDs lists the snapshot ids, oldest first.
func (e *env) lsIDs() []string {
	e.t.Helper()
	var snaps []struct {
		ID string `json:"id"`
	}
	e.ok(&snaps, "ls", "--json")
	var out []string
	for _, s := range snaps {
		out = append(out, s.ID)
	}
	return out
}

type forgetOutJSON struct {
	DryRun  bool `json:"dry_run"`
	Removed []struct {
		ID string `json:"id"`
	} `json:"removed"`
	Kept   int `json:"kept"`
	Groups []struct {
		Snapshots []struct {
			ID      string   `json:"id"`
			Keep    bool     `json:"keep"`
			Reasons []string `json:"reasons"`
		} `json:"snapshots"`
	} `json:"groups"`
}

func removedIDs(f forgetOutJSON) []string {
	var out []string
	for _, r := range f.Removed {
		out = append(out, r.ID)
	}
	return out
}

func TestForgetEndToEnd(t *testing.T) {
	e := newEnv(t)
	forgetEndToEnd(t, e, func() int { return countPacks(e.repo) })
}

func TestForgetGCS(t *testing.T) {
	gcs := startFakeGCS(t)
	gcs.createBucket("snap-forget")
	e := gcsEnv(t, gcs, "gs://snap-forget/r")
	forgetEndToEnd(t, e, func() int { return len(gcs.objects("snap-forget", "r/data/")) })
}

func forgetEndToEnd(t *testing.T, e *env, packs func() int) {
	fx := newThreeSnapshots(t, e, packs)
	all := strings.Join(fx.ids[:], " ")
	packsBefore := fx.packs()
	same := func(step string, want ...string) {
		t.Helper()
		if got := strings.Join(e.lsIDs(), " "); got != strings.Join(want, " ") {
			t.Errorf("%s: snapshots %s, want %s", step, got, strings.Join(want, " "))
		}
		if n := fx.packs(); n != packsBefore {
			t.Errorf("%s: %d packs, want the %d there were: forget removes no data", step, n, packsBefore)
		}
	}

	// Bad input: exit 1 or 2, nothing removed.
	e.fails(1, `no snapshot found with id "deadbeef"`, "forget", fx.ids[0], "deadbeef")
	e.fails(1, "too short", "forget", fx.ids[0], "abc")
	e.fails(2, "give snapshot ids or --keep-* rules", "forget")
	e.fails(2, "not both", "forget", fx.ids[0], "--keep-last", "1")
	e.fails(2, "--keep-within", "forget", "--keep-within", "7x")
	if r := e.run("forget", "deadbeef", "--json"); r.code != 1 || !strings.Contains(r.stdout, `"code":1`) {
		t.Errorf("forget --json of an unknown id: exit %d, stdout %q", r.code, r.stdout)
	}
	same("bad input", fx.ids[:]...)

	// By id, dry, then for real (by prefix).
	var f forgetOutJSON
	e.ok(&f, "forget", fx.ids[0][:8], "--dry-run", "--json")
	if !f.DryRun || strings.Join(removedIDs(f), " ") != fx.ids[0] || f.Kept != 2 {
		t.Errorf("forget --dry-run: %+v", f)
	}
	same("dry run", fx.ids[:]...)
	r := e.ok(nil, "forget", fx.ids[0][:8])
	if !strings.Contains(r.stdout, "remove  "+fx.ids[0][:8]) || !strings.Contains(r.stdout, "1 snapshot removed, 2 kept") {
		t.Errorf("forget %s:\n%s", fx.ids[0][:8], r.stdout)
	}
	same("forget by id", fx.ids[1:]...)
	e.fails(1, "no snapshot found", "forget", fx.ids[0])

	// By policy: --keep-last 1 keeps the newest.
	f = forgetOutJSON{}
	e.ok(&f, "forget", "--keep-last", "1", "--dry-run", "--json")
	if strings.Join(removedIDs(f), " ") != fx.ids[1] || len(f.Groups) != 1 || len(f.Groups[0].Snapshots) != 2 ||
		!f.Groups[0].Snapshots[0].Keep || f.Groups[0].Snapshots[0].Reasons[0] != "last #1" {
		t.Errorf("forget --keep-last 1 --dry-run: %+v (all %s)", f, all)
	}
	same("dry policy", fx.ids[1:]...)
	r = e.ok(nil, "forget", "--keep-last", "1")
	if !strings.Contains(r.stdout, "keep 1 last (group by host,source") || !strings.Contains(r.stdout, "1 snapshot removed, 1 kept") {
		t.Errorf("forget --keep-last 1:\n%s", r.stdout)
	}
	same("forget by policy", fx.ids[2])

	// prune removes the data only the forgotten snapshots used (c), and
	// the repository is whole.
	e.ok(nil, "prune")
	e.ok(nil, "check", "--read-data")
	target := filepath.Join(t.TempDir(), "restored")
	e.ok(nil, "restore", fx.ids[2][:8], "--target", target)
	for name, size := range threeSizes {
		fi, err := os.Stat(filepath.Join(target, name))
		if name == "c" {
			if err == nil {
				t.Errorf("restored c, which the last snapshot does not have")
			}
			continue
		}
		if err != nil || fi.Size() != int64(size) {
			t.Errorf("restored %s: %v, %v", name, fi, err)
		}
	}
}
