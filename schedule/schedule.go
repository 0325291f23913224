// Package schedule decides when the periodic work of snap's long-running
// commands is due: run's backups every interval with jitter, the cluster
// agent's groups at wall-clock boundaries, and the gate that keeps
// retention to once per interval. run, follow's supervisor and the
// cluster agent share it.
package schedule

import "time"

// Interval is due every Every, each time moved by a random amount in
// [-Jitter, +Jitter) so a fleet does not reach the repository in the same
// second.
type Interval struct {
	Every, Jitter time.Duration
	Rand          func() float64 // uniform in [0, 1)
}

// Next returns when the work after one that started at last is due, never
// before now. Overdue work (last is zero, or long ago) is due within
// [now, now+Jitter).
func (s Interval) Next(now, last time.Time) time.Time {
	if !last.IsZero() {
		due := last.Add(s.Every + time.Duration((2*s.Rand()-1)*float64(s.Jitter)))
		if !due.Before(now) {
			return due
		}
	}
	return now.Add(time.Duration(s.Rand() * float64(s.Jitter)))
}

// Boundaries are the multiples of Every since the Unix epoch: the same
// instants on every machine whose clock is right, whatever its time zone
// and whenever it started, which is what lets the members of a cluster
// take their parts of one group at once without asking each other.
type Boundaries struct {
	Every time.Duration
}

// Next returns the first boundary after t.
func (b Boundaries) Next(t time.Time) time.Time {
	return b.Last(t).Add(b.Every)
}

// Last returns the latest boundary at or before t.
func (b Boundaries) Last(t time.Time) time.Time {
	ns := t.UnixNano()
	e := int64(b.Every)
	q := ns / e
	if ns%e < 0 {
		q--
	}
	return time.Unix(0, q*e)
}

// Gate runs work at most once per Every after a run that succeeded. A
// run that failed or was cancelled counts for nothing, so the next call
// tries again and finishes what it left, instead of waiting a whole
// interval.
type Gate struct {
	Every time.Duration
	Now   func() time.Time
	last  time.Time // when the last successful run started
}

// Run calls work unless it succeeded less than Every ago.
func (g *Gate) Run(work func() error) error {
	start := g.Now()
	if !g.last.IsZero() && start.Sub(g.last) < g.Every {
		return nil
	}
	if err := work(); err != nil {
		return err
	}
	g.last = start
	return nil
}
