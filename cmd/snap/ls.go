package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/snapshot"
)

type lsOptions struct {
	*globalOptions
	id string
}

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list snapshots, or the files of one",
		ArgsUsage: "[SNAPSHOT-ID]",
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			if c.NArg() > 1 {
				return cli.Exit("ls takes at most one snapshot id", exitUsage)
			}
			return runLs(c.Context, lsOptions{globalOptions: g, id: c.Args().First()})
		},
	}
}

type snapshotJSON struct {
	ID      string           `json:"id"`
	Time    time.Time        `json:"time"`
	Host    string           `json:"host"`
	Tags    []string         `json:"tags"`
	Parent  string           `json:"parent,omitempty"`
	Source  snapshot.Source  `json:"source"`
	Tree    string           `json:"tree"`
	Summary snapshot.Summary `json:"summary"`
	Partial bool             `json:"partial"`
}

func toJSON(sn *snapshot.Snapshot) snapshotJSON {
	j := snapshotJSON{ID: sn.ID.String(), Time: sn.Time, Host: sn.Host, Tags: sn.Tags, Source: sn.Source, Tree: sn.Tree.String(), Summary: sn.Summary, Partial: sn.Partial}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	if sn.Parent != nil {
		j.Parent = sn.Parent.String()
	}
	return j
}

func runLs(ctx context.Context, o lsOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	snaps, err := snapshot.List(ctx, r)
	if err != nil {
		return err
	}
	if o.id == "" {
		if o.json {
			out := make([]snapshotJSON, 0, len(snaps))
			for _, sn := range snaps {
				out = append(out, toJSON(sn))
			}
			return json.NewEncoder(o.stdout).Encode(out)
		}
		tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tTIME\tHOST\tSOURCE\tFILES\tSIZE\tTAGS")
		for _, sn := range snaps {
			tags := strings.Join(sn.Tags, ",")
			if sn.Partial {
				tags = strings.TrimPrefix(tags+",(partial)", ",")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", sn.ID.Str(), sn.Time.Local().Format("2006-01-02 15:04:05"),
				sn.Host, sourceStr(sn.Source), sn.Summary.Files, bytesStr(sn.Summary.Bytes), tags)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(o.stdout, "%d snapshots\n", len(snaps))
		return nil
	}
	sn, err := snapshot.Find(snaps, o.id)
	if err != nil {
		return err
	}
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	tree, err := snapshot.LoadTree(ctx, r, sn.Tree)
	if err != nil {
		return err
	}
	if o.json {
		type fileJSON struct {
			Name   string `json:"name"`
			Role   string `json:"role"`
			Length int64  `json:"length"`
			Chunks int    `json:"chunks"`
		}
		files := make([]fileJSON, 0, len(tree.Files))
		for _, f := range tree.Files {
			files = append(files, fileJSON{f.Name, f.Role, f.Length, len(f.Chunks)})
		}
		return json.NewEncoder(o.stdout).Encode(map[string]any{"snapshot": toJSON(sn), "files": files})
	}
	fmt.Fprintf(o.stdout, "snapshot %s of %s on %s at %s\n", sn.ID.Str(), sourceStr(sn.Source), sn.Host, sn.Time.Local().Format(time.RFC3339))
	tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "NAME\tROLE\tLENGTH\tCHUNKS\t")
	for _, f := range tree.Files {
		name := f.Name
		switch f.Type {
		case snapshot.TypeDir:
			name += "/"
		case snapshot.TypeSymlink:
			name += " -> " + f.Target
		case snapshot.TypeHardlink:
			name += " => " + f.Target
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t\n", name, f.Role, f.Length, len(f.Chunks))
	}
	return tw.Flush()
}

// sourceStr says where a snapshot came from: "freeze 127.0.0.1:9015 /data"
// or "dir /backups/ckpt".
func sourceStr(s snapshot.Source) string {
	if s.Address == "" {
		return s.Kind + " " + s.DataDir
	}
	return s.Kind + " " + s.Address + " " + s.DataDir
}
