package chunker

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// small are parameters that give many chunks from little data.
var small = Params{Min: 2 << 10, Avg: 8 << 10, Max: 64 << 10, Seed: seed(1)}

func seed(n byte) [32]byte {
	var s [32]byte
	for i := range s {
		s[i] = n + byte(i)
	}
	return s
}

// randBytes returns n bytes from a generator seeded with s, so every failure
// reproduces.
func randBytes(s uint64, n int) []byte {
	var key [32]byte
	key[0] = byte(s)
	key[1] = byte(s >> 8)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

func mustNew(tb testing.TB, p Params) *Chunker {
	tb.Helper()
	c, err := New(p)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// offsets turns chunk lengths into end offsets.
func offsets(lens []int) []int {
	out := make([]int, len(lens))
	off := 0
	for i, n := range lens {
		off += n
		out[i] = off
	}
	return out
}

func TestGolden(t *testing.T) {
	// Cut points are part of the repository format: if they change, new
	// backups stop deduplicating against old ones. Update only on purpose.
	c := mustNew(t, small)
	got := c.Split(randBytes(1, 64<<10))
	want := []int{7539, 9322, 8897, 12520, 8198, 6216, 8796, 4048}
	if !slices.Equal(got, want) {
		t.Fatalf("cuts changed:\n got %v\nwant %v", got, want)
	}
	if got := refSplit(c, randBytes(1, 64<<10)); !slices.Equal(got, want) {
		t.Fatalf("reference cuts changed:\n got %v\nwant %v", got, want)
	}
	one := func() int { return 1 }
	if got := streamSplit(c, randBytes(1, 64<<10), one); !slices.Equal(got, want) {
		t.Fatalf("byte-by-byte stream cuts changed:\n got %v\nwant %v", got, want)
	}
}

// refCut is Cut as it was before Stream existed, kept as the definition the
// streaming code must reproduce byte for byte: the repository format
// depends on these boundaries.
func refCut(c *Chunker, data []byte, atEOF bool) int {
	p := &c.p
	n := min(len(data), p.Max)
	if n < p.Min {
		if atEOF {
			return n
		}
		return 0
	}
	h := warm(&c.gear, data[p.Min-windowSize:p.Min-1], 0)
	i := p.Min - 1
	if end := min(n, p.Avg-1); i < end {
		j, hh := scan(&c.gear, data[i:end], h, c.maskS)
		if j >= 0 {
			return i + j + 1
		}
		h, i = hh, end
	}
	if end := min(n, p.Max-1); i < end {
		if j, _ := scan(&c.gear, data[i:end], h, c.maskL); j >= 0 {
			return i + j + 1
		}
	}
	if n == p.Max || atEOF {
		return n
	}
	return 0
}

func refSplit(c *Chunker, data []byte) []int {
	var out []int
	for len(data) > 0 {
		n := refCut(c, data, true)
		out = append(out, n)
		data = data[n:]
	}
	return out
}

// streamSplit feeds data to a Stream in blocks of next() bytes, as a reader
// does, and returns the chunk lengths.
func streamSplit(c *Chunker, data []byte, next func() int) []int {
	s := c.NewStream()
	var out []int
	cur := 0
	for len(data) > 0 {
		b := data[:min(next(), len(data))]
		data = data[len(b):]
		for len(b) > 0 {
			n, cut := s.Next(b)
			if n == 0 || n > len(b) || !cut && n != len(b) {
				panic(fmt.Sprintf("Next(%d bytes) = %d, %v", len(b), n, cut))
			}
			cur += n
			b = b[n:]
			if cut {
				out = append(out, cur)
				cur = 0
			}
		}
	}
	if cur > 0 {
		out = append(out, cur)
	}
	return out
}

// TestStreamMatchesCut feeds random data to a Stream in blocks of random
// sizes (single bytes, sizes around Min, Avg and Max, and more than a
// chunk) and checks the cuts against the reference, for inputs that end
// at a cut and in the middle of a chunk.
func TestStreamMatchesCut(t *testing.T) {
	params := []Params{
		small,
		DefaultParams(seed(13)),
		{Min: 64, Avg: 128, Max: 256, Seed: seed(14)}, // no bytes skipped
		{Min: 100, Avg: 1024, Max: 1100, Seed: seed(15)},
		{Min: 100, Avg: 128, Max: 300, Seed: seed(16)}, // most cuts near Min
	}
	for pi, p := range params {
		c := mustNew(t, p)
		// Enough chunks that a test at one position a chunk (at Min, at
		// Avg) is seen to disagree.
		data := randBytes(uint64(20+pi), max(6*p.Max+777, 1<<20))
		// A zero run cuts at Max; text-like bytes stress the masks.
		clear(data[p.Max : 2*p.Max+5])
		for i := 3 * p.Max; i < 4*p.Max; i++ {
			data[i] = "abcab\n"[data[i]%6]
		}
		want := refSplit(c, data)
		sizes := []int{1, 2, 3, 63, 64, 65, p.Min - 1, p.Min, p.Min + 1, p.Avg - 1, p.Avg, p.Avg + 1,
			p.Max - 1, p.Max, p.Max + 1, 2*p.Max + 1}
		if p.Max > 1<<20 {
			// Megabytes in small blocks are slow (under -race) and test
			// nothing the small parameters do not.
			sizes = []int{p.Min - 1, p.Avg + 1, p.Max + 1}
		}
		rng := rand.New(rand.NewPCG(uint64(pi), 13))
		modes := map[string]func() int{
			"random": func() int { return 1 + rng.IntN(2*p.Max) },
			"mixed": func() int {
				if rng.IntN(2) == 0 {
					return 1 + rng.IntN(8)
				}
				return sizes[rng.IntN(len(sizes))]
			},
		}
		for _, n := range sizes {
			modes[fmt.Sprintf("fixed %d", n)] = func() int { return n }
		}
		// The whole input, and prefixes ending mid-chunk.
		wants := map[int][]int{len(data): want}
		for _, n := range []int{p.Min / 2, p.Avg + 3, 2*p.Max + p.Min + 1, 4*p.Max - 1} {
			wants[n] = refSplit(c, data[:n])
		}
		for name, next := range modes {
			for n, w := range wants {
				if got := streamSplit(c, data[:n], next); !slices.Equal(got, w) {
					t.Fatalf("params %d, %s, %d bytes: stream cuts differ from Cut:\n got %v\nwant %v", pi, name, n, got, w)
				}
			}
		}
		if got := c.Split(data); !slices.Equal(got, want) {
			t.Fatalf("params %d: Split differs from the reference", pi)
		}
	}
}

func TestStreamReset(t *testing.T) {
	c := mustNew(t, small)
	data := randBytes(16, 200<<10)
	s := c.NewStream()
	if n, cut := s.Next(nil); n != 0 || cut {
		t.Fatalf("Next(nil) = %d, %v", n, cut)
	}
	// A stream that ended mid-chunk, then Reset, cuts a new stream as a
	// fresh one does.
	if _, cut := s.Next(data[:small.Min+100]); cut {
		t.Fatal("cut before Min")
	}
	s.Reset()
	var got []int
	for b := data; len(b) > 0; {
		n, cut := s.Next(b)
		b = b[n:]
		if cut {
			got = append(got, n)
		}
	}
	want := refSplit(c, data)
	if !slices.Equal(got, want[:len(want)-1]) {
		t.Fatalf("after Reset: %v, want %v", got, want[:len(want)-1])
	}
}

func TestDeterministic(t *testing.T) {
	data := randBytes(2, 4<<20)
	a := mustNew(t, small).Split(data)
	b := mustNew(t, small).Split(bytes.Clone(data))
	if !slices.Equal(a, b) {
		t.Fatalf("same params and data, different cuts:\n%v\n%v", a, b)
	}
	if len(a) < 100 {
		t.Fatalf("only %d chunks from 4 MiB with avg 8 KiB", len(a))
	}

	other := small
	other.Seed = seed(2)
	o := mustNew(t, other).Split(data)
	same := 0
	oo := offsets(o)
	for _, off := range offsets(a) {
		if _, ok := slices.BinarySearch(oo, off); ok {
			same++
		}
	}
	// The end of data is always shared; any other shared cut is a
	// coincidence, about one per 9,000 chunks.
	if same > 2 {
		t.Fatalf("different seeds share %d of %d cut points", same, len(a))
	}
}

func TestConcurrent(t *testing.T) {
	c := mustNew(t, small)
	data := randBytes(3, 1<<20)
	want := c.Split(data)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for g := range errs {
		wg.Go(func() {
			if got := c.Split(data); !slices.Equal(got, want) {
				errs[g] = fmt.Errorf("goroutine %d: cuts differ", g)
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestCutContract(t *testing.T) {
	c := mustNew(t, small)
	p := c.Params()
	zeros := make([]byte, 2*p.Max)
	random := randBytes(4, 2*p.Max)
	for _, tc := range []struct {
		name  string
		data  []byte
		atEOF bool
		want  int // -1: any value in (0, min(len, Max)]
	}{
		{"empty", nil, false, 0},
		{"empty eof", nil, true, 0},
		{"one byte", random[:1], false, 0},
		{"one byte eof", random[:1], true, 1},
		{"below min", random[:p.Min-1], false, 0},
		{"below min eof", random[:p.Min-1], true, p.Min - 1},
		{"zeros below max", zeros[:p.Max-1], false, 0},
		{"zeros below max eof", zeros[:p.Max-1], true, p.Max - 1},
		{"zeros at max", zeros[:p.Max], false, p.Max},
		{"zeros above max", zeros, false, p.Max},
		{"random at max", random[:p.Max], false, -1},
		{"random above max", random, false, -1},
		{"random above max eof", random, true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := c.Cut(tc.data, tc.atEOF)
			if tc.want >= 0 {
				if got != tc.want {
					t.Fatalf("Cut(len %d, %v) = %d, want %d", len(tc.data), tc.atEOF, got, tc.want)
				}
				return
			}
			if got < p.Min || got > min(len(tc.data), p.Max) {
				t.Fatalf("Cut(len %d, %v) = %d, want in [%d, %d]", len(tc.data), tc.atEOF, got, p.Min, min(len(tc.data), p.Max))
			}
		})
	}
}

// TestStreaming feeds Cut the way a caller with a Max-sized buffer does:
// small reads of random size, Cut after each, and atEOF only once the
// source is drained.
func TestStreaming(t *testing.T) {
	for _, p := range []Params{small, DefaultParams(seed(5))} {
		t.Run(fmt.Sprintf("avg=%d", p.Avg), func(t *testing.T) {
			c := mustNew(t, p)
			data := randBytes(5, 16*p.Max+12345)
			want := c.Split(data)
			rng := rand.New(rand.NewPCG(5, 5))

			var got []int
			buf := make([]byte, 0, p.Max)
			src := data
			for {
				if len(buf) < p.Max && len(src) > 0 {
					k := min(1+rng.IntN(p.Max/4), p.Max-len(buf), len(src))
					buf = append(buf, src[:k]...)
					src = src[k:]
				}
				eof := len(src) == 0
				n := c.Cut(buf, eof)
				if n == 0 {
					if eof && len(buf) > 0 || len(buf) >= p.Max {
						t.Fatalf("Cut(len %d, %v) = 0", len(buf), eof)
					}
					if eof {
						break
					}
					continue
				}
				got = append(got, n)
				buf = append(buf[:0], buf[n:]...)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("streaming cuts differ from Split:\n got %v\nwant %v", got, want)
			}
		})
	}
}

func TestAppend(t *testing.T) {
	c := mustNew(t, small)
	data := randBytes(6, 2<<20)
	full := offsets(c.Split(data))
	rng := rand.New(rand.NewPCG(6, 6))
	for range 50 {
		n := 1 + rng.IntN(len(data))
		part := offsets(c.Split(data[:n]))
		if part[len(part)-1] != n {
			t.Fatalf("prefix %d: chunks end at %d", n, part[len(part)-1])
		}
		// Every boundary of the prefix but its last is a boundary of the
		// whole, and no boundary of the whole before it is missing.
		keep := part[:len(part)-1]
		if !slices.Equal(keep, full[:len(keep)]) {
			t.Fatalf("prefix %d: boundaries %v, whole data %v", n, keep, full[:len(keep)])
		}
		if full[len(keep)] < n {
			t.Fatalf("prefix %d: lost boundary %d", n, full[len(keep)])
		}
	}
}

// TestEdit inserts or deletes a few bytes and counts the chunks that are
// not shared with the original. Fixed-size chunking would change every
// chunk after the edit, about 60 on average here.
//
// Most edits change one chunk, but not all: normalised chunking makes a cut
// depend on the distance from the chunk start (Min, and the switch of masks
// at Avg), so after an edit the new and old cut sequences can run side by
// side for a few chunks before they meet. Over 2,000 edits 98% changed one
// chunk, 1.5% two or three, 0.2% four to six. So the test bounds the
// distribution rather than every edit.
func TestEdit(t *testing.T) {
	c := mustNew(t, small)
	data := randBytes(7, 1<<20)
	orig := chunkSet(data, c.Split(data))
	rng := rand.New(rand.NewPCG(7, 7))
	const edits = 200
	hist := make(map[int]int)
	for i := range edits {
		at := rng.IntN(len(data))
		k := 1 + rng.IntN(16)
		var edited []byte
		if i%2 == 0 {
			edited = slices.Concat(data[:at], randBytes(uint64(100+i), k), data[at:])
		} else {
			edited = slices.Concat(data[:at], data[min(at+k, len(data)):])
		}
		lens := c.Split(edited)
		changed := 0
		for _, ch := range chunks(edited, lens) {
			if !orig[string(ch)] {
				changed++
			}
		}
		hist[changed]++
		if changed > 8 {
			t.Errorf("edit %d at %d (%d bytes): %d of %d chunks changed", i, at, k, changed, len(lens))
		}
	}
	t.Logf("chunks changed per edit: %v", hist)
	if few := hist[0] + hist[1] + hist[2]; few < edits*95/100 {
		t.Errorf("only %d of %d edits changed at most 2 chunks: %v", few, edits, hist)
	}
}

func chunks(data []byte, lens []int) [][]byte {
	out := make([][]byte, len(lens))
	for i, n := range lens {
		out[i], data = data[:n], data[n:]
	}
	return out
}

func chunkSet(data []byte, lens []int) map[string]bool {
	m := make(map[string]bool, len(lens))
	for _, ch := range chunks(data, lens) {
		m[string(ch)] = true
	}
	return m
}

// expectedSize returns the mean and standard deviation of the chunk size of
// random data, assuming each hash bit is an independent fair coin: a cut
// after length L in [Min, Avg) has probability 2^-(log2(Avg)+2), in
// [Avg, Max) 2^-(log2(Avg)-2), and at Max the chunk is cut regardless.
func expectedSize(p Params) (mean, sd float64) {
	bits := math.Log2(float64(p.Avg))
	pS, pL := math.Exp2(-(bits + 2)), math.Exp2(-(bits - 2))
	var m1, m2 float64
	alive := 1.0 // probability that no cut came before L
	for l := p.Min; l < p.Max && alive > 1e-18; l++ {
		q := pL
		if l < p.Avg {
			q = pS
		}
		m1 += float64(l) * alive * q
		m2 += float64(l) * float64(l) * alive * q
		alive *= 1 - q
	}
	m1 += float64(p.Max) * alive
	m2 += float64(p.Max) * float64(p.Max) * alive
	return m1, math.Sqrt(m2 - m1*m1)
}

func TestSizes(t *testing.T) {
	data := randBytes(8, 64<<20)
	for _, p := range []Params{DefaultParams(seed(8)), small} {
		t.Run(fmt.Sprintf("avg=%d", p.Avg), func(t *testing.T) {
			lens := mustNew(t, p).Split(data)
			for i, n := range lens[:len(lens)-1] {
				if n < p.Min || n > p.Max {
					t.Fatalf("chunk %d has %d bytes, want [%d, %d]", i, n, p.Min, p.Max)
				}
			}
			if last := lens[len(lens)-1]; last <= 0 || last > p.Max {
				t.Fatalf("last chunk has %d bytes", last)
			}

			// The mean of the complete chunks is within 6 standard errors of
			// the model, and in any case within 0.5x..2x of Avg.
			whole := lens[:len(lens)-1]
			var sum int
			for _, n := range whole {
				sum += n
			}
			got := float64(sum) / float64(len(whole))
			want, sd := expectedSize(p)
			tol := 6 * sd / math.Sqrt(float64(len(whole)))
			t.Logf("%d chunks, mean %.0f, model %.0f ± %.0f (sd %.0f)", len(whole), got, want, tol, sd)
			if math.Abs(got-want) > tol {
				t.Errorf("mean chunk %.0f, model says %.0f ± %.0f", got, want, tol)
			}
			if got < 0.5*float64(p.Avg) || got > 2*float64(p.Avg) {
				t.Errorf("mean chunk %.0f outside 0.5x..2x avg %d", got, p.Avg)
			}
		})
	}
}

func TestZeros(t *testing.T) {
	// All-zero input gives the same window everywhere; for these seeds it
	// does not match, so every chunk is cut at Max.
	for _, p := range []Params{DefaultParams(seed(9)), small} {
		p.Seed = seed(9)
		c := mustNew(t, p)
		data := make([]byte, 5*p.Max+7)
		got := c.Split(data)
		want := []int{p.Max, p.Max, p.Max, p.Max, p.Max, 7}
		if !slices.Equal(got, want) {
			t.Errorf("avg %d: cuts %v, want %v", p.Avg, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		min, avg, max int
		err           string // substring; "" means valid
	}{
		{DefaultMin, DefaultAvg, DefaultMax, ""},
		{64, 128, 256, ""},
		{512 << 10, 32 << 20, 64 << 20, ""},
		{63, 128, 256, "min 63 is below 64"},
		{0, 128, 256, "min 0 is below 64"},
		{-1, 128, 256, "min -1 is below 64"},
		{64, 128, 64<<20 + 1, "max 67108865 is above 67108864"},
		{64, 1000, 4096, "avg 1000 is not a power of two"},
		{64, 0, 4096, "avg 0 is not a power of two"},
		{64, -128, 4096, "avg -128 is not a power of two"},
		{128, 128, 256, "min 128 is not below avg 128"},
		{256, 128, 512, "min 256 is not below avg 128"},
		{64, 128, 128, "avg 128 is not below max 128"},
		{64, 256, 128, "avg 256 is not below max 128"},
	} {
		p := Params{Min: tc.min, Avg: tc.avg, Max: tc.max}
		err := p.Validate()
		_, errNew := New(p)
		switch {
		case tc.err == "" && (err != nil || errNew != nil):
			t.Errorf("%d/%d/%d: Validate: %v, New: %v", tc.min, tc.avg, tc.max, err, errNew)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "chunker: ")):
			t.Errorf("%d/%d/%d: Validate: %v, want %q", tc.min, tc.avg, tc.max, err, tc.err)
		case tc.err != "" && errNew == nil:
			t.Errorf("%d/%d/%d: New accepted invalid params", tc.min, tc.avg, tc.max)
		}
	}
}

func TestMasks(t *testing.T) {
	for avgBits := 7; avgBits <= 25; avgBits++ {
		c := mustNew(t, Params{Min: 64, Avg: 1 << avgBits, Max: 64 << 20})
		if n := popcount(c.maskS); n != avgBits+2 {
			t.Errorf("avg 2^%d: maskS %#x has %d bits", avgBits, c.maskS, n)
		}
		if n := popcount(c.maskL); n != avgBits-2 {
			t.Errorf("avg 2^%d: maskL %#x has %d bits", avgBits, c.maskL, n)
		}
		if (c.maskS|c.maskL)&0xffff != 0 || (c.maskS&c.maskL)>>63 != 1 {
			t.Errorf("avg 2^%d: masks %#x, %#x not in bits 16..63 or without bit 63", avgBits, c.maskS, c.maskL)
		}
	}
}

// TestScan checks the four-bytes-a-step scan against the plain definition,
// for every length mod 4 and for masks that match at many offsets.
func TestScan(t *testing.T) {
	c := mustNew(t, small)
	data := randBytes(12, 4096)
	ref := func(b []byte, h, mask uint64) (int, uint64) {
		for i, x := range b {
			h = h<<1 + c.gear[x]
			if h&mask == 0 {
				return i, h
			}
		}
		return -1, h
	}
	rng := rand.New(rand.NewPCG(12, 12))
	for _, ones := range []int{1, 3, 5, 12, 40} {
		mask := spreadMask(ones)
		for range 500 {
			off := rng.IntN(len(data))
			b := data[off:min(len(data), off+rng.IntN(64))]
			h := rng.Uint64()
			gi, gh := scan(&c.gear, b, h, mask)
			wi, wh := ref(b, h, mask)
			if gi != wi || gh != wh {
				t.Fatalf("mask %#x, %d bytes at %d: scan = %d, %#x; want %d, %#x", mask, len(b), off, gi, gh, wi, wh)
			}
		}
	}
}

func popcount(x uint64) int {
	n := 0
	for ; x != 0; x &= x - 1 {
		n++
	}
	return n
}

// FuzzStream checks that a Stream fed in blocks of arbitrary sizes cuts
// where the reference does.
func FuzzStream(f *testing.F) {
	p := Params{Min: 64, Avg: 256, Max: 1024, Seed: seed(10)}
	c := mustNew(f, p)
	f.Add(randBytes(10, 5000), uint64(1))
	f.Add(make([]byte, 3000), uint64(2))
	f.Add([]byte("x"), uint64(3))
	f.Fuzz(func(t *testing.T, data []byte, sizes uint64) {
		rng := rand.New(rand.NewPCG(sizes, 0))
		got := streamSplit(c, data, func() int { return 1 + rng.IntN(3*p.Max) })
		if want := refSplit(c, data); !slices.Equal(got, want) {
			t.Fatalf("stream %v, reference %v", got, want)
		}
	})
}

// FuzzCut checks Cut's contract on arbitrary input and that a streaming
// caller agrees with Split.
func FuzzCut(f *testing.F) {
	p := Params{Min: 64, Avg: 256, Max: 1024, Seed: seed(10)}
	c := mustNew(f, p)
	f.Add(randBytes(10, 5000), uint16(100))
	f.Add(make([]byte, 3000), uint16(1))
	f.Add([]byte("x"), uint16(7))
	f.Fuzz(func(t *testing.T, data []byte, step uint16) {
		want := c.Split(data)
		if sum := offsets(want); len(data) > 0 && sum[len(sum)-1] != len(data) {
			t.Fatalf("chunks cover %d of %d bytes", sum[len(sum)-1], len(data))
		}
		var got []int
		var buf []byte
		src := data
		for {
			k := min(int(step)%p.Max+1, len(src))
			buf, src = append(buf, src[:k]...), src[k:]
			eof := len(src) == 0
			n := c.Cut(buf, eof)
			switch {
			case n < 0 || n > min(len(buf), p.Max):
				t.Fatalf("Cut(len %d, %v) = %d", len(buf), eof, n)
			case n == 0 && (len(buf) >= p.Max || eof && len(buf) > 0):
				t.Fatalf("Cut(len %d, %v) = 0", len(buf), eof)
			case n == 0 && eof:
				if !slices.Equal(got, want) {
					t.Fatalf("streaming %v, Split %v", got, want)
				}
				return
			case n > 0:
				got = append(got, n)
				buf = buf[n:]
			}
		}
	})
}

func benchmarkCut(b *testing.B, p Params) {
	c := mustNew(b, p)
	data := randBytes(11, 64<<20)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		for rest := data; len(rest) > 0; {
			rest = rest[c.Cut(rest, true):]
		}
	}
}

func BenchmarkCut(b *testing.B) {
	b.Run("default", func(b *testing.B) { benchmarkCut(b, DefaultParams(seed(11))) })
	b.Run("small", func(b *testing.B) { benchmarkCut(b, small) })
}

// BenchmarkStream feeds a Stream in blocks, as the backup's reader does.
func BenchmarkStream(b *testing.B) {
	c := mustNew(b, DefaultParams(seed(11)))
	data := randBytes(11, 64<<20)
	for _, block := range []int{64 << 10, 256 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("block=%dK", block>>10), func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			s := c.NewStream()
			for b.Loop() {
				for rest := data; len(rest) > 0; {
					blk := rest[:min(block, len(rest))]
					rest = rest[len(blk):]
					for len(blk) > 0 {
						n, _ := s.Next(blk)
						blk = blk[n:]
					}
				}
				s.Reset()
			}
		})
	}
}
