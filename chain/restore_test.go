package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// Small sizes so that a few MiB make several packs.
var chainTestInit = repo.InitOptions{
	ChunkerMin: 16 << 10, ChunkerAvg: 64 << 10, ChunkerMax: 256 << 10,
	PackSize: 1 << 20,
	KDF:      repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1},
}

func newTestRepo(t testing.TB, be repo.Backend) *repo.Repository {
	t.Helper()
	r, err := repo.Init(context.Background(), be, "pw", chainTestInit, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// aofSource is a redis source without a server: it freezes the files of
// one directory with the AOF point the test gives.
type aofSource struct {
	dir     string
	listing source.Listing
	point   *source.AOFPoint
}

func (s *aofSource) Info() source.Info {
	return source.Info{Kind: source.KindRedis, Address: testSrc.Address, DataDir: testSrc.DataDir}
}

func (s *aofSource) Freeze(context.Context) (*source.Frozen, error) {
	fz := source.NewFrozen(s.listing, s.dir, nil)
	fz.AOF = s.point
	return fz, nil
}

// storedMark is one tick the fixture stored: data appended to incr file seq,
// read at time.
type storedMark struct {
	seq  int64
	data []byte
	time int64 // ms
}

// chainFixture is a chain in an in-memory repository: base snapshots made by
// snapshot.Backup and tail objects made by Save, and what each holds.
type chainFixture struct {
	t          *testing.T
	ctx        context.Context
	be         *mem.Backend
	r          *repo.Repository
	chain      string
	host       string
	timestamps bool
	bases      []*snapshot.Snapshot
	baseIncrs  map[string][]byte // the incr files of the newest base: name -> bytes
	files      map[int64]string  // seq -> incr file name
	ends       map[int64]int64   // seq -> stream end stored
	lastTime   int64             // the last mark's time, ms
	marks      []storedMark
}

func newChainFixture(t *testing.T, timestamps bool) *chainFixture {
	be := mem.New()
	return &chainFixture{t: t, ctx: t.Context(), be: be, r: newTestRepo(t, be), chain: testChain, host: "cache-1", timestamps: timestamps,
		files: map[int64]string{}, ends: map[int64]int64{}}
}

func incrName(seq int64) string { return fmt.Sprintf("appendonly.aof.%d.incr.aof", seq) }

// base stores a base snapshot taken at at: a base file of seq baseSeq and
// the incr files incrs (seq -> bytes, in seq order), whose lengths are
// the position.
func (fx *chainFixture) base(at time.Time, baseSeq int64, incrs map[int64][]byte) *snapshot.Snapshot {
	fx.t.Helper()
	dir := fx.t.TempDir()
	src := &aofSource{dir: dir, point: &source.AOFPoint{Chain: fx.chain, DirName: "appendonlydir", FileName: "appendonly.aof",
		Base: &source.AOFBase{Name: fmt.Sprintf("appendonly.aof.%d.base.rdb", baseSeq), Seq: baseSeq}, Timestamps: fx.timestamps}}
	rdb := fmt.Appendf(nil, "REDIS0011 base %d of chain %s", baseSeq, fx.chain)
	if err := os.WriteFile(filepath.Join(dir, src.point.Base.Name), rdb, 0o644); err != nil {
		fx.t.Fatal(err)
	}
	src.listing.Files = append(src.listing.Files, source.File{Name: src.point.Base.Name, Role: source.RoleAOFBase, Length: -1})
	fx.baseIncrs = map[string][]byte{}
	seqs := make([]int64, 0, len(incrs))
	for seq := range incrs {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		name := incrName(seq)
		if err := os.WriteFile(filepath.Join(dir, name), incrs[seq], 0o644); err != nil {
			fx.t.Fatal(err)
		}
		n := int64(len(incrs[seq]))
		src.point.Incrs = append(src.point.Incrs, source.AOFIncr{Name: name, Seq: seq, Length: n})
		src.listing.Files = append(src.listing.Files, source.File{Name: name, Role: source.RoleAOFIncr, Length: n})
		fx.baseIncrs[name] = incrs[seq]
		fx.files[seq] = name
		fx.ends[seq] = max(fx.ends[seq], n)
	}
	sn, err := snapshot.Backup(fx.ctx, fx.r, src, snapshot.BackupOptions{Host: fx.host, Now: func() time.Time { return at }})
	if err != nil {
		fx.t.Fatal(err)
	}
	fx.bases = append(fx.bases, sn)
	fx.lastTime = max(fx.lastTime, at.UnixMilli())
	return sn
}

// tail stores data as the tail object of one mark of incr file seq, read
// at at, continuing what was stored of it.
func (fx *chainFixture) tail(seq int64, at time.Time, data []byte) Ref {
	fx.t.Helper()
	ref, err := fx.save(seq, fx.ends[seq], at, data, nil)
	if err != nil {
		fx.t.Fatal(err)
	}
	fx.ends[seq] += int64(len(data))
	fx.marks = append(fx.marks, storedMark{seq: seq, data: data, time: at.UnixMilli()})
	return ref
}

func (fx *chainFixture) save(seq, off int64, at time.Time, data []byte, gaps []int) (Ref, error) {
	ms := at.UnixMilli()
	since := min(fx.lastTime, ms)
	if len(data) == 0 {
		data = nil
	}
	if fx.files[seq] == "" {
		fx.files[seq] = incrName(seq)
	}
	tl := &Tail{Chain: fx.chain, Host: fx.host, File: fx.files[seq], Seq: seq, Offset: off, End: off + int64(len(data)),
		Timestamps: fx.timestamps, Ends: []int64{off + int64(len(data))}, Times: []int64{ms}, Sinces: []int64{since}, Gaps: gaps, Data: data}
	ref, err := Save(fx.ctx, fx.r, tl)
	if err == nil {
		fx.lastTime = ms
	}
	return ref, err
}

func (fx *chainFixture) chains() []*Chain {
	fx.t.Helper()
	snaps, err := snapshot.List(fx.ctx, fx.r)
	if err != nil {
		fx.t.Fatal(err)
	}
	chains, err := LoadChains(fx.ctx, fx.r, snaps)
	if err != nil {
		fx.t.Fatal(err)
	}
	return chains
}

// compact compacts every chain as of now.
func (fx *chainFixture) compact(now time.Time) {
	fx.t.Helper()
	for _, c := range fx.chains() {
		if _, err := Compact(fx.ctx, fx.r, c, CompactOptions{Now: now, Grace: 7 * time.Second}); err != nil {
			fx.t.Fatal(err)
		}
	}
}

// restore plans the restore of the second at (Latest: the chain's end)
// and restores it into a new directory.
func (fx *chainFixture) restore(at time.Time) (*Plan, *Result, string, error) {
	fx.t.Helper()
	plan, err := PlanAt(fx.ctx, fx.r, fx.chains(), fx.host, at)
	if err != nil {
		return nil, nil, "", err
	}
	target := fx.t.TempDir()
	res, err := Restore(fx.ctx, fx.r, plan, RestoreOptions{Target: target})
	return plan, res, target, err
}

// want is what the files of a restore of base to the second at hold when
// every mark before the second's end is in it, and nothing else: incr
// file name -> bytes.
func (fx *chainFixture) want(base *snapshot.Snapshot, at time.Time, baseIncrs map[string][]byte) map[string][]byte {
	cut := at.Unix()*1000 + 1000
	if at.IsZero() {
		cut = 1<<63 - 1
	}
	want := map[string][]byte{}
	for name, b := range baseIncrs {
		want[name] = slices.Clone(b)
	}
	// (Every mark of the fixtures is after its base's position, or of
	// an older incr file.)
	pseq, _ := base.Redis.Position()
	for _, m := range fx.marks {
		if m.time >= cut {
			break
		}
		if m.seq >= pseq {
			want[fx.files[m.seq]] = append(want[fx.files[m.seq]], m.data...)
		}
	}
	return want
}

// readAOF reads the AOF directory a restore wrote: its manifest, checked
// to name exactly the files there, and the incr files' bytes.
func readAOF(t *testing.T, target string) (*source.AOFManifest, map[string][]byte) {
	t.Helper()
	dir := filepath.Join(target, "appendonlydir")
	entries, err := os.ReadDir(target)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "appendonlydir" {
		var ns []string
		for _, e := range entries {
			ns = append(ns, e.Name())
		}
		t.Fatalf("target holds %v, want only appendonlydir (no staging directory)", ns)
	}
	data, err := os.ReadFile(filepath.Join(dir, "appendonly.aof.manifest"))
	if err != nil {
		t.Fatal(err)
	}
	man, err := source.ParseAOFManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	named := []string{"appendonly.aof.manifest"}
	if man.Base != nil {
		named = append(named, man.Base.Name)
	}
	incrs := map[string][]byte{}
	for _, in := range man.Incrs {
		named = append(named, in.Name)
		b, err := os.ReadFile(filepath.Join(dir, in.Name))
		if err != nil {
			t.Fatal(err)
		}
		incrs[in.Name] = b
	}
	if len(man.History) != 0 {
		t.Fatalf("manifest has history files %v", man.History)
	}
	entries, err = os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var have []string
	for _, e := range entries {
		have = append(have, e.Name())
	}
	slices.Sort(have)
	slices.Sort(named)
	if !slices.Equal(have, named) {
		t.Fatalf("%s holds %v; the manifest names %v", dir, have, named)
	}
	return man, incrs
}

func equalFiles(t *testing.T, what string, got, want map[string][]byte) {
	t.Helper()
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Fatalf("%s: no %s", what, name)
		} else if !bytes.Equal(g, w) {
			t.Fatalf("%s: %s holds\n%q\nwant\n%q", what, name, g, w)
		}
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			t.Fatalf("%s: %s should not be there", what, name)
		}
	}
}

