// Command synthrepo writes a synthetic repository with many tiny blobs,
// for measuring prune and check at scale (scripts/measure-gc.sh).
//
// Blob i (random bytes, so nothing deduplicates) belongs to snapshot
// i mod S and blobs are stored in that order, so every pack holds blobs of
// every snapshot: forgetting half the snapshots leaves every pack about
// half unused, and prune repacks all of them.
package main

import (
	"context"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/local"
	"github.com/snapbackup/snap/snapshot"
)

func main() {
	dir := flag.String("repo", "", "directory for the new repository")
	blobs := flag.Int("blobs", 1_000_000, "number of data blobs")
	snaps := flag.Int("snapshots", 20, "number of snapshots")
	files := flag.Int("files", 50, "files per snapshot")
	size := flag.Int("size", 64, "bytes per blob")
	flag.Parse()
	if *dir == "" {
		log.Fatal("-repo is required")
	}
	pw := os.Getenv("SNAP_PASSWORD")
	if pw == "" {
		log.Fatal("set SNAP_PASSWORD")
	}
	ctx := context.Background()
	be, err := local.Create(filepath.Clean(*dir))
	if err != nil {
		log.Fatal(err)
	}
	r, err := repo.Init(ctx, be, pw, repo.InitOptions{
		PackSize: 1 << 20, Compression: "off",
		KDF: repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
	}, repo.Options{Connections: 8})
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([][]repo.ID, *snaps)
	buf := make([]byte, *size)
	for i := range *blobs {
		for j := 0; j < len(buf); j += 8 {
			binary.LittleEndian.PutUint64(buf[j:], rng.Uint64())
		}
		id := r.BlobID(buf)
		if _, err := r.SaveBlob(ctx, repo.DataBlob, id, buf); err != nil {
			log.Fatal(err)
		}
		ids[i%*snaps] = append(ids[i%*snaps], id)
	}
	if err := r.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for s, chunks := range ids {
		tree := &snapshot.Tree{}
		per := (len(chunks) + *files - 1) / *files
		for f := 0; f*per < len(chunks); f++ {
			part := chunks[f*per : min((f+1)*per, len(chunks))]
			tf := snapshot.File{Name: fmt.Sprintf("%06d.sst", f), Role: "table", Chunks: part}
			for range part {
				tf.Sizes = append(tf.Sizes, uint32(*size))
				tf.Length += int64(*size)
			}
			tree.Files = append(tree.Files, tf)
		}
		tid, err := snapshot.SaveTree(ctx, r, tree)
		if err != nil {
			log.Fatal(err)
		}
		if err := r.Flush(ctx); err != nil {
			log.Fatal(err)
		}
		sn := &snapshot.Snapshot{Time: t0.Add(time.Duration(s) * time.Hour), Host: "synth", Tree: tid,
			Source: snapshot.Source{Kind: "rocksdb-freeze", Address: "synthetic", DataDir: "/data"}}
		if err := snapshot.Save(ctx, r, sn); err != nil {
			log.Fatal(err)
		}
	}
	st := r.Stats()
	fmt.Printf("wrote %d blobs in %d packs (%d bytes), %d index files, %d snapshots in %v\n",
		st.BlobsNew, st.Packs, st.BytesSaved, st.Indexes, *snaps, time.Since(start).Round(time.Millisecond))
}
