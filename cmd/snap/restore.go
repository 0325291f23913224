package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

type restoreOptions struct {
	*globalOptions
	id           string
	latest       bool
	target       string
	host         string
	tags         []string
	skipExisting bool
	at           time.Time
	kind         string
	group, node  string   // a cluster group's part
	tar          string   // write a tar stream here instead ("-": stdout)
	metrics      *metrics // may be nil
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "write a snapshot's files into an empty data directory",
		ArgsUsage: "[SNAPSHOT-ID]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "latest", Usage: "restore the newest snapshot (filtered by --host and --tag); of a redis host, the end of its newest chain"},
			&cli.StringFlag{Name: "at", Usage: "restore as of `TIME` (RFC 3339, or unix seconds): a redis host's AOF rolled forward to that second (every write made in it or before), else the newest snapshot taken in that second or before"},
			&cli.StringFlag{Name: "source", Usage: "with --latest or --at: only snapshots of this source kind (freeze, dir or redis); needed when the host has several"},
			&cli.StringFlag{Name: "target", EnvVars: []string{"SNAP_DATA"}, Value: "/data", Usage: "directory to restore into (default: the data directory)"},
			&cli.StringFlag{Name: "host", Usage: "with --latest or --at: only snapshots of this host"},
			&cli.StringSliceFlag{Name: "tag", Usage: "with --latest or --at: only snapshots with this tag"},
			&cli.StringFlag{Name: "group", Usage: "restore node --node's part of the cluster group `UUID`"},
			&cli.StringFlag{Name: "node", Usage: "with --group: the node whose part to restore"},
			&cli.StringFlag{Name: "tar", Usage: "write the snapshot as a tar stream to `FILE` (- for standard output) instead of into --target"},
			&cli.BoolFlag{Name: "skip-existing", Usage: "if the target already holds a database, do nothing and exit 0 (for start-up scripts)"},
			// Restore takes no lock at all; the flag stays for scripts that pass it.
			&cli.BoolFlag{Name: "no-lock", Usage: "accepted and ignored: restore never takes a lock"},
			metricsPushFlag(),
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
			o := restoreOptions{globalOptions: g, latest: c.Bool("latest"), target: c.String("target"),
				host: c.String("host"), tags: c.StringSlice("tag"), skipExisting: c.Bool("skip-existing"), kind: c.String("source"),
				group: c.String("group"), node: c.String("node"), tar: c.String("tar")}
			if c.IsSet("at") {
				if o.at, err = parseTime(c.String("at")); err != nil {
					return cli.Exit(fmt.Sprintf("--at %q: %v", c.String("at"), err), exitUsage)
				}
			}
			switch {
			case c.IsSet("tar") && (c.IsSet("target") || o.skipExisting):
				return cli.Exit("--tar writes a stream instead of restoring into --target: give one of them (and --skip-existing only with --target)", exitUsage)
			case o.group != "" && (c.NArg() > 0 || o.latest || c.IsSet("at") || o.host != "" || len(o.tags) > 0 || o.kind != ""):
				return cli.Exit("--group picks the snapshot: give it without an id, --latest, --at, --host, --tag or --source", exitUsage)
			case (o.group == "") != (o.node == ""):
				return cli.Exit("--group and --node go together: snap restore --group UUID --node NODE", exitUsage)
			case o.group != "":
			case c.NArg() > 1:
				return cli.Exit("restore takes one snapshot id", exitUsage)
			case c.NArg() == 1 && (o.latest || c.IsSet("at")):
				return cli.Exit("give a snapshot id, --latest or --at, only one", exitUsage)
			case o.latest && c.IsSet("at"):
				return cli.Exit("give --latest or --at, not both", exitUsage)
			case c.NArg() == 0 && !o.latest && !c.IsSet("at"):
				return cli.Exit("give a snapshot id, --latest or --at TIME", exitUsage)
			case o.kind != "" && o.kind != source.KindFreeze && o.kind != source.KindDir && o.kind != source.KindRedis:
				return cli.Exit(fmt.Sprintf("--source %q: want freeze, dir or redis", o.kind), exitUsage)
			}
			o.id = c.Args().First()
			o.metrics = newMetrics()
			err = runRestore(c.Context, o)
			o.metrics.push(c.Context, gateway, o.log, "host", hostname(), "command", "restore")
			return err
		},
	}
}

