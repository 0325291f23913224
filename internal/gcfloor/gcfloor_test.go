package gcfloor

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// goal is the runtime's heap goal at percentage p after a collection that
// found live bytes live (mgcpacer.go: heapGoal, heapMinimum).
func goal(live uint64, p int) uint64 {
	return max(minGoal*uint64(p)/100, live+live*uint64(p)/100)
}

func TestPercentFor(t *testing.T) {
	const floor = 32 << 20
	for _, c := range []struct {
		live uint64
		want int
	}{
		{0, 800},        // before the first collection: the least goal is the floor
		{1 << 20, 800},  // the least goal binds: 32 MiB
		{8 << 20, 300},  // live×4 = 32 MiB
		{30 << 20, 40},  // 6% would reach the floor: the percentage rules
		{64 << 20, 40},  // above the floor
		{1, 800},        // a live heap of almost nothing
		{floor - 1, 40}, // just under
	} {
		if got := percentFor(c.live, 40, floor); got != c.want {
			t.Errorf("percentFor(%d, 40, 32 MiB) = %d, want %d", c.live, got, c.want)
		}
	}
	// Over a range of live heaps the goal is the floor or the
	// percentage's, whichever is larger, within rounding.
	for live := uint64(1 << 10); live < 1<<30; live += live / 3 {
		p := percentFor(live, 40, floor)
		g, want := goal(live, p), max(uint64(floor), live+live*40/100)
		if g > want+live/50+minGoal/100 || g+g/50+minGoal/100 < want {
			t.Fatalf("live %d: percent %d gives a goal of %d, want about %d", live, p, g, want)
		}
	}
}

func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func gogc() int { return int(int64(read("/gc/gogc:percent"))) }

func cycles() uint64 { return read("/gc/cycles/total:gc-cycles") }

// waitPercent waits until the tuner has set the percentage ok wants,
// collecting to give it the chance.
func waitPercent(t *testing.T, what string, ok func(int) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !ok(gogc()); {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC is %d, want %s", gogc(), what)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

var sink [][]byte

func TestStart(t *testing.T) {
	const floor = 64 << 20
	Start(40, floor)
	runtime.GC()
	waitPercent(t, "the floor's", func(p int) bool { return p > 40 })

	// 48 MiB of garbage, under the floor: at GOGC=40 alone it took a
	// collection every 40% of a live heap of a few MiB.
	before := cycles()
	for range 48 << 4 {
		sink = append(sink[:0], make([]byte, 64<<10))
	}
	if n := cycles() - before; n > 1 {
		t.Errorf("%d collections while 48 MiB of garbage came and went under a 64 MiB floor", n)
	}

	// A live heap over the floor gets the percentage.
	sink = sink[:0]
	for range 128 {
		sink = append(sink, make([]byte, 1<<20))
	}
	waitPercent(t, "40 with 128 MiB live", func(p int) bool { return p == 40 })
	before = cycles()
	for i := range 256 {
		sink[i%128] = make([]byte, 1<<20) // 256 MiB more, 128 live
	}
	if n := cycles() - before; n < 2 {
		t.Errorf("%d collections while 256 MiB of garbage came and went over 128 MiB live at GOGC=40", n)
	}

	// And back under it, the floor again.
	sink = nil
	waitPercent(t, "the floor's once the heap is small again", func(p int) bool { return p > 40 })

	// Without a floor (the long-running commands), the percentage alone.
	Start(40, 0)
	waitPercent(t, "40 with no floor", func(p int) bool { return p == 40 })
}
