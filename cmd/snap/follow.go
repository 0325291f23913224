package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/source"
)

type followOptions struct {
	backupOptions
	interval  time.Duration
	chunkSize int
	pause     time.Duration
}

// followMemoryLimit is follow's soft memory limit (debug.SetMemoryLimit).
const followMemoryLimit = 40 << 20

// defaultRedisServer is where --source redis looks for redis-server.
const defaultRedisServer = "127.0.0.1:6379"

func followFlags() []cli.Flag {
	return []cli.Flag{
		&cli.DurationFlag{Name: "interval", Value: time.Second, EnvVars: []string{"SNAP_FOLLOW_INTERVAL"}, Usage: "store what was appended to the AOF every `DURATION`"},
		&cli.StringFlag{Name: "chunk-size", Value: "4MiB", EnvVars: []string{"SNAP_FOLLOW_CHUNK_SIZE"}, Usage: "read and store at most `SIZE` of the AOF at once (at most 4MiB)"},
		&cli.DurationFlag{Name: "pause", EnvVars: []string{"SNAP_FOLLOW_PAUSE"}, Usage: "sleep `DURATION` between two reads of --chunk-size, to spare the server's disk"},
	}
}

func followCommand() *cli.Command {
	return &cli.Command{
		Name:  "follow",
		Usage: "ship a live redis-server's AOF into the repository as it grows, so restore --at can bring back any second",
		Description: "follow stores a base snapshot (unless the repository has this host's chain and the server's AOF\n" +
			"continues it), then every --interval the bytes appended to the AOF since the last tick, as tail\n" +
			"objects, and a base snapshot after each AOF rewrite. While it runs it sets aof-disable-auto-gc yes,\n" +
			"so Redis keeps replaced AOF files until follow stored them and removes them itself. On SIGTERM it\n" +
			"stores what is pending and exits 0.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "source", Value: source.KindRedis, EnvVars: []string{"SNAP_SOURCE"}, Usage: "what to follow: redis (the only kind that can be followed)"},
			&cli.StringFlag{Name: "server", Value: defaultRedisServer, EnvVars: []string{"SNAP_SERVER"}, Usage: "address of the redis-server"},
			&cli.StringFlag{Name: "data", Value: "/data", EnvVars: []string{"SNAP_DATA"}, Usage: "the redis-server's dir (its AOF directory is in it), read directly"},
			&cli.StringFlag{Name: "host", Value: hostname(), EnvVars: []string{"SNAP_HOST"}, Usage: "host name recorded in the chain"},
			&cli.StringSliceFlag{Name: "tag", Usage: "tag the chain's base snapshots (repeatable)"},
			&cli.StringFlag{Name: "listen", EnvVars: []string{"SNAP_LISTEN"}, Usage: "serve /healthz and /metrics on `ADDR` (like 127.0.0.1:9100); off by default"},
			lockRetryFlag(),
		}, followFlags()...),
		Action: func(c *cli.Context) error {
			longRunning()
			g, err := globals(c)
			if err != nil {
				return err
			}
			if k := c.String("source"); k != source.KindRedis {
				return cli.Exit(fmt.Sprintf("--source %q: only redis can be followed", k), exitUsage)
			}
			o, err := parseFollow(c, g)
			if err != nil {
				return err
			}
			listen := c.String("listen")
			if listen != "" {
				if err := checkListen(listen); err != nil {
					return err
				}
			}
			return runFollow(c.Context, o, listen)
		},
	}
}

// parseFollow reads follow's flags (follow, and run --follow).
func parseFollow(c *cli.Context, g *globalOptions) (followOptions, error) {
	o := followOptions{
		backupOptions: backupOptions{globalOptions: g, server: c.String("server"), data: c.String("data"),
			host: c.String("host"), tags: c.StringSlice("tag"), retryLock: c.Duration("retry-lock")},
		interval: c.Duration("interval"), pause: c.Duration("pause"),
	}
	o.kind = source.KindRedis
	n, err := parseRate(c.String("chunk-size"))
	if err != nil || n < 1 || n > chain.MaxInline {
		return o, cli.Exit(fmt.Sprintf("--chunk-size %q: want a size from 1 byte to 4MiB", c.String("chunk-size")), exitUsage)
	}
	o.chunkSize = int(n)
	if o.interval < 10*time.Millisecond {
		return o, cli.Exit("--interval must be at least 10ms", exitUsage)
	}
	if o.pause < 0 {
		return o, cli.Exit("--pause must not be negative", exitUsage)
	}
	return o, nil
}

// runFollow follows until ctx is done, serving /healthz and /metrics on
// listen if it is set.
func runFollow(ctx context.Context, o followOptions, listen string) error {
	o.metrics = newMetrics()
	st := newRunState() // only its phase: follow takes no scheduled backups
	if listen != "" {
		pc := newPingClient(o.server)
		defer pc.Close()
		ping := func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, pingTimeout)
			defer cancel()
			return pc.Ping(ctx).Err()
		}
		_, stop, err := serveStatus(listen, st, o.metrics.reg, o.server, ping, o.log)
		if err != nil {
			return err
		}
		defer stop()
	}
	defer context.AfterFunc(ctx, func() { st.setPhase("stopping") })()
	r, err := o.openRepoWith(ctx, repo.Options{LowMemory: true})
	if err != nil {
		return err
	}
	defer r.Close()
	r.ScopeTo(o.host)
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	return followInto(ctx, r, o, func() { st.setPhase("running") })
}

// followInto follows o's server into r until ctx is done; started (may be
// nil) is called once the chain is there.
func followInto(ctx context.Context, r *repo.Repository, o followOptions, started func()) error {
	// follow runs beside the server for months: a soft memory limit keeps
	// its heap near what it holds (a few pieces of --chunk-size) rather
	// than twice that. GOMEMLIMIT overrides it.
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(followMemoryLimit)
	}
	src := source.NewRedisAOF(o.server, o.data, source.RedisAOFOptions{Log: o.log})
	defer src.Close()
	o.log.Info("following redis-server", "server", o.server, "data", o.data, "interval", o.interval, "host", o.host)
	o.metrics.followStarting()
	return chain.Follow(ctx, r, src, o.data, chain.FollowOptions{
		Host: o.host, Interval: o.interval, ChunkSize: o.chunkSize, Pause: o.pause,
		Backup: o.backupOpts(nil), Log: o.log, Started: started, Shipped: o.metrics.shipped,
	})
}
