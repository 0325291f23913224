package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/cluster"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/schedule"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// snap run is the container entrypoint: restore into an empty data
// directory, run the server as a child, back it up on a schedule and once
// more before it stops. docs/container.md describes the behaviour users
// rely on; keep the two in step.

const (
	readyInterval = 250 * time.Millisecond // between PINGs while waiting for the server
	pingTimeout   = time.Second            // one PING, also for /healthz
	stopGrace     = 10 * time.Second       // after SIGTERM to a server that never got ready, before SIGKILL
	// defaultRunRetryLock: a scheduled backup waits this long for another
	// host's prune to finish rather than fail and wait for the next tick.
	defaultRunRetryLock = 10 * time.Minute
)

type runOptions struct {
	*globalOptions
	server, data  string
	host          string
	tags          []string
	fromHost      string
	every, jitter time.Duration
	finalTimeout  time.Duration
	readyTimeout  time.Duration
	listen        string
	initIfMissing bool
	argv          []string // the server's command line
	// Retention: with a policy, prune runs after a scheduled backup once
	// pruneEvery has passed since the last one.
	prune      snapshot.PruneOptions
	pruneEvery time.Duration
	retryLock  time.Duration // for the scheduled backups and prunes
	sourceOptions
	// follow: instead of scheduled backups, snap follow beside the server
	// (a redis-server: --source redis).
	follow     bool
	followOpts followOptions
	aofDirName string   // the child's --appenddirname
	metrics    *metrics // set by runRun
	// cluster: a member of agent.cluster, whose parts of the cluster's
	// groups replace the scheduled backups.
	cluster bool
	agent   agentOptions
	state   *runState // snap run's, for its status endpoint; nil for snap agent
}

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "container entrypoint: restore an empty data directory, run the server, back it up on a schedule",
		ArgsUsage: "-- SERVER [ARGS...]",
		Description: "Restores the latest snapshot of this host and data directory when the data directory has no\n" +
			"CURRENT, starts the server, backs it up every --every and once more when stopped, and passes\n" +
			"signals on. --server and --data default to the server's --port and --rocksdb_db_path.\n" +
			"With --source dir the child is any program: each backup reads --path (a checkpoint its\n" +
			"--before hook makes), and an empty --data is restored from the latest such snapshot.\n" +
			"See docs/container.md.",
		Flags: append(append(serverFlags(),
			&cli.StringFlag{Name: "host", Value: hostname(), EnvVars: []string{"SNAP_HOST"}, Usage: "host name recorded in snapshots and used to pick the one to restore (set it: container host names change)"},
			&cli.StringSliceFlag{Name: "tag", EnvVars: []string{"SNAP_TAGS"}, Usage: "tag every backup (repeatable); a restore picks only snapshots with every tag"},
			&cli.StringFlag{Name: "from-host", EnvVars: []string{"SNAP_FROM_HOST"}, Usage: "restore the latest snapshot of this host instead of --host's"},
			&cli.DurationFlag{Name: "every", Value: time.Hour, EnvVars: []string{"SNAP_EVERY"}, Usage: "back up this often"},
			&cli.DurationFlag{Name: "jitter", EnvVars: []string{"SNAP_JITTER"}, Usage: "move each backup by a random amount up to ± this", DefaultText: "a tenth of --every"},
			&cli.DurationFlag{Name: "final-backup-timeout", Value: 5 * time.Minute, EnvVars: []string{"SNAP_FINAL_BACKUP_TIMEOUT"}, Usage: "on SIGTERM or SIGINT, back up for at most this long before passing the signal on (0: no final backup)"},
			&cli.DurationFlag{Name: "ready-timeout", Value: 2 * time.Minute, EnvVars: []string{"SNAP_READY_TIMEOUT"}, Usage: "stop the server and exit 1 if it does not answer PING within this"},
			&cli.StringFlag{Name: "listen", EnvVars: []string{"SNAP_LISTEN"}, Usage: "serve /healthz and /metrics on `ADDR` (like 127.0.0.1:9100); off by default"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"SNAP_LOG_FORMAT"}, Usage: "text or json (logs go to stderr)"},
			&cli.BoolFlag{Name: "init-if-missing", EnvVars: []string{"SNAP_INIT_IF_MISSING"}, Usage: "create the repository if it does not exist yet"},
			&cli.DurationFlag{Name: "prune-every", Value: 24 * time.Hour, EnvVars: []string{"SNAP_PRUNE_EVERY"}, Usage: "with a --keep-* policy: prune after a scheduled backup when this long has passed since the last successful prune"},
			&cli.DurationFlag{Name: "retry-lock", Value: defaultRunRetryLock, EnvVars: []string{"SNAP_RETRY_LOCK"}, Usage: "scheduled backups and prunes wait up to `DURATION` for other processes' locks (another host's prune, say) before failing"},
			&cli.BoolFlag{Name: "follow", EnvVars: []string{"SNAP_FOLLOW"}, Usage: "the server is a redis-server: restore its AOF into an empty --data (its dir), then follow it (snap follow) instead of backing up on a schedule; on SIGTERM the server stops first and the rest of its AOF is shipped"},
		), append(append(append(retentionFlags(), sourceFlags()...), followFlags()...), agentFlags()...)...),
		Action: func(c *cli.Context) error {
			longRunning()
			g, err := globals(c)
			if err != nil {
				return err
			}
			o, err := newRunOptions(c, g)
			if err != nil {
				return err
			}
			return runRun(c.Context, o)
		},
	}
}

