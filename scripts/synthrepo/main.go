// Command synthrepo writes a synthetic repository with many tiny blobs,
// for measuring prune and check at scale (scripts/measure-gc.sh), and
// with -hosts a fleet's repository (issue 18): many hosts sharing one,
// in the version 2 layout (docs/design.md, "Layout"): each host's packs
// indexed under its tag, the shared pool under shared-, snapshots named
// by their host's tag. -format-version 1 writes the flat layout.
//
// Blob i (random bytes, so nothing deduplicates) belongs to snapshot
// i mod S and blobs are stored in that order, so every pack holds blobs of
// every snapshot: forgetting half the snapshots leaves every pack about
// half unused, and prune repacks all of them.
//
// With -hosts H, the blobs are split among H hosts (host-0000, ...), each
// with -snapshots snapshots of its own blobs, stored host by host as each
// host's backups would store them. A -shared fraction of each host's chunks comes from a
// pool common to the fleet: each host's snapshots reference a stretch of
// it (so that that fraction of a host's chunks are shared), the stretches
// of neighbouring hosts overlapping, so each pool blob is referenced by
// -overlap hosts (4 by default), and stays shared after a prune.
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
	hosts := flag.Int("hosts", 0, "split the blobs among this many hosts, each with -snapshots snapshots (0: one host, as before)")
	shared := flag.Float64("shared", 0.1, "with -hosts: the fraction of each host's chunks that come from the fleet's shared pool")
	overlap := flag.Int("overlap", 4, "with -hosts: how many hosts reference each blob of the shared pool")
	version := flag.Int("format-version", repo.FormatVersion, "repository format version (1: flat layout)")
	flag.Parse()
	if *hosts < 0 || *shared < 0 || *shared >= 1 || *snaps < 1 || *files < 1 || *size < 8 || *overlap < 1 || *hosts > 0 && *overlap > *hosts {
		log.Fatal("want -hosts >= 0, 0 <= -shared < 1, -snapshots and -files >= 1, -size >= 8, 1 <= -overlap <= -hosts")
	}
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
		PackSize: 1 << 20, Compression: "off", FormatVersion: *version,
		KDF: repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
	}, repo.Options{Connections: 8})
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	if *hosts > 0 {
		fleet(ctx, r, *hosts, *blobs, *snaps, *files, *size, *shared, *overlap)
		st := r.Stats()
		fmt.Printf("wrote %d blobs in %d packs (%d bytes), %d index files, %d hosts with %d snapshots each in %v\n",
			st.BlobsNew, st.Packs, st.BytesSaved, st.Indexes, *hosts, *snaps, time.Since(start).Round(time.Millisecond))
		return
	}
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

// fleet writes the -hosts repository: a shared pool first, then each
// host's own blobs and snapshots.
func fleet(ctx context.Context, r *repo.Repository, hosts, blobs, snaps, files, size int, shared float64, overlap int) {
	rng := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, size)
	blob := func() repo.ID {
		for j := 0; j+8 <= len(buf); j += 8 {
			binary.LittleEndian.PutUint64(buf[j:], rng.Uint64())
		}
		id := r.BlobID(buf)
		if _, err := r.SaveBlob(ctx, repo.DataBlob, id, buf); err != nil {
			log.Fatal(err)
		}
		return id
	}
	// A host has n chunks: stretch = shared*n from the pool, own the rest.
	// Each pool blob is in overlap hosts' stretches, so the pool holds
	// hosts*stretch/overlap blobs, and the blobs add up to -blobs:
	// hosts*(own + stretch/overlap).
	n := float64(blobs) / (float64(hosts) * ((1 - shared) + shared/float64(overlap)))
	stretch := int(n * shared)
	own := int(n) - stretch
	pool := make([]repo.ID, max(1, hosts*stretch/overlap))
	for i := range pool {
		pool[i] = blob()
	}
	// The pool is indexed as shared (the repository is not scoped yet),
	// as a prune that found several hosts using it would leave it.
	if err := r.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	stretch = min(stretch, len(pool))
	// Stretches start len(pool)/hosts apart, so each pool blob is in
	// the stretches of overlap neighbouring hosts.
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for h := range hosts {
		host := fmt.Sprintf("host-%04d", h)
		// Each host's packs are indexed under its tag, as its backups
		// would index them (Flush below ends each host's uploads).
		r.ScopeTo(host)
		ids := make([]repo.ID, own)
		for i := range ids {
			ids[i] = blob()
		}
		for s := range snaps {
			// Each snapshot: the host's stretch of the pool and its own
			// blobs up to its share of them (a growing database).
			var chunks []repo.ID
			for k := range stretch {
				chunks = append(chunks, pool[(h*len(pool)/hosts+k)%len(pool)])
			}
			chunks = append(chunks, ids[:own*(s+1)/snaps]...)
			tree := &snapshot.Tree{}
			var total int64
			per := (len(chunks) + files - 1) / files
			for f := 0; f*per < len(chunks); f++ {
				part := chunks[f*per : min((f+1)*per, len(chunks))]
				tf := snapshot.File{Name: fmt.Sprintf("%06d.sst", f), Role: "table", Chunks: part}
				for range part {
					tf.Sizes = append(tf.Sizes, uint32(size))
					tf.Length += int64(size)
				}
				tree.Files = append(tree.Files, tf)
				total += tf.Length
			}
			tid, err := snapshot.SaveTree(ctx, r, tree)
			if err != nil {
				log.Fatal(err)
			}
			sn := &snapshot.Snapshot{Time: t0.Add(time.Duration(s)*time.Hour + time.Duration(h)*time.Second), Host: host, Tree: tid,
				Source:  snapshot.Source{Kind: "freeze", Address: "synthetic", DataDir: "/data"},
				Summary: snapshot.Summary{Files: len(tree.Files), Bytes: total}}
			if err := r.Flush(ctx); err != nil {
				log.Fatal(err)
			}
			if err := snapshot.Save(ctx, r, sn); err != nil {
				log.Fatal(err)
			}
		}
	}
}
