package main

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

// cacheNote says what a cache mode meant in this run.
func cacheNote(meta map[string]string, mode string) string {
	switch mode {
	case "cold":
		if meta["evict"] == "drop" {
			return "cold: the page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`) before every command"
		}
		stayed := ""
		if f := meta["evict_resident_files"]; f != "" {
			stayed = ": " + f
		}
		return fmt.Sprintf("cold: before every command the page cache of the work directory (data, repositories, tool caches) and of the tools' binaries emptied with bench/evict (sync, then `posix_fadvise(DONTNEED)`; at most %s MiB stayed resident, by cachestat%s)",
			mib(atoi(meta["evict_resident_max"])), stayed)
	case "warm":
		return "warm: sync, then the command's inputs (data, repository, tool cache) read once right before it"
	}
	return mode
}

func atoi(s string) int64 { v, _ := strconv.ParseInt(s, 10, 64); return v }

// wallCell is the median wall time and, with several runs, their range.
func wallCell(r *Result) string {
	m := r.Median
	if len(r.Runs) < 2 {
		return fmt.Sprintf("%.2f", m.WallS)
	}
	lo, hi := r.Runs[0].WallS, r.Runs[0].WallS
	for _, x := range r.Runs {
		lo, hi = min(lo, x.WallS), max(hi, x.WallS)
	}
	return fmt.Sprintf("%.2f (%.2f-%.2f)", m.WallS, lo, hi)
}

