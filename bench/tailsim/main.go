// Command tailsim writes what -hours of snap follow at --interval 1s would
// leave in a repository, on a simulated clock: one tail object per second
// of -rate bytes of SET commands (as bench/redisload writes them), stored
// with chain.Save, and chain.Compact each simulated minute with the grace
// follow uses (2 intervals + 5 s). It then counts the repository's objects
// by type and plans a restore to each sampled second (chain.PlanAt), to
// give the most tail objects one restore reads.
//
// It goes through the chain package's API on a local repository, not
// through follow: the clock is simulated, so an hour takes what storing
// and compacting an hour's bytes takes, and no server runs. The numbers
// are what compaction leaves, not what a real follow's timing would.
//
// Output: lines "name value", one per figure (bench/redis.sh makes the
// table).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/snapbackup/snap/chain"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/local"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

const (
	host     = "bench"
	incrName = "appendonly.aof.1.incr.aof"
	baseName = "appendonly.aof.1.base.rdb"
)

type options struct {
	repo         string
	hours        float64
	rate         float64 // AOF bytes per second
	interval     time.Duration
	compactEvery time.Duration
	grace        time.Duration
	sample       time.Duration
	size, keys   int
	value        string
	seed         uint64
	cpuProfile   string
}

func main() {
	var o options
	flag.StringVar(&o.repo, "repo", "", "repository `DIR` to create (must not exist)")
	flag.Float64Var(&o.hours, "hours", 1, "simulated hours of following")
	flag.Float64Var(&o.rate, "rate", 1.44e6, "AOF growth in bytes per second (bench/redis.sh passes the rate its lag row measured)")
	flag.DurationVar(&o.interval, "interval", time.Second, "follow's --interval: one tail object each")
	flag.DurationVar(&o.compactEvery, "compact-every", time.Minute, "how often follow compacts")
	flag.DurationVar(&o.grace, "grace", 7*time.Second, "compaction grace (follow's: 2 intervals + 5 s)")
	flag.DurationVar(&o.sample, "sample", time.Second, "plan a restore to every `DURATION` of the simulated span")
	flag.IntVar(&o.size, "size", 100, "value size of the SET commands")
	flag.IntVar(&o.keys, "keys", 1000000, "random keys below this number")
	flag.StringVar(&o.value, "value", "x", "value bytes: x or random, as bench/redisload")
	flag.Uint64Var(&o.seed, "seed", 1, "random seed")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile to `FILE`")
	flag.Parse()
	if o.repo == "" || o.hours <= 0 || o.rate <= 0 || o.interval <= 0 || o.compactEvery <= 0 || o.sample <= 0 {
		fmt.Fprintln(os.Stderr, "tailsim: -repo is required; -hours, -rate, -interval, -compact-every and -sample must be positive")
		os.Exit(2)
	}
	if o.value != "x" && o.value != "random" {
		fmt.Fprintln(os.Stderr, "tailsim: -value must be x or random")
		os.Exit(2)
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "tailsim:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if err := run(context.Background(), o); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "tailsim:", err)
		os.Exit(1)
	}
}

