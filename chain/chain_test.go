package chain

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// mkRef is the ref of a tail object of testChain; its name is made up but
// unique for its fields.
func mkRef(seq, off, end, testT0, t1 int64) Ref {
	return mkRefOf(testChain, seq, off, end, testT0, t1)
}

func mkRefOf(chain string, seq, off, end, testT0, t1 int64) Ref {
	r := Ref{Chain: chain, Seq: seq, Offset: off, End: end, T0: testT0, T1: t1}
	tl := &Tail{Chain: chain, Seq: seq, Offset: off, End: end, Times: []int64{testT0, t1}}
	r.Name = tl.prefix() + "-" + repo.Hash([]byte(fmt.Sprint(r))).String()
	return r
}

func refNames(refs []Ref) []string {
	var s []string
	for _, r := range refs {
		s = append(s, fmt.Sprintf("%d:[%d,%d)@%d..%d", r.Seq, r.Offset, r.End, r.T0, r.T1))
	}
	return s
}

func TestMaximal(t *testing.T) {
	for _, tt := range []struct {
		name                  string
		refs                  []Ref
		max, red, overlapping []Ref
	}{
		{
			name: "a merged object contains its sources",
			refs: []Ref{mkRef(1, 0, 100, 1000, 5000), mkRef(1, 0, 50, 1000, 1000), mkRef(1, 50, 100, 3000, 3000), mkRef(1, 100, 100, 5000, 5000)},
			max:  []Ref{mkRef(1, 0, 100, 1000, 5000)},
			red:  []Ref{mkRef(1, 0, 50, 1000, 1000), mkRef(1, 50, 100, 3000, 3000), mkRef(1, 100, 100, 5000, 5000)},
		},
		{
			name: "nested merges",
			refs: []Ref{mkRef(1, 0, 300, 1000, 9000), mkRef(1, 0, 100, 1000, 2000), mkRef(1, 100, 300, 5000, 9000), mkRef(1, 200, 300, 9000, 9000), mkRef(1, 300, 310, 10000, 10000)},
			max:  []Ref{mkRef(1, 0, 300, 1000, 9000), mkRef(1, 300, 310, 10000, 10000)},
			red:  []Ref{mkRef(1, 0, 100, 1000, 2000), mkRef(1, 100, 300, 5000, 9000), mkRef(1, 200, 300, 9000, 9000)},
		},
		{
			name: "two compactions stored the same range",
			refs: []Ref{mkRefOf(testChain, 1, 0, 100, 1000, 5000), func() Ref { r := mkRef(1, 0, 100, 1000, 5000); r.Name = "z" + r.Name; return r }()},
			max:  []Ref{mkRef(1, 0, 100, 1000, 5000)},
			red:  []Ref{func() Ref { r := mkRef(1, 0, 100, 1000, 5000); r.Name = "z" + r.Name; return r }()},
		},
		{
			name:        "overlapping",
			refs:        []Ref{mkRef(1, 0, 100, 1000, 2000), mkRef(1, 50, 150, 1500, 3000), mkRef(1, 150, 200, 4000, 4000)},
			max:         []Ref{mkRef(1, 0, 100, 1000, 2000), mkRef(1, 150, 200, 4000, 4000)},
			overlapping: []Ref{mkRef(1, 50, 150, 1500, 3000)},
		},
		{
			name:        "same bytes, times overlapping",
			refs:        []Ref{mkRef(1, 0, 100, 1000, 3000), mkRef(1, 0, 100, 2000, 4000)},
			max:         []Ref{mkRef(1, 0, 100, 1000, 3000)},
			overlapping: []Ref{mkRef(1, 0, 100, 2000, 4000)},
		},
		{
			name:        "later bytes, earlier time",
			refs:        []Ref{mkRef(1, 0, 100, 5000, 5000), mkRef(1, 100, 200, 4000, 4000)},
			max:         []Ref{mkRef(1, 0, 100, 5000, 5000)},
			overlapping: []Ref{mkRef(1, 100, 200, 4000, 4000)},
		},
		{
			name: "marks with no bytes at the same offset, later times, are successors",
			refs: []Ref{mkRef(1, 0, 100, 1000, 1000), mkRef(1, 100, 100, 61000, 61000), mkRef(1, 100, 100, 121000, 121000), mkRef(1, 100, 130, 122000, 122000), mkRef(1, 130, 130, 190000, 190000)},
			max:  []Ref{mkRef(1, 0, 100, 1000, 1000), mkRef(1, 100, 100, 61000, 61000), mkRef(1, 100, 100, 121000, 121000), mkRef(1, 100, 130, 122000, 122000), mkRef(1, 130, 130, 190000, 190000)},
		},
		{
			name: "a mark with no bytes at the start",
			refs: []Ref{mkRef(1, 0, 0, 1000, 1000), mkRef(1, 0, 10, 2000, 2000)},
			max:  []Ref{mkRef(1, 0, 0, 1000, 1000), mkRef(1, 0, 10, 2000, 2000)},
		},
		{
			name: "a later seq starts at 0",
			refs: []Ref{mkRef(2, 0, 40, 9000, 9000), mkRef(1, 0, 100, 1000, 1000), mkRef(1, 100, 200, 2000, 8000), mkRef(3, 0, 0, 9500, 9500)},
			max:  []Ref{mkRef(1, 0, 100, 1000, 1000), mkRef(1, 100, 200, 2000, 8000), mkRef(2, 0, 40, 9000, 9000), mkRef(3, 0, 0, 9500, 9500)},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			// The order of a listing does not matter.
			for seed := range uint64(5) {
				refs := slices.Clone(tt.refs)
				rand.New(rand.NewPCG(seed, 1)).Shuffle(len(refs), func(i, j int) { refs[i], refs[j] = refs[j], refs[i] })
				max, red, ov := maximal(refs)
				if !slices.Equal(max, tt.max) {
					t.Fatalf("maximal %v\nwant %v", refNames(max), refNames(tt.max))
				}
				slices.SortFunc(red, streamOrder)
				if !slices.Equal(red, tt.red) {
					t.Fatalf("redundant %v\nwant %v", refNames(red), refNames(tt.red))
				}
				if !slices.Equal(ov, tt.overlapping) {
					t.Fatalf("overlapping %v\nwant %v", refNames(ov), refNames(tt.overlapping))
				}
			}
		})
	}
}

