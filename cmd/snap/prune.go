package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/cluster"
	"github.com/snapbackup/snap/snapshot"
)

type pruneOptions struct {
	*globalOptions
	snapshot.PruneOptions
	metrics *metrics // may be nil
}

// retentionFlags are prune's policy flags; snap run may share them.
func retentionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "keep-last", Usage: "keep the newest `N` snapshots"},
		&cli.IntFlag{Name: "keep-hourly", Usage: "keep the newest snapshot of each of the last `N` hours that have one"},
		&cli.IntFlag{Name: "keep-daily", Usage: "keep the newest snapshot of each of the last `N` days that have one"},
		&cli.IntFlag{Name: "keep-weekly", Usage: "keep the newest snapshot of each of the last `N` ISO weeks that have one"},
		&cli.IntFlag{Name: "keep-monthly", Usage: "keep the newest snapshot of each of the last `N` months that have one"},
		&cli.IntFlag{Name: "keep-yearly", Usage: "keep the newest snapshot of each of the last `N` years that have one"},
		&cli.StringFlag{Name: "keep-within", Usage: "keep every snapshot newer than the group's newest minus `DURATION` (y, m = months, d, h: 7d, 1y6m)"},
		&cli.StringSliceFlag{Name: "keep-tag", Usage: "keep every snapshot with `TAG` (repeatable)"},
		&cli.StringFlag{Name: "group-by", Value: "host,source", Usage: "apply the policy per `GROUP`: host,source, host, source or none"},
		&cli.StringFlag{Name: "timezone", Value: "Local", EnvVars: []string{"SNAP_TIMEZONE"}, Usage: "calendar `ZONE` for hourly/daily/... buckets, e.g. UTC or Europe/Berlin"},
	}
}

func pruneCommand() *cli.Command {
	return &cli.Command{
		Name:  "prune",
		Usage: "remove snapshots by a retention policy and the data no remaining snapshot needs",
		Description: "Without --keep-* options no snapshot is removed, and prune only collects garbage.\n" +
			"Snapshots are kept if any rule keeps them; see docs/design.md, \"Retention policy\".",
		Flags: append(retentionFlags(),
			&cli.StringFlag{Name: "max-unused", Value: "5%", Usage: "repack packs with more than `PERCENT` unused bytes"},
			&cli.DurationFlag{Name: "unreferenced-margin", Value: snapshot.DefaultUnreferencedMargin, Usage: "delete packs no index names only when older than `DURATION`"},
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "show what would be removed and why each snapshot is kept; change nothing"},
			lockRetryFlag(), metricsPushFlag(),
		),
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			po, err := parsePruneFlags(c)
			if err != nil {
				return err
			}
			gateway, err := parseMetricsPush(c)
			if err != nil {
				return err
			}
			m := newMetrics()
			err = runPrune(c.Context, pruneOptions{globalOptions: g, PruneOptions: po, metrics: m})
			m.push(c.Context, gateway, g.log, "host", hostname(), "command", "prune")
			return err
		},
	}
}

// parsePruneFlags fills snapshot.PruneOptions from prune's flags.
func parsePruneFlags(c *cli.Context) (snapshot.PruneOptions, error) {
	var o snapshot.PruneOptions
	var err error
	if o.Policy, o.GroupBy, o.Location, err = parseRetentionFlags(c); err != nil {
		return o, err
	}
	if o.MaxUnused, err = parsePercent(c.String("max-unused")); err != nil {
		return o, cli.Exit("--max-unused: "+err.Error(), exitUsage)
	}
	o.UnreferencedMargin = c.Duration("unreferenced-margin")
	if o.UnreferencedMargin < 0 {
		return o, cli.Exit("--unreferenced-margin must not be negative", exitUsage)
	}
	o.DryRun = c.Bool("dry-run")
	o.RetryLock = c.Duration("retry-lock")
	return o, nil
}