func newRunOptions(c *cli.Context, g *globalOptions) (runOptions, error) {
	usage := func(format string, args ...any) (runOptions, error) {
		return runOptions{}, cli.Exit(fmt.Sprintf(format, args...), exitUsage)
	}
	o := runOptions{
		globalOptions: g,
		server:        c.String("server"), data: c.String("data"),
		host: c.String("host"), tags: c.StringSlice("tag"), fromHost: c.String("from-host"),
		every: c.Duration("every"), jitter: c.Duration("jitter"),
		finalTimeout: c.Duration("final-backup-timeout"), readyTimeout: c.Duration("ready-timeout"),
		listen: c.String("listen"), initIfMissing: c.Bool("init-if-missing"),
		argv: c.Args().Slice(),
	}
	if len(o.argv) == 0 {
		return usage("run needs the server's command line after --: snap run [flags] -- ./sada-sliding --port 9015 --rocksdb_db_path /data ...")
	}
	if o.listen != "" {
		if err := checkListen(o.listen); err != nil {
			return runOptions{}, err
		}
	}
	if err := o.setSource(c); err != nil {
		return runOptions{}, err
	}
	if c.Bool("follow") {
		if c.IsSet("source") && o.kind != source.KindRedis {
			return usage("--follow follows a redis-server: --source redis, not %s", o.kind)
		}
		o.kind, o.follow = source.KindRedis, true
		if dir, ok := childFlag(o.argv, "dir"); ok && !c.IsSet("data") {
			o.data = dir
		}
		o.aofDirName = "appendonlydir"
		if n, ok := childFlag(o.argv, "appenddirname"); ok {
			o.aofDirName = n
		}
	} else if o.kind == source.KindRedis {
		return usage("snap run backs up a redis-server by following it: add --follow")
	}
	// The server's own flags name its port and data directory; use them
	// unless --server or --data say otherwise.
	if port, ok := childFlag(o.argv, "port"); ok {
		if !c.IsSet("server") {
			o.server = net.JoinHostPort("127.0.0.1", port)
		} else if _, p, err := net.SplitHostPort(o.server); err == nil && p != port {
			g.log.Warn("--server names another port than the server's --port", "server", o.server, "port", port)
		}
	}
	if dir, ok := childFlag(o.argv, "rocksdb_db_path"); ok {
		if !c.IsSet("data") {
			o.data = dir
		} else if filepath.Clean(dir) != filepath.Clean(o.data) {
			return usage("--data %s but the server's --rocksdb_db_path is %s: snap would restore and back up another directory than the server uses", o.data, dir)
		}
	}
	ao, member, err := parseAgent(c)
	if err != nil {
		return runOptions{}, err
	}
	if member {
		switch {
		case o.follow:
			return usage("--cluster with --follow: a followed redis-server is no cluster member; back it up as one with snap run --cluster --source dir, or snap agent --source redis")
		case c.IsSet("every"):
			return usage("--cluster takes parts of the cluster's groups instead of backups every --every: give --schedule for scheduled groups")
		case c.IsSet("from-host"):
			return usage("--cluster restores this node's part of the newest completed group: --from-host does not apply")
		}
		o.cluster, o.agent = true, ao
		if !c.IsSet("host") {
			o.host = ao.node
		}
	}
	if o.fromHost == "" {
		o.fromHost = o.host
	}
	if o.follow {
		fo, err := parseFollow(c, g)
		if err != nil {
			return runOptions{}, err
		}
		fo.server, fo.data, fo.host, fo.tags, fo.retryLock = o.server, o.data, o.host, o.tags, c.Duration("retry-lock")
		o.followOpts = fo
	}
	if o.prune.Policy, o.prune.GroupBy, o.prune.Location, err = parseRetentionFlags(c); err != nil {
		return runOptions{}, err
	}
	o.prune.MaxUnused = 0.05
	o.prune.UnreferencedMargin = snapshot.DefaultUnreferencedMargin
	o.pruneEvery = c.Duration("prune-every")
	o.retryLock = c.Duration("retry-lock")
	o.prune.RetryLock = o.retryLock
	if !c.IsSet("jitter") {
		o.jitter = o.every / 10
	}
	switch {
	case o.every <= 0:
		return usage("--every must be positive")
	case o.jitter < 0 || o.jitter >= o.every:
		return usage("--jitter must be at least 0 and less than --every")
	case o.readyTimeout <= 0:
		return usage("--ready-timeout must be positive")
	case o.finalTimeout < 0:
		return usage("--final-backup-timeout must not be negative")
	case o.pruneEvery <= 0:
		return usage("--prune-every must be positive")
	case o.retryLock < 0:
		return usage("--retry-lock must not be negative")
	}
	// Every backup opens the repository again; a prompt would hang it.
	if _, ok := os.LookupEnv("SNAP_PASSWORD"); !ok && g.passwordFile == "" {
		return usage("snap run reads the repository password for every backup: set SNAP_PASSWORD_FILE (or --password-file, or SNAP_PASSWORD)")
	}
	if err := useLogFormat(c, g); err != nil {
		return runOptions{}, err
	}
	return o, nil
}

