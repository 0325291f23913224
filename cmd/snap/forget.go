package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/cluster"
	"github.com/snapbackup/snap/snapshot"
)

type forgetOptions struct {
	*globalOptions
	snapshot.ForgetOptions
}

func forgetCommand() *cli.Command {
	return &cli.Command{
		Name:      "forget",
		Usage:     "remove snapshots, by id or by a retention policy, leaving their data for prune",
		ArgsUsage: "[SNAPSHOT-ID...]",
		Description: "snap forget ID... removes those snapshots (ids may be unique prefixes of at least 4 hex digits;\n" +
			"if one matches no snapshot, none is removed). snap forget --keep-* removes the snapshots the policy\n" +
			"does not keep, as prune would. No data is removed: snap prune collects what no snapshot uses.",
		Flags: append(retentionFlags(),
			&cli.BoolFlag{Name: "dry-run", Aliases: []string{"n"}, Usage: "show what would be removed (and why each snapshot is kept); change nothing"},
			lockRetryFlag(),
		),
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			o := forgetOptions{globalOptions: g}
			if o.Policy, o.GroupBy, o.Location, err = parseRetentionFlags(c); err != nil {
				return err
			}
			o.IDs = c.Args().Slice()
			switch {
			case len(o.IDs) == 0 && o.Policy.Empty():
				return cli.Exit("forget: give snapshot ids or --keep-* rules (see snap forget --help)", exitUsage)
			case len(o.IDs) > 0 && !o.Policy.Empty():
				return cli.Exit("forget: give snapshot ids or --keep-* rules, not both", exitUsage)
			}
			o.DryRun = c.Bool("dry-run")
			o.RetryLock = c.Duration("retry-lock")
			return runForget(c.Context, o)
		},
	}
}

func runForget(ctx context.Context, o forgetOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	o.Log = o.log
	if !o.Policy.Empty() {
		// Cluster groups go or stay together, as prune decides.
		if o.Groups, _, err = cluster.Retention(ctx, r, time.Now, o.log, nil); err != nil {
			return err
		}
	}
	res, err := snapshot.ForgetSnapshots(ctx, r, o.ForgetOptions)
	if err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(o.stdout).Encode(forgetJSON(res))
	}
	printForget(o.stdout, res, o.ForgetOptions)
	return nil
}

func forgetJSON(res *snapshot.ForgetResult) map[string]any {
	removed := make([]snapshotJSON, 0, len(res.Removed))
	for _, sn := range res.Removed {
		removed = append(removed, toJSON(sn))
	}
	out := map[string]any{"dry_run": res.DryRun, "removed": removed, "kept": res.Kept}
	if res.Groups != nil {
		// the same groups as prune --json prints
		out["groups"] = pruneJSON(&snapshot.PruneResult{Groups: res.Groups})["groups"]
	}
	return out
}

func printForget(w io.Writer, res *snapshot.ForgetResult, o snapshot.ForgetOptions) {
	removed, remove := "removed", "remove"
	if res.DryRun {
		removed, remove = "would be removed", "would remove"
	}
	if res.Groups != nil {
		printDecisions(w, res.Groups, o.Policy, o.GroupBy, o.Location, remove)
		fmt.Fprintln(w)
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, sn := range res.Removed {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", remove, sn.ID.Str(), sn.Time.Local().Format("2006-01-02 15:04:05"), sn.Host, sourceStr(sn.Source))
		}
		tw.Flush()
	}
	fmt.Fprintf(w, "%s %s, %d kept", plural(len(res.Removed), "snapshot"), removed, res.Kept)
	if res.DryRun {
		fmt.Fprintln(w, " (dry run: nothing changed)")
		return
	}
	fmt.Fprintln(w, "; their data stays until snap prune removes what no snapshot uses")
}
