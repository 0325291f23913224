package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/cluster"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// agentOptions are a cluster member's flags, shared by snap run
// --cluster and snap agent.
type agentOptions struct {
	cluster, node             string
	schedule, poll, heartbeat time.Duration
	groupTimeout, maxSkew     time.Duration
}

func agentFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "cluster", EnvVars: []string{"SNAP_CLUSTER"}, Usage: "join the cluster `NAME`: take a part of each of its groups (snap cluster snapshot) and keep a heartbeat in the repository"},
		&cli.StringFlag{Name: "node", EnvVars: []string{"SNAP_NODE"}, Usage: "this node's `NAME` in the cluster (like db-0); also the host its snapshots record unless --host says otherwise"},
		&cli.DurationFlag{Name: "schedule", EnvVars: []string{"SNAP_SCHEDULE"}, Usage: "with --cluster: take a part of a group at every multiple of `DURATION` of wall-clock time (1h: on the hour), as every member with the same schedule does"},
		&cli.DurationFlag{Name: "poll", Value: 5 * time.Second, EnvVars: []string{"SNAP_POLL"}, Usage: "with --cluster: read the cluster's request this often (one small read)"},
		&cli.DurationFlag{Name: "heartbeat", Value: time.Minute, EnvVars: []string{"SNAP_HEARTBEAT"}, Usage: "with --cluster: write this node's member record this often"},
		&cli.DurationFlag{Name: "group-timeout", Value: 10 * time.Minute, EnvVars: []string{"SNAP_GROUP_TIMEOUT"}, Usage: "with --schedule: after a scheduled moment, how long this node's part may take before it counts as missing"},
		&cli.DurationFlag{Name: "max-skew", Value: time.Second, EnvVars: []string{"SNAP_MAX_SKEW"}, Usage: "with --schedule: how far from the scheduled moment this node's freeze may be"},
	}
}

// parseAgent reads the agent flags; ok is false without --cluster.
func parseAgent(c *cli.Context) (agentOptions, bool, error) {
	a := agentOptions{cluster: c.String("cluster"), node: c.String("node"), schedule: c.Duration("schedule"),
		poll: c.Duration("poll"), heartbeat: c.Duration("heartbeat"), groupTimeout: c.Duration("group-timeout"), maxSkew: c.Duration("max-skew")}
	if a.cluster == "" {
		for _, f := range []string{"node", "schedule"} {
			if c.IsSet(f) {
				return a, false, cli.Exit(fmt.Sprintf("--%s needs --cluster", f), exitUsage)
			}
		}
		return a, false, nil
	}
	if a.node == "" {
		return a, false, cli.Exit("--cluster needs --node: this node's name in the cluster", exitUsage)
	}
	if err := snapshot.CheckName("cluster", a.cluster); err != nil {
		return a, false, err
	}
	if err := snapshot.CheckName("node", a.node); err != nil {
		return a, false, err
	}
	switch {
	case a.poll <= 0 || a.heartbeat <= 0:
		return a, false, cli.Exit("--poll and --heartbeat must be positive", exitUsage)
	case a.schedule < 0 || (a.schedule > 0 && a.schedule < time.Second):
		return a, false, cli.Exit("--schedule must be at least 1s", exitUsage)
	case a.schedule > 0 && (a.groupTimeout <= 0 || a.groupTimeout > a.schedule):
		return a, false, cli.Exit(fmt.Sprintf("--group-timeout %v must be positive and at most --schedule %v: a part overdue at the next moment is missing", a.groupTimeout, a.schedule), exitUsage)
	case a.maxSkew < minMaxSkew:
		return a, false, fmt.Errorf("--max-skew %v: below %v no member can keep it", a.maxSkew, minMaxSkew)
	}
	return a, true, nil
}

// openAgent opens the repository and returns the cluster agent of the
// node o backs up, which polls and writes through it, and what closes
// it; each part is a backup as snap backup makes it.
func (o *runOptions) openAgent(ctx context.Context) (*cluster.Agent, func(), error) {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return nil, nil, err
	}
	s, err := cluster.NewStore(r, o.agent.cluster, nil)
	if err != nil {
		closeRepo(r)
		return nil, nil, err
	}
	a := &cluster.Agent{
		Store: s,
		Member: cluster.Member{Node: o.agent.node, Host: o.host, Kind: o.kind, Server: o.server, Data: o.sourceDir(o.data),
			Every: cluster.Duration(o.agent.heartbeat), Poll: cluster.Duration(o.agent.poll),
			Schedule: cluster.Duration(o.agent.schedule), GroupTimeout: cluster.Duration(o.agent.groupTimeout), MaxSkew: cluster.Duration(o.agent.maxSkew),
			Program: "snap " + version},
		Backup: func(ctx context.Context, g *snapshot.GroupRef, maxLate time.Duration) (*snapshot.Snapshot, error) {
			start := time.Now()
			sn, err := o.backupGroup(ctx, g, maxLate)
			if o.state != nil {
				o.state.record("group", start, time.Now(), sn, err) // /healthz and /metrics of snap run
			}
			return sn, err
		},
		Log: o.log,
	}
	if hook := o.pruneHook(); hook != nil {
		a.After = func(ctx context.Context) {
			if err := hook(ctx); err != nil && ctx.Err() == nil {
				o.log.Error("prune failed; retrying after the next part", "err", err)
			}
		}
	}
	return a, func() { closeRepo(r) }, nil
}