// ticks stores tail objects at testT0 plus each offset, one or two commands
// each (none for an offset marked idle), and returns the last time.
func (fx *chainFixture) ticks(seq int64, offsets []time.Duration, idle map[int]bool) time.Time {
	var last time.Time
	for i, d := range offsets {
		var data []byte
		if !idle[i] {
			data = resp("SET", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i))
			if i%3 == 0 {
				data = append(data, resp("INCR", "n")...)
			}
		}
		last = testT0.Add(d)
		fx.tail(seq, last, data)
	}
	return last
}

// tickOffsets are mark times around second boundaries: at a second's
// start, just before it ends, in between.
var tickOffsets = []time.Duration{
	1500 * time.Millisecond, 2000 * time.Millisecond, 2999 * time.Millisecond, 3001 * time.Millisecond,
	3500 * time.Millisecond, 5250 * time.Millisecond, 7000 * time.Millisecond, 7999 * time.Millisecond,
	9100 * time.Millisecond, 11400 * time.Millisecond, 11600 * time.Millisecond, 12000 * time.Millisecond,
	14100 * time.Millisecond, 65000 * time.Millisecond, 125000 * time.Millisecond, 126000 * time.Millisecond,
}

// TestRestoreAtSecond: without timestamps, a restore to second S holds
// exactly the marks with times before S+1s, as L0 objects and once
// compacted into objects of many marks.
func TestRestoreAtSecond(t *testing.T) {
	fx := newChainFixture(t, false)
	baseIncr := cat(resp("SET", "a", "1"), resp("SET", "b", "2"))
	base := fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: baseIncr})
	last := fx.ticks(1, tickOffsets, map[int]bool{6: true, 13: true})
	check := func(stage string) {
		var seconds []int64 // each second up to x+15, then around the later marks
		for s := testT0.Unix() - 1; s <= last.Unix()+1; s++ {
			if d := s - testT0.Unix(); d <= 15 || d >= 63 && d <= 67 || d >= 123 {
				seconds = append(seconds, s)
			}
		}
		for _, s := range seconds {
			at := time.Unix(s, 0)
			plan, res, target, err := fx.restore(at)
			if s < testT0.Unix() || s > last.Unix() {
				if !errors.Is(err, ErrNotCovered) {
					t.Fatalf("%s: second %d: %v, want ErrNotCovered", stage, s-testT0.Unix(), err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: second %d: %v", stage, s-testT0.Unix(), err)
			}
			if plan.Base.ID != base.ID {
				t.Fatalf("%s: base %s", stage, plan.Base.ID.Str())
			}
			_, got := readAOF(t, target)
			equalFiles(t, fmt.Sprintf("%s: second %d", stage, s-testT0.Unix()), got, fx.want(base, at, fx.baseIncrs))
			if res.At.After(time.Unix(s+1, 0)) || res.Dropped != 0 || res.Files != 2 {
				t.Fatalf("%s: second %d: result %+v", stage, s-testT0.Unix(), res)
			}
			if w := int64(len(got[incrName(1)]) - len(baseIncr)); res.Bytes != w {
				t.Fatalf("%s: second %d: %d tail bytes, want %d", stage, s-testT0.Unix(), res.Bytes, w)
			}
		}
		_, _, target, err := fx.restore(Latest)
		if err != nil {
			t.Fatal(err)
		}
		_, got := readAOF(t, target)
		equalFiles(t, stage+": latest", got, fx.want(base, time.Time{}, fx.baseIncrs))
	}
	check("L0 objects")
	fx.compact(last.Add(48 * time.Hour))
	if n := len(fx.chains()[0].Tails); n != 1 {
		t.Fatalf("%d tail objects after compaction, want 1", n)
	}
	check("compacted")
}

// TestRestoreTimestamps: with #TS: annotations, the commands annotated
// with the second or before are in the restore even from a mark read
// after the second, up to the first annotation later than it.
func TestRestoreTimestamps(t *testing.T) {
	fx := newChainFixture(t, true)
	x := testT0.Unix()
	baseIncr := resp("SET", "base", "1") // no annotation: its commands have no known second
	fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: baseIncr})
	set := func(k string) []byte { return resp("SET", k, "v") }
	a := cat(tsNote(x+1), set("a1"), set("a2"), tsNote(x+2), set("a3"))
	b := cat(tsNote(x+3), set("b1"), tsNote(x+4), set("b2"))
	c := cat(set("c0"), tsNote(x+5), set("c1"), tsNote(x+6), set("c2"))
	fx.tail(1, testT0.Add(2500*time.Millisecond), a)
	fx.tail(1, testT0.Add(4200*time.Millisecond), b)
	fx.tail(1, testT0.Add(6100*time.Millisecond), c)
	// Follow's clock behind Redis's: a mark read at x+7.9 holds a write
	// annotated x+8; the next mark's command without an annotation is of
	// x+8 too.
	d := cat(tsNote(x+8), set("d1"))
	e := cat(set("e1"), tsNote(x+9), set("e2"))
	fx.tail(1, testT0.Add(7900*time.Millisecond), d)
	fx.tail(1, testT0.Add(9500*time.Millisecond), e)
	want := map[int64][]byte{
		0: {},                                     // x+1's annotation is after the second
		1: cat(tsNote(x+1), set("a1"), set("a2")), // from a mark read at x+2.5
		2: a,                                      // the mark; b's first annotation is x+3
		3: cat(a, tsNote(x+3), set("b1")),         // up to x+4's annotation
		4: cat(a, b, set("c0")),                   // c0 is of x+4, the last annotation before it
		5: cat(a, b, set("c0"), tsNote(x+5), set("c1")),
		6: cat(a, b, c),    // every mark before x+7
		7: cat(a, b, c, d), // d is read at x+7.9; e1 is of x+8, as d1
		8: cat(a, b, c, d, set("e1")),
		9: cat(a, b, c, d, e),
	}
	check := func(stage string) {
		for s := int64(0); s <= 9; s++ {
			_, res, target, err := fx.restore(time.Unix(x+s, 0))
			if err != nil {
				t.Fatalf("%s: second %d: %v", stage, s, err)
			}
			_, got := readAOF(t, target)
			equalFiles(t, fmt.Sprintf("%s: second %d", stage, s), got, map[string][]byte{incrName(1): cat(baseIncr, want[s])})
			if res.Bytes != int64(len(want[s])) {
				t.Fatalf("%s: second %d: %d tail bytes, want %d", stage, s, res.Bytes, len(want[s]))
			}
		}
	}
	check("L0 objects")
	fx.compact(testT0.Add(48 * time.Hour))
	if n := len(fx.chains()[0].Tails); n != 1 {
		t.Fatalf("%d tail objects after compaction, want 1", n)
	}
	check("compacted")
}