func writeMarkdown(w io.Writer, meta map[string]string, rs []*Result, ratios []Ratio, lim limits, prof, dsos []ProfileLine) {
	b := func(k string) int64 { return atoi(meta[k]) }
	modes := cacheModes(rs)
	fmt.Fprintf(w, "# snap vs restic, borg, ldb backup and tar+zstd: shape %s, %s (%s)\n\n", meta["shape"], meta["size_label"], meta["date"])
	fmt.Fprintf(w, "- Machine: %s cores, %s, %s RAM, disk %s, Linux %s\n", meta["nproc"], meta["cpu"], meta["memory"], meta["disk"], meta["kernel"])
	key := meta["snap_key"]
	if key == "" {
		key = "password" // reports from before SNAP_KEY
	}
	fmt.Fprintf(w, "- Versions: snap %s (%s, key: %s), restic %s, borg %s (encryption %s), RocksDB %s, ldb %s (`--num_threads %s`), %s\n",
		meta["snap"], meta["go"], key, firstWord(strings.TrimPrefix(meta["restic"], "restic ")), strings.TrimPrefix(meta["borg"], "borg "),
		meta["borg_encryption"], meta["rocksdb"], meta["ldb"], meta["threads"], firstClause(meta["zstd"]))
	fmt.Fprintf(w, "- Command: `%s`; median of %s runs, tools interleaved in rotating order\n", meta["command"], meta["runs"])
	for _, m := range modes {
		fmt.Fprintf(w, "- Cache %s\n", cacheNote(meta, m))
	}
	fmt.Fprintf(w, "- Load: before `%s`; after `%s`\n", strings.TrimSpace(meta["load_before"]), strings.TrimSpace(meta["load_after"]))
	fmt.Fprintf(w, "- Data: %s. %s files (%s SSTs), %s MiB, live WAL %s MiB. Incremental: %s%% new data: %s MiB in total, %s MiB in new or grown files\n",
		meta["shape_desc"], meta["data_files"], meta["data_ssts"], mib(b("data_bytes_1")), mib(b("wal_bytes_1")), meta["increment_pct"], mib(b("data_bytes_2")), mib(b("new_bytes")))
	if meta["data_bytes_3"] != "" {
		fmt.Fprintf(w, "- After a full compaction (step 3c): %s files, %s MiB, %s MiB in new or grown files\n", meta["data_files_3"], mib(b("data_bytes_3")), mib(b("new_bytes_3")))
	}
	if meta["snap_incremental_bytes_read"] != "" {
		fmt.Fprintf(w, "- snap's incremental backup read %s MiB (its --json `bytes_read`)", mib(b("snap_incremental_bytes_read")))
		if meta["snap_compaction_bytes_read"] != "" {
			fmt.Fprintf(w, "; after the compaction, %s MiB", mib(b("snap_compaction_bytes_read")))
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "## Results\n\nMedians over the runs (with more than one run, the range in brackets). MB/s is the snapshot's size (the whole data set) over the wall time, also for the incremental backup. CPU is user+sys; CPU %% above 100 means more than one core. Repository sizes are after the step (%s cache; the other mode's repository holds the same). `ldb` and `tar+zstd` (`tar -cf - . | zstd -1 -T0`) neither compress-and-encrypt nor dedup the way the others do: ldb is a checksummed copy, tar | zstd one compressed stream, written anew each time.\n\n", modes[0])
	head := "| step | tool |"
	sep := "|---|---|"
	for _, m := range modes {
		head += fmt.Sprintf(" %s wall s | %s CPU s | %s CPU %% | %s RSS MiB | %s MB/s |", m, m, m, m, m)
		sep += "--:|--:|--:|--:|--:|"
	}
	fmt.Fprintf(w, "%s repo MiB | repo/data |\n%s--:|--:|\n", head, sep)
	for _, st := range steps {
		for _, tool := range toolOrder {
			var cells []string
			var repo string
			var ratio string
			any := false
			for i, m := range modes {
				r := find(rs, st.key, tool, m)
				switch {
				case r == nil:
					cells = append(cells, "", "", "", "", "")
				case r.Median == nil:
					any = true
					na := "n/a"
					if i == 0 || find(rs, st.key, tool, modes[0]) == nil || find(rs, st.key, tool, modes[0]).NA != r.NA {
						na += ": " + r.NA // said once per row
					}
					cells = append(cells, na, "", "", "", "")
				default:
					any = true
					x := r.Median
					cells = append(cells, wallCell(r), fmt.Sprintf("%.2f", x.CPUS), fmt.Sprintf("%.0f", x.CPUPct),
						fmt.Sprintf("%.0f", float64(x.MaxRSSKiB)/1024), fmt.Sprintf("%.0f", x.MBps))
					if (i == 0 || repo == "") && x.RepoBytes > 0 {
						repo = mib(x.RepoBytes)
						ratio = fmt.Sprintf("%.3f", float64(x.RepoBytes)/float64(r.DataBytes))
					}
				}
			}
			if any {
				fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", st.title, toolName(tool), strings.Join(cells, " | "), repo, ratio)
			}
		}
	}

	if len(ratios) > 0 {
		fmt.Fprintf(w, "\n## snap against each peer\n\nEach ratio is snap's over the peer's: time (below 1: snap is faster; in brackets how many times faster), CPU, peak RSS, repository (below 1: snap uses less).\n\n")
		head, sep := "| step | peer |", "|---|---|"
		for _, m := range modes {
			head += fmt.Sprintf(" %s time | %s CPU | %s RSS |", m, m, m)
			sep += "--:|--:|--:|"
		}
		fmt.Fprintf(w, "%s repo |\n%s--:|\n", head, sep)
		for _, st := range steps {
			for _, peer := range toolOrder[1:] {
				var cells []string
				repo, any := "", false
				for _, m := range modes {
					r := ratioFor(ratios, st.key, peer, m)
					if r == nil {
						cells = append(cells, "", "", "")
						continue
					}
					any = true
					cells = append(cells, fmt.Sprintf("%.2f (%.2fx)", r.Time, r.Throughput), fmt.Sprintf("%.2f", r.CPU), fmt.Sprintf("%.2f", r.RSS))
					// After the first backup tar+zstd holds one stream of the
					// current data, the others every snapshot: no ratio then.
					if repo == "" && r.Repo > 0 && (peer != "tar-zstd" || st.key == "backup-1") {
						repo = fmt.Sprintf("%.3f", r.Repo)
					}
				}
				if any {
					fmt.Fprintf(w, "| %s | %s | %s | %s |\n", st.title, toolName(peer), strings.Join(cells, " | "), repo)
				}
			}
		}
		writeTargets(w, modes, rs, ratios, lim)
	}

	if len(lim.Results) > 0 {
		fmt.Fprintf(w, "\n## Physical limits on this machine and data\n\n%d goroutines, 1 MiB blocks of the data set's SSTs, the Go libraries snap uses (bench/limits). Ratio is output/input for zstd.\n\n", lim.Threads)
		fmt.Fprintf(w, "| limit | MB/s | MB/s per core | MB per CPU-s | ratio |\n|---|--:|--:|--:|--:|\n")
		for _, l := range lim.Results {
			if l.Skipped {
				fmt.Fprintf(w, "| %s | n/a: %s | | | |\n", l.Name, l.Note)
				continue
			}
			ratio := ""
			if l.Ratio > 0 {
				ratio = fmt.Sprintf("%.3f", l.Ratio)
			}
			fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %s |\n", l.Name, l.MBps, l.PerCore, l.MBperCPUs, ratio)
		}
		for _, m := range modes {
			writeDistance(w, m, rs, lim)
		}
	}

	writeSweep(w, rs)
	writeProfile(w, prof, dsos)
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return s
}

// firstClause shortens zstd's banner to its name and version.
func firstClause(s string) string {
	s = strings.TrimPrefix(strings.TrimSpace(s), "*** ")
	if i := strings.Index(s, ", by"); i > 0 {
		s = s[:i]
	}
	return strings.TrimSpace(s)
}

func stepTitle(key string) string {
	for _, s := range steps {
		if s.key == key {
			return s.title
		}
	}
	return key
}

func ratioFor(ratios []Ratio, step, peer, cache string) *Ratio {
	for i := range ratios {
		if ratios[i].Step == step && ratios[i].Peer == peer && ratios[i].Cache == cache {
			return &ratios[i]
		}
	}
	return nil
}

// A target is one of issue 19's goals and what this run measured for it.
type target struct {
	Name  string  `json:"name"`
	Goal  string  `json:"goal"`
	Cache string  `json:"cache"`
	Got   float64 `json:"measured"`
	Met   bool    `json:"met"`
}

// targets evaluates issue 19's goals for one cache mode, for information.
func targets(mode string, rs []*Result, ratios []Ratio, lim limits) []target {
	var ts []target
	add := func(name, goal string, got float64, ok bool) {
		ts = append(ts, target{Name: name, Goal: goal, Cache: mode, Got: got, Met: ok})
	}
	if r := ratioFor(ratios, "backup-1", "restic", mode); r != nil {
		add("first backup, speed vs restic", "≥ 2.5x", r.Throughput, r.Throughput >= 2.5)
		if r.Repo > 0 {
			add("first backup, repository vs restic", "≤ 1.06", r.Repo, r.Repo <= 1.06)
		}
	}
	if r := ratioFor(ratios, "backup-1", "tar-zstd", mode); r != nil {
		add("first backup, speed vs tar+zstd -1 -T0", "≥ 1x", r.Throughput, r.Throughput >= 1)
		if r.Repo > 0 {
			add("first backup, repository vs tar+zstd output", "≤ 1", r.Repo, r.Repo <= 1)
		}
	}
	if r := ratioFor(ratios, "backup-2", "ldb", mode); r != nil {
		add("incremental, speed vs ldb backup", "> 1x", r.Throughput, r.Throughput > 1)
	}
	if r := ratioFor(ratios, "backup-3", "ldb", mode); r != nil {
		add("backup after a compaction, speed vs ldb backup", "> 1x", r.Throughput, r.Throughput > 1)
	}
	if r := ratioFor(ratios, "restore", "restic", mode); r != nil {
		add("restore, speed vs restic (restic unsynced)", "≥ 2x", r.Throughput, r.Throughput >= 2)
	}
	if r := ratioFor(ratios, "restore", "ldb", mode); r != nil {
		add("restore, speed vs ldb restore", "> 1x", r.Throughput, r.Throughput > 1)
	}
	if r := find(rs, "restore-sync", "snap", mode); r != nil && r.Median != nil {
		if v := limitMBps(lim, "disk write, direct + fsync"); v > 0 {
			x := r.Median.MBps / v
			add("restore+sync rate / direct write rate", "≥ 0.8 (incompressible)", x, x >= 0.8)
		}
	}
	for _, st := range steps {
		if r := ratioFor(ratios, st.key, "restic", mode); r != nil {
			add("peak RSS vs restic, "+st.title, "≤ 1", r.RSS, r.RSS <= 1)
		}
	}
	if r := find(rs, "backup-1", "snap", mode); r != nil && r.Median != nil && lim.Threads > 0 {
		// Every core busy: at least 90% of each.
		add(fmt.Sprintf("first backup, CPU %% (every core busy: %d on %d)", 100*lim.Threads, lim.Threads), "≥ 90 × cores",
			r.Median.CPUPct, r.Median.CPUPct >= float64(90*lim.Threads))
		if pct, ok := givenCPUPct(r, lim.Threads); ok {
			add("first backup, CPU % of the CPU time the host gave (steal excluded)", "≥ 90 × cores",
				pct, pct >= float64(90*lim.Threads))
		}
	}
	return ts
}

// givenCPUPct is the median over r's runs of its CPU time against the CPU
// time the machine got while it ran: threads cores for the wall time,
// less what the hypervisor stole (Run.StealS), scaled so that every core
// busy is 100 × threads. A program that keeps every core it is given busy
// reaches that however much a shared host takes. ok is false when no run
// recorded steal (measured before it was, or on a host that never steals).
func givenCPUPct(r *Result, threads int) (pct float64, ok bool) {
	var v []float64
	for _, x := range r.Runs {
		ok = ok || x.StealS > 0
		given := x.WallS*float64(threads) - x.StealS
		v = append(v, 100*float64(threads)*(x.UserS+x.SysS)/math.Max(given, 1e-3))
	}
	if !ok {
		return 0, false
	}
	return median(v), true
}

func writeTargets(w io.Writer, modes []string, rs []*Result, ratios []Ratio, lim limits) {
	byName := map[string]map[string]target{}
	var names []string
	goals := map[string]string{}
	for _, m := range modes {
		for _, t := range targets(m, rs, ratios, lim) {
			if byName[t.Name] == nil {
				byName[t.Name] = map[string]target{}
				names = append(names, t.Name)
				goals[t.Name] = t.Goal
			}
			byName[t.Name][m] = t
		}
	}
	if len(names) == 0 {
		return
	}
	head, sep := "| target | goal |", "|---|---|"
	for _, m := range modes {
		head += " " + m + " |"
		sep += "--:|"
	}
	fmt.Fprintf(w, "\n### Issue 19 targets (information, not a test)\n\n%s\n%s\n", head, sep)
	for _, n := range names {
		row := fmt.Sprintf("| %s | %s |", n, goals[n])
		for _, m := range modes {
			if t, ok := byName[n][m]; ok {
				row += " " + targetCell(t) + " |"
			} else {
				row += " |"
			}
		}
		fmt.Fprintln(w, row)
	}
}

func targetCell(t target) string {
	mark := "no"
	if t.Met {
		mark = "yes"
	}
	return fmt.Sprintf("%.3g %s", t.Got, mark)
}

func limitMBps(lim limits, name string) float64 {
	for _, l := range lim.Results {
		if l.Name == name && !l.Skipped {
			return l.MBps
		}
	}
	return 0
}

// writeDistance says how close snap's first backup and restore came to the
// machine, with one cache mode.
func writeDistance(w io.Writer, mode string, rs []*Result, lim limits) {
	s := find(rs, "backup-1", "snap", mode)
	if s == nil || s.Median == nil {
		return
	}
	fmt.Fprintf(w, "\nDistance, %s cache: snap's first backup ran at %.0f MB/s", mode, s.Median.MBps)
	for _, n := range []string{"zstd encode fastest", "disk read (cold cache)", "page-cache read", "BLAKE3 keyed", "XChaCha20-Poly1305 seal"} {
		if v := limitMBps(lim, n); v > 0 {
			fmt.Fprintf(w, "; %.0f%% of %s", 100*s.Median.MBps/v, n)
		}
	}
	fmt.Fprintf(w, ". Its CPU use was %.0f%% (of %d%% for all cores).", s.Median.CPUPct, 100*lim.Threads)
	// CPU-time view, which load from other processes does not distort: how
	// many CPU seconds each stage alone would need for this data set.
	data := float64(s.DataBytes) / 1e6
	var parts []string
	for _, n := range []string{"zstd encode fastest", "BLAKE3 keyed", "XChaCha20-Poly1305 seal", "page-cache read"} {
		for _, l := range lim.Results {
			if l.Name == n && !l.Skipped && l.MBperCPUs > 0 {
				parts = append(parts, fmt.Sprintf("%s %.1f", n, data/l.MBperCPUs))
			}
		}
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, " In CPU time it used %.1f s (%.0f MB per CPU-s); alone, the stages would take (CPU-s): %s.", s.Median.CPUS, s.Median.MBperCPUs, strings.Join(parts, ", "))
	}
	if r := find(rs, "restore", "snap", mode); r != nil && r.Median != nil {
		fmt.Fprintf(w, " Restore ran at %.0f MB/s", r.Median.MBps)
		if v := limitMBps(lim, "zstd decode (fastest frames)"); v > 0 {
			fmt.Fprintf(w, ", %.0f%% of zstd decode", 100*r.Median.MBps/v)
		}
		fmt.Fprintf(w, ", CPU %.0f%%.", r.Median.CPUPct)
		writeRestoreDisk(w, mode, rs, lim, r)
	}
	fmt.Fprintln(w)
}

