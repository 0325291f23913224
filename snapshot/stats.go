package snapshot

import (
	"context"
	"fmt"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
)

// BlobCount is a number of distinct blobs, their plaintext bytes and
// their stored (sealed) bytes.
type BlobCount struct {
	Blobs       int   `json:"blobs"`
	Bytes       int64 `json:"bytes"`
	StoredBytes int64 `json:"stored_bytes"`
}

func (c *BlobCount) add(e repo.BlobEntry) {
	c.Blobs++
	c.Bytes += int64(e.RawLength)
	c.StoredBytes += int64(e.Length)
}

// Stats is what a repository holds (docs/design.md, "Stats").
type Stats struct {
	Snapshots    int   `json:"snapshots"`
	Hosts        int   `json:"hosts"`
	Files        int64 `json:"files"`         // regular files, summed over the snapshots
	LogicalBytes int64 `json:"logical_bytes"` // their lengths, summed over the snapshots

	Packs       int   `json:"packs"`        // that the effective index names
	StoredBytes int64 `json:"stored_bytes"` // their size, headers included
	Blobs       int   `json:"blobs"`        // distinct blobs the index names

	// Data and Trees are the distinct blobs the snapshots reference:
	// Data.Bytes is the unique plaintext, what deduplication leaves.
	Data  BlobCount `json:"data"`
	Trees BlobCount `json:"trees"`
	// NotInSnapshots are indexed blobs no snapshot references: data of
	// forgotten snapshots that prune has not yet collected, and the data
	// blobs of redis tail objects (which Stats does not read). Bytes is
	// zero: only the stored size is known without reading them.
	NotInSnapshots BlobCount `json:"not_in_snapshots"`

	DedupRatio       float64 `json:"dedup_ratio"`       // LogicalBytes / Data.Bytes
	CompressionRatio float64 `json:"compression_ratio"` // Data.Bytes / Data.StoredBytes

	Snapshot *SnapshotStats `json:"snapshot,omitempty"`
}

// SnapshotStats is what one snapshot references, and what of it no other
// snapshot does: the blobs forgetting it and pruning would remove.
type SnapshotStats struct {
	ID           string    `json:"id"`
	Files        int64     `json:"files"`
	LogicalBytes int64     `json:"logical_bytes"`
	Data         BlobCount `json:"data"`  // distinct data blobs it references
	Trees        BlobCount `json:"trees"` // its tree blob
	OwnData      BlobCount `json:"own_data"`
	OwnTrees     BlobCount `json:"own_trees"`
	// FreedStoredBytes is OwnData's and OwnTrees' stored bytes: what a
	// prune after forgetting it frees, once it deletes or repacks their
	// packs (one that stays under --max-unused keeps them).
	FreedStoredBytes int64 `json:"freed_stored_bytes"`
}

// ComputeStats counts what the repository holds: snaps (all of its
// snapshots, as List gives them) and the index. With target set (one of
// snaps) it also counts what target alone references. It loads the
// index files once and every distinct tree once (Connections at a time,
// one decoded tree each), and reads no data blob; it keeps one byte per
// referenced blob (about 60 with the map's overhead) and the blob set of
// target's tree. Call it under a shared lock, so no prune moves a tree
// away meanwhile.
func ComputeStats(ctx context.Context, r *repo.Repository, snaps []*Snapshot, target *Snapshot) (*Stats, error) {
	st := &Stats{Snapshots: len(snaps)}
	set, err := r.LoadIndexFiles(ctx, nil)
	if err != nil {
		return nil, err
	}
	seenPack := map[repo.ID]bool{}
	for _, f := range set.Files {
		if set.Superseded[f.ID] {
			continue
		}
		for _, p := range f.Data.Packs {
			if seenPack[p.PackID] {
				continue
			}
			seenPack[p.PackID] = true
			var n int64
			for _, e := range p.Blobs {
				n += int64(e.Length)
			}
			st.Packs++
			st.StoredBytes += repo.PackSizeFor(n, len(p.Blobs))
		}
	}
	idx := r.Index()
	st.Blobs = idx.Len()

	hosts := map[string]bool{}
	mult := map[repo.ID]int{} // snapshots per tree
	var trees []repo.ID
	for _, sn := range snaps {
		hosts[sn.Host] = true
		if mult[sn.Tree] == 0 {
			trees = append(trees, sn.Tree)
		}
		mult[sn.Tree]++
	}
	st.Hosts = len(hosts)

	// refs counts the snapshots that reference each blob, up to 2: one
	// is all a snapshot's own blobs need to be told apart.
	refs := map[repo.ID]uint8{}
	var own map[repo.ID]bool // target's blobs
	var ownFiles, ownLogical int64
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.Connections())
	for _, tid := range trees {
		g.Go(func() error {
			t, err := LoadTree(gctx, r, tid)
			if err != nil {
				return fmt.Errorf("%w; run snap check", err)
			}
			blobs := map[repo.ID]bool{tid: true}
			var files, logical int64
			for _, f := range t.Files {
				if f.Type != TypeFile {
					continue
				}
				files++
				logical += f.Length
				for _, c := range f.Chunks {
					blobs[c] = true
				}
			}
			m := mult[tid]
			mu.Lock()
			defer mu.Unlock()
			st.Files += files * int64(m)
			st.LogicalBytes += logical * int64(m)
			for b := range blobs {
				refs[b] = uint8(min(int(refs[b])+m, 2))
			}
			if target != nil && tid == target.Tree {
				own, ownFiles, ownLogical = blobs, files, logical
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	for b := range refs {
		loc, ok := idx.Lookup(b)
		if !ok {
			return nil, fmt.Errorf("blob %s that a snapshot references is not in the index; run snap check", b)
		}
		if loc.Type == repo.TreeBlob {
			st.Trees.add(loc.BlobEntry)
		} else {
			st.Data.add(loc.BlobEntry)
		}
	}
	// Indexed blobs no snapshot references, from the index files (the
	// in-memory index cannot be walked); a blob in two packs counts once.
	seenBlob := map[repo.ID]bool{}
	for _, f := range set.Files {
		if set.Superseded[f.ID] {
			continue
		}
		for _, p := range f.Data.Packs {
			for _, e := range p.Blobs {
				if refs[e.ID] == 0 && !seenBlob[e.ID] {
					seenBlob[e.ID] = true
					st.NotInSnapshots.Blobs++
					st.NotInSnapshots.StoredBytes += int64(e.Length)
				}
			}
		}
	}
	if st.Data.Bytes > 0 {
		st.DedupRatio = float64(st.LogicalBytes) / float64(st.Data.Bytes)
	}
	if st.Data.StoredBytes > 0 {
		st.CompressionRatio = float64(st.Data.Bytes) / float64(st.Data.StoredBytes)
	}

	if target != nil {
		ss := &SnapshotStats{ID: target.ID.String(), Files: ownFiles, LogicalBytes: ownLogical}
		for b := range own {
			loc, _ := idx.Lookup(b) // every referenced blob was found above
			data, ownc := &ss.Data, &ss.OwnData
			if loc.Type == repo.TreeBlob {
				data, ownc = &ss.Trees, &ss.OwnTrees
			}
			data.add(loc.BlobEntry)
			if refs[b] == 1 {
				ownc.add(loc.BlobEntry)
			}
		}
		ss.FreedStoredBytes = ss.OwnData.StoredBytes + ss.OwnTrees.StoredBytes
		st.Snapshot = ss
	}
	return st, nil
}