// TestRestoreDropsOpenTransaction: a MULTI whose EXEC is after the second
// is left out whole, also when the transaction spans two objects.
func TestRestoreDropsOpenTransaction(t *testing.T) {
	fx := newChainFixture(t, false)
	baseIncr := resp("SET", "a", "1")
	fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: baseIncr})
	before := resp("SET", "before", "1")
	first := cat(before, resp("MULTI"), resp("SET", "t", "1"), resp("INCR", "t"))
	second := cat(resp("SET", "t2", "2"), resp("EXEC"), resp("SET", "after", "1"))
	fx.tail(1, testT0.Add(1500*time.Millisecond), first)
	fx.tail(1, testT0.Add(2500*time.Millisecond), second)
	for _, stage := range []string{"L0 objects", "compacted"} {
		if stage == "compacted" {
			fx.compact(testT0.Add(48 * time.Hour))
		}
		_, res, target, err := fx.restore(time.Unix(testT0.Unix()+1, 0))
		if err != nil {
			t.Fatal(err)
		}
		_, got := readAOF(t, target)
		equalFiles(t, stage, got, map[string][]byte{incrName(1): cat(baseIncr, before)})
		// MULTI, SET and INCR were in the marks restored, and dropped.
		if res.Dropped != 3 || res.Bytes != int64(len(before)) {
			t.Fatalf("%s: dropped %d commands, %d tail bytes; want 3, %d", stage, res.Dropped, res.Bytes, len(before))
		}
		_, res, target, err = fx.restore(time.Unix(testT0.Unix()+2, 0))
		if err != nil {
			t.Fatal(err)
		}
		_, got = readAOF(t, target)
		equalFiles(t, stage+": after EXEC", got, map[string][]byte{incrName(1): cat(baseIncr, first, second)})
		if res.Dropped != 0 {
			t.Fatalf("%s: dropped %d", stage, res.Dropped)
		}
	}
}

