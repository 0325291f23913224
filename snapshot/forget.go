package snapshot

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy says which snapshots to keep (docs/design.md, "Retention
// policy"). The semantics are restic's forget: a snapshot is kept if any
// rule keeps it. A count of -1 means unlimited.
type Policy struct {
	Last    int // the newest N
	Hourly  int // the newest in each of the last N hours that have one
	Daily   int
	Weekly  int // ISO weeks, Monday to Sunday
	Monthly int
	Yearly  int
	// Within keeps every snapshot newer than the group's newest snapshot
	// minus Within (relative to the newest, not to now, so the snapshots
	// of a host that stopped backing up are not all removed).
	Within Duration
	Tags   []string // keep every snapshot that has any of these tags
}

// Empty reports whether the policy has no rule; an empty policy keeps
// everything.
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 &&
		p.Within.Zero() && len(p.Tags) == 0
}

func (p Policy) String() string {
	var parts []string
	for _, r := range []struct {
		n    int
		name string
	}{{p.Last, "last"}, {p.Hourly, "hourly"}, {p.Daily, "daily"}, {p.Weekly, "weekly"}, {p.Monthly, "monthly"}, {p.Yearly, "yearly"}} {
		switch {
		case r.n > 0:
			parts = append(parts, fmt.Sprintf("%d %s", r.n, r.name))
		case r.n < 0:
			parts = append(parts, "all "+r.name)
		}
	}
	if !p.Within.Zero() {
		parts = append(parts, "all within "+p.Within.String()+" of the newest")
	}
	for _, t := range p.Tags {
		parts = append(parts, "all tagged "+t)
	}
	if len(parts) == 0 {
		return "keep everything (empty policy)"
	}
	return "keep " + strings.Join(parts, ", ")
}

// Duration is a calendar duration, as restic writes it: "1y6m", "7d",
// "36h", "2y3m4d5h". m is months. It is applied with time.AddDate, so a
// month back from March 31 is March 3 or 2, as Go normalizes.
type Duration struct {
	Years, Months, Days, Hours int
}

var durationRE = regexp.MustCompile(`^(?:(\d+)y)?(?:(\d+)m)?(?:(\d+)d)?(?:(\d+)h)?$`)

// ParseDuration parses "1y2m3d4h" (any part may be left out, in that
// order).
func ParseDuration(s string) (Duration, error) {
	m := durationRE.FindStringSubmatch(s)
	if m == nil || s == "" {
		return Duration{}, fmt.Errorf("invalid duration %q: want e.g. 7d, 36h, 1y6m or 2y3m4d5h (y years, m months, d days, h hours)", s)
	}
	var n [4]int
	for i := range n {
		if m[i+1] == "" {
			continue
		}
		v, err := strconv.Atoi(m[i+1])
		if err != nil || v > 100000 {
			return Duration{}, fmt.Errorf("invalid duration %q: number too large", s)
		}
		n[i] = v
	}
	return Duration{Years: n[0], Months: n[1], Days: n[2], Hours: n[3]}, nil
}

func (d Duration) Zero() bool { return d == Duration{} }

func (d Duration) String() string {
	var b strings.Builder
	for _, p := range []struct {
		n    int
		unit string
	}{{d.Years, "y"}, {d.Months, "m"}, {d.Days, "d"}, {d.Hours, "h"}} {
		if p.n != 0 {
			fmt.Fprintf(&b, "%d%s", p.n, p.unit)
		}
	}
	if b.Len() == 0 {
		return "0h"
	}
	return b.String()
}

// before returns t minus d.
func (d Duration) before(t time.Time) time.Time {
	return t.AddDate(-d.Years, -d.Months, -d.Days).Add(-time.Duration(d.Hours) * time.Hour)
}

// GroupBy says which snapshots a policy treats together.
type GroupBy struct {
	Host, Source bool
}

// ParseGroupBy parses "host,source", "host", "source" or "none" (or "").
func ParseGroupBy(s string) (GroupBy, error) {
	var g GroupBy
	if s == "" || s == "none" {
		return g, nil
	}
	for _, part := range strings.Split(s, ",") {
		switch strings.TrimSpace(part) {
		case "host":
			g.Host = true
		case "source":
			g.Source = true
		default:
			return g, fmt.Errorf("invalid --group-by %q: want host,source, host, source or none", s)
		}
	}
	return g, nil
}

func (g GroupBy) String() string {
	switch {
	case g.Host && g.Source:
		return "host,source"
	case g.Host:
		return "host"
	case g.Source:
		return "source"
	}
	return "none"
}

// Decision is what the policy decided for one snapshot.
type Decision struct {
	Snapshot *Snapshot
	Keep     bool
	Reasons  []string // why it is kept; empty when it is removed
}

// Group is the snapshots the policy treated together, newest first.
type Group struct {
	Cluster   string  // set for the snapshots of a cluster's groups
	Host      string  // set when grouped by host
	Source    *Source // set when grouped by source
	Decisions []Decision
}

// Key names the group for people.
func (g Group) Key() string {
	var parts []string
	if g.Cluster != "" {
		parts = append(parts, "cluster "+g.Cluster)
	}
	if g.Host != "" {
		parts = append(parts, "host "+g.Host)
	}
	if g.Source != nil {
		parts = append(parts, fmt.Sprintf("source %s %s", g.Source.Address, g.Source.DataDir))
	}
	if len(parts) == 0 {
		return "all snapshots"
	}
	return strings.Join(parts, ", ")
}