// writeRestoreDisk says how long the disk alone needs for a durable
// restore: reading the repository and writing the data, around the page
// cache.
func writeRestoreDisk(w io.Writer, mode string, rs []*Result, lim limits, r *Result) {
	b := find(rs, "backup-2", "snap", mode)
	rd, wr := limitMBps(lim, "disk read, direct"), limitMBps(lim, "disk write, direct + fsync")
	both := limitMBps(lim, "disk read + write at once, direct")
	if b == nil || b.Median == nil || b.Median.RepoBytes == 0 || rd == 0 || wr == 0 {
		return
	}
	in, out := float64(b.Median.RepoBytes)/1e6, float64(r.DataBytes)/1e6
	fmt.Fprintf(w, " Its disk work, reading the repository (%.0f MB) and writing the data (%.0f MB) to stay, takes this disk %.2f s one after the other", in, out, in/rd+out/wr)
	if both > 0 {
		fmt.Fprintf(w, " and %.2f s at once", (in+out)/both)
	}
	fmt.Fprintf(w, "; the restore took %.2f s.", r.Median.WallS)
}

// sweepLevels are the settings the sweep measures, with how the report
// names them.
var sweepLevels = []struct{ key, name string }{
	{"off", "off"},
	{"fastest", "fastest (the default)"},
	{"default", "default"},
	{"default-2m", "default, 2 MiB chunks (higher ratio)"},
	{"better", "better"},
}

