//go:build unix

package main_test

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// indexNames lists the repository's index files.
func indexNames(t *testing.T, repoDir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(repoDir, "index"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out
}

func newNames(before, after []string) []string {
	var out []string
	for _, n := range after {
		if !slices.Contains(before, n) {
			out = append(out, n)
		}
	}
	return out
}

var (
	tagNamed  = regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{64}$`)
	hashNamed = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// TestFleetDamagedIndexOfAnotherHost: in a version 2 repository shared by
// two hosts, a damaged index file of host b stops neither host a's
// backups nor its restore (they never read b's files), while snap check
// names the file and fails (issue 18, "Bad input").
func TestFleetDamagedIndexOfAnotherHost(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	e := newEnv(t)
	e.ok(nil, "init")
	work := t.TempDir()
	srcA, srcB := filepath.Join(work, "a"), filepath.Join(work, "b")
	for _, d := range []string{srcA, srcB} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	filesA := map[string][]byte{}
	for i, name := range []string{"000001.sst", "000002.sst", "MANIFEST-000001"} {
		filesA[name] = randomFile(t, filepath.Join(srcA, name), 300<<10+i*1000)
	}
	randomFile(t, filepath.Join(srcB, "000009.sst"), 400<<10)

	e.ok(nil, "backup", "--source", "dir", "--path", srcA, "--host", "a")
	afterA := indexNames(t, e.repo)
	e.ok(nil, "backup", "--source", "dir", "--path", srcB, "--host", "b")
	ofB := newNames(afterA, indexNames(t, e.repo))
	if len(ofB) == 0 {
		t.Fatal("host b's backup wrote no index file")
	}
	for _, n := range append(afterA, ofB...) {
		if !tagNamed.MatchString(n) {
			t.Errorf("index file %s is not named <host tag>-<hash>", n)
		}
	}
	if afterA[0][:16] == ofB[0][:16] {
		t.Fatalf("hosts a and b have the same tag %s", afterA[0][:16])
	}
	snapNames, err := os.ReadDir(filepath.Join(e.repo, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range snapNames {
		if !tagNamed.MatchString(s.Name()) {
			t.Errorf("snapshot %s is not named <host tag>-<hash>", s.Name())
		}
	}

	// Damage b's index file: same size, other bytes.
	bad := filepath.Join(e.repo, "index", ofB[0])
	data, err := os.ReadFile(bad)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, data, 0o444); err != nil {
		t.Fatal(err)
	}

	// Host a: an incremental backup, a new file, a restore.
	filesA["000003.sst"] = randomFile(t, filepath.Join(srcA, "000003.sst"), 200<<10)
	var b backupJSON
	e.ok(&b, "backup", "--json", "--source", "dir", "--path", srcA, "--host", "a")
	if b.Parent == "" {
		t.Error("host a's second backup found no parent")
	}
	target := filepath.Join(work, "restored")
	e.ok(nil, "restore", "--latest", "--host", "a", "--target", target)
	for name, want := range filesA {
		got, err := os.ReadFile(filepath.Join(target, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("restored %s differs (%v)", name, err)
		}
	}
	var ls []struct {
		Host string `json:"host"`
	}
	e.ok(&ls, "ls", "--json", "--host", "a")
	if len(ls) != 2 || ls[0].Host != "a" || ls[1].Host != "a" {
		t.Errorf("ls --host a: %+v, want host a's 2 snapshots", ls)
	}

	// Check reads everything: it names the damaged file and fails.
	r := e.run("check")
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, ofB[0]) {
		t.Errorf("check: exit %d, want 1 naming index/%s\nstdout: %s\nstderr: %s", r.code, ofB[0], r.stdout, r.stderr)
	}
}

// TestFleetFormatVersion1: snap init --format-version 1 writes the flat
// layout older snaps read, and every command works on it as before.
func TestFleetFormatVersion1(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end")
	}
	e := newEnv(t)
	e.ok(nil, "init", "--format-version", "1")
	work := t.TempDir()
	src := filepath.Join(work, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		t.Fatal(err)
	}
	want := randomFile(t, filepath.Join(src, "000001.sst"), 300<<10)
	e.ok(nil, "backup", "--source", "dir", "--path", src, "--host", "a")
	e.ok(nil, "backup", "--source", "dir", "--path", src, "--host", "b")
	for _, dir := range []string{"index", "snapshots"} {
		ents, err := os.ReadDir(filepath.Join(e.repo, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range ents {
			if !hashNamed.MatchString(f.Name()) {
				t.Errorf("%s/%s is not named by its hash alone", dir, f.Name())
			}
		}
	}
	target := filepath.Join(work, "restored")
	e.ok(nil, "restore", "--latest", "--host", "b", "--target", target)
	if got, err := os.ReadFile(filepath.Join(target, "000001.sst")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("restored file differs (%v)", err)
	}
	e.ok(nil, "prune", "--keep-last", "1")
	e.ok(nil, "check", "--read-data")

	// The migration: snap copy into a new (version 2) repository names
	// the snapshots by host, and a host's restore works there.
	v2 := newEnv(t)
	v2.ok(nil, "init")
	v2.vars = append(v2.vars, "SNAP_FROM_PASSWORD=correct horse")
	v2.ok(nil, "copy", "--from-repo", e.repo)
	snaps, err := os.ReadDir(filepath.Join(v2.repo, "snapshots"))
	if err != nil || len(snaps) != 2 {
		t.Fatalf("copied snapshots %v, %v; want 2", snaps, err)
	}
	for _, f := range snaps {
		if !tagNamed.MatchString(f.Name()) {
			t.Errorf("copied snapshot %s is not named <host tag>-<hash>", f.Name())
		}
	}
	target2 := filepath.Join(work, "restored2")
	v2.ok(nil, "restore", "--latest", "--host", "a", "--target", target2)
	if got, err := os.ReadFile(filepath.Join(target2, "000001.sst")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("file restored from the copy differs (%v)", err)
	}
	v2.ok(nil, "check", "--read-data")
	if r := e.run("init", "--format-version", "3", "--repo", filepath.Join(work, "other")); r.code == 0 {
		t.Error("init --format-version 3 succeeded")
	}
}