var (
	testT0  = time.Date(2025, 12, 2, 10, 0, 0, 0, time.UTC)
	testSrc = snapshot.Source{Kind: source.KindRedis, Address: "127.0.0.1:6379", DataDir: "/var/lib/redis"}
)

// mkBase is a base snapshot (not stored) of chain at time at, with incr
// files (seq, length) after a base file of seq baseSeq.
func mkBase(chain, host string, at time.Time, baseSeq int64, incrs ...[2]int64) *snapshot.Snapshot {
	pt := &source.AOFPoint{Chain: chain, DirName: "appendonlydir", FileName: "appendonly.aof",
		Base: &source.AOFBase{Name: fmt.Sprintf("appendonly.aof.%d.base.rdb", baseSeq), Seq: baseSeq}}
	for _, in := range incrs {
		pt.Incrs = append(pt.Incrs, source.AOFIncr{Name: fmt.Sprintf("appendonly.aof.%d.incr.aof", in[0]), Seq: in[0], Length: in[1]})
	}
	sn := &snapshot.Snapshot{Version: 1, Time: at, Host: host, Source: testSrc, Redis: pt}
	sn.ID = repo.Hash([]byte(fmt.Sprint(chain, host, at, baseSeq)))
	return sn
}

func unixMS(t time.Time) int64 { return t.UnixMilli() }