// ApplyPolicy splits snaps into groups and decides for each snapshot
// whether p keeps it. Calendar buckets (hours, days, ISO weeks, months,
// years) are taken in loc; now only bounds which snapshot counts as the
// newest for Within (one dated in the future does not).
//
// Per group, newest first: a snapshot is kept if it has one of the tags;
// if it is newer than the newest minus Within; by Last if fewer than Last
// were kept by it so far; and by each calendar rule if it is the first
// (so the newest) of its bucket and the rule has counts left. When a rule
// still has counts left at the oldest snapshot, that one is kept too, so
// the history reaches back as far as it can.
func ApplyPolicy(snaps []*Snapshot, p Policy, g GroupBy, loc *time.Location, now time.Time) []Group {
	return ApplyPolicyGroups(snaps, p, g, loc, now, nil)
}

// ApplyPolicyGroups is ApplyPolicy where the snapshots of cluster groups
// are kept or forgotten a group at a time (applyToGroups), by the states
// of those groups (by UUID). The groups of cluster snapshots come after
// the others, one per cluster.
func ApplyPolicyGroups(snaps []*Snapshot, p Policy, g GroupBy, loc *time.Location, now time.Time, states map[string]GroupState) []Group {
	if loc == nil {
		loc = time.Local
	}
	var grouped []*Snapshot
	snaps = slices.DeleteFunc(slices.Clone(snaps), func(sn *Snapshot) bool {
		if sn.Group != nil {
			grouped = append(grouped, sn)
			return true
		}
		return false
	})
	type key struct {
		host string
		src  Source
	}
	byKey := map[key]*Group{}
	var groups []*Group
	for _, sn := range snaps {
		var k key
		if g.Host {
			k.host = sn.Host
		}
		if g.Source {
			k.src = sn.Source
		}
		gr := byKey[k]
		if gr == nil {
			gr = &Group{Host: k.host}
			if g.Source {
				src := k.src
				gr.Source = &src
			}
			byKey[k] = gr
			groups = append(groups, gr)
		}
		gr.Decisions = append(gr.Decisions, Decision{Snapshot: sn})
	}
	slices.SortFunc(groups, func(a, b *Group) int { return strings.Compare(a.Key(), b.Key()) })
	out := make([]Group, 0, len(groups))
	for _, gr := range groups {
		applyToGroup(gr.Decisions, p, loc, now)
		out = append(out, *gr)
	}
	return append(out, applyToGroups(grouped, p, loc, now, states)...)
}

type bucketRule struct {
	count  int
	name   string
	bucket func(t time.Time, nr int) string
}

func applyToGroup(ds []Decision, p Policy, loc *time.Location, now time.Time) {
	slices.SortStableFunc(ds, func(a, b Decision) int {
		if c := b.Snapshot.Time.Compare(a.Snapshot.Time); c != 0 {
			return c
		}
		return cmp.Compare(b.Snapshot.ID.String(), a.Snapshot.ID.String())
	})
	if p.Empty() {
		for i := range ds {
			ds[i].Keep, ds[i].Reasons = true, []string{"empty policy"}
		}
		return
	}
	var newest time.Time
	for _, d := range ds {
		if t := d.Snapshot.Time; t.After(newest) && !t.After(now) {
			newest = t
		}
	}
	rules := []bucketRule{
		{p.Last, "last", func(_ time.Time, nr int) string { return fmt.Sprintf("#%d", nr+1) }},
		{p.Hourly, "hourly", func(t time.Time, _ int) string { return t.Format("2006-01-02 15h") }},
		{p.Daily, "daily", func(t time.Time, _ int) string { return t.Format("2006-01-02") }},
		{p.Weekly, "weekly", func(t time.Time, _ int) string {
			y, w := t.ISOWeek()
			return fmt.Sprintf("%04d-W%02d", y, w)
		}},
		{p.Monthly, "monthly", func(t time.Time, _ int) string { return t.Format("2006-01") }},
		{p.Yearly, "yearly", func(t time.Time, _ int) string { return t.Format("2006") }},
	}
	last := make([]string, len(rules))
	withinFrom := p.Within.before(newest)
	for nr := range ds {
		d := &ds[nr]
		t := d.Snapshot.Time.In(loc)
		for _, tag := range p.Tags {
			if slices.Contains(d.Snapshot.Tags, tag) {
				d.Reasons = append(d.Reasons, "tag "+tag)
			}
		}
		if !p.Within.Zero() && d.Snapshot.Time.After(withinFrom) {
			d.Reasons = append(d.Reasons, "within "+p.Within.String())
		}
		for i := range rules {
			r := &rules[i]
			if r.count == 0 {
				continue
			}
			b := r.bucket(t, nr)
			oldest := nr == len(ds)-1
			if b != last[i] || oldest {
				reason := r.name + " " + b
				if b == last[i] {
					reason = "oldest " + reason
				}
				d.Reasons = append(d.Reasons, reason)
				last[i] = b
				if r.count > 0 {
					r.count--
				}
			}
		}
		d.Keep = len(d.Reasons) > 0
	}
}