func TestRestoreRefusesBrokenStream(t *testing.T) {
	t.Run("hole", func(t *testing.T) {
		fx := newChainFixture(t, false)
		fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: resp("SET", "a", "1")})
		fx.tail(1, testT0.Add(1500*time.Millisecond), resp("SET", "b", "1"))
		fx.ends[1] += 10 // ten bytes no object holds
		fx.tail(1, testT0.Add(2500*time.Millisecond), resp("SET", "c", "1"))
		for _, at := range []time.Time{Latest, time.Unix(testT0.Unix()+2, 0)} {
			_, _, target, err := fx.restore(at)
			if err == nil || !strings.Contains(err.Error(), "but the bytes before end at") {
				t.Fatalf("restore over a hole: %v", err)
			}
			if _, err := os.Stat(filepath.Join(target, "appendonlydir")); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a failed restore left appendonlydir: %v", err)
			}
		}
		// A restore that does not read the object after the hole is fine.
		// (One to x+1 reads it, as the first object past the second,
		// and fails too.)
		if _, _, _, err := fx.restore(time.Unix(testT0.Unix(), 0)); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("hole after the base", func(t *testing.T) {
		fx := newChainFixture(t, false)
		fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: resp("SET", "a", "1")})
		fx.ends[1] += 3
		fx.tail(1, testT0.Add(1500*time.Millisecond), resp("SET", "b", "1"))
		if _, _, _, err := fx.restore(Latest); err == nil || !strings.Contains(err.Error(), "but the bytes before end at") {
			t.Fatalf("restore over a hole: %v", err)
		}
	})
	t.Run("ends inside a command", func(t *testing.T) {
		fx := newChainFixture(t, false)
		fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: resp("SET", "a", "1")})
		cmd := resp("SET", "c", "1")
		fx.tail(1, testT0.Add(1500*time.Millisecond), cat(resp("SET", "b", "1"), cmd[:7]))
		for _, at := range []time.Time{Latest, time.Unix(testT0.Unix()+1, 0)} {
			if _, _, _, err := fx.restore(at); err == nil || !strings.Contains(err.Error(), "ends inside a command") || !errors.Is(err, repo.ErrCorrupt) {
				t.Fatalf("restore of an object ending inside a command: %v", err)
			}
		}
		// Also when the next object holds the rest.
		fx.tail(1, testT0.Add(2500*time.Millisecond), cmd[7:])
		if _, _, _, err := fx.restore(Latest); err == nil || !strings.Contains(err.Error(), "ends inside a command") {
			t.Fatalf("restore of an object ending inside a command: %v", err)
		}
	})
	t.Run("not an AOF", func(t *testing.T) {
		fx := newChainFixture(t, false)
		fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: resp("SET", "a", "1")})
		fx.tail(1, testT0.Add(1500*time.Millisecond), []byte("hello\r\n"))
		if _, _, _, err := fx.restore(Latest); err == nil || !errors.Is(err, repo.ErrCorrupt) {
			t.Fatalf("restore of bytes that are no AOF: %v", err)
		}
	})
}

