package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

type backupOptions struct {
	*globalOptions
	server      string
	data        string
	host        string
	tags        []string
	force       bool
	compression string
	retryLock   time.Duration
	sourceOptions
	metrics *metrics // may be nil
	// group: a cluster member's part, frozen at group.FreezeAt
	// (snapshot.BackupOptions.Group).
	group   *snapshot.GroupRef
	maxLate time.Duration
}

// sourceOptions are the source kind's flags (sourceFlags).
type sourceOptions struct {
	kind          string
	path          string // the dir kind's directory
	lockFile      string
	before, after string
	allowChanges  bool
}

func serverFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "server", Value: "127.0.0.1:9015", EnvVars: []string{"SNAP_SERVER"}, Usage: "address of the database server that answers FREEZE"},
		&cli.StringFlag{Name: "data", Value: "/data", EnvVars: []string{"SNAP_DATA"}, Usage: "the server's data directory, read directly"},
	}
}

func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "unknown"
	}
	return h
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "freeze the server, store its files and write a snapshot",
		Flags: append(append(serverFlags(),
			&cli.StringFlag{Name: "host", Value: hostname(), EnvVars: []string{"SNAP_HOST"}, Usage: "host name recorded in the snapshot"},
			&cli.StringSliceFlag{Name: "tag", Usage: "tag the snapshot (repeatable)"},
			&cli.BoolFlag{Name: "force", Usage: "read every file, even those unchanged since the last snapshot"},
			&cli.StringFlag{Name: "compression", Usage: "override the repository's default: auto, off, fastest, default or better"},
			lockRetryFlag(), metricsPushFlag(),
		), sourceFlags()...),
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			gateway, err := parseMetricsPush(c)
			if err != nil {
				return err
			}
			o := backupOptions{
				globalOptions: g, server: c.String("server"), data: c.String("data"),
				host: c.String("host"), tags: c.StringSlice("tag"), force: c.Bool("force"),
				compression: c.String("compression"), retryLock: c.Duration("retry-lock"),
			}
			if err := o.setSource(c); err != nil {
				return err
			}
			if o.kind == source.KindRedis && !c.IsSet("server") {
				o.server = defaultRedisServer
			}
			o.metrics = newMetrics()
			err = runBackup(c.Context, o)
			o.metrics.push(c.Context, gateway, o.log, "host", o.host, "command", "backup", "source", o.kind)
			return err
		},
	}
}

func runBackup(ctx context.Context, o backupOptions) error {
	r, err := o.openRepo(ctx, o.compression)
	if err != nil {
		return err
	}
	defer r.Close()
	// This host's index files and the shared ones (docs/design.md, "Index
	// files"): the cost is the host's own data, not the fleet's. Backup
	// loads them once it holds its lock, so they are listed and read once.
	r.ScopeTo(o.host)
	var pr snapshot.Progress
	pl := startProgress(o.stderr, !o.json && isTerminal(o.stderr), "backup", &pr)
	sn, err := backupInto(ctx, r, o, &pr)
	pl.Stop()
	if sn == nil {
		return err
	}
	if err == nil && sn.Partial {
		err = fmt.Errorf("%w: snapshot %s is marked partial: files changed while they were read", errIncomplete, sn.ID.Str()) // exit 3
	}
	// A snapshot that was saved is reported even if ending the freeze failed.
	s := sn.Summary
	dur := s.End.Sub(s.Start)
	if o.json {
		out := map[string]any{
			"snapshot_id": sn.ID.String(), "time": sn.Time, "host": sn.Host, "source": sn.Source.Kind, "partial": sn.Partial,
			"files": s.Files, "bytes": s.Bytes, "bytes_read": s.BytesRead,
			"bytes_new": s.BytesNew, "bytes_stored": s.BytesStored, "blobs_new": s.BlobsNew,
			"duration_seconds": dur.Seconds(),
		}
		if sn.Parent != nil {
			out["parent"] = sn.Parent.String()
		}
		if jerr := json.NewEncoder(o.stdout).Encode(out); jerr != nil {
			return jerr
		}
		return err
	}
	rate := float64(s.BytesRead) / max(dur.Seconds(), 1e-3)
	if sn.Partial {
		fmt.Fprintf(o.stdout, "snapshot %s saved, marked partial: files changed while they were read\n", sn.ID.Str())
	} else {
		fmt.Fprintf(o.stdout, "snapshot %s saved\n", sn.ID.Str())
	}
	fmt.Fprintf(o.stdout, "  files:  %d, %s\n", s.Files, bytesStr(s.Bytes))
	fmt.Fprintf(o.stdout, "  read:   %s (%s/s)\n", bytesStr(s.BytesRead), bytesStr(int64(rate)))
	fmt.Fprintf(o.stdout, "  new:    %s in %d chunks, %s stored\n", bytesStr(s.BytesNew), s.BlobsNew, bytesStr(s.BytesStored))
	fmt.Fprintf(o.stdout, "  time:   %s\n", dur.Round(time.Millisecond))
	return err
}

