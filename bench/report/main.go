// Command report turns the measurements of bench/run.sh into the benchmark
// report: a Markdown table (stdout and -md) and JSON (-json). It only
// reports; it judges nothing and never fails on a number.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Run is one timed command.
type Run struct {
	Run       int     `json:"run"`
	WallS     float64 `json:"wall_s"`
	UserS     float64 `json:"user_s"`
	SysS      float64 `json:"sys_s"`
	MaxRSSKiB int64   `json:"max_rss_kib"`
	RepoBytes int64   `json:"repo_bytes,omitempty"`
	Load1     float64 `json:"load1"`
}

// Median summarizes the runs of one step and tool; each field is the median
// of that field over the runs.
type Median struct {
	WallS     float64 `json:"wall_s"`
	CPUS      float64 `json:"cpu_s"`
	CPUPct    float64 `json:"cpu_pct"`
	MaxRSSKiB int64   `json:"max_rss_kib"`
	RepoBytes int64   `json:"repo_bytes,omitempty"`
	MBps      float64 `json:"mb_per_s"`     // data bytes / median wall
	MBperCPUs float64 `json:"mb_per_cpu_s"` // data bytes / median CPU time
	Load1     float64 `json:"load1"`        // median 1-minute load average at the start
}

// Result is one step of one tool.
type Result struct {
	Step      string  `json:"step"`
	Tool      string  `json:"tool"`
	DataBytes int64   `json:"data_bytes"`
	Runs      []Run   `json:"runs,omitempty"`
	Median    *Median `json:"median,omitempty"`
	NA        string  `json:"not_available,omitempty"`
}

// Ratio compares snap with one peer in one step.
type Ratio struct {
	Step       string  `json:"step"`
	Peer       string  `json:"peer"`
	Throughput float64 `json:"throughput_snap_over_peer"` // peer wall / snap wall
	CPU        float64 `json:"cpu_snap_over_peer"`
	RSS        float64 `json:"rss_snap_over_peer"`
	Repo       float64 `json:"repo_snap_over_peer,omitempty"`
}

type limitResult struct {
	Name      string  `json:"name"`
	MBps      float64 `json:"mb_per_s"`
	PerCore   float64 `json:"per_core_mb_per_s"`
	MBperCPUs float64 `json:"mb_per_cpu_s"`
	Ratio     float64 `json:"ratio,omitempty"`
	Bytes     int64   `json:"bytes"`
	Skipped   bool    `json:"skipped,omitempty"`
	Note      string  `json:"note,omitempty"`
}

type limits struct {
	Threads int           `json:"threads"`
	Results []limitResult `json:"results"`
}

// ProfileLine is one symbol of the perf profile.
type ProfileLine struct {
	Percent  float64 `json:"percent"`
	DSO      string  `json:"dso"`
	Symbol   string  `json:"symbol"`
	Category string  `json:"category"`
}

var steps = []struct{ key, title string }{
	{"backup-1", "1. first backup"},
	{"backup-2", "2. incremental backup"},
	{"restore", "3. restore latest"},
	{"restore-sync", "3b. restore, then sync"},
	{"prune", "4. retention + GC"},
}

func main() {
	metaPath := flag.String("meta", "", "key=value file written by run.sh")
	tsvPath := flag.String("measurements", "", "measurements.tsv written by run.sh")
	limitsPath := flag.String("limits", "", "JSON written by bench/limits")
	profilePath := flag.String("profile", "", "perf report lines by symbol (optional)")
	dsoPath := flag.String("profile-dso", "", "perf report lines by binary (optional)")
	mdPath := flag.String("md", "", "write the Markdown report here too")
	jsonPath := flag.String("json", "", "write the JSON report here")
	flag.Parse()
	if err := run(*metaPath, *tsvPath, *limitsPath, *profilePath, *dsoPath, *mdPath, *jsonPath); err != nil {
		fmt.Fprintln(os.Stderr, "report:", err)
		os.Exit(1)
	}
}

