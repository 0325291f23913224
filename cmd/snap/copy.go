package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/gcs"
	"github.com/snapbackup/snap/snapshot"
)

type copyOptions struct {
	*globalOptions
	from             storageOptions // the source repository's storage
	fromPasswordFile string
	ids              []string
	host             string
	latest           bool
	retryLock        time.Duration
}

func copyCommand() *cli.Command {
	return &cli.Command{
		Name:      "copy",
		Usage:     "copy snapshots from another repository into this one",
		ArgsUsage: "[SNAPSHOT-ID...]",
		Description: "Copies the snapshots of --from-repo (all, those given by id, those of --host, or with --latest\n" +
			"the newest of them) into --repo with exactly the blobs they need, re-encrypted with this\n" +
			"repository's key. Snapshots copied before are skipped without reading them, so a second run\n" +
			"costs only the new ones. Copies keep their time, host, tags and source. Redis tail objects\n" +
			"are not copied: a copied redis snapshot restores as it was taken.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from-repo", EnvVars: []string{"SNAP_FROM_REPO"}, Usage: "the `LOCATION` to copy from: a local directory or gs://bucket/prefix"},
			&cli.StringFlag{Name: "from-password-file", EnvVars: []string{"SNAP_FROM_PASSWORD_FILE"}, Usage: "read the source repository's password from `FILE` (or set SNAP_FROM_PASSWORD; default: this repository's password)"},
			&cli.StringFlag{Name: "host", Usage: "copy only the snapshots of `HOST`"},
			&cli.BoolFlag{Name: "latest", Usage: "copy only the newest snapshot (of --host, if given)"},
			lockRetryFlag(),
		},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			o := copyOptions{globalOptions: g, fromPasswordFile: c.String("from-password-file"), ids: c.Args().Slice(),
				host: c.String("host"), latest: c.Bool("latest"), retryLock: c.Duration("retry-lock")}
			from := c.String("from-repo")
			if from == "" {
				return cli.Exit("copy needs --from-repo LOCATION (or SNAP_FROM_REPO): the repository to copy from", exitUsage)
			}
			if len(o.ids) > 0 && (o.host != "" || o.latest) {
				return cli.Exit("give snapshot ids or --host/--latest, not both", exitUsage)
			}
			if sameLocation(from, g.repo) {
				return cli.Exit(fmt.Sprintf("--from-repo %s is --repo itself: copy needs another repository", from), exitUsage)
			}
			o.from = g.storage
			o.from.location = from
			if !setContext(c, "connections").IsSet("connections") {
				o.from.connections = defaultConnectionsLocal
				if strings.HasPrefix(from, gcs.Scheme) {
					o.from.connections = defaultConnectionsGCS
				}
			}
			return runCopy(c.Context, o)
		},
	}
}

// sameLocation reports whether two locations name one repository.
func sameLocation(a, b string) bool {
	norm := func(s string) string {
		if strings.Contains(s, "://") {
			return strings.TrimRight(s, "/")
		}
		if abs, err := filepath.Abs(s); err == nil {
			return abs
		}
		return s
	}
	return norm(a) == norm(b)
}

// fromPassword is the source repository's password: --from-password-file,
// then SNAP_FROM_PASSWORD, then this repository's.
func (o *copyOptions) fromPassword() (string, error) {
	if o.fromPasswordFile != "" {
		data, err := os.ReadFile(o.fromPasswordFile)
		if err != nil {
			return "", fmt.Errorf("read --from-password-file: %w", err)
		}
		pw := strings.TrimRight(string(data), "\r\n")
		if pw == "" {
			return "", fmt.Errorf("--from-password-file %s is empty", o.fromPasswordFile)
		}
		return pw, nil
	}
	if pw := os.Getenv("SNAP_FROM_PASSWORD"); pw != "" {
		return pw, nil
	}
	return o.password(false)
}

