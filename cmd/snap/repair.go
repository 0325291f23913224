package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

type repairOptions struct {
	*globalOptions
	what         string // index or snapshots
	dryRun       bool
	readAllPacks bool
	retryLock    time.Duration
}

// repairCommand is one command with the thing to repair as its argument,
// not two subcommands: flags then go anywhere on the line, as for every
// other command (flagsFirst knows one level of commands).
func repairCommand() *cli.Command {
	return &cli.Command{
		Name:      "repair",
		Usage:     "rebuild the index from the packs, or drop from snapshots the files whose data is lost",
		ArgsUsage: "index|snapshots",
		Description: "snap repair index: after index files were lost or damaged, index every pack again from its header,\n" +
			"write new index files and remove the old ones. A pack whose header does not load is reported and\n" +
			"left alone. snap repair snapshots: replace every snapshot with a file whose data no stored pack\n" +
			"holds by one without it, marked (repaired), and remove the damaged one; a snapshot whose tree is\n" +
			"lost is removed. After losing a pack run repair index, then repair snapshots. Both take the\n" +
			"exclusive lock.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "dry-run", Usage: "snapshots: say what would be dropped, change nothing"},
			&cli.BoolFlag{Name: "read-all-packs", Usage: "index: read every pack's header, also of packs an intact index file names"},
			lockRetryFlag(),
		},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			o := repairOptions{globalOptions: g, what: c.Args().First(), dryRun: c.Bool("dry-run"),
				readAllPacks: c.Bool("read-all-packs"), retryLock: c.Duration("retry-lock")}
			switch {
			case c.NArg() != 1 || (o.what != "index" && o.what != "snapshots"):
				return cli.Exit("repair takes one argument: index or snapshots", exitUsage)
			case o.what == "index" && o.dryRun:
				return cli.Exit("--dry-run goes with repair snapshots", exitUsage)
			case o.what == "snapshots" && o.readAllPacks:
				return cli.Exit("--read-all-packs goes with repair index", exitUsage)
			}
			return runRepair(c.Context, o)
		},
	}
}

func runRepair(ctx context.Context, o repairOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	if o.what == "index" {
		return repairIndex(ctx, r, o)
	}
	return repairSnapshots(ctx, r, o)
}

func repairIndex(ctx context.Context, r *repo.Repository, o repairOptions) error {
	res, err := r.RepairIndex(ctx, repo.RepairIndexOptions{ReadAllPacks: o.readAllPacks, RetryLock: o.retryLock})
	if err != nil {
		return err
	}
	if o.json {
		return json.NewEncoder(o.stdout).Encode(res)
	}
	for _, d := range res.DamagedIndex {
		fmt.Fprintf(o.stdout, "index file %s does not load (removed): %s\n", d.ID.Str(), d.Error)
	}
	for _, d := range res.DamagedPacks {
		fmt.Fprintf(o.stdout, "pack %s (%s) is damaged, left unindexed: %s\n", d.ID, bytesStr(d.Size), d.Error)
	}
	if res.MissingPacks > 0 {
		fmt.Fprintf(o.stdout, "%d packs the old index named are not stored; dropped from the index\n", res.MissingPacks)
	}
	fmt.Fprintf(o.stdout, "indexed %d packs (%d blobs; %d headers read), wrote %d index files, removed %d\n",
		res.Packs, res.Blobs, res.HeadersRead, res.IndexesWritten, res.IndexesRemoved)
	if len(res.DamagedPacks) > 0 || res.MissingPacks > 0 {
		fmt.Fprintln(o.stdout, "snapshots that used blobs of those packs are damaged: run snap repair snapshots")
	}
	return nil
}

func repairSnapshots(ctx context.Context, r *repo.Repository, o repairOptions) error {
	res, err := snapshot.RepairSnapshots(ctx, r, snapshot.RepairOptions{DryRun: o.dryRun, RetryLock: o.retryLock, Log: o.log})
	if res == nil {
		return err
	}
	if o.json {
		if jerr := json.NewEncoder(o.stdout).Encode(res); jerr != nil {
			return jerr
		}
		return err
	}
	would := ""
	if o.dryRun {
		would = "would be "
	}
	for _, rs := range res.Repaired {
		head := fmt.Sprintf("snapshot %s (%s, %s)", rs.ID.Str(), rs.Host, rs.Time.Local().Format("2006-01-02 15:04:05"))
		switch {
		case rs.TreeLost:
			fmt.Fprintf(o.stdout, "%s: its tree is lost; %sremoved\n", head, would)
			continue
		case rs.Kept == 0:
			fmt.Fprintf(o.stdout, "%s: every file is lost; %sremoved\n", head, would)
		case o.dryRun:
			fmt.Fprintf(o.stdout, "%s: would be replaced by a repaired snapshot with %d entries\n", head, rs.Kept)
		default:
			fmt.Fprintf(o.stdout, "%s: replaced by %s (repaired, %d entries)\n", head, rs.NewID.Str(), rs.Kept)
		}
		for _, d := range rs.Dropped {
			fmt.Fprintf(o.stdout, "  %sdropped %s: %s\n", would, d.Name, d.Why)
		}
	}
	fmt.Fprintf(o.stdout, "%d of %d snapshots %s\n", len(res.Repaired), res.Snapshots, map[bool]string{true: "need repair (dry run, nothing changed)", false: "repaired"}[o.dryRun])
	if res.MissingPacks > 0 {
		fmt.Fprintf(o.stdout, "the index names %d packs that are not stored: run snap repair index so that snap check passes\n", res.MissingPacks)
	}
	return err
}