// useLogFormat makes g log in --log-format (json also with --json).
func useLogFormat(c *cli.Context, g *globalOptions) error {
	format := c.String("log-format")
	if !c.IsSet("log-format") && g.json {
		format = "json"
	}
	var level slog.Level
	_ = level.UnmarshalText([]byte(setContext(c, "log-level").String("log-level"))) // checked by globals
	log, err := newLogger(g.stderr, format, level)
	if err != nil {
		return cli.Exit(err.Error(), exitUsage)
	}
	g.log = log
	return nil
}

func newLogger(w io.Writer, format string, level slog.Level) (*slog.Logger, error) {
	ho := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, ho)), nil
	case "json":
		// Durations as "1.5s", not as integer nanoseconds.
		ho.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(w, ho)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// childFlag returns the value of the last -name or --name flag in the
// server's arguments (Go and gflags style: "--name v" or "--name=v").
func childFlag(argv []string, name string) (string, bool) {
	var val string
	found := false
	for i := 1; i < len(argv); i++ {
		a := argv[i]
		if a == "--" {
			break
		}
		if !strings.HasPrefix(a, "-") {
			continue
		}
		n, v, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if n != name {
			continue
		}
		switch {
		case hasValue:
			val, found = v, true
		case i+1 < len(argv):
			i++
			val, found = argv[i], true
		}
	}
	return val, found
}

func runRun(ctx context.Context, o runOptions) error {
	// Catch the signals from the start. Before the server runs, SIGTERM and
	// SIGINT also cancel ctx (main's handler), which ends start-up.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	st := newRunState()
	o.state = st
	o.metrics = newMetrics()
	o.metrics.reg.MustRegister(st)
	o.followOpts.metrics = o.metrics
	if !o.follow {
		o.metrics.backupKind(o.kind)
	}
	pc := newPingClient(o.server)
	defer pc.Close()
	ping := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, pingTimeout)
		defer cancel()
		return pc.Ping(ctx).Err()
	}
	if o.kind == source.KindDir {
		// Any program: it is ready once started, and healthy while it
		// runs.
		ping = func(context.Context) error { return nil }
	}
	if o.listen != "" {
		_, stop, err := serveStatus(o.listen, st, o.metrics.reg, o.server, ping, o.log)
		if err != nil {
			return err
		}
		defer stop()
	}

	last, err := o.prepare(ctx, st)
	if err != nil {
		return err
	}
	for pending := true; pending; {
		select {
		case s := <-sigs:
			if s != syscall.SIGHUP {
				return fmt.Errorf("%v before the server started; not starting it", s)
			}
			o.log.Info("ignored a SIGHUP that came before the server started")
		default:
			pending = false
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted before the server started: %w", err)
	}

	followHook, followStarted := o.followHook()
	var agent func(context.Context, <-chan struct{})
	if o.cluster {
		a, closeAgent, err := o.openAgent(ctx)
		if err != nil {
			return err
		}
		defer closeAgent()
		agent = func(ctx context.Context, stop <-chan struct{}) {
			if err := a.Run(ctx, stop); err != nil {
				o.log.Error("cluster agent stopped", "err", err)
			}
		}
	}
	sv := &supervisor{
		argv: o.argv, addr: o.server, stdin: o.stdin, stdout: o.stdout, stderr: o.stderr,
		log: o.log, state: st, ping: ping,
		backup: o.backupOnce,
		// prune runs after scheduled backups, in the same worker, so it
		// never overlaps this process's backups; locks keep it apart from
		// other hosts'.
		prune:         o.pruneHook(),
		follow:        followHook,
		followStarted: followStarted,
		agent:         agent,
		sched:         schedule.Interval{Every: o.every, Jitter: o.jitter, Rand: rand.Float64},
		now:           time.Now,
		readyTimeout:  o.readyTimeout, finalTimeout: o.finalTimeout,
		readyInterval: readyInterval, stopGrace: stopGrace,
	}
	code, err := sv.run(ctx, sigs, last)
	if err != nil {
		return err
	}
	if code != 0 {
		return cli.Exit(fmt.Sprintf("server exited with status %d", code), code)
	}
	return nil
}

