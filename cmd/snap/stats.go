package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

type statsOptions struct {
	*globalOptions
	id        string
	retryLock time.Duration
}

func statsCommand() *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "what the repository holds: snapshots, bytes, blobs, packs, dedup and compression; or what one snapshot alone holds",
		ArgsUsage: "[SNAPSHOT-ID]",
		Description: "Reads the index once and every snapshot's tree, no data. With a snapshot id (a unique prefix of at\n" +
			"least 4 hex digits) it also says which blobs no other snapshot references: what forgetting it and\n" +
			"pruning would free. Takes a shared lock, as check does.",
		Flags: []cli.Flag{lockRetryFlag()},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			if c.NArg() > 1 {
				return cli.Exit("stats takes at most one snapshot id (see snap stats --help)", exitUsage)
			}
			return runStats(c.Context, statsOptions{globalOptions: g, id: c.Args().First(), retryLock: c.Duration("retry-lock")})
		},
	}
}

// tailStats counts the redis tail objects from their listing alone:
// their names give the AOF bytes they hold, the listing their size.
// Their data blobs (compacted objects have some) are not read, so they
// count among the blobs no snapshot references.
type tailStats struct {
	Chains      int   `json:"chains"`       // chains with tail objects
	Objects     int   `json:"objects"`      // every tail object, redundant ones too
	StoredBytes int64 `json:"stored_bytes"` // the objects' own size, not their data blobs'
	AOFBytes    int64 `json:"aof_bytes"`    // bytes of AOF the maximal objects cover
}

type statsJSON struct {
	*snapshot.Stats
	Tails tailStats `json:"tails"`
}

func runStats(ctx context.Context, o statsOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	lk, err := r.Lock(ctx, repo.LockOptions{Command: "stats", RetryFor: o.retryLock, Log: o.log})
	if err != nil {
		return err
	}
	defer lk.Unlock(ctx)
	snaps, err := snapshot.List(ctx, r)
	if err != nil {
		return err
	}
	var target *snapshot.Snapshot
	if o.id != "" {
		if target, err = snapshot.Find(snaps, o.id); err != nil {
			return err
		}
	}
	st, err := snapshot.ComputeStats(ctx, r, snaps, target)
	if err != nil {
		return err
	}
	refs, err := chain.List(ctx, r)
	if err != nil {
		return err
	}
	var ts tailStats
	for _, c := range chain.Chains(snaps, refs) {
		if len(c.Tails) > 0 {
			ts.Chains++
		}
		for _, t := range c.Tails {
			ts.AOFBytes += t.End - t.Offset
		}
	}
	for _, t := range refs {
		ts.Objects++
		ts.StoredBytes += t.Size
	}
	if o.json {
		return json.NewEncoder(o.stdout).Encode(statsJSON{st, ts})
	}
	printStats(o.stdout, r.Backend().Location(), st, ts, target)
	return nil
}

func printStats(w io.Writer, location string, st *snapshot.Stats, ts tailStats, target *snapshot.Snapshot) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	blobs := func(c snapshot.BlobCount, what string) string {
		return fmt.Sprintf("%s, %s plain, %s stored", plural(c.Blobs, what), bytesStr(c.Bytes), bytesStr(c.StoredBytes))
	}
	fmt.Fprintf(tw, "repository:\t%s\n", location)
	fmt.Fprintf(tw, "snapshots:\t%d from %s, %s\n", st.Snapshots, plural(st.Hosts, "host"), plural(int(st.Files), "file"))
	fmt.Fprintf(tw, "logical bytes:\t%s (%d: the files' lengths, summed over the snapshots)\n", bytesStr(st.LogicalBytes), st.LogicalBytes)
	fmt.Fprintf(tw, "unique data:\t%s\n", blobs(st.Data, "data blob"))
	fmt.Fprintf(tw, "trees:\t%s\n", blobs(st.Trees, "tree blob"))
	fmt.Fprintf(tw, "dedup ratio:\t%.2f (logical / unique plain)\n", st.DedupRatio)
	fmt.Fprintf(tw, "compression ratio:\t%.2f (unique plain / stored)\n", st.CompressionRatio)
	fmt.Fprintf(tw, "stored:\t%s in %s, %s indexed\n", bytesStr(st.StoredBytes), plural(st.Packs, "pack"), plural(st.Blobs, "blob"))
	fmt.Fprintf(tw, "in no snapshot:\t%s, %s stored (forgotten data prune collects, or redis tail data)\n",
		plural(st.NotInSnapshots.Blobs, "blob"), bytesStr(st.NotInSnapshots.StoredBytes))
	fmt.Fprintf(tw, "redis tails:\t%s in %s, %s stored, %s of AOF\n", plural(ts.Objects, "object"), plural(ts.Chains, "chain"),
		bytesStr(ts.StoredBytes), bytesStr(ts.AOFBytes))
	if ss := st.Snapshot; ss != nil {
		fmt.Fprintf(tw, "\nsnapshot %s:\t%s, %s, on %s at %s\n", target.ID.Str(), plural(int(ss.Files), "file"), bytesStr(ss.LogicalBytes),
			target.Host, target.Time.Local().Format("2006-01-02 15:04:05"))
		fmt.Fprintf(tw, "  references:\t%s; %s\n", blobs(ss.Data, "data blob"), blobs(ss.Trees, "tree blob"))
		fmt.Fprintf(tw, "  its own:\t%s; %s\n", blobs(ss.OwnData, "data blob"), blobs(ss.OwnTrees, "tree blob"))
		fmt.Fprintf(tw, "  forget and prune free:\t%s stored\n", bytesStr(ss.FreedStoredBytes))
		if chain.IsRedis(target) {
			fmt.Fprintf(tw, "  \t(a redis base: the tail objects a prune would drop with it are not counted)\n")
		}
	}
	tw.Flush()
}