func TestRestoreNotCovered(t *testing.T) {
	fx := newChainFixture(t, false)
	fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: resp("SET", "a", "1")})
	fx.tail(1, testT0.Add(1500*time.Millisecond), resp("SET", "b", "1"))
	fx.tail(1, testT0.Add(2500*time.Millisecond), resp("SET", "c", "1"))
	// Follow did not watch from x+2.5 to x+60.5.
	if _, err := fx.save(1, fx.ends[1], testT0.Add(60500*time.Millisecond), resp("SET", "d", "1"), []int{0}); err != nil {
		t.Fatal(err)
	}
	fx.ends[1] += int64(len(resp("SET", "d", "1")))
	fx.tail(1, testT0.Add(61500*time.Millisecond), resp("SET", "e", "1"))
	x := testT0.Unix()
	for _, tt := range []struct {
		name string
		s    int64
		want string
	}{
		{"before the first base", x - 1, "before the first restorable second"},
		{"long before the first base", x - 86400, "before the first restorable second"},
		{"after the last mark", x + 62, "after the last restorable second"},
		{"in the gap", x + 30, "in a gap"},
		{"the second the gap starts in", x + 2, "in a gap"},
		{"the gap's first whole second", x + 3, "in a gap"},
		{"the second of the gap's mark", x + 60, "in a gap"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, _, _, err := fx.restore(time.Unix(tt.s, 0))
			if !errors.Is(err, ErrNotCovered) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("second %d: %v, want ErrNotCovered (%s)", tt.s-x, err, tt.want)
			}
		})
	}
	// Around the gap and at the ends it restores.
	for _, s := range []int64{x, x + 1, x + 61} {
		if _, _, _, err := fx.restore(time.Unix(s, 0)); err != nil {
			t.Fatalf("second %d: %v", s-x, err)
		}
	}
	// The gap survives compaction.
	fx.compact(testT0.Add(48 * time.Hour))
	if _, _, _, err := fx.restore(time.Unix(x+30, 0)); !errors.Is(err, ErrNotCovered) {
		t.Fatalf("in the gap after compaction: %v", err)
	}
	if _, _, _, err := fx.restore(time.Unix(x+61, 0)); err != nil {
		t.Fatalf("after the gap after compaction: %v", err)
	}
}

