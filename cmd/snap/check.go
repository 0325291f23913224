package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/snapshot"
)

type checkOptions struct {
	*globalOptions
	snapshot.CheckOptions
	metrics *metrics // may be nil
}

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "prove the repository is whole; exit 1 if it is not",
		Description: "Checks that every snapshot and its tree load, that every blob they name is in the index,\n" +
			"and that every pack the index names is stored with the right size. --read-data also downloads\n" +
			"packs and verifies every blob. Exit status: 0 whole, 1 problems found (or the check could not run),\n" +
			"2 bad usage.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "read-data", Usage: "download packs and verify every blob (all packs, or --read-data-subset)"},
			&cli.StringFlag{Name: "read-data-subset", Usage: "verify only `SUBSET` of the packs: a percentage (10%) or part N of M (1/5, 2/5, ...); implies --read-data"},
			&cli.DurationFlag{Name: "unreferenced-margin", Value: snapshot.DefaultUnreferencedMargin, Usage: "report packs no index names as prune's to remove once older than `DURATION`"},
			&cli.BoolFlag{Name: "no-lock", Usage: "do not take a shared lock (a concurrent prune may then make check report problems)"},
			lockRetryFlag(), metricsPushFlag(),
		},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			gateway, err := parseMetricsPush(c)
			if err != nil {
				return err
			}
			co := snapshot.CheckOptions{
				ReadData: c.Bool("read-data"), UnreferencedMargin: c.Duration("unreferenced-margin"),
				NoLock: c.Bool("no-lock"), RetryLock: c.Duration("retry-lock"),
			}
			if s := c.String("read-data-subset"); s != "" {
				sub, err := snapshot.ParseSubset(s)
				if err != nil {
					return cli.Exit("--read-data-subset: "+err.Error(), exitUsage)
				}
				co.ReadData, co.Subset = true, &sub
			}
			m := newMetrics()
			err = runCheck(c.Context, checkOptions{globalOptions: g, CheckOptions: co, metrics: m})
			m.push(c.Context, gateway, g.log, "host", hostname(), "command", "check")
			return err
		},
	}
}

func runCheck(ctx context.Context, o checkOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	o.Log = o.log
	o.Extra = chain.CheckExtra(r)
	res, err := snapshot.Check(ctx, r, o.CheckOptions)
	if err != nil {
		return err
	}
	o.metrics.checkDone(res, time.Now())
	if o.json {
		if err := json.NewEncoder(o.stdout).Encode(res); err != nil {
			return err
		}
	} else {
		printCheck(o.stdout, res)
	}
	if !res.OK() {
		return cli.Exit(fmt.Sprintf("check found %d problems in %s", res.ErrorCount, r.Backend().Location()), exitError)
	}
	return nil
}

func printCheck(w io.Writer, res *snapshot.CheckResult) {
	fmt.Fprintf(w, "checked %d snapshots, %d index files, %d packs, %d blobs\n", res.Snapshots, res.IndexFiles, res.Packs, res.Blobs)
	if res.ReadData {
		sub := "all packs"
		if res.ReadDataSubset != "" {
			sub = "subset " + res.ReadDataSubset
		}
		fmt.Fprintf(w, "read %d packs (%s, %s) and verified every blob in them\n", res.PacksRead, bytesStr(res.BytesRead), sub)
	}
	if res.UnindexedPacks > 0 {
		fmt.Fprintf(w, "%d packs (%s) are named by no index", res.UnindexedPacks, bytesStr(res.UnindexedBytes))
		if res.UnindexedOld > 0 {
			fmt.Fprintf(w, "; %d of them are older than the margin: run snap prune to remove them", res.UnindexedOld)
		}
		fmt.Fprintln(w)
	}
	for _, n := range res.Notes {
		if n.Kind == "index" {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
	for _, p := range res.Errors {
		fmt.Fprintf(w, "error: %s\n", p)
	}
	if res.DroppedProblems > 0 {
		fmt.Fprintf(w, "... and %d more errors\n", res.DroppedProblems)
	}
	if res.OK() {
		fmt.Fprintln(w, "no errors found")
	} else {
		fmt.Fprintf(w, "%d errors found\n", res.ErrorCount)
	}
}