// prepare makes the data directory ready for the server: it checks that it
// is writable and, when it holds no database, restores the latest matching
// snapshot into it. It returns when this host and data directory were last
// backed up (zero if never), where the schedule starts.
func (o *runOptions) prepare(ctx context.Context, st *runState) (time.Time, error) {
	st.setPhase("starting")
	if err := checkWritable(o.data); err != nil {
		return time.Time{}, err
	}
	r, err := o.openOrInit(ctx)
	if err != nil {
		return time.Time{}, err
	}
	defer closeRepo(r)
	// A cluster node needs every group's parts; otherwise only this
	// host's snapshots and --from-host's are read.
	var snaps []*snapshot.Snapshot
	if o.cluster {
		snaps, err = snapshot.List(ctx, r)
	} else {
		snaps, err = listHosts(ctx, r, o.host, o.fromHost)
	}
	if err != nil {
		return time.Time{}, err
	}
	var last time.Time
	if own := snapshot.Latest(snaps, o.matches(o.host, nil)); own != nil {
		last = own.Time
	}

	if has, err := o.hasData(); err != nil {
		return time.Time{}, fmt.Errorf("check data directory %s: %w", o.data, err)
	} else if has {
		o.log.Info("the data directory holds a database; not restoring", "data", o.data)
		return last, nil
	}
	var sn *snapshot.Snapshot
	if o.cluster {
		part, g, err := o.newestPart(ctx, r, snaps)
		if err != nil {
			return time.Time{}, err
		}
		if part == nil {
			o.log.Info("no completed group with a part of this node: the server starts with an empty data directory", "cluster", o.agent.cluster, "node", o.agent.node, "data", o.data)
			return last, nil
		}
		o.log.Info("restoring this node's part of the newest completed group", "cluster", o.agent.cluster, "group", g.UUID, "freeze_at", g.FreezeAt)
		sn = part
	} else {
		sn = snapshot.Latest(snaps, o.matches(o.fromHost, o.tags))
	}
	if sn == nil {
		msg := "no snapshot to restore: the server starts with an empty data directory"
		if len(snaps) == 0 {
			o.log.Info(msg, "data", o.data)
		} else {
			o.log.Warn(msg+" (the repository has snapshots of other hosts, data directories or tags; --from-host picks a host)",
				"host", o.fromHost, "data", o.data, "tags", o.tags, "snapshots_in_repository", len(snaps))
		}
		return last, nil
	}

	st.setPhase("restoring")
	o.log.Info("restoring", "snapshot", sn.ID.Str(), "snapshot_time", sn.Time, "host", sn.Host, "data", o.data)
	start := time.Now()
	if o.kind == source.KindRedis {
		if err := o.restoreChain(ctx, r, snaps); err != nil {
			return time.Time{}, fmt.Errorf("restore the AOF of %s into %s: %w; the server was not started", o.fromHost, o.data, err)
		}
		o.metrics.restoreDone(o.kind, time.Since(start), time.Now())
		return last, nil
	}
	var pr snapshot.Progress
	r.ScopeTo(sn.Host)
	err = r.LoadIndex(ctx)
	if err == nil {
		procs, restoreProcs := ioProcs()
		err = snapshot.Restore(ctx, r, sn, snapshot.RestoreOptions{Target: o.data, Progress: &pr, Log: o.log, Cores: procs})
		restoreProcs()
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("restore snapshot %s into %s: %w; the server was not started", sn.ID.Str(), o.data, err)
	}
	o.metrics.restoreDone(o.kind, time.Since(start), time.Now())
	o.log.Info("restored", "snapshot", sn.ID.Str(), "files", pr.FilesDone.Load(), "bytes", pr.BytesDone.Load(),
		"duration", time.Since(start).Round(time.Millisecond))
	return last, nil
}