func TestRestoreTarget(t *testing.T) {
	fx := newChainFixture(t, false)
	base := fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: resp("SET", "a", "1")})
	fx.tail(1, testT0.Add(1500*time.Millisecond), resp("SET", "b", "1"))
	plan, err := PlanAt(fx.ctx, fx.r, fx.chains(), fx.host, time.Unix(testT0.Unix()+1, 0))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("manifest and staging", func(t *testing.T) {
		target := t.TempDir()
		res, err := Restore(fx.ctx, fx.r, plan, RestoreOptions{Target: target})
		if err != nil {
			t.Fatal(err)
		}
		man, _ := readAOF(t, target) // checks the names and that no staging directory is left
		if res.Dir != filepath.Join(target, "appendonlydir") || res.Manifest != "appendonly.aof.manifest" || res.Files != 2 {
			t.Fatalf("result %+v", res)
		}
		if man.Base == nil || man.Base.Name != base.Redis.Base.Name || man.Base.Seq != 1 || len(man.Incrs) != 1 || man.Incrs[0].Seq != 1 {
			t.Fatalf("manifest %+v", man)
		}
	})

	t.Run("an interrupted restore's staging directory is replaced", func(t *testing.T) {
		target := t.TempDir()
		staging := filepath.Join(target, stagingPrefix+"appendonlydir")
		if err := os.MkdirAll(staging, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(staging, "appendonly.aof.7.incr.aof"), []byte("junk"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Restore(fx.ctx, fx.r, plan, RestoreOptions{Target: target}); err != nil {
			t.Fatal(err)
		}
		readAOF(t, target)
	})

	t.Run("target has appendonlydir", func(t *testing.T) {
		target := t.TempDir()
		existing := filepath.Join(target, "appendonlydir")
		if err := os.Mkdir(existing, 0o755); err != nil {
			t.Fatal(err)
		}
		mine := []byte("the server's own")
		if err := os.WriteFile(filepath.Join(existing, "appendonly.aof.1.incr.aof"), mine, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Restore(fx.ctx, fx.r, plan, RestoreOptions{Target: target})
		if !errors.Is(err, source.ErrTargetHasDatabase) {
			t.Fatalf("restore over appendonlydir: %v", err)
		}
		entries, _ := os.ReadDir(target)
		if len(entries) != 1 {
			t.Fatalf("target holds %d entries after a refused restore", len(entries))
		}
		inside, _ := os.ReadDir(existing)
		got, _ := os.ReadFile(filepath.Join(existing, "appendonly.aof.1.incr.aof"))
		if len(inside) != 1 || !bytes.Equal(got, mine) {
			t.Fatalf("the existing appendonlydir changed: %d entries, %q", len(inside), got)
		}
	})
}

// TestRestoreRewrite: after a rewrite the chain has a second base (base
// seq 2, incr seq 2 at length 0); a restore after its time starts from
// it, one before from the first base with the tails of both incr files.
func TestRestoreRewrite(t *testing.T) {
	fx := newChainFixture(t, false)
	x := testT0.Unix()
	incr1 := resp("SET", "a", "1")
	base1 := fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: incr1})
	base1Incrs := fx.baseIncrs
	fx.tail(1, testT0.Add(1500*time.Millisecond), resp("SET", "b", "1"))
	fx.tail(1, testT0.Add(2500*time.Millisecond), resp("SET", "c", "1"))
	// The rewrite opened incr 2; follow ships it, then stores the new base.
	fx.tail(2, testT0.Add(3500*time.Millisecond), resp("SET", "d", "1"))
	fx.tail(2, testT0.Add(4500*time.Millisecond), resp("SET", "e", "1"))
	base2 := fx.base(testT0.Add(5200*time.Millisecond), 2, map[int64][]byte{2: nil})
	fx.tail(2, testT0.Add(6500*time.Millisecond), resp("SET", "f", "1"))
	fx.tail(2, testT0.Add(7500*time.Millisecond), cat(resp("MULTI"), resp("SET", "g", "1")))
	fx.tail(2, testT0.Add(8500*time.Millisecond), cat(resp("EXEC"), resp("SET", "h", "1")))

	for _, stage := range []string{"L0 objects", "compacted"} {
		if stage == "compacted" {
			fx.compact(testT0.Add(48 * time.Hour))
		}
		for s := x; s <= x+8; s++ {
			plan, res, target, err := fx.restore(time.Unix(s, 0))
			if err != nil {
				t.Fatalf("%s: second %d: %v", stage, s-x, err)
			}
			wantBase, wantSeqs := base1, []int64{1}
			if s >= x+5 {
				wantBase, wantSeqs = base2, []int64{2}
			} else if s >= x+2 {
				// At x+2 the plan reads the first object of incr 2, past
				// the second, and the restore has that file empty.
				wantSeqs = []int64{1, 2}
			}
			if plan.Base.ID != wantBase.ID {
				t.Fatalf("%s: second %d: base %s, want %s", stage, s-x, plan.Base.ID.Str(), wantBase.ID.Str())
			}
			man, got := readAOF(t, target)
			if man.Base.Seq != wantBase.Redis.Base.Seq {
				t.Fatalf("%s: second %d: manifest's base %+v", stage, s-x, man.Base)
			}
			var seqs []int64
			for _, in := range man.Incrs {
				seqs = append(seqs, in.Seq)
			}
			if !slices.Equal(seqs, wantSeqs) {
				t.Fatalf("%s: second %d: incr files %v, want %v", stage, s-x, seqs, wantSeqs)
			}
			baseIncrs := base1Incrs
			if wantBase == base2 {
				baseIncrs = map[string][]byte{incrName(2): nil}
			}
			want := fx.want(wantBase, time.Unix(s, 0), baseIncrs)
			if s == x+7 {
				// The transaction's EXEC is in the next second.
				n := len(want[incrName(2)]) - len(cat(resp("MULTI"), resp("SET", "g", "1")))
				want[incrName(2)] = want[incrName(2)][:n]
				if res.Dropped != 2 {
					t.Fatalf("%s: second %d: dropped %d", stage, s-x, res.Dropped)
				}
			}
			if want[incrName(2)] == nil && slices.Contains(wantSeqs, 2) {
				want[incrName(2)] = []byte{}
			}
			equalFiles(t, fmt.Sprintf("%s: second %d", stage, s-x), got, want)
		}
	}
}

