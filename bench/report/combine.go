package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// shapeReport is one shape's JSON report, as run writes it.
type shapeReport struct {
	Meta    map[string]string `json:"meta"`
	Results []*Result         `json:"results"`
	Ratios  []Ratio           `json:"ratios"`
	Limits  limits            `json:"limits"`
}

// runCombine writes one summary of several shapes' JSON reports: per
// shape, step and cache mode snap's time and each peer's, issue 19's
// targets side by side, and each shape's limits.
func runCombine(paths []string, mdPath string) error {
	if len(paths) == 0 {
		return errors.New("-combine: name the JSON reports to combine")
	}
	var reps []shapeReport
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var r shapeReport
		if err := json.Unmarshal(data, &r); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if r.Meta["shape"] == "" {
			return fmt.Errorf("%s: no shape in its meta: not a report of bench/run.sh with shapes", p)
		}
		reps = append(reps, r)
	}
	var md strings.Builder
	writeCombined(&md, reps)
	fmt.Print(md.String())
	if mdPath != "" {
		return os.WriteFile(mdPath, []byte(md.String()), 0o644)
	}
	return nil
}

var mainSteps = []string{"backup-1", "backup-2", "restore", "restore-sync", "backup-3"}

func writeCombined(w io.Writer, reps []shapeReport) {
	m0 := reps[0].Meta
	fmt.Fprintf(w, "# snap on every shape: %s, %s\n\n", m0["size_label"], m0["date"])
	fmt.Fprintf(w, "- Machine: %s cores, %s, %s RAM, disk %s, Linux %s\n", m0["nproc"], m0["cpu"], m0["memory"], m0["disk"], m0["kernel"])
	fmt.Fprintf(w, "- Versions: snap %s (%s), restic %s, borg %s, RocksDB %s, ldb %s (`--num_threads %s`), %s\n",
		m0["snap"], m0["go"], firstWord(strings.TrimPrefix(m0["restic"], "restic ")), strings.TrimPrefix(m0["borg"], "borg "),
		m0["rocksdb"], m0["ldb"], m0["threads"], firstClause(m0["zstd"]))
	fmt.Fprintf(w, "- Median of %s runs per step, tool and cache mode; every shape's own report has every figure\n", m0["runs"])
	for _, m := range cacheModes(reps[0].Results) {
		fmt.Fprintf(w, "- Cache %s\n", cacheNote(m0, m))
	}
	fmt.Fprintf(w, "\n| shape | data | files | SSTs | MiB | load before → after |\n|---|---|--:|--:|--:|---|\n")
	for _, r := range reps {
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s → %s |\n", r.Meta["shape"], r.Meta["shape_desc"], r.Meta["data_files"], r.Meta["data_ssts"],
			mib(atoi(r.Meta["data_bytes_1"])), loadAvg(r.Meta["load_before"]), loadAvg(r.Meta["load_after"]))
	}

	fmt.Fprintf(w, "\n## Time per step\n\nWall seconds (medians); each peer's cell also has snap's time over the peer's (below 1: snap is faster). Repo and RSS columns: snap's over restic's.\n\n")
	fmt.Fprintf(w, "| shape | step | cache | snap s |")
	for _, t := range toolOrder[1:] {
		fmt.Fprintf(w, " %s |", toolName(t))
	}
	fmt.Fprintf(w, " repo snap/restic | RSS snap/restic |\n|---|---|---|--:|")
	for range toolOrder[1:] {
		fmt.Fprintf(w, "--:|")
	}
	fmt.Fprintf(w, "--:|--:|\n")
	for _, r := range reps {
		for _, st := range mainSteps {
			for _, c := range cacheModes(r.Results) {
				s := find(r.Results, st, "snap", c)
				if s == nil || s.Median == nil {
					continue
				}
				fmt.Fprintf(w, "| %s | %s | %s | %.2f |", r.Meta["shape"], stepTitle(st), c, s.Median.WallS)
				for _, t := range toolOrder[1:] {
					p := find(r.Results, st, t, c)
					switch {
					case p == nil:
						fmt.Fprintf(w, " |")
					case p.Median == nil:
						fmt.Fprintf(w, " n/a |")
					default:
						fmt.Fprintf(w, " %.2f (%.2f) |", p.Median.WallS, s.Median.WallS/max(p.Median.WallS, 1e-3))
					}
				}
				repo, rss := "", ""
				if x := ratioFor(r.Ratios, st, "restic", c); x != nil {
					if x.Repo > 0 {
						repo = fmt.Sprintf("%.3f", x.Repo)
					}
					rss = fmt.Sprintf("%.2f", x.RSS)
				}
				fmt.Fprintf(w, " %s | %s |\n", repo, rss)
			}
		}
	}

	// Issue 19's targets: one column per shape and cache mode.
	type col struct {
		shape, cache string
		ts           map[string]target
	}
	var cols []col
	var names []string
	goals := map[string]string{}
	for _, r := range reps {
		for _, c := range cacheModes(r.Results) {
			k := col{r.Meta["shape"], c, map[string]target{}}
			for _, t := range targets(c, r.Results, r.Ratios, r.Limits) {
				if _, ok := goals[t.Name]; !ok {
					names = append(names, t.Name)
					goals[t.Name] = t.Goal
				}
				k.ts[t.Name] = t
			}
			cols = append(cols, k)
		}
	}
	if len(names) > 0 {
		fmt.Fprintf(w, "\n## Issue 19 targets (information, not a test)\n\n| target | goal |")
		for _, c := range cols {
			fmt.Fprintf(w, " %s %s |", c.shape, c.cache)
		}
		fmt.Fprintf(w, "\n|---|---|%s\n", strings.Repeat("--:|", len(cols)))
		for _, n := range names {
			fmt.Fprintf(w, "| %s | %s |", n, goals[n])
			for _, c := range cols {
				if t, ok := c.ts[n]; ok {
					fmt.Fprintf(w, " %s |", targetCell(t))
				} else {
					fmt.Fprintf(w, " |")
				}
			}
			fmt.Fprintln(w)
		}
	}

	lims := []string{"disk read (cold cache)", "disk read, direct", "page-cache read", "BLAKE3 keyed", "zstd encode fastest",
		"zstd decode (fastest frames)", "XChaCha20-Poly1305 seal", "disk write, direct + fsync"}
	fmt.Fprintf(w, "\n## Limits per shape (MB/s, bench/limits; zstd with its output/input ratio)\n\n| shape |")
	for _, l := range lims {
		fmt.Fprintf(w, " %s |", l)
	}
	fmt.Fprintf(w, "\n|---|%s\n", strings.Repeat("--:|", len(lims)))
	for _, r := range reps {
		fmt.Fprintf(w, "| %s |", r.Meta["shape"])
		for _, name := range lims {
			cell := ""
			for _, l := range r.Limits.Results {
				if l.Name != name {
					continue
				}
				if l.Skipped {
					cell = "n/a"
				} else if l.Ratio > 0 {
					cell = fmt.Sprintf("%.0f (%.3f)", l.MBps, l.Ratio)
				} else {
					cell = fmt.Sprintf("%.0f", l.MBps)
				}
			}
			fmt.Fprintf(w, " %s |", cell)
		}
		fmt.Fprintln(w)
	}
}

// loadAvg takes the 1-minute load average out of uptime's line.
func loadAvg(uptime string) string {
	_, after, ok := strings.Cut(uptime, "load average: ")
	if !ok {
		return "?"
	}
	first, _, _ := strings.Cut(after, ",")
	return first
}
