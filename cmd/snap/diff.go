package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

type diffOptions struct {
	*globalOptions
	from, to string
	metadata bool
}

func diffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "list the files added, removed and changed from one snapshot to another, and the bytes new in the second",
		ArgsUsage: "SNAPSHOT-ID1 SNAPSHOT-ID2",
		Description: "One line per entry: + added, - removed, M changed, > appended (the second starts with the\n" +
			"first's bytes and is longer: a grown WAL, MANIFEST or AOF), U mode or mtime changed (with\n" +
			"--metadata). The summary says how many bytes the second snapshot's chunks hold that the first's\n" +
			"do not: what a backup after the first had to store at most.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "metadata", Usage: "also list entries whose mode or mtime alone changed"},
		},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			if c.NArg() != 2 {
				return cli.Exit("diff takes two snapshot ids", exitUsage)
			}
			return runDiff(c.Context, diffOptions{globalOptions: g, from: c.Args().Get(0), to: c.Args().Get(1), metadata: c.Bool("metadata")})
		},
	}
}

func runDiff(ctx context.Context, o diffOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	snaps, err := snapshot.List(ctx, r)
	if err != nil {
		return err
	}
	from, err := snapshot.Find(snaps, o.from)
	if err != nil {
		return err
	}
	to, err := snapshot.Find(snaps, o.to)
	if err != nil {
		return err
	}
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	ft, err := snapshot.LoadTree(ctx, r, from.Tree)
	if err != nil {
		return err
	}
	tt, err := snapshot.LoadTree(ctx, r, to.Tree)
	if err != nil {
		return err
	}
	load := func(ctx context.Context, id repo.ID) ([]byte, error) { return r.LoadBlob(ctx, id, nil) }
	d, err := snapshot.DiffTrees(ctx, ft, tt, o.metadata, load)
	if err != nil {
		return err
	}
	d.From, d.To = from.ID.String(), to.ID.String()
	if o.json {
		return json.NewEncoder(o.stdout).Encode(d)
	}
	printDiff(o.stdout, d, from.ID.Str(), to.ID.Str())
	return nil
}

// printDiff prints one line per entry, in name order, then a summary.
func printDiff(w io.Writer, d *snapshot.DiffResult, from, to string) {
	type line struct{ name, text string }
	var lines []line
	show := func(name, typ, target string) string {
		switch typ {
		case snapshot.TypeDir:
			return name + "/"
		case snapshot.TypeSymlink:
			return name + " -> " + target
		case snapshot.TypeHardlink:
			return name + " => " + target
		}
		return name
	}
	size := func(typ string, n int64) string {
		if typ != "file" {
			return ""
		}
		return "  " + bytesStr(n)
	}
	for _, f := range d.Added {
		lines = append(lines, line{f.Name, "+ " + show(f.Name, f.Type, f.Target) + size(f.Type, f.Bytes)})
	}
	for _, f := range d.Removed {
		lines = append(lines, line{f.Name, "- " + show(f.Name, f.Type, f.Target) + size(f.Type, f.Bytes)})
	}
	for _, c := range d.Changed {
		mark, detail := "M", ""
		if c.MetadataOnly() {
			mark = "U"
		}
		if slices.Contains(c.What, "content") {
			detail = fmt.Sprintf("  %s -> %s", bytesStr(c.OldBytes), bytesStr(c.NewBytes))
		}
		if other := slices.DeleteFunc(slices.Clone(c.What), func(s string) bool { return s == "content" }); len(other) > 0 {
			detail += " (" + strings.Join(other, ", ") + ")"
		}
		name := c.Name
		if c.Type == snapshot.TypeDir {
			name += "/"
		}
		lines = append(lines, line{c.Name, mark + " " + name + detail})
	}
	for _, a := range d.Appended {
		lines = append(lines, line{a.Name, fmt.Sprintf("> %s  +%s (%s -> %s)", a.Name, bytesStr(a.Appended), bytesStr(a.OldBytes), bytesStr(a.NewBytes))})
	}
	slices.SortStableFunc(lines, func(a, b line) int { return strings.Compare(a.name, b.name) })
	for _, l := range lines {
		fmt.Fprintln(w, l.text)
	}
	s := d.Summary
	fmt.Fprintf(w, "%s -> %s: %d added (%s), %d removed (%s), %d changed, %d appended (+%s); %s in %d chunks new in %s\n",
		from, to, s.Added, bytesStr(s.AddedBytes), s.Removed, bytesStr(s.RemovedBytes), s.Changed, s.Appended, bytesStr(s.AppendedBytes),
		bytesStr(s.NewBytes), s.NewChunks, to)
}