// parseRetentionFlags reads the flags of retentionFlags.
func parseRetentionFlags(c *cli.Context) (snapshot.Policy, snapshot.GroupBy, *time.Location, error) {
	p := snapshot.Policy{
		Last: c.Int("keep-last"), Hourly: c.Int("keep-hourly"), Daily: c.Int("keep-daily"),
		Weekly: c.Int("keep-weekly"), Monthly: c.Int("keep-monthly"), Yearly: c.Int("keep-yearly"),
		Tags: c.StringSlice("keep-tag"),
	}
	for _, n := range []string{"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly"} {
		if v := c.Int(n); v < -1 {
			return p, snapshot.GroupBy{}, nil, cli.Exit(fmt.Sprintf("--%s %d: want a count (or -1 for all)", n, v), exitUsage)
		}
	}
	if s := c.String("keep-within"); s != "" {
		d, err := snapshot.ParseDuration(s)
		if err != nil {
			return p, snapshot.GroupBy{}, nil, cli.Exit("--keep-within: "+err.Error(), exitUsage)
		}
		p.Within = d
	}
	g, err := snapshot.ParseGroupBy(c.String("group-by"))
	if err != nil {
		return p, g, nil, cli.Exit(err.Error(), exitUsage)
	}
	loc, err := time.LoadLocation(c.String("timezone"))
	if err != nil {
		return p, g, nil, cli.Exit(fmt.Sprintf("--timezone %q: %v (use an IANA name like Europe/Berlin, UTC or Local)", c.String("timezone"), err), exitUsage)
	}
	return p, g, loc, nil
}

// parsePercent parses "5%" (or "5") into 0.05.
func parsePercent(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if err != nil || v < 0 || v > 100 {
		return 0, fmt.Errorf("%q: want a percentage from 0%% to 100%%", s)
	}
	return v / 100, nil
}

func runPrune(ctx context.Context, o pruneOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	o.Log = o.log
	if o.Groups, o.Extra, err = cluster.Retention(ctx, r, time.Now, o.log, chain.PruneExtra(r, time.Now(), o.log)); err != nil {
		return err
	}
	res, err := snapshot.Prune(ctx, r, o.PruneOptions)
	if err != nil {
		return err
	}
	o.metrics.pruneDone(res, time.Now())
	if o.json {
		return json.NewEncoder(o.stdout).Encode(pruneJSON(res))
	}
	printPrune(o.stdout, res, o.PruneOptions)
	return nil
}

type pruneSnapshotJSON struct {
	ID      string    `json:"id"`
	Time    time.Time `json:"time"`
	Host    string    `json:"host"`
	Tags    []string  `json:"tags"`
	Keep    bool      `json:"keep"`
	Reasons []string  `json:"reasons"`
}

type pruneGroupJSON struct {
	Host      string              `json:"host,omitempty"`
	Source    *snapshot.Source    `json:"source,omitempty"`
	Snapshots []pruneSnapshotJSON `json:"snapshots"`
}

func pruneJSON(res *snapshot.PruneResult) map[string]any {
	groups := make([]pruneGroupJSON, 0, len(res.Groups))
	for _, g := range res.Groups {
		gj := pruneGroupJSON{Host: g.Host, Source: g.Source, Snapshots: []pruneSnapshotJSON{}}
		for _, d := range g.Decisions {
			sn := d.Snapshot
			tags := sn.Tags
			if tags == nil {
				tags = []string{}
			}
			reasons := d.Reasons
			if reasons == nil {
				reasons = []string{}
			}
			gj.Snapshots = append(gj.Snapshots, pruneSnapshotJSON{ID: sn.ID.String(), Time: sn.Time, Host: sn.Host, Tags: tags, Keep: d.Keep, Reasons: reasons})
		}
		groups = append(groups, gj)
	}
	return map[string]any{"dry_run": res.DryRun, "groups": groups, "stats": res.Stats}
}