// restoreChain restores the end of the newest chain of --from-host into
// the data directory.
func (o *runOptions) restoreChain(ctx context.Context, r *repo.Repository, snaps []*snapshot.Snapshot) error {
	r.ScopeTo(o.fromHost)
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	start := time.Now()
	match := o.matches(o.fromHost, o.tags)
	for attempt := 0; ; attempt++ {
		chains, err := chain.LoadChains(ctx, r, snaps)
		if err != nil {
			return err
		}
		var mine []*chain.Chain
		for _, c := range chains {
			if len(c.Bases) > 0 && match(c.Bases[len(c.Bases)-1]) {
				mine = append(mine, c)
			}
		}
		plan, err := chain.PlanAt(ctx, r, mine, o.fromHost, chain.Latest)
		if err != nil {
			return err
		}
		procs, restoreProcs := ioProcs()
		res, err := chain.Restore(ctx, r, plan, chain.RestoreOptions{Target: o.data, Log: o.log, Snapshots: snapshot.RestoreOptions{Cores: procs}})
		restoreProcs()
		if err != nil && errors.Is(err, repo.ErrNotFound) && attempt == 0 {
			continue // a compaction merged a tail object away meanwhile
		}
		if err != nil {
			return err
		}
		o.log.Info("restored", "chain", plan.Chain.ID, "at", res.At, "aof_dir", res.Dir, "tail_objects", len(plan.Tails),
			"dropped_commands", res.Dropped, "duration", time.Since(start).Round(time.Millisecond))
		return nil
	}
}

// hasData reports whether the data directory holds a database already:
// RocksDB's CURRENT (freeze), or anything at all (dir).
func (o *runOptions) hasData() (bool, error) {
	if o.kind == source.KindRedis {
		_, err := os.Stat(filepath.Join(o.data, o.aofDirName))
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return err == nil, err
	}
	if o.kind == source.KindDir {
		entries, err := os.ReadDir(o.data)
		return len(entries) > 0, err
	}
	_, err := os.Stat(filepath.Join(o.data, "CURRENT"))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// matches selects the snapshots of host (any host if empty) and this
// source (kind and directory: the data directory, or --path for the dir
// kind) that carry every tag. The server's address is not compared: a new
// port still serves the same database.
func (o *runOptions) matches(host string, tags []string) func(*snapshot.Snapshot) bool {
	dir := filepath.Clean(o.sourceDir(o.data))
	return func(s *snapshot.Snapshot) bool {
		return (host == "" || s.Host == host) && s.Source.Kind == o.kind &&
			filepath.Clean(s.Source.DataDir) == dir && hasTags(s.Tags, tags)
	}
}

// checkWritable creates the data directory if needed and proves snap (and
// so the server it starts) can write there.
func checkWritable(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create data directory: %w; the server was not started", err)
	}
	f, err := os.CreateTemp(dir, ".snap-write-check-")
	if err != nil {
		return fmt.Errorf("data directory %s is not writable (snap restores into it and the server writes there): %w; the server was not started", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// openOrInit opens the repository, creating it first with --init-if-missing
// when it does not exist.
func (o *runOptions) openOrInit(ctx context.Context) (*repo.Repository, error) {
	if o.initIfMissing {
		if be, err := openStorage(ctx, o.storage, false); err == nil {
			be.Close()
		} else {
			pw, err := o.password(false)
			if err != nil {
				return nil, err
			}
			be, err := openStorage(ctx, o.storage, true)
			if err != nil {
				return nil, fmt.Errorf("--init-if-missing: %w", err)
			}
			r, err := repo.Init(ctx, be, pw, repo.InitOptions{}, repo.Options{Log: o.log, Connections: o.connections})
			if err != nil {
				be.Close()
				return nil, fmt.Errorf("--init-if-missing: %w", err)
			}
			o.log.Info("created the repository (--init-if-missing)", "repository", be.Location(), "id", r.Config().ID[:8])
			return r, nil
		}
	}
	return o.openRepo(ctx, "")
}

func closeRepo(r *repo.Repository) {
	r.Close()
	r.Backend().Close()
}

// backupOnce makes one backup as `snap backup` does. It opens the
// repository afresh each time, so every backup sees the repository as it
// is now (other hosts' packs, a changed password file), not as it was when
// the container started.
func (o *runOptions) backupOnce(ctx context.Context) (*snapshot.Snapshot, error) {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return nil, err
	}
	defer closeRepo(r)
	r.ScopeTo(o.host)
	if err := r.LoadIndex(ctx); err != nil {
		return nil, err
	}
	return backupInto(ctx, r, backupOptions{globalOptions: o.globalOptions, server: o.server, data: o.data, host: o.host, tags: o.tags, retryLock: o.retryLock, sourceOptions: o.sourceOptions, metrics: o.metrics}, nil)
}

// followHook returns follow for --follow, or nil, and a channel closed
// once follow has its chain.
func (o *runOptions) followHook() (func(context.Context) error, <-chan struct{}) {
	started := make(chan struct{})
	if !o.follow {
		return nil, started
	}
	var once sync.Once
	markStarted := func() { once.Do(func() { close(started) }) }
	return func(ctx context.Context) error {
		r, err := o.openRepoWith(ctx, repo.Options{LowMemory: true})
		if err != nil {
			return err
		}
		defer closeRepo(r)
		r.ScopeTo(o.host)
		if err := r.LoadIndex(ctx); err != nil {
			return err
		}
		fo := o.followOpts
		fo.globalOptions = o.globalOptions
		return followInto(ctx, r, fo, markStarted)
	}, started
}

// pruneHook returns the retention step, or nil without a --keep-* policy.
func (o *runOptions) pruneHook() func(context.Context) error {
	if o.prune.Policy.Empty() {
		return nil
	}
	gate := schedule.Gate{Every: o.pruneEvery, Now: time.Now}
	return func(ctx context.Context) error {
		return gate.Run(func() error {
			r, err := o.openRepo(ctx, "")
			if err != nil {
				return err
			}
			defer closeRepo(r)
			po := o.prune
			po.Log = o.log
			if po.Groups, po.Extra, err = cluster.Retention(ctx, r, time.Now, o.log, chain.PruneExtra(r, time.Now(), o.log)); err != nil {
				return err
			}
			res, err := snapshot.Prune(ctx, r, po)
			if err != nil {
				return err
			}
			o.metrics.pruneDone(res, time.Now())
			o.log.Info("pruned", "snapshots_kept", res.Stats.SnapshotsKept, "snapshots_removed", res.Stats.SnapshotsRemoved)
			return nil
		})
	}
}

// newPingClient returns the client for readiness and health checks. Like
// source.Redis: RESP2, no handshake extras, no retries.
func newPingClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, Protocol: 2, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		DialTimeout:              pingTimeout, ReadTimeout: pingTimeout, WriteTimeout: pingTimeout,
		ContextTimeoutEnabled: true, MaxRetries: -1, PoolSize: 2,
	})
}