// clock is the simulated clock.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func run(ctx context.Context, o options) error {
	wallStart := time.Now()
	be, err := local.Create(o.repo)
	if err != nil {
		return err
	}
	// A cheap KDF: the key file is opened once and counts as one object.
	r, err := repo.Init(ctx, be, "bench", repo.InitOptions{KDF: repo.KDFParams{Time: 1, MemoryKiB: 8 << 10, Threads: 1}}, repo.Options{})
	if err != nil {
		return err
	}
	defer r.Close()
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}

	// Ticks fall a quarter second into the second, as a follow started at
	// an arbitrary moment would tick; windows are aligned to UTC.
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := &clock{t: t0}
	id := source.NewChainID()
	base, err := baseSnapshot(ctx, r, id, clk)
	if err != nil {
		return err
	}

	gen := newGenerator(o)
	ticks := int64(o.hours * float64(time.Hour) / float64(o.interval))
	first := t0.Add(o.interval / 4)
	var off, written int64
	since := t0.UnixMilli()
	lastCompact := t0
	var compactions, merged int
	for i := int64(0); i < ticks; i++ {
		at := first.Add(time.Duration(i) * o.interval)
		clk.t = at
		data := gen.next(int64(o.rate*float64(i+1)*o.interval.Seconds()) - written)
		written += int64(len(data))
		ms := at.UnixMilli()
		t := &chain.Tail{Chain: id, Host: host, File: incrName, Seq: 1, Offset: off, End: off + int64(len(data)),
			Ends: []int64{off + int64(len(data))}, Times: []int64{ms}, Sinces: []int64{since}, Data: data}
		if _, err := chain.Save(ctx, r, t); err != nil {
			return fmt.Errorf("tick %d: %w", i, err)
		}
		off, since = t.End, ms
		if perHour := max(1, int64(time.Hour/o.interval)); (i+1)%perHour == 0 {
			fmt.Fprintf(os.Stderr, "tailsim: simulated hour %d stored, %.1f s of wall time so far\n", (i+1)/perHour, time.Since(wallStart).Seconds())
		}
		if at.Sub(lastCompact) >= o.compactEvery {
			lastCompact = at
			st, err := compact(ctx, r, base, clk, o.grace)
			if err != nil {
				return fmt.Errorf("compact at %s: %w", at.Format(time.RFC3339), err)
			}
			compactions++
			merged += st.Merged
		}
	}
	simEnd := clk.t

	counts, sizes, err := countObjects(o.repo)
	if err != nil {
		return err
	}
	worst, err := worstRestore(ctx, r, t0, simEnd, o.sample)
	if err != nil {
		return err
	}

	p := func(name string, v any) { fmt.Printf("%s %v\n", name, v) }
	p("clock", "simulated")
	p("hours", strconv.FormatFloat(o.hours, 'f', -1, 64))
	p("interval", o.interval)
	p("rate_bytes_per_s", int64(o.rate))
	p("aof_bytes", written)
	p("ticks", ticks)
	p("compactions", compactions)
	p("merged", merged)
	for _, dir := range []string{"tails", "data", "index", "snapshots", "keys", "locks"} {
		p("objects_"+dir, counts[dir])
		p("bytes_"+dir, sizes[dir])
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	p("objects_total", total)
	p("restores_planned", worst.planned)
	p("restore_max_tails", worst.maxTails)
	p("restore_max_at", worst.at.Sub(t0).Round(time.Second))
	p("restore_max_packs", worst.packs)
	p("restore_median_tails", worst.median)
	p("wall_seconds", strconv.FormatFloat(time.Since(wallStart).Seconds(), 'f', 1, 64))
	return nil
}

// baseSnapshot stores the chain's base: an AOF with an empty incr file,
// taken at the clock's time.
func baseSnapshot(ctx context.Context, r *repo.Repository, id string, clk *clock) (*snapshot.Snapshot, error) {
	dir, err := os.MkdirTemp("", "tailsim-aof-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	// The base's bytes are never parsed here: restore is only planned.
	if err := os.WriteFile(filepath.Join(dir, baseName), []byte("REDIS0011\xfa\x09redis-ver\x067.0.15\xff"), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, incrName), nil, 0o644); err != nil {
		return nil, err
	}
	src := &frozenAOF{dir: dir, point: &source.AOFPoint{Chain: id, DirName: "appendonlydir", FileName: "appendonly.aof",
		Base:  &source.AOFBase{Name: baseName, Seq: 1},
		Incrs: []source.AOFIncr{{Name: incrName, Seq: 1, Length: 0}}}}
	return snapshot.Backup(ctx, r, src, snapshot.BackupOptions{Host: host, Program: "tailsim", Now: clk.now})
}

// frozenAOF is a redis source over an AOF directory no server writes.
type frozenAOF struct {
	dir   string
	point *source.AOFPoint
}

func (f *frozenAOF) Info() source.Info {
	return source.Info{Kind: source.KindRedis, Address: "127.0.0.1:6379", DataDir: f.dir}
}

func (f *frozenAOF) Freeze(context.Context) (*source.Frozen, error) {
	fz := source.NewFrozen(source.Listing{Files: []source.File{
		{Name: baseName, Role: source.RoleAOFBase, Length: -1},
		{Name: incrName, Role: source.RoleAOFIncr, Length: 0},
	}}, f.dir, nil)
	fz.AOF = f.point
	return fz, nil
}

