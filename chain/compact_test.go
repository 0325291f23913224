package chain

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
	"github.com/snapbackup/snap/snapshot"
)

// synth is a follower on a fake clock: one L0 tail object per tick, with
// a few commands (now and then none: a mark with no bytes).
type synth struct {
	t       testing.TB
	ctx     context.Context
	r       *repo.Repository
	rng     *rand.Rand
	seq     int64
	last    int64 // ms of the last mark
	written []byte
	ends    []int64
	times   []int64
	sinces  []int64
	objects int // L0 objects stored
}

func newSynth(t testing.TB, r *repo.Repository, start time.Time, seed uint64) *synth {
	return &synth{t: t, ctx: context.Background(), r: r, rng: rand.New(rand.NewPCG(seed, 3)), seq: 1, last: start.UnixMilli()}
}

func (s *synth) tick(at time.Time) {
	s.t.Helper()
	ms := at.UnixMilli()
	off := int64(len(s.written))
	var data []byte
	if s.rng.IntN(50) != 0 {
		for range 1 + s.rng.IntN(3) {
			data = append(data, resp("SET", fmt.Sprintf("k%d", s.rng.IntN(1000)), fmt.Sprintf("v%d", s.rng.Uint32()))...)
		}
	}
	tl := &Tail{Chain: testChain, Host: "cache-1", File: incrName(s.seq), Seq: s.seq, Offset: off, End: off + int64(len(data)),
		Ends: []int64{off + int64(len(data))}, Times: []int64{ms}, Sinces: []int64{s.last}, Data: data}
	if _, err := Save(s.ctx, s.r, tl); err != nil {
		s.t.Fatal(err)
	}
	s.written = append(s.written, data...)
	s.ends, s.times, s.sinces = append(s.ends, tl.End), append(s.times, ms), append(s.sinces, s.last)
	s.last = ms
	s.objects++
}

// chain is the repository's chain as follow sees it (no bases).
func (s *synth) chain() *Chain {
	s.t.Helper()
	refs, err := List(s.ctx, s.r)
	if err != nil {
		s.t.Fatal(err)
	}
	cs := Chains(nil, refs)
	if len(cs) != 1 {
		s.t.Fatalf("%d chains", len(cs))
	}
	return cs[0]
}