func runRestore(ctx context.Context, o restoreOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	// With --host only that host's snapshots are read, and only the
	// shared index files and that host's (docs/design.md, "Index files").
	var snaps []*snapshot.Snapshot
	if o.host != "" && o.group == "" {
		snaps, err = snapshot.ListHost(ctx, r, o.host)
		r.ScopeTo(o.host)
	} else {
		snaps, err = snapshot.List(ctx, r)
	}
	if err != nil {
		return err
	}
	var sn *snapshot.Snapshot
	if o.group != "" {
		if sn, err = groupPart(ctx, r, snaps, o.group, o.node); err != nil {
			return err
		}
	} else if o.id == "" {
		match := func(s *snapshot.Snapshot) bool {
			return (o.host == "" || s.Host == o.host) && hasTags(s.Tags, o.tags) && (o.kind == "" || s.Source.Kind == o.kind)
		}
		kind, err := onlyKind(snaps, match)
		if err != nil {
			return err
		}
		if kind == source.KindRedis {
			if o.tar != "" {
				return errTarChain
			}
			if err := r.LoadIndex(ctx); err != nil {
				return err
			}
			return restoreChain(ctx, r, o, snaps, match, nil)
		}
		// TIME names a second, as for a chain: the newest snapshot taken
		// in it or before.
		end := time.Unix(o.at.Unix()+1, 0)
		sn = snapshot.Latest(snaps, func(s *snapshot.Snapshot) bool {
			return match(s) && (o.at.IsZero() || s.Time.Before(end))
		})
		if sn == nil {
			if !o.at.IsZero() {
				return fmt.Errorf("%w in %s matching the filters taken in or before the second %s", snapshot.ErrNoSnapshot, o.repo, o.at.UTC().Format(time.RFC3339))
			}
			return fmt.Errorf("%w in %s matching the filters", snapshot.ErrNoSnapshot, o.repo)
		}
	} else if sn, err = snapshot.Find(snaps, o.id); err != nil {
		return err
	}
	// The snapshot's host's index files and the shared ones hold what it
	// needs; a chunk only another host's file names is found on a miss.
	r.ScopeTo(sn.Host)
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	if o.tar != "" {
		return restoreTar(ctx, o, r, sn)
	}
	if chain.IsRedis(sn) {
		return restoreChain(ctx, r, o, snaps, nil, sn)
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
	o.metrics.restoreDone(sn.Source.Kind, time.Since(start), time.Now())
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

// parseTime parses --at: RFC 3339 (with or without fractions), or unix
// seconds.
func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 {
		return time.Unix(n, 0), nil
	}
	return time.Time{}, errors.New("want RFC 3339 (2026-12-02T15:12:01Z, or with an offset) or unix seconds")
}

// onlyKind returns the source kind of the snapshots match accepts, and an
// error when there are none or several kinds.
func onlyKind(snaps []*snapshot.Snapshot, match func(*snapshot.Snapshot) bool) (string, error) {
	kinds := map[string]bool{}
	var names []string
	for _, s := range snaps {
		if match(s) && !kinds[s.Source.Kind] {
			kinds[s.Source.Kind] = true
			names = append(names, s.Source.Kind)
		}
	}
	switch len(names) {
	case 0:
		return "", fmt.Errorf("%w matching the filters", snapshot.ErrNoSnapshot)
	case 1:
		return names[0], nil
	}
	slices.Sort(names)
	return "", cli.Exit(fmt.Sprintf("the snapshots matching the filters are of kinds %s: choose one with --source", strings.Join(names, ", ")), exitUsage)
}

// restoreChain restores a redis host's AOF: to o.at, or to the end of its
// newest chain, or (sn) as the snapshot sn was taken.
func restoreChain(ctx context.Context, r *repo.Repository, o restoreOptions, snaps []*snapshot.Snapshot, match func(*snapshot.Snapshot) bool, sn *snapshot.Snapshot) error {
	start := time.Now()
	var res *chain.Result
	var plan *chain.Plan
	// A compaction may remove a tail object between the listing and the
	// read; the listing after it names the merged one.
	for attempt := 0; ; attempt++ {
		chains, err := chain.LoadChains(ctx, r, snaps)
		if err != nil {
			return err
		}
		if sn != nil {
			plan, err = chain.PlanSnapshot(chains, sn)
		} else {
			var mine []*chain.Chain
			for _, c := range chains {
				if len(c.Bases) > 0 && match(c.Bases[len(c.Bases)-1]) {
					mine = append(mine, c)
				}
			}
			plan, err = chain.PlanAt(ctx, r, mine, o.host, o.at)
		}
		if err != nil {
			return err
		}
		procs, restoreProcs := ioProcs()
		res, err = chain.Restore(ctx, r, plan, chain.RestoreOptions{Target: o.target, Log: o.log,
			Snapshots: snapshot.RestoreOptions{Cores: procs}})
		restoreProcs()
		if errors.Is(err, snapshot.ErrTargetHasDatabase) && o.skipExisting {
			return report(o.globalOptions, plan.Base.ID, "skipped", o.target, 0, 0, 0, fmt.Sprintf("%v; nothing restored", err))
		}
		if err != nil && errors.Is(err, repo.ErrNotFound) && attempt == 0 {
			o.log.Info("a tail object was merged away while it was read; listing them again", "err", err)
			continue
		}
		if err != nil {
			return err
		}
		break
	}
	dur := time.Since(start)
	o.metrics.restoreDone(source.KindRedis, dur, time.Now())
	if o.json {
		return json.NewEncoder(o.stdout).Encode(map[string]any{
			"snapshot_id": plan.Base.ID.String(), "result": "restored", "target": o.target, "source": source.KindRedis,
			"chain": plan.Chain.ID, "host": plan.Chain.Host, "at": res.At, "aof_dir": res.Dir,
			"files": res.Files, "tail_bytes": res.Bytes, "tail_objects": len(plan.Tails),
			"dropped_commands": res.Dropped, "duration_seconds": dur.Seconds(),
		})
	}
	fmt.Fprintf(o.stdout, "restored %s as of %s into %s: base snapshot %s and %d tail objects (%s), %d files, in %s, every chunk verified\n",
		plan.Chain.Describe(), res.At.UTC().Format(time.RFC3339Nano), res.Dir, plan.Base.ID.Str(), len(plan.Tails), bytesStr(res.Bytes), res.Files, dur.Round(time.Millisecond))
	if res.Dropped > 0 {
		fmt.Fprintf(o.stdout, "left out %d commands of a transaction (MULTI ... EXEC) that was not complete by then\n", res.Dropped)
	}
	return nil
}
