package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/snapbackup/snap/cluster"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

// groupPart finds node's part of group uuid: the snapshot its completed
// status names. A part that failed, is missing or still processing is an
// error that says so.
func groupPart(ctx context.Context, r *repo.Repository, snaps []*snapshot.Snapshot, uuid, node string) (*snapshot.Snapshot, error) {
	if _, err := snapshot.ParseUUID(uuid); err != nil {
		return nil, err
	}
	if err := snapshot.CheckName("node", node); err != nil {
		return nil, err
	}
	c, err := cluster.FindGroup(ctx, r, uuid)
	if err != nil {
		return nil, err
	}
	s, err := cluster.NewStore(r, c, nil)
	if err != nil {
		return nil, err
	}
	st, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	g, part, err := s.Part(ctx, st, uuid, node)
	if err != nil {
		return nil, err
	}
	switch part.Status {
	case cluster.Completed:
	case cluster.Failed:
		hint := ""
		if part.Snapshot != "" {
			hint = fmt.Sprintf("; its snapshot %s is kept: snap restore %s restores it anyway", part.Snapshot[:8], part.Snapshot[:8])
		}
		return nil, fmt.Errorf("node %s's part of group %s failed: %s%s", node, uuid, part.Error, hint)
	default:
		return nil, fmt.Errorf("node %s has no part in group %s: it is %s (group %s)", node, uuid, part.Status, g.Status)
	}
	for _, sn := range snaps {
		if sn.ID.String() == part.Snapshot {
			if sn.Group == nil || sn.Group.UUID != uuid || sn.Group.Node != node {
				return nil, fmt.Errorf("%w: snapshot %s, which node %s's status in group %s names, is not that part", repo.ErrCorrupt, sn.ID.Str(), node, uuid)
			}
			return sn, nil
		}
	}
	return nil, fmt.Errorf("node %s's part of group %s, snapshot %s, is gone (forgotten or pruned)", node, uuid, part.Snapshot[:8])
}

// restoreTar writes sn as a tar stream to path ("-": standard output). A
// file is written under a temporary name and renamed once whole, so a
// failure leaves no partial archive behind; a failed stream on standard
// output ends in a way tar refuses (snapshot.WriteTar).
func restoreTar(ctx context.Context, o restoreOptions, r *repo.Repository, sn *snapshot.Snapshot) error {
	var pr snapshot.Progress
	start := time.Now()
	if o.tar == "-" {
		w := bufio.NewWriterSize(o.stdout, 1<<20)
		st, err := snapshot.WriteTar(ctx, r, sn, w, snapshot.TarOptions{Progress: &pr, Log: o.log})
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
		if err != nil {
			return err
		}
		o.log.Info("wrote the tar stream", "snapshot", sn.ID.Str(), "files", st.Files, "bytes", st.Bytes, "duration", time.Since(start).Round(time.Millisecond))
		return nil
	}
	if _, err := os.Lstat(o.tar); err == nil {
		return fmt.Errorf("--tar %s: the file exists; snap does not overwrite it", o.tar)
	}
	f, err := os.CreateTemp(filepath.Dir(o.tar), ".snap-tar-*")
	if err != nil {
		return fmt.Errorf("--tar %s: %w", o.tar, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	w := bufio.NewWriterSize(f, 1<<20)
	pl := startProgress(o.stderr, !o.json && isTerminal(o.stderr), "tar", &pr)
	st, err := snapshot.WriteTar(ctx, r, sn, w, snapshot.TarOptions{Progress: &pr, Log: o.log})
	pl.Stop()
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, o.tar)
	}
	if err != nil {
		return fmt.Errorf("--tar %s: %w", o.tar, err)
	}
	if err := snapshot.SyncDir(filepath.Dir(o.tar)); err != nil {
		return err
	}
	dur := time.Since(start)
	if o.json {
		return json.NewEncoder(o.stdout).Encode(map[string]any{"snapshot_id": sn.ID.String(), "result": "tar", "tar": o.tar,
			"files": st.Files, "bytes": st.Bytes, "duration_seconds": dur.Seconds()})
	}
	fmt.Fprintf(o.stdout, "wrote snapshot %s as %s: %d entries, %s in %s, every chunk verified\n", sn.ID.Str(), o.tar, st.Files, bytesStr(st.Bytes), dur.Round(time.Millisecond))
	return nil
}

var errTarChain = errors.New("--tar writes one snapshot's files: a redis chain rolled forward (--at, --latest of a redis host) is restored into --target only")
