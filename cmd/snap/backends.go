package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/gcs"
	"github.com/snapbackup/snap/repo/limit"
	"github.com/snapbackup/snap/repo/local"
	"github.com/snapbackup/snap/repo/retry"
)

// Default --connections: GCS hides its latency behind more requests in
// flight than a local disk needs.
const (
	defaultConnectionsLocal = 2
	defaultConnectionsGCS   = 8
)

// storageFlags are the global flags about the repository's storage and
// rates; globalFlags includes them.
func storageFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "limit-upload", EnvVars: []string{"SNAP_LIMIT_UPLOAD"}, Usage: "upload to the repository at most `RATE` bytes per second, e.g. 10MiB (0: no limit)"},
		&cli.StringFlag{Name: "limit-download", EnvVars: []string{"SNAP_LIMIT_DOWNLOAD"}, Usage: "download from the repository at most `RATE` bytes per second, e.g. 50MiB (0: no limit)"},
		&cli.StringFlag{Name: "limit-read", EnvVars: []string{"SNAP_LIMIT_READ"}, Usage: "read the database files at most `RATE` bytes per second, e.g. 100MiB (0: no limit)"},
	}
}

// storageOptions say where the repository is and how to reach it.
type storageOptions struct {
	location    string
	connections int   // --connections, or the default for the location
	upload      int64 // bytes per second; 0: no limit
	download    int64
	read        int64 // for reading the database files (snapshot.Backup)
	log         *slog.Logger
}

// parseStorageOptions reads the storage flags. An explicit --connections
// (or SNAP_CONNECTIONS) wins; otherwise GCS gets 8 and a directory 4.
func parseStorageOptions(c *cli.Context, location string, log *slog.Logger) (storageOptions, error) {
	so := storageOptions{location: location, log: log}
	cc := setContext(c, "connections")
	so.connections = cc.Int("connections")
	if !cc.IsSet("connections") {
		so.connections = defaultConnectionsLocal
		if strings.HasPrefix(location, gcs.Scheme) {
			so.connections = defaultConnectionsGCS
		}
	}
	for _, f := range []struct {
		name string
		dst  *int64
	}{{"limit-upload", &so.upload}, {"limit-download", &so.download}, {"limit-read", &so.read}} {
		s := setContext(c, f.name).String(f.name)
		if s == "" {
			continue
		}
		n, err := parseRate(s)
		if err != nil {
			return so, cli.Exit(fmt.Sprintf("--%s %q: %v", f.name, s, err), exitUsage)
		}
		*f.dst = n
	}
	return so, nil
}

// parseRate parses bytes per second: a number with an optional unit, KiB,
// MiB, GiB (also K, M, G) or kB, MB, GB, and an optional "/s".
func parseRate(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "/s")
	i := strings.IndexFunc(t, func(r rune) bool { return !('0' <= r && r <= '9' || r == '.') })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.TrimSpace(t[i:])
	}
	var mult float64
	switch strings.ToLower(unit) {
	case "", "b":
		mult = 1
	case "k", "ki", "kib":
		mult = 1 << 10
	case "m", "mi", "mib":
		mult = 1 << 20
	case "g", "gi", "gib":
		mult = 1 << 30
	case "kb":
		mult = 1e3
	case "mb":
		mult = 1e6
	case "gb":
		mult = 1e9
	default:
		return 0, fmt.Errorf("unknown unit %q: want bytes per second like 10MiB, 500KiB or 20MB", unit)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 {
		return 0, errors.New("want bytes per second like 10MiB, 500KiB or 20MB")
	}
	if v*mult > 1<<50 {
		return 0, errors.New("rate too large")
	}
	return int64(v * mult), nil
}

// readLimiter paces reading the database files, or is nil for no limit.
func (so storageOptions) readLimiter() *limit.Limiter { return limit.NewLimiter(so.read) }

// openStorage opens (or, with create, prepares) the repository's storage:
// a local directory or gs://bucket/prefix. GCS is wrapped in retries;
// rate limits go around that, so time spent waiting for the rate does not
// count against a request's timeout.
func openStorage(ctx context.Context, so storageOptions, create bool) (repo.Backend, error) {
	location := so.location
	var be repo.Backend
	switch {
	case strings.HasPrefix(location, gcs.Scheme):
		bucket, prefix, err := gcs.ParseLocation(location)
		if err != nil {
			return nil, err
		}
		g, err := gcs.Open(ctx, bucket, prefix, gcs.Options{})
		if err != nil {
			return nil, err
		}
		be = retry.New(g, retry.Options{Log: so.log})
		if !create {
			// Say so before asking for a password, as for a directory.
			// (init: repo.Init refuses an existing repository itself.)
			_, err := be.Stat(ctx, repo.Handle{Type: repo.ConfigFile})
			if errors.Is(err, repo.ErrNotFound) {
				err = fmt.Errorf("%w at %s (run snap init, or check the bucket and prefix)", repo.ErrNoRepository, be.Location())
			}
			if err != nil {
				be.Close()
				return nil, err
			}
		}
	case strings.Contains(location, "://"):
		scheme, _, _ := strings.Cut(location, "://")
		return nil, fmt.Errorf("repository %q: unsupported location scheme %q (use a local directory or gs://bucket/prefix)", location, scheme)
	case create:
		l, err := local.Create(location)
		if err != nil {
			return nil, err
		}
		be = l
	default:
		l, err := local.Open(location)
		if err != nil {
			return nil, err
		}
		be = l
	}
	if so.upload > 0 || so.download > 0 {
		be = limit.New(be, limit.NewLimiter(so.upload), limit.NewLimiter(so.download))
	}
	if strings.HasPrefix(location, gcs.Scheme) {
		// Packs wait for their upload in temp files, not in memory
		// (repo.SpoolToFiles).
		be = repo.SpoolToFiles(be, os.TempDir())
	}
	return be, nil
}