// compact does what follow does once a minute: under a shared lock, list
// the chain's tail objects and compact them.
func compact(ctx context.Context, r *repo.Repository, base *snapshot.Snapshot, clk *clock, grace time.Duration) (chain.CompactStats, error) {
	lk, err := r.Lock(ctx, repo.LockOptions{Command: "follow", Now: clk.now, RefreshEvery: -1})
	if err != nil {
		return chain.CompactStats{}, err
	}
	defer lk.Unlock(ctx)
	refs, err := chain.List(ctx, r)
	if err != nil {
		return chain.CompactStats{}, err
	}
	cs := chain.Chains([]*snapshot.Snapshot{base}, refs)
	if len(cs) != 1 {
		return chain.CompactStats{}, fmt.Errorf("%d chains in the repository, want 1", len(cs))
	}
	return chain.Compact(ctx, r, cs[0], chain.CompactOptions{Now: clk.now(), Grace: grace})
}

// countObjects counts the files under each top-level directory of the
// repository, and their bytes.
func countObjects(dir string) (map[string]int, map[string]int64, error) {
	counts, sizes := map[string]int{}, map[string]int64{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		top, _, _ := strings.Cut(filepath.ToSlash(rel), "/")
		if top == rel {
			top = "top" // config
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		counts[top]++
		sizes[top] += fi.Size()
		return nil
	})
	return counts, sizes, err
}

type restoreStats struct {
	planned  int
	maxTails int
	at       time.Time
	packs    int // packs the worst restore's tail objects name
	median   int
}

// worstRestore plans a restore to every sample of [from, to] and returns
// the most tail objects one reads.
func worstRestore(ctx context.Context, r *repo.Repository, from, to time.Time, sample time.Duration) (restoreStats, error) {
	var st restoreStats
	snaps, err := snapshot.List(ctx, r)
	if err != nil {
		return st, err
	}
	chains, err := chain.LoadChains(ctx, r, snaps)
	if err != nil {
		return st, err
	}
	var worst *chain.Plan
	var all []int
	for at := from; !at.After(to); at = at.Add(sample) {
		p, err := chain.PlanAt(ctx, r, chains, host, at)
		if errors.Is(err, chain.ErrNotCovered) {
			continue // the last second, when the chain ends inside it
		}
		if err != nil {
			return st, fmt.Errorf("plan a restore to %s: %w", at.Format(time.RFC3339), err)
		}
		all = append(all, len(p.Tails))
		if worst == nil || len(p.Tails) > len(worst.Tails) {
			worst, st.at = p, at
		}
	}
	if worst == nil {
		return st, errors.New("no second could be restored")
	}
	st.planned, st.maxTails = len(all), len(worst.Tails)
	slices.Sort(all)
	st.median = all[len(all)/2]
	packs := map[repo.ID]bool{}
	for _, ref := range worst.Tails {
		t, err := chain.Load(ctx, r, ref)
		if err != nil {
			return st, err
		}
		for _, c := range t.Chunks {
			loc, ok := r.Index().Lookup(c)
			if !ok {
				return st, fmt.Errorf("tails/%s: chunk %s is in no index", ref.Name, c.Str())
			}
			packs[loc.Pack] = true
		}
	}
	st.packs = len(packs)
	return st, nil
}

// generator makes whole SET commands as Redis appends them to the AOF.
type generator struct {
	rng        *rand.Rand
	pool       []byte
	size, keys int
	buf        []byte
	selected   bool
}

func newGenerator(o options) *generator {
	g := &generator{rng: rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15)), size: o.size, keys: o.keys}
	g.pool = make([]byte, o.size+64<<10)
	for i := range g.pool {
		if o.value == "x" {
			g.pool[i] = 'x'
		} else {
			g.pool[i] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"[g.rng.IntN(64)]
		}
	}
	return g
}

// next returns whole commands of about n bytes (at least one), in a
// buffer reused by the next call.
func (g *generator) next(n int64) []byte {
	b := g.buf[:0]
	if !g.selected {
		// Redis starts an incr file with the SELECT of the first write.
		b = append(b, "*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n"...)
		g.selected = true
	}
	for first := true; first || int64(len(b)) < n; first = false {
		b = append(b, "*3\r\n$3\r\nSET\r\n$16\r\nkey:"...)
		k := g.rng.IntN(g.keys)
		var digits [12]byte
		for i := len(digits) - 1; i >= 0; i-- {
			digits[i] = byte('0' + k%10)
			k /= 10
		}
		b = append(b, digits[:]...)
		b = append(b, "\r\n$"...)
		b = strconv.AppendInt(b, int64(g.size), 10)
		b = append(b, "\r\n"...)
		off := g.rng.IntN(len(g.pool) - g.size + 1)
		b = append(b, g.pool[off:off+g.size]...)
		b = append(b, "\r\n"...)
	}
	g.buf = b
	return b
}
