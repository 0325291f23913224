package schedule

import (
	"errors"
	"math/rand/v2"
	"testing"
	"time"
)

func TestIntervalJitterBounds(t *testing.T) {
	const every, jitter = time.Hour, 6 * time.Minute
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	fixed := func(v float64) func() float64 { return func() float64 { return v } }
	cases := []struct {
		name string
		last time.Time
		rand float64
		want time.Time
	}{
		{name: "lowest", last: now, rand: 0, want: now.Add(every - jitter)},
		{name: "middle", last: now, rand: 0.5, want: now.Add(every)},
		{name: "never done: within jitter of now", rand: 0.5, want: now.Add(jitter / 2)},
		{name: "overdue: within jitter of now", last: now.Add(-3 * every), rand: 0.25, want: now.Add(jitter / 4)},
		{name: "last in the future (clock step): still one interval after it", last: now.Add(time.Minute), rand: 0.5, want: now.Add(time.Minute + every)},
	}
	for _, tc := range cases {
		s := Interval{Every: every, Jitter: jitter, Rand: fixed(tc.rand)}
		if got := s.Next(now, tc.last); !got.Equal(tc.want) {
			t.Errorf("%s: Next = %v, want %v", tc.name, got, tc.want)
		}
	}

	// Many draws from a seeded source: every one within bounds, and the
	// bounds reached (the spread is real, not a constant).
	rng := rand.New(rand.NewPCG(7, 8))
	s := Interval{Every: every, Jitter: jitter, Rand: rng.Float64}
	lo, hi := now.Add(every+jitter), now.Add(every-jitter)
	for range 10000 {
		got := s.Next(now, now)
		if got.Before(now.Add(every-jitter)) || !got.Before(now.Add(every+jitter)) {
			t.Fatalf("Next = %v, outside [%v, %v)", got, now.Add(every-jitter), now.Add(every+jitter))
		}
		if got.Before(lo) {
			lo = got
		}
		if got.After(hi) {
			hi = got
		}
		over := s.Next(now, now.Add(-2*every))
		if over.Before(now) || !over.Before(now.Add(jitter)) {
			t.Fatalf("overdue Next = %v, outside [now, now+jitter)", over)
		}
	}
	if lo.Sub(now.Add(every-jitter)) > jitter/50 || now.Add(every+jitter).Sub(hi) > jitter/50 {
		t.Errorf("10000 draws spread over [%v, %v] only", lo.Sub(now), hi.Sub(now))
	}

	s = Interval{Every: every, Rand: rng.Float64}
	if got := s.Next(now, now); !got.Equal(now.Add(every)) {
		t.Errorf("without jitter Next = %v", got)
	}
}

// TestBoundaries: the same instants whatever the zone, the start or the
// side of the epoch.
func TestBoundaries(t *testing.T) {
	b := Boundaries{Every: time.Hour}
	utc := time.Date(2026, 12, 2, 10, 17, 3, 5, time.UTC)
	kolkata := utc.In(time.FixedZone("IST", 5*3600+1800)) // a half-hour zone
	for _, at := range []time.Time{utc, kolkata} {
		if got, want := b.Last(at), time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC); !got.Equal(want) {
			t.Errorf("Last(%v) = %v, want %v", at, got, want)
		}
		if got, want := b.Next(at), time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC); !got.Equal(want) {
			t.Errorf("Next(%v) = %v, want %v", at, got, want)
		}
	}
	on := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	if !b.Last(on).Equal(on) || !b.Next(on).Equal(on.Add(time.Hour)) {
		t.Errorf("on a boundary: Last %v, Next %v", b.Last(on), b.Next(on))
	}
	before := time.Unix(-1, 0)
	if got := (Boundaries{Every: time.Minute}).Last(before); !got.Equal(time.Unix(-60, 0)) {
		t.Errorf("before the epoch: Last = %v", got)
	}
	odd := Boundaries{Every: 7 * time.Second}
	for i := range 100 {
		at := utc.Add(time.Duration(i) * 333 * time.Millisecond)
		l, n := odd.Last(at), odd.Next(at)
		if l.After(at) || !n.After(at) || n.Sub(l) != 7*time.Second || l.UnixNano()%int64(7*time.Second) != 0 {
			t.Fatalf("at %v: Last %v Next %v", at, l, n)
		}
	}
}

// TestGate: work that failed is tried again at the next chance; after one
// that succeeded the next waits for Every.
func TestGate(t *testing.T) {
	now := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	g := Gate{Every: 24 * time.Hour, Now: func() time.Time { return now }}
	var runs int
	fail := errors.New("killed")
	work := func(err error) func() error { return func() error { runs++; return err } }
	if err := g.Run(work(fail)); !errors.Is(err, fail) || runs != 1 {
		t.Fatalf("first run: %v, %d runs", err, runs)
	}
	now = now.Add(time.Hour)
	if err := g.Run(work(nil)); err != nil || runs != 2 {
		t.Fatalf("failed work was not retried at the next chance: %v, %d runs", err, runs)
	}
	now = now.Add(time.Hour)
	if err := g.Run(work(nil)); err != nil || runs != 2 {
		t.Fatalf("work an hour after a good run ran: %d runs", runs)
	}
	now = now.Add(24 * time.Hour)
	if err := g.Run(work(nil)); err != nil || runs != 3 {
		t.Fatalf("no run a day after the last: %d runs", runs)
	}
}