// Why a running backup was cancelled, for its log line.
var (
	errServerExited = errors.New("the server exited")
	errFinalTimeout = errors.New("--final-backup-timeout passed")
	errSecondSignal = errors.New("a second stop signal came")
)

// supervisor runs the server as a child process and the backups beside it.
// Everything it touches outside the process is injected, so tests can drive
// it with a shell script, fake backups and signals sent into a channel.
type supervisor struct {
	argv           []string
	addr           string // the server's address, for messages
	stdin          io.Reader
	stdout, stderr io.Writer
	log            *slog.Logger
	state          *runState
	ping           func(context.Context) error
	backup         func(context.Context) (*snapshot.Snapshot, error)
	prune          func(context.Context) error // retention hook, may be nil
	// follow, when set, runs beside the server instead of the scheduled
	// backups, until its context is done (the server exited); a stop
	// signal goes to the server once follow has its chain
	// (followStarted closed), or after finalTimeout: before, the
	// server's last writes would go unshipped.
	follow        func(context.Context) error
	followStarted <-chan struct{}
	// agent, when set, replaces the scheduled backups: a cluster
	// member's parts of its groups, until ctx is done or stop closes
	// (a stop signal; a part in progress finishes first).
	agent         func(ctx context.Context, stop <-chan struct{})
	sched         schedule.Interval
	now           func() time.Time
	readyTimeout  time.Duration
	finalTimeout  time.Duration
	readyInterval time.Duration
	stopGrace     time.Duration
}

