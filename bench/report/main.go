// Command report turns the measurements of bench/run.sh into the benchmark
// report: a Markdown table (stdout and -md) and JSON (-json) for one shape;
// with -combine, one summary across the JSON reports of several shapes. It
// only reports; it judges nothing and never fails on a number.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
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
	// StealS is the CPU time the hypervisor took from the machine while
	// the command ran, summed over its CPUs (/proc/stat); zero in
	// measurements made before it was recorded.
	StealS float64 `json:"steal_s,omitempty"`
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
	StealS    float64 `json:"steal_s"`      // median CPU time taken by the hypervisor
}

// Result is one step of one tool with one cache mode (cold or warm).
type Result struct {
	Step      string  `json:"step"`
	Tool      string  `json:"tool"`
	Cache     string  `json:"cache"`
	DataBytes int64   `json:"data_bytes"`
	Runs      []Run   `json:"runs,omitempty"`
	Median    *Median `json:"median,omitempty"`
	NA        string  `json:"not_available,omitempty"`
}

// Ratio compares snap with one peer in one step and cache mode.
type Ratio struct {
	Step       string  `json:"step"`
	Peer       string  `json:"peer"`
	Cache      string  `json:"cache"`
	Time       float64 `json:"time_snap_over_peer"`       // snap wall / peer wall
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

// The tools in the order the report shows them; snap is compared with
// each of the others.
var toolOrder = []string{"snap", "restic", "borg", "ldb", "tar-zstd"}

// toolNames are how the report names the tools.
var toolNames = map[string]string{"ldb": "ldb backup/restore", "tar-zstd": "tar+zstd -1 -T0"}

func toolName(t string) string {
	if n, ok := toolNames[t]; ok {
		return n
	}
	return t
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
	{"backup-3", "3c. backup after a full compaction"},
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
	combine := flag.Bool("combine", false, "summarize the JSON reports named as arguments (one per shape) into -md")
	flag.Parse()
	if *combine {
		if err := runCombine(flag.Args(), *mdPath); err != nil {
			fmt.Fprintln(os.Stderr, "report:", err)
			os.Exit(1)
		}
		return
	}
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
			"meta": metaObj, "results": results, "ratios": ratios, "limits": lim, "targets": allTargets(results, ratios, lim),
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

func allTargets(rs []*Result, ratios []Ratio, lim limits) []target {
	var out []target
	for _, m := range cacheModes(rs) {
		out = append(out, targets(m, rs, ratios, lim)...)
	}
	return out
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
		// step tool run cache wall user sys rss repo data load1 [steal] note;
		// measurements before steal_s have 12 columns.
		c := strings.Split(sc.Text(), "\t")
		if len(c) != 12 && len(c) != 13 {
			return nil, fmt.Errorf("%s:%d: %d columns, want 13 (or 12 without steal_s)", path, line, len(c))
		}
		note := c[len(c)-1]
		key := c[0] + "\x00" + c[1] + "\x00" + c[3]
		r := byKey[key]
		if r == nil {
			r = &Result{Step: c[0], Tool: c[1], Cache: c[3]}
			byKey[key] = r
			out = append(out, r)
		}
		if c[4] == "n/a" {
			r.NA = note
			continue
		}
		var run Run
		var errs [9]error
		run.Run, errs[0] = strconv.Atoi(c[2])
		run.WallS, errs[1] = strconv.ParseFloat(c[4], 64)
		run.UserS, errs[2] = strconv.ParseFloat(c[5], 64)
		run.SysS, errs[3] = strconv.ParseFloat(c[6], 64)
		run.MaxRSSKiB, errs[4] = strconv.ParseInt(c[7], 10, 64)
		run.RepoBytes, errs[5] = strconv.ParseInt(c[8], 10, 64)
		r.DataBytes, errs[6] = strconv.ParseInt(c[9], 10, 64)
		run.Load1, errs[7] = strconv.ParseFloat(c[10], 64)
		if len(c) == 13 && c[11] != "" {
			run.StealS, errs[8] = strconv.ParseFloat(c[11], 64)
		}
		if err := errors.Join(errs[:]...); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		r.Runs = append(r.Runs, run)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, r := range out {
		if len(r.Runs) == 0 {
			continue
		}
		var wall, cpu, pct, load, steal []float64
		var rss, repo []int64
		for _, x := range r.Runs {
			wall = append(wall, x.WallS)
			cpu = append(cpu, x.UserS+x.SysS)
			pct = append(pct, 100*(x.UserS+x.SysS)/math.Max(x.WallS, 1e-3))
			load = append(load, x.Load1)
			steal = append(steal, x.StealS)
			rss = append(rss, x.MaxRSSKiB)
			repo = append(repo, x.RepoBytes)
		}
		m := &Median{WallS: median(wall), CPUS: median(cpu), CPUPct: median(pct),
			MaxRSSKiB: medianInt(rss), RepoBytes: medianInt(repo)}
		m.MBps = float64(r.DataBytes) / 1e6 / math.Max(m.WallS, 1e-3)
		m.MBperCPUs = float64(r.DataBytes) / 1e6 / math.Max(m.CPUS, 1e-3)
		m.Load1 = median(load)
		m.StealS = median(steal)
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

// find returns the result of one step, tool and cache mode ("" for any).
func find(rs []*Result, step, tool, cache string) *Result {
	for _, r := range rs {
		if r.Step == step && r.Tool == tool && (cache == "" || r.Cache == cache) {
			return r
		}
	}
	return nil
}

// cacheModes lists the cache modes of the results: cold before warm.
func cacheModes(rs []*Result) []string {
	seen := map[string]bool{}
	for _, r := range rs {
		seen[r.Cache] = true
	}
	var out, rest []string
	for _, c := range []string{"cold", "warm"} {
		if seen[c] {
			out = append(out, c)
			delete(seen, c)
		}
	}
	for c := range seen {
		rest = append(rest, c)
	}
	sort.Strings(rest)
	return append(out, rest...)
}

func computeRatios(rs []*Result) []Ratio {
	var out []Ratio
	for _, c := range cacheModes(rs) {
		for _, st := range steps {
			s := find(rs, st.key, "snap", c)
			if s == nil || s.Median == nil {
				continue
			}
			for _, peer := range toolOrder[1:] {
				p := find(rs, st.key, peer, c)
				if p == nil || p.Median == nil {
					continue
				}
				r := Ratio{Step: st.key, Peer: peer, Cache: c,
					Time:       s.Median.WallS / math.Max(p.Median.WallS, 1e-3),
					Throughput: p.Median.WallS / math.Max(s.Median.WallS, 1e-3),
					CPU:        s.Median.CPUS / math.Max(p.Median.CPUS, 1e-3),
					RSS:        float64(s.Median.MaxRSSKiB) / math.Max(float64(p.Median.MaxRSSKiB), 1),
				}
				if p.Median.RepoBytes > 0 && s.Median.RepoBytes > 0 {
					r.Repo = float64(s.Median.RepoBytes) / float64(p.Median.RepoBytes)
				}
				out = append(out, r)
			}
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
