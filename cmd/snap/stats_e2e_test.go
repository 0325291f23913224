package main_test

import (
	"io/fs"
	"math"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/internal/testredis"
)

type blobCountJSON struct {
	Blobs       int   `json:"blobs"`
	Bytes       int64 `json:"bytes"`
	StoredBytes int64 `json:"stored_bytes"`
}

type statsOutJSON struct {
	Snapshots        int           `json:"snapshots"`
	Hosts            int           `json:"hosts"`
	Files            int64         `json:"files"`
	LogicalBytes     int64         `json:"logical_bytes"`
	Packs            int           `json:"packs"`
	StoredBytes      int64         `json:"stored_bytes"`
	Blobs            int           `json:"blobs"`
	Data             blobCountJSON `json:"data"`
	Trees            blobCountJSON `json:"trees"`
	NotInSnapshots   blobCountJSON `json:"not_in_snapshots"`
	DedupRatio       float64       `json:"dedup_ratio"`
	CompressionRatio float64       `json:"compression_ratio"`
	Snapshot         *struct {
		ID               string        `json:"id"`
		Files            int64         `json:"files"`
		LogicalBytes     int64         `json:"logical_bytes"`
		Data             blobCountJSON `json:"data"`
		Trees            blobCountJSON `json:"trees"`
		OwnData          blobCountJSON `json:"own_data"`
		OwnTrees         blobCountJSON `json:"own_trees"`
		FreedStoredBytes int64         `json:"freed_stored_bytes"`
	} `json:"snapshot"`
	Tails struct {
		Chains      int   `json:"chains"`
		Objects     int   `json:"objects"`
		StoredBytes int64 `json:"stored_bytes"`
		AOFBytes    int64 `json:"aof_bytes"`
	} `json:"tails"`
}

// storedPacks counts the pack objects and their bytes, from the storage.
type storedPacks func() (n int, bytes int64)

func TestStatsEndToEnd(t *testing.T) {
	e := newEnv(t)
	statsEndToEnd(t, e, func() (int, int64) {
		var n int
		var size int64
		filepath.WalkDir(filepath.Join(e.repo, "data"), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && !strings.HasPrefix(d.Name(), ".tmp-") {
				fi, err := d.Info()
				if err != nil {
					t.Fatal(err)
				}
				n++
				size += fi.Size()
			}
			return nil
		})
		return n, size
	})
}

func TestStatsGCS(t *testing.T) {
	gcs := startFakeGCS(t)
	gcs.createBucket("snap-stats")
	statsEndToEnd(t, gcsEnv(t, gcs, "gs://snap-stats/r"), func() (int, int64) {
		objs := gcs.objects("snap-stats", "r/data/")
		var size int64
		for _, s := range objs {
			size += s
		}
		return len(objs), size
	})
}