// backupGroup takes this node's part of group g: a backup that freezes at
// g.FreezeAt.
func (o *runOptions) backupGroup(ctx context.Context, g *snapshot.GroupRef, maxLate time.Duration) (*snapshot.Snapshot, error) {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return nil, err
	}
	defer closeRepo(r)
	r.ScopeTo(o.host)
	if err := r.LoadIndex(ctx); err != nil {
		return nil, err
	}
	bo := backupOptions{globalOptions: o.globalOptions, server: o.server, data: o.data, host: o.host, tags: o.tags, retryLock: o.retryLock,
		sourceOptions: o.sourceOptions, metrics: o.metrics, group: g, maxLate: maxLate}
	return backupInto(ctx, r, bo, nil)
}

// newestPart returns this node's snapshot in the newest completed group
// of its cluster, or nil when there is none.
func (o *runOptions) newestPart(ctx context.Context, r *repo.Repository, snaps []*snapshot.Snapshot) (*snapshot.Snapshot, *cluster.Group, error) {
	s, err := cluster.NewStore(r, o.agent.cluster, nil)
	if err != nil {
		return nil, nil, err
	}
	st, err := s.Load(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, g := range st.Groups() {
		if g.Status != cluster.Completed {
			continue
		}
		for _, sn := range snaps {
			if sn.Group != nil && sn.Group.UUID == g.UUID && sn.Group.Node == o.agent.node && sn.Group.Cluster == o.agent.cluster {
				return sn, g, nil
			}
		}
	}
	return nil, nil, nil
}

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "be a cluster member beside a server snap does not start: take a part of each group, keep a heartbeat",
		Description: "For nodes whose entrypoint is something else. Needs --cluster and --node; --server and --data\n" +
			"(or --source dir --path) say what to back up. Runs until SIGTERM or SIGINT, finishing a part in\n" +
			"progress within --stop-timeout. See docs/cluster.md.",
		Flags: append(append(append(serverFlags(),
			&cli.StringFlag{Name: "host", EnvVars: []string{"SNAP_HOST"}, Usage: "host name recorded in snapshots", DefaultText: "the --node name"},
			&cli.StringSliceFlag{Name: "tag", EnvVars: []string{"SNAP_TAGS"}, Usage: "tag every part (repeatable)"},
			&cli.StringFlag{Name: "log-format", Value: "text", EnvVars: []string{"SNAP_LOG_FORMAT"}, Usage: "text or json (logs go to stderr)"},
			&cli.DurationFlag{Name: "stop-timeout", Value: 5 * time.Minute, Usage: "on SIGTERM or SIGINT, finish a part in progress for at most this long"},
			&cli.DurationFlag{Name: "prune-every", Value: 24 * time.Hour, EnvVars: []string{"SNAP_PRUNE_EVERY"}, Usage: "with a --keep-* policy: prune after a part when this long has passed since the last successful prune"},
			&cli.DurationFlag{Name: "retry-lock", Value: defaultRunRetryLock, EnvVars: []string{"SNAP_RETRY_LOCK"}, Usage: "parts and prunes wait up to `DURATION` for other processes' locks"},
		), agentFlags()...), append(retentionFlags(), sourceFlags()...)...),
		Action: func(c *cli.Context) error {
			longRunning()
			g, err := globals(c)
			if err != nil {
				return err
			}
			if c.NArg() > 0 {
				return cli.Exit("agent takes no arguments", exitUsage)
			}
			if err := useLogFormat(c, g); err != nil {
				return err
			}
			if _, ok := os.LookupEnv("SNAP_PASSWORD"); !ok && g.passwordFile == "" {
				return cli.Exit("snap agent reads the repository password for every part: set SNAP_PASSWORD_FILE (or --password-file, or SNAP_PASSWORD)", exitUsage)
			}
			ao, ok, err := parseAgent(c)
			if err != nil {
				return err
			}
			if !ok {
				return cli.Exit("snap agent needs --cluster and --node", exitUsage)
			}
			o := runOptions{globalOptions: g, server: c.String("server"), data: c.String("data"), host: c.String("host"), tags: c.StringSlice("tag"),
				agent: ao, cluster: true, retryLock: c.Duration("retry-lock"), pruneEvery: c.Duration("prune-every")}
			if o.host == "" {
				o.host = ao.node
			}
			if err := o.setSource(c); err != nil {
				return err
			}
			if o.kind == source.KindRedis && !c.IsSet("server") {
				o.server = defaultRedisServer
			}
			if o.prune.Policy, o.prune.GroupBy, o.prune.Location, err = parseRetentionFlags(c); err != nil {
				return err
			}
			o.prune.MaxUnused, o.prune.UnreferencedMargin, o.prune.RetryLock = 0.05, snapshot.DefaultUnreferencedMargin, o.retryLock
			o.metrics = newMetrics()
			return runAgent(c.Context, o, c.Duration("stop-timeout"))
		},
	}
}

// runAgent runs the agent until ctx is done (SIGTERM, SIGINT); a part in
// progress then has stopTimeout to finish.
func runAgent(ctx context.Context, o runOptions, stopTimeout time.Duration) error {
	a, closeAgent, err := o.openAgent(ctx)
	if err != nil {
		return err
	}
	defer closeAgent()
	jobCtx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	defer cancel(nil)
	go func() {
		<-ctx.Done()
		o.log.Info("stopping: a part in progress finishes first", "timeout", stopTimeout)
		time.AfterFunc(stopTimeout, func() { cancel(errFinalTimeout) })
	}()
	return a.Run(jobCtx, ctx.Done())
}