func printPrune(w io.Writer, res *snapshot.PruneResult, o snapshot.PruneOptions) {
	st := res.Stats
	// Past tense for what was done, conditional for a dry run.
	remove, removed, deleted, repacked := "remove", "removed", "deleted", "repacked"
	if res.DryRun {
		remove, removed, deleted, repacked = "would remove", "would be removed", "would delete", "would repack"
	}
	printDecisions(w, res.Groups, o.Policy, o.GroupBy, o.Location, remove)
	fmt.Fprintf(w, "\n%d snapshots kept, %d %s\n", st.SnapshotsKept, st.SnapshotsRemoved, removed)
	fmt.Fprintf(w, "packs before: %d, %s (%d unused blobs, %s)\n", st.PacksBefore, bytesStr(st.PackBytesBefore), st.BlobsUnused, bytesStr(st.BytesUnused))
	fmt.Fprintf(w, "  %s %d packs with no used blob (%s)\n", deleted, st.PacksDeleted, bytesStr(st.PackBytesDeleted))
	fmt.Fprintf(w, "  %s %d packs (%s), copying %d blobs (%s)\n", repacked, st.PacksRepacked, bytesStr(st.PackBytesRepacked), st.BlobsRepacked, bytesStr(st.BytesRepacked))
	if st.UnindexedDeleted > 0 {
		fmt.Fprintf(w, "  %s %d packs no index names, older than %v (%s)\n", deleted, st.UnindexedDeleted, o.UnreferencedMargin, bytesStr(st.UnindexedBytes))
	}
	if st.UnindexedKept > 0 {
		fmt.Fprintf(w, "  kept %d packs no index names, younger than %v or of unknown age (%s): a running backup's, or for a later prune\n", st.UnindexedKept, o.UnreferencedMargin, bytesStr(st.UnindexedKeptBytes))
	}
	if res.DryRun {
		fmt.Fprintf(w, "packs after: about %d, %s plus the repacked blobs (dry run: nothing changed)\n", st.PacksAfter, bytesStr(st.PackBytesAfter))
		return
	}
	fmt.Fprintf(w, "packs after: %d, %s (%d new packs, %s)\n", st.PacksAfter, bytesStr(st.PackBytesAfter), st.PacksWritten, bytesStr(st.PackBytesWritten))
	if st.IndexFilesWritten > 0 {
		fmt.Fprintf(w, "index: %d files consolidated into %d (one per owner)\n", st.IndexFilesRemoved, st.IndexFilesWritten)
	}
	if st.Beside {
		fmt.Fprintf(w, "planned and repacked beside other processes' locks; took in %d snapshots written meanwhile, keeping %d packs they use\n", st.SnapshotsAppeared, st.PacksKeptForNew)
	}
	if st.TempFilesDeleted > 0 {
		fmt.Fprintf(w, "removed %d temp files interrupted writers left, older than %v (%s)\n", st.TempFilesDeleted, o.UnreferencedMargin, bytesStr(st.TempBytesDeleted))
	}
}

// lockRetryFlag is shared by the commands that take a lock.
func lockRetryFlag() cli.Flag {
	return &cli.DurationFlag{Name: "retry-lock", EnvVars: []string{"SNAP_RETRY_LOCK"}, Usage: "while another process holds a conflicting lock, keep trying for up to `DURATION` (with backoff) before failing"}
}

// printDecisions prints a retention policy's decisions, group by group,
// as prune and forget show them; remove is the verb for a snapshot that
// goes ("remove", or "would remove" when dry).
func printDecisions(w io.Writer, groups []snapshot.Group, p snapshot.Policy, by snapshot.GroupBy, loc *time.Location, remove string) {
	fmt.Fprintf(w, "%s (group by %s, time zone %s)\n", p, by, loc)
	for _, g := range groups {
		fmt.Fprintf(w, "\n%s:\n", g.Key())
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, d := range g.Decisions {
			sn := d.Snapshot
			what := "keep"
			if !d.Keep {
				what = remove
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", what, sn.ID.Str(), sn.Time.In(loc).Format("2006-01-02 15:04:05 MST"),
				strings.Join(sn.Tags, ","), strings.Join(d.Reasons, "; "))
		}
		tw.Flush()
	}
}