func writeSweep(w io.Writer, rs []*Result) {
	var any bool
	for _, l := range sweepLevels {
		if r := find(rs, "level-"+l.key, "snap", ""); r != nil && r.Median != nil {
			any = true
		}
	}
	if !any {
		return
	}
	rr := find(rs, "level-restic", "restic", "")
	if rr != nil && rr.Median == nil {
		rr = nil
	}
	fmt.Fprintf(w, "\n## snap's compression levels\n\nFirst backup of the incremental step's data into a fresh repository, `snap init --compression LEVEL` (`default, 2 MiB chunks`: `--compression default --chunk-avg 2048`), one run each.")
	if rr != nil {
		fmt.Fprint(w, " restic (`--compression auto`) backed up the very same files, named one by one from snap's listing, into a fresh repository in the same run.")
	}
	fmt.Fprintf(w, "\n\n| setting | cache | wall s | CPU s | CPU %% | peak RSS MiB | MB/s | repo bytes | repo/data | vs restic: repo | vs restic: throughput |\n|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	row := func(name string, r *Result) {
		m := r.Median
		vsRepo, vsSpeed := "", ""
		if rr != nil && rr.Median.RepoBytes > 0 && m.WallS > 0 {
			vsRepo = fmt.Sprintf("%.4f", float64(m.RepoBytes)/float64(rr.Median.RepoBytes))
			vsSpeed = fmt.Sprintf("%.2fx", rr.Median.WallS/m.WallS)
		}
		fmt.Fprintf(w, "| %s | %s | %.2f | %.2f | %.0f | %.0f | %.0f | %d | %.4f | %s | %s |\n", name, r.Cache, m.WallS, m.CPUS, m.CPUPct,
			float64(m.MaxRSSKiB)/1024, m.MBps, m.RepoBytes, float64(m.RepoBytes)/float64(r.DataBytes), vsRepo, vsSpeed)
	}
	for _, l := range sweepLevels {
		if r := find(rs, "level-"+l.key, "snap", ""); r != nil && r.Median != nil {
			row(l.name, r)
		}
	}
	if rr != nil {
		row("restic auto", rr)
	}
}