// sourceFlags choose and configure the source kind; backup and run share
// them.
func sourceFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "source", Value: source.KindFreeze, EnvVars: []string{"SNAP_SOURCE"}, Usage: "what to back up: freeze (a server that answers FREEZE), dir (a closed database directory or a checkpoint, --path) or redis (a redis-server 7's AOF: --server is its address, --data its dir)"},
		&cli.StringFlag{Name: "path", EnvVars: []string{"SNAP_SOURCE_PATH"}, Usage: "with --source dir: the directory to back up, every file under it"},
		&cli.StringFlag{Name: "lock-file", Value: source.DefaultLockFile, Usage: "with --source dir: the file the store locks while it runs (RocksDB, Pebble: LOCK); a held lock refuses the backup. Empty: none"},
		&cli.BoolFlag{Name: "allow-changes", Usage: "with --source dir: save a snapshot marked partial when files change while they are read, instead of failing"},
		&cli.StringFlag{Name: "before", Usage: "with --source dir: run `CMD` (sh -c) before reading, e.g. to make the checkpoint; a failure aborts the backup"},
		&cli.StringFlag{Name: "after", Usage: "with --source dir: run `CMD` (sh -c) after reading, also when the backup failed, e.g. to remove the checkpoint"},
	}
}

// setSource fills the source options from sourceFlags and refuses flags
// that do not fit the kind.
func (o *sourceOptions) setSource(c *cli.Context) error {
	o.kind, o.path, o.lockFile = c.String("source"), c.String("path"), c.String("lock-file")
	o.before, o.after, o.allowChanges = c.String("before"), c.String("after"), c.Bool("allow-changes")
	switch o.kind {
	case source.KindFreeze:
		for _, f := range []string{"path", "allow-changes", "before", "after", "lock-file"} {
			if c.IsSet(f) {
				return cli.Exit(fmt.Sprintf("--%s goes with --source dir", f), exitUsage)
			}
		}
	case source.KindDir:
		if o.path == "" {
			return cli.Exit("--source dir needs --path DIR: the directory to back up", exitUsage)
		}
	case source.KindRedis:
		for _, f := range []string{"path", "allow-changes", "before", "after", "lock-file"} {
			if c.IsSet(f) {
				return cli.Exit(fmt.Sprintf("--%s goes with --source dir", f), exitUsage)
			}
		}
	default:
		return cli.Exit(fmt.Sprintf("--source %q: want freeze, dir or redis", o.kind), exitUsage)
	}
	return nil
}

// newSource returns the source o names, and what closes it.
func (o *backupOptions) newSource() (source.Source, func()) {
	switch o.kind {
	case source.KindDir:
		return source.NewDir(o.path, source.DirOptions{LockFile: o.lockFile, Before: o.before, After: o.after, Log: o.log}), func() {}
	case source.KindRedis:
		src := source.NewRedisAOF(o.server, o.data, source.RedisAOFOptions{Log: o.log})
		return src, func() { src.Close() }
	}
	return source.NewRedis(o.server, o.data, o.log), func() {}
}

// sourceDir is the directory the snapshots of o's source record.
func (o *sourceOptions) sourceDir(data string) string {
	if o.kind == source.KindDir {
		return source.NewDir(o.path, source.DirOptions{}).Info().DataDir
	}
	return data
}

// backupInto backs up the source o names into r, whose index is loaded.
// snap backup and snap run share it, so their snapshots are alike.
func backupInto(ctx context.Context, r *repo.Repository, o backupOptions, pr *snapshot.Progress) (*snapshot.Snapshot, error) {
	src, closeSrc := o.newSource()
	defer closeSrc()
	// One worker per core compresses; the extra Ps are for the readers and
	// pack writers while they wait on the disk (see ioProcs).
	procs, restoreProcs := ioProcs()
	defer restoreProcs()
	bo := o.backupOpts(pr)
	bo.Workers = procs
	start := time.Now()
	sn, err := snapshot.Backup(ctx, r, src, bo)
	if errors.Is(err, source.ErrAOFSwitched) {
		// A rewrite switched the AOF's files while they were read: once more.
		o.log.Warn("an AOF rewrite switched files during the backup; starting over once", "err", err)
		sn, err = snapshot.Backup(ctx, r, src, bo)
	}
	end := time.Now()
	o.metrics.backupDone(o.kind, end.Sub(start), end, sn, err)
	return sn, err
}

// backupOpts are the snapshot options of o's backups.
func (o *backupOptions) backupOpts(pr *snapshot.Progress) snapshot.BackupOptions {
	return snapshot.BackupOptions{
		Host: o.host, Tags: o.tags, Force: o.force, Progress: pr, Log: o.log, Program: "snap " + version,
		ReadLimit: o.storage.readLimiter(), RetryLock: o.retryLock, AllowChanges: o.allowChanges,
		Group: o.group, MaxLate: o.maxLate,
	}
}