// TestRestoreBaseInsideTransaction: a point whose incr file ends inside a
// MULTI (snap takes points outside transactions now, but a restore scans
// the point's prefix and copes) is continued by the EXEC in its tail.
func TestRestoreBaseInsideTransaction(t *testing.T) {
	fx := newChainFixture(t, false)
	fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: cat(resp("SET", "a", "1"), resp("MULTI"), resp("SET", "t", "1"))})
	fx.tail(1, testT0.Add(1500*time.Millisecond), cat(resp("EXEC"), resp("SET", "b", "1")))
	if _, _, _, err := fx.restore(Latest); err != nil {
		t.Fatal(err)
	}
}

// TestRestoreRewriteBaseDuringRewrite: Redis 7 adds the incr file of a
// rewrite to the manifest when the rewrite starts, so a point may list
// two incr files at length 0 (snap's BaseOnly points list only the
// first now); the tail objects of each continue it.
func TestRestoreRewriteBaseDuringRewrite(t *testing.T) {
	fx := newChainFixture(t, false)
	fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: resp("SET", "a", "1")})
	fx.tail(1, testT0.Add(1500*time.Millisecond), resp("SET", "b", "1"))
	fx.tail(2, testT0.Add(2500*time.Millisecond), resp("SET", "c", "1"))
	base2 := fx.base(testT0.Add(3200*time.Millisecond), 2, map[int64][]byte{2: nil, 3: nil})
	fx.tail(2, testT0.Add(3500*time.Millisecond), resp("SET", "d", "1"))
	fx.tail(3, testT0.Add(4500*time.Millisecond), resp("SET", "e", "1"))
	plan, _, target, err := fx.restore(Latest)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Base.ID != base2.ID {
		t.Fatalf("base %s", plan.Base.ID.Str())
	}
	_, got := readAOF(t, target)
	equalFiles(t, "latest", got, map[string][]byte{
		incrName(2): cat(resp("SET", "c", "1"), resp("SET", "d", "1")),
		incrName(3): resp("SET", "e", "1"),
	})
}