func TestChains(t *testing.T) {
	a, b, c, d := "aa"+testChain[2:], "bb"+testChain[2:], "cc"+testChain[2:], "dd"+testChain[2:]
	a1 := mkBase(a, "h1", testT0.Add(time.Hour), 1, [2]int64{1, 10})
	a2 := mkBase(a, "h1", testT0.Add(2*time.Hour), 2, [2]int64{2, 0})
	b1 := mkBase(b, "h2", testT0, 1, [2]int64{1, 0})
	other := &snapshot.Snapshot{Version: 1, Time: testT0, Host: "h1", Source: snapshot.Source{Kind: source.KindDir, DataDir: "/x"}}
	refs := []Ref{
		mkRefOf(a, 1, 10, 20, unixMS(a1.Time)+1000, unixMS(a1.Time)+1000),
		mkRefOf(a, 1, 20, 30, unixMS(a1.Time)+2000, unixMS(a1.Time)+2000),
		mkRefOf(a, 1, 10, 30, unixMS(a1.Time)+1000, unixMS(a1.Time)+2000),
		mkRefOf(c, 4, 0, 10, 5, 5),
		mkRefOf(d, 4, 0, 10, 5, 5),
		mkRefOf(b, 1, 0, 5, unixMS(testT0)+1000, unixMS(testT0)+1000),
	}
	for seed := range uint64(10) {
		snaps := []*snapshot.Snapshot{a2, other, b1, a1}
		rng := rand.New(rand.NewPCG(seed, 2))
		rng.Shuffle(len(snaps), func(i, j int) { snaps[i], snaps[j] = snaps[j], snaps[i] })
		rs := slices.Clone(refs)
		rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
		chains := Chains(snaps, rs)
		var ids []string
		for _, ch := range chains {
			ids = append(ids, ch.ID[:2])
		}
		// Chains without bases first (by id), then by first base time.
		if want := []string{"cc", "dd", "bb", "aa"}; !slices.Equal(ids, want) {
			t.Fatalf("seed %d: chains %v, want %v", seed, ids, want)
		}
		ca := chains[3]
		if !slices.Equal(ca.Bases, []*snapshot.Snapshot{a1, a2}) || ca.Host != "h1" || ca.Source != testSrc {
			t.Fatalf("chain a: bases %v host %q source %v", ca.Bases, ca.Host, ca.Source)
		}
		if !slices.Equal(ca.Tails, []Ref{refs[2]}) || len(ca.Redundant) != 2 || len(ca.Overlapping) != 0 {
			t.Fatalf("chain a: tails %v redundant %v", refNames(ca.Tails), refNames(ca.Redundant))
		}
		if cc := chains[0]; cc.Host != "" || len(cc.Bases) != 0 || !slices.Equal(cc.Tails, []Ref{refs[3]}) {
			t.Fatalf("chain c: %+v", cc)
		}
		if cb := chains[2]; cb.Host != "h2" || !slices.Equal(cb.Tails, []Ref{refs[5]}) {
			t.Fatalf("chain b: %+v", cb)
		}
	}
}

func TestPosition(t *testing.T) {
	base1 := mkBase(testChain, "h", testT0, 1, [2]int64{1, 100})
	rewrite := mkBase(testChain, "h", testT0.Add(time.Minute), 2, [2]int64{2, 0})
	for _, tt := range []struct {
		name     string
		bases    []*snapshot.Snapshot
		refs     []Ref
		seq, off int64
	}{
		{"base only", []*snapshot.Snapshot{base1}, nil, 1, 100},
		{"tails after the base", []*snapshot.Snapshot{base1}, []Ref{mkRef(1, 100, 200, 1, 1), mkRef(1, 200, 250, 2, 2)}, 1, 250},
		{"a mark with no bytes last", []*snapshot.Snapshot{base1}, []Ref{mkRef(1, 100, 200, 1, 1), mkRef(1, 200, 200, 2, 2)}, 1, 200},
		{"tails of the next incr file", []*snapshot.Snapshot{base1}, []Ref{mkRef(1, 100, 200, 1, 1), mkRef(2, 0, 30, 2, 2)}, 2, 30},
		{"a rewrite base after the old file's tails", []*snapshot.Snapshot{base1, rewrite}, []Ref{mkRef(1, 100, 200, 1, 1)}, 2, 0},
		{"tails after a rewrite base", []*snapshot.Snapshot{base1, rewrite}, []Ref{mkRef(1, 100, 200, 1, 1), mkRef(2, 0, 10, 2, 2), mkRef(2, 10, 20, 3, 3)}, 2, 20},
		{"tails only", nil, []Ref{mkRef(3, 0, 10, 2, 2), mkRef(3, 10, 20, 3, 3)}, 3, 20},
		{"nothing", nil, nil, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := &Chain{ID: testChain, Bases: tt.bases}
			c.Tails, _, _ = maximal(tt.refs)
			seq, off := c.Position()
			if seq != tt.seq || off != tt.off {
				t.Fatalf("Position = %d, %d; want %d, %d", seq, off, tt.seq, tt.off)
			}
		})
	}
}

