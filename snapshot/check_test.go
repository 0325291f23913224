package snapshot_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// checkBase is a small repository: three snapshots with two files each,
// each backup in its own packs.
func checkBase(t *testing.T) (*mem.Backend, []*snapshot.Snapshot) {
	be := mem.New()
	r := newRepo(t, be)
	rng := rand.New(rand.NewPCG(60, 60))
	var snaps []*snapshot.Snapshot
	for i := range 3 {
		sn, _ := handSnapshot(t, r, t0.Add(time.Duration(i)*time.Hour), "db", nil,
			handFile{"000010.sst", chunks(rng, 20000, 15000)}, handFile{"000011.log", chunks(rng, 9000)})
		snaps = append(snaps, sn)
	}
	return be, snaps
}

func runCheck(t *testing.T, be repo.Backend, o snapshot.CheckOptions) *snapshot.CheckResult {
	t.Helper()
	r, err := repo.Open(context.Background(), be, "pw", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	o.NoLock = true
	res, err := snapshot.Check(context.Background(), r, o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// locate returns the pack holding a snapshot's file's first chunk.
func locate(t *testing.T, be repo.Backend, sn *snapshot.Snapshot, file string) (repo.ID, repo.Location) {
	t.Helper()
	r := reopen(t, be)
	tree, err := snapshot.LoadTree(context.Background(), r, sn.Tree)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tree.Files {
		if f.Name == file {
			loc, ok := r.Index().Lookup(f.Chunks[0])
			if !ok {
				t.Fatal("chunk not indexed")
			}
			return f.Chunks[0], loc
		}
	}
	t.Fatalf("no file %s", file)
	return repo.ID{}, repo.Location{}
}

func replace(t *testing.T, be repo.Backend, h repo.Handle, data []byte) {
	t.Helper()
	if err := be.Remove(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(context.Background(), h, data); err != nil {
		t.Fatal(err)
	}
}

func TestCheckCleanRepository(t *testing.T) {
	be, _ := checkBase(t)
	res := runCheck(t, be, snapshot.CheckOptions{ReadData: true})
	if !res.OK() || res.Snapshots != 3 || res.PacksRead != res.Packs || res.Packs != 6 {
		t.Fatalf("clean repository: %+v", res)
	}
}

// TestCheckFindsDamage damages a copy of the repository in one way per
// case and expects check to name what is wrong: the snapshot, the file,
// the blob and the pack.
func TestCheckFindsDamage(t *testing.T) {
	base, snaps := checkBase(t)
	type damage struct {
		name     string
		readData bool
		apply    func(t *testing.T, be repo.Backend) []string // returns strings the errors must contain
	}
	cases := []damage{
		{"missing pack", false, func(t *testing.T, be repo.Backend) []string {
			blob, loc := locate(t, be, snaps[1], "000010.sst")
			be.Remove(context.Background(), repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()})
			return []string{"pack " + loc.Pack.String() + ": named by the index", "missing from storage",
				"snapshot " + snaps[1].ID.String() + ": file 000010.sst: pack " + loc.Pack.String() + ": blob " + blob.String() + ": 2 of 2 chunks are in a pack missing from storage"}
		}},
		{"truncated pack", false, func(t *testing.T, be repo.Backend) []string {
			_, loc := locate(t, be, snaps[0], "000011.log")
			h := repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()}
			data := backendtest.LoadAll(t, be, h)
			replace(t, be, h, data[:len(data)-100])
			return []string{"pack " + loc.Pack.String(), "stored with", "index entries make"}
		}},
		{"flipped byte, read data", true, func(t *testing.T, be repo.Backend) []string {
			blob, loc := locate(t, be, snaps[2], "000011.log")
			h := repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()}
			data := backendtest.LoadAll(t, be, h)
			data[int(loc.Offset)+100] ^= 1
			replace(t, be, h, data)
			return []string{"pack " + loc.Pack.String() + ": blob " + blob.String() + ": data is corrupt",
				"snapshot " + snaps[2].ID.String() + ": file 000011.log: blob " + blob.String() + ": chunk 0 of the file is damaged",
				"content does not match its name"}
		}},
		{"missing index file", false, func(t *testing.T, be repo.Backend) []string {
			_, loc := locate(t, be, snaps[0], "000010.sst")
			// Find and remove the index file naming that pack.
			r := reopen(t, be)
			set, err := r.LoadIndexFiles(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range set.Files {
				for _, p := range f.Data.Packs {
					if p.PackID == loc.Pack {
						be.Remove(context.Background(), repo.Handle{Type: repo.IndexFile, Name: f.Name})
					}
				}
			}
			return []string{"snapshot " + snaps[0].ID.String() + ": blob " + snaps[0].Tree.String() + ": the snapshot's tree blob is not in the index"}
		}},
		{"corrupt index file", false, func(t *testing.T, be repo.Backend) []string {
			var name string
			for n := range objects(t, be, repo.IndexFile) {
				name = n
			}
			h := repo.Handle{Type: repo.IndexFile, Name: name}
			data := backendtest.LoadAll(t, be, h)
			data[len(data)/2] ^= 1
			replace(t, be, h, data)
			return []string{"index " + name + ":", "data is corrupt"}
		}},
		{"corrupt snapshot", false, func(t *testing.T, be repo.Backend) []string {
			h := repo.Handle{Type: repo.SnapshotFile, Name: snaps[1].Name}
			data := backendtest.LoadAll(t, be, h)
			data[30] ^= 1
			replace(t, be, h, data)
			return []string{"snapshot " + snaps[1].ID.String() + ":", "data is corrupt"}
		}},
		{"missing tree pack", false, func(t *testing.T, be repo.Backend) []string {
			loc, _ := reopen(t, be).Index().Lookup(snaps[0].Tree)
			be.Remove(context.Background(), repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()})
			return []string{"snapshot " + snaps[0].ID.String() + ": pack " + loc.Pack.String() + ": blob " + snaps[0].Tree.String() + ": the snapshot's tree blob is in a missing pack"}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			be := cloneBackend(t, base)
			want := tc.apply(t, be)
			res := runCheck(t, be, snapshot.CheckOptions{ReadData: tc.readData})
			if res.OK() {
				t.Fatal("check passed a damaged repository")
			}
			var all []string
			for _, p := range res.Errors {
				all = append(all, p.String())
			}
			text := strings.Join(all, "\n")
			for _, w := range want {
				if !strings.Contains(text, w) {
					t.Errorf("no error mentions %q; errors:\n%s", w, text)
				}
			}
		})
	}
}

// TestCheckWithoutReadDataMissesBitRot documents what the cheap check
// does not see: a flipped bit inside a pack keeps its size.
func TestCheckWithoutReadDataMissesBitRot(t *testing.T) {
	be, snaps := checkBase(t)
	_, loc := locate(t, be, snaps[0], "000010.sst")
	h := repo.Handle{Type: repo.PackFile, Name: loc.Pack.String()}
	data := backendtest.LoadAll(t, be, h)
	data[int(loc.Offset)+50] ^= 1
	replace(t, be, h, data)
	if res := runCheck(t, be, snapshot.CheckOptions{}); !res.OK() {
		t.Fatalf("check without --read-data: %v", res.Errors)
	}
	sub := snapshot.Subset{N: 1, M: 1}
	if res := runCheck(t, be, snapshot.CheckOptions{ReadData: true, Subset: &sub}); res.OK() {
		t.Fatal("check --read-data-subset 1/1 passed a flipped bit")
	}
}

func TestCheckReadDataSubset(t *testing.T) {
	be, _ := checkBase(t)
	total := 0
	for n := 1; n <= 3; n++ {
		sub := snapshot.Subset{N: n, M: 3}
		res := runCheck(t, be, snapshot.CheckOptions{ReadData: true, Subset: &sub})
		if !res.OK() {
			t.Fatal(res.Errors)
		}
		total += res.PacksRead
	}
	if total != 6 {
		t.Fatalf("subsets 1/3, 2/3, 3/3 read %d packs in all, want each of the 6 once", total)
	}
	sub := snapshot.Subset{Fraction: 0.5}
	res := runCheck(t, be, snapshot.CheckOptions{ReadData: true, Subset: &sub, Rand: rand.New(rand.NewPCG(1, 1))})
	if res.PacksRead != 3 {
		t.Fatalf("50%% subset read %d of 6 packs", res.PacksRead)
	}
	for _, tc := range []struct {
		in  string
		ok  bool
		str string
	}{{"10%", true, "10%"}, {"2.5%", true, "2.5%"}, {"2/5", true, "2/5"}, {"0%", false, ""}, {"6/5", false, ""}, {"0/5", false, ""}, {"x", false, ""}, {"101%", false, ""}} {
		s, err := snapshot.ParseSubset(tc.in)
		if (err == nil) != tc.ok || tc.ok && s.String() != tc.str {
			t.Errorf("ParseSubset(%q) = %v, %v", tc.in, s, err)
		}
	}
}

// TestCheckChunksNotIndexed: the data blobs' index file is gone while the
// tree's is not, so the tree loads and check names the file and the first
// missing chunk.
func TestCheckChunksNotIndexed(t *testing.T) {
	be := mem.New()
	r := newRepo(t, be)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(61, 61))
	tf := snapshot.File{Name: "000012.sst", Role: "table"}
	for _, c := range chunks(rng, 5000, 6000, 7000) {
		id := r.BlobID(c)
		if _, err := r.SaveBlob(ctx, repo.DataBlob, id, c); err != nil {
			t.Fatal(err)
		}
		tf.Chunks, tf.Sizes, tf.Length = append(tf.Chunks, id), append(tf.Sizes, uint32(len(c))), tf.Length+int64(len(c))
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	dataIndex := objects(t, be, repo.IndexFile)
	tid, err := snapshot.SaveTree(ctx, r, &snapshot.Tree{Files: []snapshot.File{tf}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	sn := &snapshot.Snapshot{Time: t0, Host: "db", Tree: tid}
	if err := snapshot.Save(ctx, r, sn); err != nil {
		t.Fatal(err)
	}
	for name := range dataIndex {
		be.Remove(ctx, repo.Handle{Type: repo.IndexFile, Name: name})
	}
	res := runCheck(t, be, snapshot.CheckOptions{})
	want := "snapshot " + sn.ID.String() + ": file 000012.sst: blob " + tf.Chunks[0].String() + ": 3 of 3 chunks are not in the index (the first is chunk 0)"
	if res.OK() || len(res.Errors) != 1 || res.Errors[0].String() != want {
		t.Fatalf("errors %v, want %q", res.Errors, want)
	}
	if res.UnindexedPacks != 1 {
		t.Fatalf("%d unindexed packs, want the data pack whose index is gone", res.UnindexedPacks)
	}
}
