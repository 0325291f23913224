// Package gcfloor runs the garbage collector as GOGC=percent would, but
// never before the heap reaches a floor.
//
// snap sets a low GOGC (40) so that a large backup's peak memory stays near
// what is live. Go's first heap goal is 4 MiB scaled by GOGC, so with 40 a
// short command collected from 1.6 MiB on, every 40% of growth, while it
// allocated the few tens of MiB it needs (zstd's encoder state, a pack's
// buffer, chunk buffers): seven collections in an incremental backup of
// 2.5 MB, a quarter of its CPU time. Under the floor nothing is collected;
// above it the percentage applies.
package gcfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// minGoal is the runtime's least heap goal at GOGC=100 (its heapMinimum,
// 4 MiB). It scales it by GOGC, and the goal is never below it: the first
// collection comes there, and a large percentage raises the least goal
// with it.
const minGoal = 4 << 20

var (
	mu      sync.Mutex
	percent int
	floor   uint64
	started bool
)

// Start makes every later collection set the heap goal to the larger of
// floor and live×(1+percent/100), where live is the heap the collection
// found live. Before the first collection the goal is floor. A second Start
// replaces the first one's settings.
func Start(pct int, fl uint64) {
	mu.Lock()
	defer mu.Unlock()
	percent, floor = pct, fl
	debug.SetGCPercent(percentFor(0, pct, fl))
	if !started {
		started = true
		arm()
	}
}

// percentFor is the GOGC that makes the heap goal after a collection that
// found live bytes live the larger of floor and live×(1+pct/100). The
// runtime's goal at percentage p is max(minGoal×p/100, live×(1+p/100)):
// the largest p whose goal is at most floor is the smaller of the p that
// puts each term there. live 0 stands for before the first collection.
func percentFor(live uint64, pct int, floor uint64) int {
	p := floor * 100 / minGoal
	if live > 0 {
		if live >= floor {
			return pct
		}
		p = min(p, (floor-live)*100/live)
	}
	return max(pct, int(p))
}

// sentinel is allocated to be collected: its cleanup runs once per
// collection. Pointer-free objects under 16 bytes share blocks with other
// small objects (the tiny allocator), which would delay it.
type sentinel struct{ _ [32]byte }

// arm allocates the next sentinel. Its cleanup runs after the collection
// that freed it, sets the percentage for the live heap that collection
// found, and arms the next one.
func arm() {
	runtime.AddCleanup(new(sentinel), func(struct{}) {
		adjust()
		arm()
	}, struct{}{})
}

var liveSample = []metrics.Sample{{Name: "/gc/heap/live:bytes"}}

func adjust() {
	mu.Lock()
	defer mu.Unlock()
	metrics.Read(liveSample)
	if liveSample[0].Value.Kind() != metrics.KindUint64 {
		return
	}
	live := max(liveSample[0].Value.Uint64(), 1)
	debug.SetGCPercent(percentFor(live, percent, floor))
}