// run starts the server and supervises it until it exits. It returns the
// server's exit status (128+N when a signal N killed it), or an error when
// snap itself gives up: the server could not start or never got ready.
//
// Stop signals (SIGTERM, SIGINT): the first stops the schedule, waits for a
// running backup, takes a final one (both within finalTimeout), then passes
// the signal on; a second one abandons the backup and passes it on at once.
// SIGHUP is passed on as it comes.
func (s *supervisor) run(ctx context.Context, sigs <-chan os.Signal, last time.Time) (int, error) {
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s.stdin, s.stdout, s.stderr
	ownProcessGroup(cmd)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start the server: %w", err)
	}
	s.log.Info("server started", "pid", cmd.Process.Pid, "command", strings.Join(s.argv, " "))
	s.state.setPhase("waiting for the server")
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	forward := func(sig os.Signal) {
		s.log.Info("passing the signal to the server", "signal", sig.String(), "pid", cmd.Process.Pid)
		if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
			s.log.Error("signal the server", "signal", sig.String(), "err", err)
		}
	}

	// Backups outlive the cancellation of ctx (main cancels it on SIGTERM):
	// the final one runs after that signal.
	backupCtx, stopBackups := context.WithCancelCause(context.WithoutCancel(ctx))
	defer stopBackups(nil)
	readyCtx, cancelReady := context.WithTimeout(backupCtx, s.readyTimeout)
	defer cancelReady()
	ready := make(chan error, 1)
	go func() { ready <- waitReady(readyCtx, s.ping, s.readyInterval) }()

	var finalTimer *time.Timer
	defer func() {
		if finalTimer != nil {
			finalTimer.Stop()
		}
	}()
	var (
		final      = make(chan struct{}) // closed to ask the worker for the final backup
		workerDone chan struct{}         // nil until the server is ready
		stopping   bool
		pending    os.Signal                // the stop signal waiting for the final backup
		release    = make(chan struct{}, 1) // follow has its chain (or timed out): pass pending on
	)
	for {
		select {
		case err := <-exited:
			stopBackups(errServerExited)
			cancelReady()
			if workerDone != nil {
				<-workerDone
			}
			code := exitStatus(err)
			switch {
			case stopping:
				s.log.Info("server exited", "status", code)
			default:
				s.log.Error("server exited by itself", "status", code, "err", err)
			}
			s.state.setPhase("exited")
			return code, nil

		case err := <-ready:
			ready = nil
			if stopping {
				continue
			}
			if err != nil {
				s.state.setPhase("failed")
				s.log.Error("the server did not get ready; stopping it", "server", s.addr, "timeout", s.readyTimeout, "err", err)
				s.terminate(cmd, exited)
				return 0, fmt.Errorf("the server at %s did not answer PING within --ready-timeout %v (%v); stopped it", s.addr, s.readyTimeout, err)
			}
			s.log.Info("server ready", "server", s.addr)
			s.state.setPhase("running")
			workerDone = make(chan struct{})
			go func() {
				defer close(workerDone)
				if s.follow != nil {
					// Retention beside follow: every --every, gated by
					// --prune-every like after scheduled backups.
					var wg sync.WaitGroup
					if s.prune != nil {
						wg.Add(1)
						go func() { defer wg.Done(); s.pruneTicks(backupCtx) }()
					}
					s.followLoop(backupCtx)
					wg.Wait()
					return
				}
				if s.agent != nil {
					s.agent(backupCtx, final)
					return
				}
				s.loop(backupCtx, last, final)
			}()

		case sig := <-sigs:
			switch {
			case sig == syscall.SIGHUP:
				forward(sig)
			case s.follow != nil && !stopping:
				// The server stops first: follow ships its AOF's last
				// bytes once it exited. Until follow has its chain, the
				// signal waits (at most finalTimeout).
				stopping = true
				s.state.setPhase("stopping")
				select {
				case <-s.followStarted:
				default:
					if workerDone != nil && s.finalTimeout > 0 {
						s.log.Info("stopping once follow has its chain, then the signal goes to the server", "signal", sig.String(), "timeout", s.finalTimeout)
						pending = sig
						go func() {
							select {
							case <-s.followStarted:
							case <-time.After(s.finalTimeout):
							}
							release <- struct{}{}
						}()
						continue
					}
				}
				cancelReady()
				s.log.Info("stopping: the signal goes to the server; follow ships the rest of its AOF when it exited", "signal", sig.String())
				forward(sig)
			case !stopping && workerDone != nil && s.finalTimeout > 0:
				stopping, pending = true, sig
				s.state.setPhase("stopping")
				s.log.Info("stopping: final backup, then the signal goes to the server", "signal", sig.String(), "timeout", s.finalTimeout)
				close(final)
				finalTimer = time.AfterFunc(s.finalTimeout, func() { stopBackups(errFinalTimeout) })
			case !stopping:
				stopping = true
				s.state.setPhase("stopping")
				cancelReady()
				stopBackups(fmt.Errorf("%v", sig))
				forward(sig)
			case pending != nil:
				s.log.Warn("second stop signal: abandoning the backup", "signal", sig.String())
				stopBackups(errSecondSignal)
			default:
				forward(sig)
			}

		case <-release:
			if pending != nil {
				s.log.Info("follow has its chain; the signal goes to the server", "signal", pending.String())
				forward(pending)
				pending = nil
			}

		case <-workerDone:
			workerDone = nil
			if pending != nil {
				forward(pending)
				pending = nil
			}
		}
	}
}

// pruneTicks runs the retention step every sched.Every until ctx is done
// (the prune hook's gate decides whether one is due).
func (s *supervisor) pruneTicks(ctx context.Context) {
	t := time.NewTicker(s.sched.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.prune(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("prune failed; trying again later", "err", err)
		}
	}
}

