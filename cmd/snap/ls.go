package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

type lsOptions struct {
	*globalOptions
	id     string
	chains bool
	host   string // only this host's snapshots (ListHost)
}

func lsCommand() *cli.Command {
	return &cli.Command{
		Name:      "ls",
		Usage:     "list snapshots, or the files of one",
		ArgsUsage: "[SNAPSHOT-ID]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "host", Usage: "list only this host's snapshots (reads only those)"},
			&cli.BoolFlag{Name: "chains", Usage: "list the redis chains only: for each, the interval restore --at can bring back, and its gaps"},
		},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			if c.NArg() > 1 {
				return cli.Exit("ls takes at most one snapshot id", exitUsage)
			}
			if c.NArg() == 1 && c.Bool("chains") {
				return cli.Exit("give a snapshot id or --chains, not both", exitUsage)
			}
			return runLs(c.Context, lsOptions{globalOptions: g, id: c.Args().First(), chains: c.Bool("chains"), host: c.String("host")})
		},
	}
}

type snapshotJSON struct {
	ID      string             `json:"id"`
	Time    time.Time          `json:"time"`
	Host    string             `json:"host"`
	Tags    []string           `json:"tags"`
	Parent  string             `json:"parent,omitempty"`
	Source  snapshot.Source    `json:"source"`
	Tree    string             `json:"tree"`
	Summary snapshot.Summary   `json:"summary"`
	Partial bool               `json:"partial"`
	Group   *snapshot.GroupRef `json:"group,omitempty"`
	// Repaired: snap repair snapshots dropped lost files from it.
	Repaired bool `json:"repaired"`
	// Original is the id of the snapshot this one is a copy of.
	Original string `json:"original,omitempty"`
}

func toJSON(sn *snapshot.Snapshot) snapshotJSON {
	j := snapshotJSON{ID: sn.ID.String(), Time: sn.Time, Host: sn.Host, Tags: sn.Tags, Source: sn.Source, Tree: sn.Tree.String(), Summary: sn.Summary, Partial: sn.Partial, Group: sn.Group}
	if j.Tags == nil {
		j.Tags = []string{}
	}
	if sn.Parent != nil {
		j.Parent = sn.Parent.String()
	}
	j.Repaired = sn.Repaired
	if sn.Original != nil {
		j.Original = sn.Original.String()
	}
	return j
}

func runLs(ctx context.Context, o lsOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	var snaps []*snapshot.Snapshot
	if o.host != "" {
		snaps, err = snapshot.ListHost(ctx, r, o.host)
	} else {
		snaps, err = snapshot.List(ctx, r)
	}
	if err != nil {
		return err
	}
	if o.chains {
		return lsChains(ctx, r, o, snaps)
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
			if sn.Group != nil {
				tags = strings.TrimPrefix(tags+",(group "+sn.Group.UUID[:8]+")", ",")
			}
			if sn.Repaired {
				tags = strings.TrimPrefix(tags+",(repaired)", ",")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", sn.ID.Str(), sn.Time.Local().Format("2006-01-02 15:04:05"),
				sn.Host, sourceStr(sn.Source), sn.Summary.Files, bytesStr(sn.Summary.Bytes), tags)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(o.stdout, "%d snapshots\n", len(snaps))
		for _, sn := range snaps {
			if chain.IsRedis(sn) {
				fmt.Fprintln(o.stdout)
				return lsChains(ctx, r, o, snaps)
			}
		}
		return nil
	}
	sn, err := snapshot.Find(snaps, o.id)
	if err != nil {
		return err
	}
	r.ScopeTo(sn.Host) // its tree is in its host's index files or the shared ones
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

type chainJSON struct {
	Host   string      `json:"host"`
	Source string      `json:"source"`
	Chain  string      `json:"chain"`
	From   time.Time   `json:"from"`
	To     time.Time   `json:"to"`
	Gaps   []chain.Gap `json:"gaps"`
	Bases  int         `json:"bases"`
	Tails  int         `json:"tail_objects"`
}

// lsChains lists the redis chains: the seconds restore --at can bring
// back, and the gaps inside.
func lsChains(ctx context.Context, r *repo.Repository, o lsOptions, snaps []*snapshot.Snapshot) error {
	chains, err := chain.LoadChains(ctx, r, snaps)
	if err != nil {
		return err
	}
	var out []chainJSON
	for _, c := range chains {
		from, ok := c.From()
		if !ok {
			continue // tail objects of forgotten bases, for prune to remove
		}
		gaps, err := c.Gaps(ctx, r)
		if err != nil {
			return err
		}
		if gaps == nil {
			gaps = []chain.Gap{}
		}
		out = append(out, chainJSON{Host: c.Host, Source: source.KindRedis, Chain: c.ID, From: from, To: c.To(), Gaps: gaps, Bases: len(c.Bases), Tails: len(c.Tails)})
	}
	if o.json {
		if out == nil {
			out = []chainJSON{}
		}
		return json.NewEncoder(o.stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHAIN\tHOST\tFROM\tTO\tBASES\tTAIL OBJECTS\tGAPS")
	for _, c := range out {
		var gs []string
		for _, g := range c.Gaps {
			gs = append(gs, g.From.Local().Format("15:04:05")+"-"+g.To.Local().Format("15:04:05"))
		}
		gap := "none"
		if len(gs) > 0 {
			gap = strings.Join(gs, ",")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", c.Chain[:8], c.Host, c.From.Local().Format("2006-01-02 15:04:05"),
			c.To.Local().Format("2006-01-02 15:04:05"), c.Bases, c.Tails, gap)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "%d redis chains (restore --at TIME brings back any second from FROM to TO outside the gaps)\n", len(out))
	return nil
}