func run(metaPath, tsvPath, limitsPath, profilePath, dsoPath, mdPath, jsonPath string) error {
	meta, order, err := readMeta(metaPath)
	if err != nil {
		return err
	}
	results, err := readMeasurements(tsvPath)
	if err != nil {
		return err
	}
	var lim limits
	if limitsPath != "" {
		data, err := os.ReadFile(limitsPath)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(data, &lim); err != nil {
			return fmt.Errorf("%s: %w", limitsPath, err)
		}
	}
	var prof []ProfileLine
	if profilePath != "" {
		if prof, err = readProfile(profilePath); err != nil {
			return err
		}
	}
	var dsos []ProfileLine
	if dsoPath != "" {
		if dsos, err = readDSOs(dsoPath); err != nil {
			return err
		}
	}
	ratios := computeRatios(results)

	var md strings.Builder
	writeMarkdown(&md, meta, results, ratios, lim, prof, dsos)
	fmt.Print(md.String())
	if mdPath != "" {
		if err := os.WriteFile(mdPath, []byte(md.String()), 0o644); err != nil {
			return err
		}
	}
	if jsonPath != "" {
		metaObj := map[string]string{}
		for _, k := range order {
			metaObj[k] = meta[k]
		}
		out := map[string]any{
			"meta": metaObj, "results": results, "ratios": ratios, "limits": lim,
			"profile": map[string]any{"categories": categories(prof), "symbols": prof, "binaries": dsos},
		}
		data, err := json.MarshalIndent(out, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(jsonPath, append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func readMeta(path string) (map[string]string, []string, error) {
	m := map[string]string{}
	var order []string
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if _, dup := m[k]; !dup {
			order = append(order, k)
		}
		m[k] = v
	}
	return m, order, sc.Err()
}

func readMeasurements(path string) ([]*Result, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	byKey := map[string]*Result{}
	var out []*Result
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			continue // header
		}
		c := strings.Split(sc.Text(), "\t")
		if len(c) < 10 {
			return nil, fmt.Errorf("%s:%d: %d columns, want 10", path, line, len(c))
		}
		key := c[0] + "\x00" + c[1]
		r := byKey[key]
		if r == nil {
			r = &Result{Step: c[0], Tool: c[1]}
			byKey[key] = r
			out = append(out, r)
		}
		if c[3] == "n/a" {
			r.NA = c[9]
			continue
		}
		var run Run
		run.Run, _ = strconv.Atoi(c[2])
		run.WallS, _ = strconv.ParseFloat(c[3], 64)
		run.UserS, _ = strconv.ParseFloat(c[4], 64)
		run.SysS, _ = strconv.ParseFloat(c[5], 64)
		run.MaxRSSKiB, _ = strconv.ParseInt(c[6], 10, 64)
		run.RepoBytes, _ = strconv.ParseInt(c[7], 10, 64)
		r.DataBytes, _ = strconv.ParseInt(c[8], 10, 64)
		run.Load1, _ = strconv.ParseFloat(c[9], 64)
		r.Runs = append(r.Runs, run)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, r := range out {
		if len(r.Runs) == 0 {
			continue
		}
		var wall, cpu, pct, load []float64
		var rss, repo []int64
		for _, x := range r.Runs {
			wall = append(wall, x.WallS)
			cpu = append(cpu, x.UserS+x.SysS)
			pct = append(pct, 100*(x.UserS+x.SysS)/math.Max(x.WallS, 1e-3))
			load = append(load, x.Load1)
			rss = append(rss, x.MaxRSSKiB)
			repo = append(repo, x.RepoBytes)
		}
		m := &Median{WallS: median(wall), CPUS: median(cpu), CPUPct: median(pct),
			MaxRSSKiB: medianInt(rss), RepoBytes: medianInt(repo)}
		m.MBps = float64(r.DataBytes) / 1e6 / math.Max(m.WallS, 1e-3)
		m.MBperCPUs = float64(r.DataBytes) / 1e6 / math.Max(m.CPUS, 1e-3)
		m.Load1 = median(load)
		r.Median = m
	}
	return out, nil
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func medianInt(v []int64) int64 {
	f := make([]float64, len(v))
	for i, x := range v {
		f[i] = float64(x)
	}
	return int64(math.Round(median(f)))
}

func find(rs []*Result, step, tool string) *Result {
	for _, r := range rs {
		if r.Step == step && r.Tool == tool {
			return r
		}
	}
	return nil
}

func computeRatios(rs []*Result) []Ratio {
	var out []Ratio
	for _, st := range steps {
		s := find(rs, st.key, "snap")
		if s == nil || s.Median == nil {
			continue
		}
		for _, peer := range []string{"restic", "borg"} {
			p := find(rs, st.key, peer)
			if p == nil || p.Median == nil {
				continue
			}
			r := Ratio{Step: st.key, Peer: peer,
				Throughput: p.Median.WallS / s.Median.WallS,
				CPU:        s.Median.CPUS / math.Max(p.Median.CPUS, 1e-3),
				RSS:        float64(s.Median.MaxRSSKiB) / math.Max(float64(p.Median.MaxRSSKiB), 1),
			}
			if p.Median.RepoBytes > 0 && s.Median.RepoBytes > 0 {
				r.Repo = float64(s.Median.RepoBytes) / float64(p.Median.RepoBytes)
			}
			out = append(out, r)
		}
	}
	return out
}

// A perf report line: "  17.20%  snap  [.] symbol  -  -" (the dashes are
// IPC columns perf adds when it has no hardware counters).
var profileRE = regexp.MustCompile(`^\s*([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*?)(?:\s+-\s+-)?\s*$`)

func readProfile(path string) ([]ProfileLine, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []ProfileLine
	for _, l := range strings.Split(string(data), "\n") {
		m := profileRE.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		pct, _ := strconv.ParseFloat(m[1], 64)
		p := ProfileLine{Percent: pct, DSO: m[2], Symbol: m[4]}
		if m[3] == "k" {
			p.Symbol = "[kernel] " + p.Symbol
		}
		p.Category = category(p)
		out = append(out, p)
	}
	return out, nil
}

var dsoRE = regexp.MustCompile(`^\s*([0-9.]+)%\s+(\S.*?)\s*$`)

// readDSOs reads `perf report --sort dso` lines: the share of each binary.
func readDSOs(path string) ([]ProfileLine, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []ProfileLine
	for _, l := range strings.Split(string(data), "\n") {
		if m := dsoRE.FindStringSubmatch(l); m != nil {
			pct, _ := strconv.ParseFloat(m[1], 64)
			out = append(out, ProfileLine{Percent: pct, DSO: m[2]})
		}
	}
	return out, nil
}

// category sorts a profile symbol into the pipeline stage it belongs to.
func category(p ProfileLine) string {
	s := p.Symbol
	switch {
	case strings.HasPrefix(s, "[kernel]"):
		return "kernel (read, write, fsync, page faults)"
	case strings.Contains(s, "klauspost/compress"):
		return "zstd compression"
	case strings.Contains(s, "zeebo/blake3"):
		return "BLAKE3 hashing"
	case strings.Contains(s, "chacha20") || strings.Contains(s, "poly1305"):
		return "XChaCha20-Poly1305"
	case strings.Contains(s, "snap/chunker"):
		return "chunking"
	case strings.Contains(s, "argon2") || strings.Contains(s, "blake2b"):
		return "key derivation (Argon2id)"
	case strings.Contains(s, "runtime.memmove") || strings.Contains(s, "runtime.memclr"):
		return "memory copies and clears"
	case strings.HasPrefix(s, "runtime.") || strings.HasPrefix(s, "gcWriteBarrier") || strings.HasPrefix(s, "aeshash"):
		return "Go runtime (GC, scheduler, allocation)"
	}
	return "other"
}

func categories(prof []ProfileLine) map[string]float64 {
	m := map[string]float64{}
	for _, p := range prof {
		m[p.Category] += p.Percent
	}
	return m
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }

func writeMarkdown(w io.Writer, meta map[string]string, rs []*Result, ratios []Ratio, lim limits, prof, dsos []ProfileLine) {
	b := func(k string) int64 { v, _ := strconv.ParseInt(meta[k], 10, 64); return v }
	fmt.Fprintf(w, "# snap vs restic vs borg: %s data set (%s)\n\n", meta["size_label"], meta["date"])
	fmt.Fprintf(w, "- Machine: %s cores, %s, %s RAM, disk %s, Linux %s\n", meta["nproc"], meta["cpu"], meta["memory"], meta["disk"], meta["kernel"])
	fmt.Fprintf(w, "- Versions: snap %s (%s), restic %s, borg %s (encryption %s), RocksDB %s\n",
		meta["snap"], meta["go"], firstWord(strings.TrimPrefix(meta["restic"], "restic ")), strings.TrimPrefix(meta["borg"], "borg "), meta["borg_encryption"], meta["rocksdb"])
	fmt.Fprintf(w, "- Command: `%s`; median of %s runs, tools interleaved in rotating order\n", meta["command"], meta["runs"])
	cache := "cold: page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`) before every command"
	if meta["cache"] != "cold" {
		cache = "warm: the data set read once before every command"
	}
	fmt.Fprintf(w, "- Cache: %s\n", cache)
	fmt.Fprintf(w, "- Load: before `%s`; after `%s`\n", strings.TrimSpace(meta["load_before"]), strings.TrimSpace(meta["load_after"]))
	fmt.Fprintf(w, "- Data: %s files (%s SSTs, snappy), %s MiB, live WAL %s MiB. Incremental: %s%% new data written (FLUSH to new SSTs, then a new live WAL): %s MiB in total, %s MiB in new files\n",
		meta["data_files"], meta["data_ssts"], mib(b("data_bytes_1")), mib(b("wal_bytes_1")), meta["increment_pct"], mib(b("data_bytes_2")), mib(b("new_bytes")))
	if meta["snap_incremental_bytes_read"] != "" {
		fmt.Fprintf(w, "- snap's incremental backup read %s MiB (its --json `bytes_read`)\n", mib(b("snap_incremental_bytes_read")))
	}
	fmt.Fprintln(w)

	fmt.Fprintf(w, "## Results\n\nMedians over the runs. MB/s is the snapshot's size (the whole data set) over the wall time, also for the incremental backup; MB/CPU-s the same over the CPU time (user+sys), which other load on the machine does not lower. CPU%% above 100 means more than one core. Repository sizes are after the step. Load is the 1-minute load average when the command started.\n\n")
	fmt.Fprintf(w, "| step | tool | wall s | runs s | CPU s | CPU %% | peak RSS MiB | repo MiB | repo/data | MB/s | MB/CPU-s | load |\n")
	fmt.Fprintf(w, "|---|---|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, st := range steps {
		for _, tool := range []string{"snap", "restic", "borg"} {
			r := find(rs, st.key, tool)
			if r == nil {
				continue
			}
			if r.Median == nil {
				fmt.Fprintf(w, "| %s | %s | n/a (%s) | | | | | | | | | |\n", st.title, tool, r.NA)
				continue
			}
			m := r.Median
			var runs []string
			for _, x := range r.Runs {
				runs = append(runs, fmt.Sprintf("%.2f", x.WallS))
			}
			repo, ratio := "", ""
			if m.RepoBytes > 0 {
				repo = mib(m.RepoBytes)
				ratio = fmt.Sprintf("%.3f", float64(m.RepoBytes)/float64(r.DataBytes))
			}
			fmt.Fprintf(w, "| %s | %s | %.2f | %s | %.2f | %.0f | %.0f | %s | %s | %.0f | %.0f | %.1f |\n",
				st.title, tool, m.WallS, strings.Join(runs, " "), m.CPUS, m.CPUPct, float64(m.MaxRSSKiB)/1024, repo, ratio, m.MBps, m.MBperCPUs, m.Load1)
		}
	}

	if len(ratios) > 0 {
		fmt.Fprintf(w, "\n## snap against each peer\n\nThroughput is the peer's wall time over snap's (above 1: snap is faster). CPU, RSS and repository are snap's over the peer's (below 1: snap uses less).\n\n")
		fmt.Fprintf(w, "| step | peer | throughput | CPU | peak RSS | repo |\n|---|---|--:|--:|--:|--:|\n")
		for _, r := range ratios {
			repo := ""
			if r.Repo > 0 {
				repo = fmt.Sprintf("%.3f", r.Repo)
			}
			fmt.Fprintf(w, "| %s | %s | %.2fx | %.2f | %.2f | %s |\n", stepTitle(r.Step), r.Peer, r.Throughput, r.CPU, r.RSS, repo)
		}
		writeTargets(w, rs, ratios)
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
		writeDistance(w, rs, lim)
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

func stepTitle(key string) string {
	for _, s := range steps {
		if s.key == key {
			return s.title
		}
	}
	return key
}

func ratioFor(ratios []Ratio, step, peer string) *Ratio {
	for i := range ratios {
		if ratios[i].Step == step && ratios[i].Peer == peer {
			return &ratios[i]
		}
	}
	return nil
}

// writeTargets lists issue 6's goals against restic, for information.
func writeTargets(w io.Writer, rs []*Result, ratios []Ratio) {
	type target struct {
		name, want string
		got        float64
		ok         func(float64) bool
	}
	var ts []target
	if r := ratioFor(ratios, "backup-1", "restic"); r != nil {
		ts = append(ts, target{"first backup throughput vs restic", "≥ 2.5x", r.Throughput, func(x float64) bool { return x >= 2.5 }})
		if r.Repo > 0 {
			ts = append(ts, target{"first backup repository vs restic", "≤ 1.06", r.Repo, func(x float64) bool { return x <= 1.06 }})
		}
	}
	if hr, rr := find(rs, "level-default-2m", "snap"), find(rs, "level-restic", "restic"); hr != nil && rr != nil && hr.Median != nil && rr.Median != nil && rr.Median.RepoBytes > 0 {
		ts = append(ts, target{"higher-ratio setting's repository vs restic, same files", "≤ 1", float64(hr.Median.RepoBytes) / float64(rr.Median.RepoBytes), func(x float64) bool { return x <= 1 }})
		ts = append(ts, target{"higher-ratio setting's throughput vs restic, same files", "≥ 1.5x", rr.Median.WallS / hr.Median.WallS, func(x float64) bool { return x >= 1.5 }})
	}
	if r := ratioFor(ratios, "backup-2", "restic"); r != nil {
		ts = append(ts, target{"incremental throughput vs restic", "≥ 1x", r.Throughput, func(x float64) bool { return x >= 1 }})
	}
	if r := ratioFor(ratios, "restore", "restic"); r != nil {
		ts = append(ts, target{"restore throughput vs restic", "≥ 2x", r.Throughput, func(x float64) bool { return x >= 2 }})
	}
	if r := ratioFor(ratios, "restore-sync", "restic"); r != nil {
		ts = append(ts, target{"restore throughput vs restic, both durable (3b)", "≥ 2x", r.Throughput, func(x float64) bool { return x >= 2 }})
	}
	for _, st := range steps {
		if r := ratioFor(ratios, st.key, "restic"); r != nil {
			ts = append(ts, target{"peak RSS vs restic, " + st.title, "≤ 1", r.RSS, func(x float64) bool { return x <= 1 }})
		}
	}
	if len(ts) == 0 {
		return
	}
	fmt.Fprintf(w, "\n### Issue 6 targets (information, not a test)\n\n| target | goal | measured | met |\n|---|---|--:|---|\n")
	for _, t := range ts {
		met := "no"
		if t.ok(t.got) {
			met = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %.4g | %s |\n", t.name, t.want, t.got, met)
	}
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
// machine.
func writeDistance(w io.Writer, rs []*Result, lim limits) {
	s := find(rs, "backup-1", "snap")
	if s == nil || s.Median == nil {
		return
	}
	fmt.Fprintf(w, "\nDistance: snap's first backup ran at %.0f MB/s", s.Median.MBps)
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
	if r := find(rs, "restore", "snap"); r != nil && r.Median != nil {
		fmt.Fprintf(w, " Restore ran at %.0f MB/s", r.Median.MBps)
		if v := limitMBps(lim, "zstd decode (fastest frames)"); v > 0 {
			fmt.Fprintf(w, ", %.0f%% of zstd decode", 100*r.Median.MBps/v)
		}
		fmt.Fprintf(w, ", CPU %.0f%%.", r.Median.CPUPct)
		writeRestoreDisk(w, rs, lim, r)
	}
	fmt.Fprintln(w)
}

// writeRestoreDisk says how long the disk alone needs for a durable
// restore: reading the repository and writing the data, around the page
// cache.
func writeRestoreDisk(w io.Writer, rs []*Result, lim limits, r *Result) {
	b := find(rs, "backup-2", "snap")
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
		if r := find(rs, "level-"+l.key, "snap"); r != nil && r.Median != nil {
			any = true
		}
	}
	if !any {
		return
	}
	rr := find(rs, "level-restic", "restic")
	if rr != nil && rr.Median == nil {
		rr = nil
	}
	fmt.Fprintf(w, "\n## snap's compression levels\n\nFirst backup of the incremental step's data into a fresh repository, `snap init --compression LEVEL` (`default, 2 MiB chunks`: `--compression default --chunk-avg 2048`), one run each.")
	if rr != nil {
		fmt.Fprint(w, " restic (`--compression auto`) backed up the very same files, named one by one from snap's FREEZE listing, into a fresh repository in the same run.")
	}
	fmt.Fprintf(w, "\n\n| setting | wall s | CPU s | CPU %% | peak RSS MiB | MB/s | repo bytes | repo/data | vs restic: repo | vs restic: throughput |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	row := func(name string, r *Result) {
		m := r.Median
		vsRepo, vsSpeed := "", ""
		if rr != nil && rr.Median.RepoBytes > 0 && m.WallS > 0 {
			vsRepo = fmt.Sprintf("%.4f", float64(m.RepoBytes)/float64(rr.Median.RepoBytes))
			vsSpeed = fmt.Sprintf("%.2fx", rr.Median.WallS/m.WallS)
		}
		fmt.Fprintf(w, "| %s | %.2f | %.2f | %.0f | %.0f | %.0f | %d | %.4f | %s | %s |\n", name, m.WallS, m.CPUS, m.CPUPct,
			float64(m.MaxRSSKiB)/1024, m.MBps, m.RepoBytes, float64(m.RepoBytes)/float64(r.DataBytes), vsRepo, vsSpeed)
	}
	for _, l := range sweepLevels {
		if r := find(rs, "level-"+l.key, "snap"); r != nil && r.Median != nil {
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