// statsEndToEnd checks stats against threeSnapshots' known content:
// random files of one chunk each, stored as they are (plain + 40 bytes).
func statsEndToEnd(t *testing.T, e *env, packs storedPacks) {
	fx := newThreeSnapshots(t, e, func() int { n, _ := packs(); return n })
	const ov = 40
	var st statsOutJSON
	e.ok(&st, "stats", "--json")
	np, pb := packs()
	logical := int64(10000 + 12000 + 5000 + 2*(10000+12000+8000))
	if st.Snapshots != 3 || st.Hosts != 1 || st.Files != 9 || st.LogicalBytes != logical {
		t.Errorf("stats: %d snapshots, %d hosts, %d files, %d logical bytes; want 3, 1, 9, %d", st.Snapshots, st.Hosts, st.Files, st.LogicalBytes, logical)
	}
	if st.Data != (blobCountJSON{4, 35000, 35000 + 4*ov}) {
		t.Errorf("stats data: %+v, want a, b, c and d: 4 blobs, 35000 bytes, %d stored", st.Data, 35000+4*ov)
	}
	// [1] and [2] are of the same unchanged directory: one tree.
	if st.Trees.Blobs != 2 || st.Blobs != 6 || st.NotInSnapshots != (blobCountJSON{}) {
		t.Errorf("stats: %d tree blobs, %d blobs, %+v not in snapshots; want 2, 6 and none", st.Trees.Blobs, st.Blobs, st.NotInSnapshots)
	}
	if st.Packs != np || st.StoredBytes != pb {
		t.Errorf("stats: %d packs of %d bytes; the storage has %d of %d", st.Packs, st.StoredBytes, np, pb)
	}
	if math.Abs(st.DedupRatio-float64(logical)/35000) > 1e-9 || math.Abs(st.CompressionRatio-35000.0/(35000+4*ov)) > 1e-9 {
		t.Errorf("stats: dedup %v, compression %v", st.DedupRatio, st.CompressionRatio)
	}
	if st.Tails.Objects != 0 || st.Tails.Chains != 0 || st.Snapshot != nil {
		t.Errorf("stats: %+v", st)
	}

	// [0] alone holds c and its tree; [1] nothing ([2] has it all).
	var s0 statsOutJSON
	e.ok(&s0, "stats", fx.ids[0][:8], "--json")
	ss := s0.Snapshot
	if ss == nil || ss.ID != fx.ids[0] || ss.Files != 3 || ss.LogicalBytes != 27000 || ss.Data != (blobCountJSON{3, 27000, 27000 + 3*ov}) ||
		ss.OwnData != (blobCountJSON{1, 5000, 5000 + ov}) || ss.OwnTrees.Blobs != 1 || ss.FreedStoredBytes != 5000+ov+ss.OwnTrees.StoredBytes {
		t.Errorf("stats %s: %+v", fx.ids[0][:8], ss)
	}
	var s1 statsOutJSON
	e.ok(nil, "stats", fx.ids[1])
	e.ok(&s1, "stats", fx.ids[1], "--json")
	if ss := s1.Snapshot; ss == nil || ss.OwnData != (blobCountJSON{}) || ss.OwnTrees != (blobCountJSON{}) || ss.Data.Blobs != 3 {
		t.Errorf("stats %s: %+v, want nothing of its own", fx.ids[1][:8], ss)
	}
	r := e.ok(nil, "stats", fx.ids[0][:8])
	for _, want := range []string{"3 from 1 host, 9 files", "85.0 KiB (87000", "dedup ratio:", "2.49", "its own:", "1 data blob, 4.9 KiB plain"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("stats text lacks %q:\n%s", want, r.stdout)
		}
	}
	e.fails(1, `no snapshot found with id "deadbeef"`, "stats", "deadbeef")
	e.fails(2, "at most one snapshot id", "stats", fx.ids[0], fx.ids[1])

	// Forgotten, [0]'s own blobs are in no snapshot: exactly what it said.
	e.ok(nil, "forget", fx.ids[0])
	var after statsOutJSON
	e.ok(&after, "stats", "--json")
	if after.NotInSnapshots.Blobs != 2 || after.NotInSnapshots.StoredBytes != ss.FreedStoredBytes || after.StoredBytes != st.StoredBytes {
		t.Errorf("after forget: %+v in no snapshot, %d stored; stats said %d bytes would be freed, of %d",
			after.NotInSnapshots, after.StoredBytes, ss.FreedStoredBytes, st.StoredBytes)
	}
	e.ok(nil, "prune")
	e.ok(&after, "stats", "--json")
	np, pb = packs()
	if after.Snapshots != 2 || after.Data != (blobCountJSON{3, 30000, 30000 + 3*ov}) || after.NotInSnapshots != (blobCountJSON{}) ||
		after.Packs != np || after.StoredBytes != pb || after.StoredBytes >= st.StoredBytes-ss.FreedStoredBytes+300 {
		t.Errorf("after prune: %+v (storage: %d packs of %d bytes; before %d bytes)", after, np, pb, st.StoredBytes)
	}
}

// TestStatsRedisTails: stats counts a chain's tail objects from their
// listing: how many, their stored size, the AOF bytes they hold.
func TestStatsRedisTails(t *testing.T) {
	srv := testredis.Start(t, testredis.Options{Dir: filepath.Join(t.TempDir(), "redis")})
	c := srv.Client()
	e := redisEnv(t)
	f := startFollow(t, e, srv, "cache-1", "--interval", "100ms")
	rng := mrand.New(mrand.NewPCG(7, 8))
	setKeys(t, c, rng, map[string]string{}, "k", 300, 50, 50*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	f.stop()

	var st statsOutJSON
	e.ok(&st, "stats", "--json")
	var objects int
	var stored int64
	entries, err := os.ReadDir(filepath.Join(e.repo, "tails"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range entries {
		if strings.HasPrefix(d.Name(), ".tmp-") {
			continue
		}
		fi, err := d.Info()
		if err != nil {
			t.Fatal(err)
		}
		objects++
		stored += fi.Size()
	}
	incrs, _ := filepath.Glob(filepath.Join(srv.Dir, "appendonlydir", "*.incr.aof"))
	var incr int64
	for _, p := range incrs {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		incr += fi.Size()
	}
	// 300 SETs of ~100-byte values: well over 30 KB of AOF after the base.
	if st.Tails.Chains != 1 || st.Tails.Objects != objects || objects == 0 || st.Tails.StoredBytes != stored ||
		st.Tails.AOFBytes < 30000 || st.Tails.AOFBytes > incr {
		t.Errorf("stats tails: %+v; the repository has %d tail objects of %d bytes, the incr files %d bytes", st.Tails, objects, stored, incr)
	}
	if st.Snapshots != 1 {
		t.Errorf("stats: %d snapshots, want the chain's base", st.Snapshots)
	}
}
