package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

type restoreOptions struct {
	*globalOptions
	id           string
	latest       bool
	target       string
	host         string
	tags         []string
	skipExisting bool
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "write a snapshot's files into an empty data directory",
		ArgsUsage: "[SNAPSHOT-ID]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "latest", Usage: "restore the newest snapshot (filtered by --host and --tag)"},
			&cli.StringFlag{Name: "target", EnvVars: []string{"SNAP_DATA"}, Value: "/data", Usage: "directory to restore into (default: the data directory)"},
			&cli.StringFlag{Name: "host", Usage: "with --latest: only snapshots of this host"},
			&cli.StringSliceFlag{Name: "tag", Usage: "with --latest: only snapshots with this tag"},
			&cli.BoolFlag{Name: "skip-existing", Usage: "if the target already holds a database, do nothing and exit 0 (for start-up scripts)"},
			// Restore takes no lock at all; the flag stays for scripts that pass it.
			&cli.BoolFlag{Name: "no-lock", Usage: "accepted and ignored: restore never takes a lock"},
		},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			o := restoreOptions{globalOptions: g, latest: c.Bool("latest"), target: c.String("target"),
				host: c.String("host"), tags: c.StringSlice("tag"), skipExisting: c.Bool("skip-existing")}
			switch {
			case c.NArg() > 1:
				return cli.Exit("restore takes one snapshot id", exitUsage)
			case c.NArg() == 1 && o.latest:
				return cli.Exit("give a snapshot id or --latest, not both", exitUsage)
			case c.NArg() == 0 && !o.latest:
				return cli.Exit("give a snapshot id or --latest", exitUsage)
			}
			o.id = c.Args().First()
			return runRestore(c.Context, o)
		},
	}
}

func runRestore(ctx context.Context, o restoreOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	snaps, err := snapshot.List(ctx, r)
	if err != nil {
		return err
	}
	var sn *snapshot.Snapshot
	if o.latest {
		sn = snapshot.Latest(snaps, func(s *snapshot.Snapshot) bool {
			return (o.host == "" || s.Host == o.host) && hasTags(s.Tags, o.tags)
		})
		if sn == nil {
			return fmt.Errorf("%w in %s matching the filters", snapshot.ErrNoSnapshot, o.repo)
		}
	} else if sn, err = snapshot.Find(snaps, o.id); err != nil {
		return err
	}
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	var pr snapshot.Progress
	start := time.Now()
	pl := startProgress(o.stderr, !o.json && isTerminal(o.stderr), "restore", &pr)
	procs, restoreProcs := ioProcs()
	err = snapshot.Restore(ctx, r, sn, snapshot.RestoreOptions{Target: o.target, Progress: &pr, Log: o.log, Cores: procs})
	restoreProcs()
	pl.Stop()
	if errors.Is(err, snapshot.ErrTargetHasDatabase) && o.skipExisting {
		return report(o.globalOptions, sn.ID, "skipped", o.target, 0, 0, 0, fmt.Sprintf("%v; nothing restored", err))
	}
	if err != nil {
		return err
	}
	return report(o.globalOptions, sn.ID, "restored", o.target, pr.FilesDone.Load(), pr.BytesDone.Load(), time.Since(start), "")
}

func report(g *globalOptions, id repo.ID, result, target string, files, bytes int64, dur time.Duration, note string) error {
	if g.json {
		return json.NewEncoder(g.stdout).Encode(map[string]any{
			"snapshot_id": id.String(), "result": result, "target": target,
			"files": files, "bytes": bytes, "duration_seconds": dur.Seconds(),
		})
	}
	if note != "" {
		fmt.Fprintln(g.stdout, note)
		return nil
	}
	fmt.Fprintf(g.stdout, "restored snapshot %s into %s: %d files, %s in %s (%s/s), every chunk verified\n",
		id.Str(), target, files, bytesStr(bytes), dur.Round(time.Millisecond), bytesStr(int64(float64(bytes)/max(dur.Seconds(), 1e-3))))
	return nil
}

func hasTags(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}