func (s *synth) compact(now time.Time) CompactStats {
	s.t.Helper()
	st, err := Compact(s.ctx, s.r, s.chain(), CompactOptions{Now: now, Grace: 7 * time.Second})
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// verify checks that the maximal objects hold exactly the bytes and the
// marks written, in order, and that nothing else is left.
func (s *synth) verify(r *repo.Repository) {
	s.t.Helper()
	c := s.chain()
	if len(c.Redundant)+len(c.Overlapping) != 0 {
		s.t.Fatalf("%d redundant, %d overlapping objects left", len(c.Redundant), len(c.Overlapping))
	}
	verifyTails(s.t, r, c.Tails, s.written, s.ends, s.times, s.sinces)
}

func verifyTails(t testing.TB, r *repo.Repository, refs []Ref, written []byte, ends, times, sinces []int64) {
	t.Helper()
	ctx := context.Background()
	var got []byte
	var gEnds, gTimes, gSinces []int64
	for _, ref := range refs {
		tl, err := Load(ctx, r, ref)
		if err != nil {
			t.Fatal(err)
		}
		if tl.Level < 0 || tl.Level > maxLevel || len(tl.Ends) > 1 && tl.Level == 0 {
			t.Fatalf("%s: level %d with %d marks", ref.Name, tl.Level, len(tl.Ends))
		}
		if err := tl.Bytes(ctx, r, func(b []byte) error { got = append(got, b...); return nil }); err != nil {
			t.Fatal(err)
		}
		gEnds, gTimes, gSinces = append(gEnds, tl.Ends...), append(gTimes, tl.Times...), append(gSinces, tl.Sinces...)
	}
	if !bytes.Equal(got, written) {
		t.Fatalf("the maximal objects hold %d bytes, not the %d written", len(got), len(written))
	}
	if !slices.Equal(gEnds, ends) || !slices.Equal(gTimes, times) || !slices.Equal(gSinces, sinces) {
		t.Fatalf("the maximal objects hold %d marks; %d were written", len(gEnds), len(ends))
	}
}

// census counts the objects left: those of the current day and of the
// day before it that is not yet merged ("the last day"), and those of
// each older UTC day.
func census(refs []Ref, now time.Time) (lastDay int, older map[string]int) {
	older = map[string]int{}
	cur := now.Add(-8 * time.Second).UTC().Truncate(24 * time.Hour) // (grace and a tick)
	for _, r := range refs {
		d0, d1 := r.First().UTC().Truncate(24*time.Hour), r.Time().UTC().Truncate(24*time.Hour)
		if d0.Equal(d1) && d1.Before(cur) {
			older[d1.Format(time.DateOnly)]++
		} else {
			lastDay++
		}
	}
	return lastDay, older
}

// TestCompactFollowDay simulates a day of follow at one tick a second,
// compacting every simulated minute as follow does, and checks what the
// maximal objects hold, how few objects there are and how few a restore
// reads.
func TestCompactFollowDay(t *testing.T) {
	if testing.Short() {
		t.Skip("a simulated day")
	}
	r := newTestRepo(t, mem.New())
	// Compact 6.4 s into each minute, just before the grace of the
	// minute before has passed, when the most objects wait; run past
	// midnight to the compaction that merges the day.
	start := time.Date(2025, 12, 2, 0, 0, 0, 400e6, time.UTC)
	s := newSynth(t, r, start.Add(-time.Second), 1)
	// Right after a compaction, for the last day: 10 L0 objects of the
	// current 10 s and 7 of the 10 s before it (still in the grace), 5
	// objects of 10 s of the minute before it, 9 of a minute, 5 of 10
	// min, 5 of an hour and 3 of 6 h; then one per older day. Before a
	// compaction a minute more of L0 objects, 60.
	const lastDayBound = 17 + 5 + 9 + 5 + 5 + 3
	const hour, day = 3600, 86400 + 67 // to the compaction that merges the day
	base := mkBase(testChain, "cache-1", start.Add(-2*time.Second), 1, [2]int64{1, 0})
	// planned is how many objects a restore to second sec reads.
	planned := func(sec int64) int {
		refs, err := List(s.ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		p, err := PlanAt(s.ctx, r, Chains([]*snapshot.Snapshot{base}, refs), "cache-1", time.Unix(sec, 0))
		if err != nil {
			t.Fatalf("plan at %d: %v", sec, err)
		}
		return len(p.Tails)
	}
	var st struct {
		after, before, lastDay    int // objects after and before a compaction, of the last day after one
		planNewest, planNewestPre int // objects a restore to the newest second reads, after and before a compaction
		planRandom                int // to a random second, after a compaction
		lastDayAt                 time.Time
	}
	report := func(when string) {
		t.Logf("%s (%d objects written): after a compaction at most %d objects (%d of the last day, at %v), before one %d; "+
			"a restore to the newest second reads at most %d objects after a compaction, %d before one; to a random second %d",
			when, s.objects, st.after, st.lastDay, st.lastDayAt.Format(time.DateTime), st.before, st.planNewest, st.planNewestPre, st.planRandom)
		if st.lastDay > lastDayBound || st.before > lastDayBound+60+1 || st.planNewest > st.after || st.planNewestPre > st.before {
			t.Fatalf("over the bounds: %+v", st)
		}
	}
	for i := range day {
		now := start.Add(time.Duration(i) * time.Second)
		s.tick(now)
		if i%60 != 6 {
			if i == hour-1 {
				s.verify(r)
				report("an hour")
			}
			continue
		}
		st.before = max(st.before, len(s.chain().Tails))
		st.planNewestPre = max(st.planNewestPre, planned(now.Unix()))
		s.compact(now)
		refs, err := List(s.ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		last, older := census(refs, now)
		for d, n := range older {
			if n != 1 {
				t.Fatalf("at %v: %d objects of %s", now, n, d)
			}
		}
		if last > st.lastDay {
			st.lastDay, st.lastDayAt = last, now
		}
		st.after = max(st.after, len(refs))
		st.planNewest = max(st.planNewest, planned(now.Unix()))
		st.planRandom = max(st.planRandom, planned(start.Unix()+s.rng.Int64N(int64(i)+1)))
	}
	s.verify(r)
	end := start.Add((day - 1) * time.Second)
	last, older := census(s.chain().Tails, end)
	report("a day")
	t.Logf("at the end, %v: %d objects, %d of the last day, older days %v", end.Format(time.DateTime), len(s.chain().Tails), last, older)
	if len(older) != 1 {
		t.Fatalf("older days %v", older)
	}
}

// holdRemoves is a backend whose tail removals wait while hold is set:
// a compaction that stored its merged object but did not remove the
// sources yet.
type holdRemoves struct {
	repo.Backend
	mu   sync.Mutex
	hold bool
	held []repo.Handle
}

func (h *holdRemoves) Remove(ctx context.Context, hd repo.Handle) error {
	h.mu.Lock()
	if h.hold && hd.Type == repo.TailFile {
		h.held = append(h.held, hd)
		h.mu.Unlock()
		return nil
	}
	h.mu.Unlock()
	return h.Backend.Remove(ctx, hd)
}

func (h *holdRemoves) release(ctx context.Context) error {
	h.mu.Lock()
	held := h.held
	h.hold, h.held = false, nil
	h.mu.Unlock()
	for _, hd := range held {
		if err := h.Backend.Remove(ctx, hd); err != nil && !errors.Is(err, repo.ErrNotFound) {
			return err
		}
	}
	return nil
}

// TestCompactRace: two compactions of one chain from the same listing,
// one after the other or interleaved so that both read the sources
// before either removes them, at the same time or at different ones.
func TestCompactRace(t *testing.T) {
	start := time.Date(2025, 12, 2, 10, 0, 0, 250e6, time.UTC)
	end := start.Add(20 * time.Minute)
	for _, tt := range []struct {
		name        string
		interleaved bool
		now1, now2  time.Time
	}{
		{"one after the other", false, end, end},
		{"one after the other, the second later", false, start.Add(5 * time.Minute), end},
		{"one after the other, the second earlier", false, end, start.Add(5 * time.Minute)},
		{"interleaved", true, end, end},
		{"interleaved, the second later", true, start.Add(5 * time.Minute), end},
		{"interleaved, the second earlier", true, end, start.Add(5 * time.Minute)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			be := &holdRemoves{Backend: mem.New()}
			r := newTestRepo(t, be)
			s := newSynth(t, r, start, 2)
			for i := range 20 * 60 {
				s.tick(start.Add(time.Duration(i) * time.Second))
			}
			stale := s.chain()
			be.hold = tt.interleaved
			o := CompactOptions{Now: tt.now1, Grace: 7 * time.Second}
			st1, err := Compact(s.ctx, r, stale, o)
			if err != nil {
				t.Fatal(err)
			}
			be.mu.Lock()
			be.hold = false
			be.mu.Unlock()
			o.Now = tt.now2
			st2, err := Compact(s.ctx, r, stale, o)
			if err != nil {
				t.Fatalf("the second compaction: %v", err)
			}
			if err := be.release(s.ctx); err != nil {
				t.Fatal(err)
			}
			c := s.chain()
			t.Logf("first %+v, second %+v: %d maximal, %d redundant, %d overlapping", st1, st2, len(c.Tails), len(c.Redundant), len(c.Overlapping))
			if len(c.Overlapping) != 0 {
				t.Fatalf("%d overlapping objects", len(c.Overlapping))
			}
			verifyTails(t, r, c.Tails, s.written, s.ends, s.times, s.sinces)
			// The next compaction removes what the race left.
			s.compact(end)
			s.verify(r)
		})
	}
}

// TestCompactInlineToChunks: merging inline objects of more than
// MaxInline makes an object of data blobs, one per inline source; a
// later merge of it with inline objects adds theirs; a restore reads
// them.
func TestCompactInlineToChunks(t *testing.T) {
	fx := newChainFixture(t, false)
	baseIncr := resp("SET", "a", "1")
	base := fx.base(testT0.Add(300*time.Millisecond), 1, map[int64][]byte{1: baseIncr})
	rng := rand.New(rand.NewPCG(4, 4))
	var big [][]byte
	for i := range 5 {
		v := make([]byte, 1<<20)
		for j := range v {
			v[j] = byte(rng.Uint32())
		}
		big = append(big, resp("SET", fmt.Sprintf("big%d", i), string(v)))
		fx.tail(1, testT0.Add(time.Duration(1500+1000*i)*time.Millisecond), big[i])
	}
	fx.compact(testT0.Add(20 * time.Second)) // the first 10 s window only
	c := fx.chains()[0]
	if len(c.Tails) != 1 {
		t.Fatalf("%d objects after compaction", len(c.Tails))
	}
	checkChunks := func(r *repo.Repository, ref Ref, parts [][]byte) {
		t.Helper()
		tl, err := Load(fx.ctx, r, ref)
		if err != nil {
			t.Fatal(err)
		}
		if len(tl.Data) != 0 || len(tl.Chunks) != len(parts) {
			t.Fatalf("merged object: %d inline bytes, %d chunks; want %d chunks", len(tl.Data), len(tl.Chunks), len(parts))
		}
		for i, id := range tl.Chunks {
			b, err := r.LoadBlob(fx.ctx, id, nil)
			if err != nil {
				t.Fatalf("chunk %d: %v", i, err)
			}
			if !bytes.Equal(b, parts[i]) || int(tl.Sizes[i]) != len(parts[i]) {
				t.Fatalf("chunk %d holds %d bytes (size %d), want %d", i, len(b), tl.Sizes[i], len(parts[i]))
			}
		}
	}
	checkChunks(fx.r, c.Tails[0], big)
	// Small inline objects in the same minute, then the minute merged:
	// a chunked source keeps its chunks, each inline one becomes one.
	var small [][]byte
	for i := range 3 {
		small = append(small, resp("SET", fmt.Sprintf("s%d", i), "v"))
		fx.tail(1, testT0.Add(time.Duration(12500+1000*i)*time.Millisecond), small[i])
	}
	fx.compact(testT0.Add(2 * time.Minute))
	c = fx.chains()[0]
	if len(c.Tails) != 1 || len(c.Redundant) != 0 {
		t.Fatalf("%d objects, %d redundant after compaction", len(c.Tails), len(c.Redundant))
	}
	parts := append(slices.Clone(big), small...)
	// The blobs are in packs and the index: a new process reads them.
	r2, err := repo.Open(fx.ctx, fx.be, "pw", repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.LoadIndex(fx.ctx); err != nil {
		t.Fatal(err)
	}
	checkChunks(r2, c.Tails[0], parts)
	for _, at := range []time.Time{Latest, time.Unix(testT0.Unix()+3, 0), time.Unix(testT0.Unix()+12, 0), time.Unix(testT0.Unix()+13, 0)} {
		_, res, target, err := fx.restore(at)
		if err != nil {
			t.Fatalf("restore at %v: %v", at, err)
		}
		_, got := readAOF(t, target)
		equalFiles(t, fmt.Sprintf("restore at %v", at), got, fx.want(base, at, fx.baseIncrs))
		if want := int64(len(got[incrName(1)]) - len(baseIncr)); res.Bytes != want {
			t.Fatalf("restore at %v: %d tail bytes, want %d", at, res.Bytes, want)
		}
	}
}