// openSource opens the repository copied from. Its errors are exit 1,
// not 10 or 12: those codes describe --repo (10 says snap init makes
// one), and the message names the source.
func (o *copyOptions) openSource(ctx context.Context) (*repo.Repository, error) {
	be, err := openStorage(ctx, o.from, false)
	if err != nil {
		return nil, fmt.Errorf("source repository (--from-repo): %v", err)
	}
	pw, err := o.fromPassword()
	if err != nil {
		be.Close()
		return nil, fmt.Errorf("source repository %s: %v", o.from.location, err)
	}
	r, err := repo.Open(ctx, be, pw, repo.Options{Log: o.log, Connections: o.from.connections})
	if err != nil {
		be.Close()
		return nil, fmt.Errorf("source repository (--from-repo): %v", err)
	}
	return r, nil
}

// pick chooses the snapshots to copy among the source's.
func (o *copyOptions) pick(snaps []*snapshot.Snapshot) ([]*snapshot.Snapshot, error) {
	if len(o.ids) > 0 {
		var out []*snapshot.Snapshot
		seen := map[repo.ID]bool{}
		for _, id := range o.ids {
			sn, err := snapshot.Find(snaps, id)
			if err != nil {
				return nil, fmt.Errorf("source repository %s: %w", o.from.location, err)
			}
			if !seen[sn.ID] {
				seen[sn.ID] = true
				out = append(out, sn)
			}
		}
		return out, nil
	}
	var out []*snapshot.Snapshot
	for _, sn := range snaps {
		if o.host == "" || sn.Host == o.host {
			out = append(out, sn)
		}
	}
	if o.host != "" && len(out) == 0 {
		return nil, fmt.Errorf("source repository %s: %w of host %q", o.from.location, snapshot.ErrNoSnapshot, o.host)
	}
	if o.latest && len(out) > 0 {
		out = out[len(out)-1:]
	}
	return out, nil
}

func runCopy(ctx context.Context, o copyOptions) error {
	dst, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer dst.Close()
	src, err := o.openSource(ctx)
	if err != nil {
		return err
	}
	defer src.Close()
	if src.Config().ID == dst.Config().ID {
		return fmt.Errorf("--from-repo %s is the repository at %s (the same id %s): copy needs another repository",
			o.from.location, dst.Backend().Location(), dst.Config().ID)
	}
	res, err := snapshot.Copy(ctx, dst, src, o.pick, snapshot.CopyOptions{RetryLock: o.retryLock, Log: o.log})
	if res == nil {
		return err
	}
	// What was copied before a failure is saved, and said.
	if o.json {
		out := struct {
			From string `json:"from"`
			To   string `json:"to"`
			*snapshot.CopyResult
			SnapshotsCopied  int    `json:"snapshots_copied"`
			SnapshotsSkipped int    `json:"snapshots_skipped"`
			Error            string `json:"error,omitempty"`
		}{From: src.Backend().Location(), To: dst.Backend().Location(), CopyResult: res,
			SnapshotsCopied: len(res.Copied), SnapshotsSkipped: len(res.Skipped)}
		if err != nil {
			out.Error = err.Error()
		}
		if jerr := json.NewEncoder(o.stdout).Encode(out); jerr != nil {
			return jerr
		}
		return err
	}
	for _, c := range res.Copied {
		fmt.Fprintf(o.stdout, "copied  %s -> %s  %s  %s  %d files, %s\n", c.Source.Str(), c.ID.Str(),
			c.Time.Local().Format("2006-01-02 15:04:05"), c.Host, c.Files, bytesStr(c.Bytes))
	}
	for _, c := range res.Skipped {
		fmt.Fprintf(o.stdout, "skipped %s    (copied before, as %s)\n", c.Source.Str(), c.ID.Str())
	}
	fmt.Fprintf(o.stdout, "%d snapshots copied from %s, %d there already\n", len(res.Copied), src.Backend().Location(), len(res.Skipped))
	if len(res.Copied) > 0 {
		fmt.Fprintf(o.stdout, "read %d chunks (%s) from the source, %d known from earlier copies; %d new blobs, %s stored\n",
			res.BlobsRead, bytesStr(res.BytesRead), res.BlobsKnown, res.BlobsNew, bytesStr(res.BytesStored))
	}
	for _, ch := range res.RedisChains {
		fmt.Fprintf(o.stdout, "note: redis chain %s: its base snapshots were copied, its tail objects were not (restore --at reaches only the bases' times here)\n", ch)
	}
	return err
}