func TestFromTo(t *testing.T) {
	b1 := mkBase(testChain, "h", testT0, 1, [2]int64{1, 0})
	b2 := mkBase(testChain, "h", testT0.Add(time.Hour), 2, [2]int64{2, 0})
	c := &Chain{ID: testChain}
	if _, ok := c.From(); ok {
		t.Fatal("From of a chain without bases")
	}
	if !c.To().IsZero() {
		t.Fatalf("To of an empty chain: %v", c.To())
	}
	c.Tails = []Ref{mkRef(1, 0, 10, unixMS(testT0)+1500, unixMS(testT0)+1500)}
	if got := c.To(); !got.Equal(time.UnixMilli(unixMS(testT0) + 1500)) {
		t.Fatalf("To = %v", got)
	}
	c.Bases = []*snapshot.Snapshot{b1, b2}
	if from, ok := c.From(); !ok || !from.Equal(testT0) {
		t.Fatalf("From = %v, %v", from, ok)
	}
	// The newest base is after the last mark.
	if got := c.To(); !got.Equal(b2.Time) {
		t.Fatalf("To = %v, want the newest base's time", got)
	}
	c.Tails = append(c.Tails, mkRef(2, 0, 10, unixMS(testT0)+2000, unixMS(testT0.Add(2*time.Hour))))
	if got := c.To(); !got.Equal(testT0.Add(2 * time.Hour)) {
		t.Fatalf("To = %v, want the last mark's", got)
	}
	// Redundant objects do not count.
	c.Redundant = []Ref{mkRef(2, 0, 10, unixMS(testT0)+2000, unixMS(testT0.Add(3*time.Hour)))}
	if got := c.To(); !got.Equal(testT0.Add(2 * time.Hour)) {
		t.Fatalf("To = %v, want the last maximal mark's", got)
	}
}

func TestNewest(t *testing.T) {
	x, y, z, w, v := "01"+testChain[2:], "02"+testChain[2:], "03"+testChain[2:], "04"+testChain[2:], "05"+testChain[2:]
	otherSrc := testSrc
	otherSrc.DataDir = "/srv/redis"
	snaps := []*snapshot.Snapshot{
		mkBase(x, "h", testT0, 1, [2]int64{1, 0}),
		mkBase(y, "h", testT0.Add(time.Hour), 1, [2]int64{1, 0}), // newest base, but x has a later mark
		mkBase(z, "other", testT0.Add(5*time.Hour), 1, [2]int64{1, 0}),
		func() *snapshot.Snapshot {
			sn := mkBase(w, "h", testT0.Add(6*time.Hour), 1, [2]int64{1, 0})
			sn.Source = otherSrc
			return sn
		}(),
	}
	refs := []Ref{
		mkRefOf(x, 1, 0, 10, unixMS(testT0)+1000, unixMS(testT0.Add(2*time.Hour))),
		mkRefOf(v, 1, 0, 10, unixMS(testT0.Add(9*time.Hour)), unixMS(testT0.Add(9*time.Hour))), // no base
	}
	chains := Chains(snaps, refs)
	if c := Newest(chains, "h", testSrc); c == nil || c.ID != x {
		t.Fatalf("Newest = %+v, want chain %s", c, x)
	}
	if c := Newest(chains, "h", otherSrc); c == nil || c.ID != w {
		t.Fatalf("Newest of the other source = %+v", c)
	}
	if c := Newest(chains, "other", testSrc); c == nil || c.ID != z {
		t.Fatalf("Newest of host other = %+v", c)
	}
	if c := Newest(chains, "nobody", testSrc); c != nil {
		t.Fatalf("Newest of an unknown host = %+v", c)
	}
}