func writeProfile(w io.Writer, prof, dsos []ProfileLine) {
	fmt.Fprintf(w, "\n## Profile of snap's first backup\n\n")
	if len(prof) == 0 {
		fmt.Fprintf(w, "No profile (PROFILE=0, or perf is missing or not permitted).\n")
		return
	}
	cats := categories(prof)
	type kv struct {
		k string
		v float64
	}
	var list []kv
	var total float64
	for k, v := range cats {
		list = append(list, kv{k, v})
		total += v
	}
	sort.Slice(list, func(i, j int) bool { return list[i].v > list[j].v })
	fmt.Fprintf(w, "`perf record -F 999 -g` of one cold-cache first backup; share of all CPU samples (symbols above 0.5%%, %.0f%% of the samples).\n\n| where | %% of CPU |\n|---|--:|\n", total)
	for _, e := range list {
		fmt.Fprintf(w, "| %s | %.1f |\n", e.k, e.v)
	}
	if len(dsos) > 0 {
		var parts []string
		for _, d := range dsos {
			parts = append(parts, fmt.Sprintf("%s %.1f%%", d.DSO, d.Percent))
		}
		fmt.Fprintf(w, "\nBy binary (all symbols, also those under 0.5%%): %s.\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "\nTop symbols:\n\n| %% | symbol |\n|--:|---|\n")
	for i, p := range prof {
		if i == 15 {
			break
		}
		fmt.Fprintf(w, "| %.1f | `%s` |\n", p.Percent, p.Symbol)
	}
}