// followLoop runs follow until ctx is done, starting it again after a
// failure.
func (s *supervisor) followLoop(ctx context.Context) {
	backoff := time.Second
	for {
		err := s.follow(ctx)
		if ctx.Err() != nil {
			if err != nil {
				s.log.Error("follow did not ship everything before it stopped", "err", err)
			}
			return
		}
		s.log.Error("follow failed; starting it again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Minute)
	}
}

// loop is the backup worker: scheduled backups one after another, and the
// final backup when final closes. Backups never overlap: this goroutine
// runs them all.
func (s *supervisor) loop(ctx context.Context, last time.Time, final <-chan struct{}) {
	for first := true; ; first = false {
		due := s.sched.Next(s.now(), last)
		if first {
			s.log.Info("first backup scheduled", "at", due.Format(time.RFC3339), "every", s.sched.Every)
		}
		t := time.NewTimer(due.Sub(s.now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-final:
			t.Stop()
			s.backupAndRecord(ctx, "final")
			return
		case <-t.C:
		}
		select {
		case <-final: // a stop request that came with the tick wins
			s.backupAndRecord(ctx, "final")
			return
		default:
		}
		last = s.now()
		if s.backupAndRecord(ctx, "scheduled") && s.prune != nil {
			s.pruneUnlessStopping(ctx, final)
		}
	}
}

// pruneUnlessStopping runs the retention step. A stop request cancels it,
// so the final backup does not wait for a prune (which the next prune
// finishes); the loop then takes the final backup.
func (s *supervisor) pruneUnlessStopping(ctx context.Context, final <-chan struct{}) {
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-final:
			cancel(errors.New("stopping: the final backup comes first"))
		case <-pctx.Done():
		}
	}()
	err := s.prune(pctx)
	cause := context.Cause(pctx) // nil unless a stop request or ctx cancelled it
	cancel(nil)
	<-stopped
	switch {
	case err != nil && cause != nil && ctx.Err() == nil:
		s.log.Warn("prune cancelled for the final backup; the next prune finishes it", "reason", cause)
	case err != nil:
		s.log.Error("prune failed; retrying after the next backup", "err", err)
	}
}

// backupAndRecord runs one backup, logs it and records it for the status
// endpoint. A failure is only logged: the next tick tries again.
func (s *supervisor) backupAndRecord(ctx context.Context, kind string) bool {
	if ctx.Err() != nil {
		s.log.Warn("backup skipped", "kind", kind, "reason", context.Cause(ctx))
		return false
	}
	start := s.now()
	sn, err := s.backup(ctx)
	end := s.now()
	s.state.record(kind, start, end, sn, err)
	dur := end.Sub(start).Round(time.Millisecond)
	switch {
	case err != nil && ctx.Err() != nil:
		s.log.Error("backup abandoned", "kind", kind, "reason", context.Cause(ctx), "duration", dur, "err", err)
	case err != nil && sn != nil:
		s.log.Error("backup saved, but ending the freeze failed", "kind", kind, "snapshot", sn.ID.Str(), "duration", dur, "err", err)
	case err != nil:
		s.log.Error("backup failed; retrying at the next tick", "kind", kind, "duration", dur, "err", err)
	default:
		s.log.Info("backup saved", "kind", kind, "snapshot", sn.ID.Str(), "snapshot_time", sn.Time,
			"files", sn.Summary.Files, "bytes", sn.Summary.Bytes, "bytes_read", sn.Summary.BytesRead,
			"bytes_new", sn.Summary.BytesNew, "duration", dur)
	}
	return err == nil
}

// terminate stops a server that never got ready: SIGTERM, then SIGKILL
// after stopGrace.
func (s *supervisor) terminate(cmd *exec.Cmd, exited <-chan error) {
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(s.stopGrace):
		s.log.Warn("the server ignored SIGTERM; killing it", "grace", s.stopGrace)
		cmd.Process.Kill()
		<-exited
	}
}

// waitReady PINGs until the server answers or ctx ends.
func waitReady(ctx context.Context, ping func(context.Context) error, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		err := ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("last PING: %w", err)
		case <-t.C:
		}
	}
}

// exitStatus turns the server's end into an exit status, 128+N for a
// signal N as shells report it.
func exitStatus(err error) int {
	if err == nil {
		return 0
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return exitError
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := ee.ExitCode(); code > 0 {
		return code
	}
	return exitError
}

// listHosts reads the snapshots of the given hosts (each once), oldest
// first, with snapshot.ListHost.
func listHosts(ctx context.Context, r *repo.Repository, hosts ...string) ([]*snapshot.Snapshot, error) {
	var out []*snapshot.Snapshot
	seen := map[string]bool{}
	for _, h := range hosts {
		if seen[h] {
			continue
		}
		seen[h] = true
		snaps, err := snapshot.ListHost(ctx, r, h)
		if err != nil {
			return nil, err
		}
		out = append(out, snaps...)
	}
	slices.SortStableFunc(out, func(a, b *snapshot.Snapshot) int {
		if c := a.Time.Compare(b.Time); c != 0 {
			return c
		}
		return strings.Compare(a.ID.String(), b.ID.String())
	})
	return out, nil
}
