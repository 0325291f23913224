package snapshot_test

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// snapAt makes a snapshot for policy tests; its id's first byte is n, so
// the golden files can name it.
func snapAt(n int, t time.Time, host string, tags ...string) *snapshot.Snapshot {
	var id repo.ID
	id[0], id[1] = byte(n>>8), byte(n)
	return &snapshot.Snapshot{ID: id, Time: t, Host: host, Tags: tags,
		Source: snapshot.Source{Kind: "rocksdb-freeze", Address: "127.0.0.1:9015", DataDir: "/data"}}
}

// series makes count snapshots from start, every step, on host "db".
func series(start time.Time, step time.Duration, count int) []*snapshot.Snapshot {
	var out []*snapshot.Snapshot
	for i := range count {
		out = append(out, snapAt(i+1, start.Add(time.Duration(i)*step), "db"))
	}
	return out
}

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Skipf("time zone %s not available: %v", name, err)
	}
	return loc
}

func within(s string) snapshot.Duration {
	d, err := snapshot.ParseDuration(s)
	if err != nil {
		panic(err)
	}
	return d
}

// renderPolicy is the golden form of a policy's decisions: every snapshot
// newest first with its time in UTC and in the policy's zone, and why it
// is kept.
func renderPolicy(groups []snapshot.Group, p snapshot.Policy, g snapshot.GroupBy, loc *time.Location, now time.Time) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "policy: %s\ngroup by: %s\ntime zone: %s\nnow: %s\n", p, g, loc, now.UTC().Format(time.RFC3339))
	for _, gr := range groups {
		fmt.Fprintf(&b, "\n[%s]\n", gr.Key())
		for _, d := range gr.Decisions {
			sn := d.Snapshot
			verdict := "remove"
			if d.Keep {
				verdict = "keep  "
			}
			tags := ""
			if len(sn.Tags) > 0 {
				tags = " tags=" + strings.Join(sn.Tags, ",")
			}
			line := fmt.Sprintf("s%04x %s  %s  %s%s  %s  %s", int(sn.ID[0])<<8|int(sn.ID[1]),
				sn.Time.UTC().Format("2006-01-02T15:04:05Z"), sn.Time.In(loc).Format("2006-01-02T15:04:05-07:00 Mon"),
				sn.Host, tags, verdict, strings.Join(d.Reasons, "; "))
			b.WriteString(strings.TrimRight(line, " ") + "\n")
		}
	}
	return b.String()
}

func TestPolicyGolden(t *testing.T) {
	utc := time.UTC
	ny := mustLoc(t, "America/New_York")
	kolkata := mustLoc(t, "Asia/Kolkata")
	now := mustTime("2030-01-01T00:00:00Z")
	cases := []struct {
		name  string
		snaps []*snapshot.Snapshot
		p     snapshot.Policy
		g     snapshot.GroupBy
		loc   *time.Location
		now   time.Time
	}{
		{
			// Every 20 minutes across four hours: the newest of each hour.
			name:  "hourly",
			snaps: series(mustTime("2026-05-01T09:00:00Z"), 20*time.Minute, 13),
			p:     snapshot.Policy{Hourly: 3}, loc: utc,
		},
		{
			// Right before and at midnight: 23:59:59 and 00:00:00 are
			// different days.
			name: "daily-midnight-edges",
			snaps: []*snapshot.Snapshot{
				snapAt(1, mustTime("2026-05-01T12:00:00Z"), "db"),
				snapAt(2, mustTime("2026-05-01T23:59:59Z"), "db"),
				snapAt(3, mustTime("2026-05-02T00:00:00Z"), "db"),
				snapAt(4, mustTime("2026-05-02T00:00:01Z"), "db"),
				snapAt(5, mustTime("2026-05-03T23:59:59Z"), "db"),
				snapAt(6, mustTime("2026-05-04T00:00:00Z"), "db"),
				snapAt(7, mustTime("2026-05-04T06:00:00Z"), "db"),
			},
			p: snapshot.Policy{Daily: 3}, loc: utc,
		},
		{
			// ISO weeks across New Year: 2026 has a week 53 (Dec 28 - Jan 3),
			// and Sunday 23:59 and Monday 00:00 are different weeks.
			name:  "weekly-iso-year-end",
			snaps: series(mustTime("2026-12-20T23:59:00Z"), 12*time.Hour, 36),
			p:     snapshot.Policy{Weekly: 4}, loc: utc,
		},
		{
			// Month ends, a leap day, and the first instant of a month.
			name: "monthly-edges",
			snaps: []*snapshot.Snapshot{
				snapAt(1, mustTime("2027-12-31T23:59:59Z"), "db"),
				snapAt(2, mustTime("2028-01-01T00:00:00Z"), "db"),
				snapAt(3, mustTime("2028-01-31T12:00:00Z"), "db"),
				snapAt(4, mustTime("2028-02-01T00:00:00Z"), "db"),
				snapAt(5, mustTime("2028-02-29T23:00:00Z"), "db"),
				snapAt(6, mustTime("2028-03-01T00:00:00Z"), "db"),
				snapAt(7, mustTime("2028-03-15T00:00:00Z"), "db"),
			},
			p: snapshot.Policy{Monthly: 3, Yearly: 2}, loc: utc,
		},
		{
			// Fewer days than asked for: the oldest is kept as well, so
			// the history reaches back as far as it can (restic's rule).
			name:  "daily-oldest-kept",
			snaps: series(mustTime("2026-05-01T08:00:00Z"), 8*time.Hour, 8),
			p:     snapshot.Policy{Daily: 10}, loc: utc,
		},
		{
			// New York falls back on 2026-11-01 at 02:00 EDT: the hour
			// 01:00-01:59 happens twice and is one hourly bucket.
			name:  "new-york-fall-back-hourly",
			snaps: series(mustTime("2026-11-01T04:10:00Z"), 20*time.Minute, 12),
			p:     snapshot.Policy{Hourly: 3}, loc: ny,
		},
		{
			// New York springs forward on 2026-03-08 at 02:00 EST: there is
			// no 02h bucket, and the day has 23 hours.
			name:  "new-york-spring-forward",
			snaps: series(mustTime("2026-03-08T04:30:00Z"), 30*time.Minute, 10),
			p:     snapshot.Policy{Hourly: 4, Daily: 2}, loc: ny,
		},
		{
			// Daily buckets in New York vs UTC around the DST change: a
			// snapshot at 03:30Z is still the previous day in New York.
			name:  "new-york-daily",
			snaps: series(mustTime("2026-11-01T03:30:00Z"), 6*time.Hour, 9),
			p:     snapshot.Policy{Daily: 2}, loc: ny,
		},
		{
			// The same snapshots in UTC: different days, different choice.
			name:  "utc-daily-same-input",
			snaps: series(mustTime("2026-11-01T03:30:00Z"), 6*time.Hour, 9),
			p:     snapshot.Policy{Daily: 2}, loc: utc,
		},
		{
			// Kolkata is UTC+05:30: its day starts at 18:30Z.
			name: "kolkata-daily",
			snaps: []*snapshot.Snapshot{
				snapAt(1, mustTime("2026-05-01T10:00:00Z"), "db"),
				snapAt(2, mustTime("2026-05-01T18:29:59Z"), "db"),
				snapAt(3, mustTime("2026-05-01T18:30:00Z"), "db"),
				snapAt(4, mustTime("2026-05-01T23:00:00Z"), "db"),
				snapAt(5, mustTime("2026-05-02T18:00:00Z"), "db"),
				snapAt(6, mustTime("2026-05-02T19:00:00Z"), "db"),
			},
			p: snapshot.Policy{Daily: 3}, loc: kolkata,
		},
		{
			// Half-hour offset in hourly buckets: 10:15Z and 10:45Z are
			// 15:45 and 16:15 in Kolkata.
			name:  "kolkata-hourly",
			snaps: series(mustTime("2026-05-01T10:15:00Z"), 30*time.Minute, 6),
			p:     snapshot.Policy{Hourly: 2}, loc: kolkata,
		},
		{
			// Within 2d of the newest (not of now): exactly 2d older is
			// out, one second newer is in.
			name: "keep-within",
			snaps: []*snapshot.Snapshot{
				snapAt(1, mustTime("2026-05-01T00:00:00Z"), "db"),
				snapAt(2, mustTime("2026-05-08T11:59:59Z"), "db"),
				snapAt(3, mustTime("2026-05-08T12:00:00Z"), "db"),
				snapAt(4, mustTime("2026-05-08T12:00:01Z"), "db"),
				snapAt(5, mustTime("2026-05-09T00:00:00Z"), "db"),
				snapAt(6, mustTime("2026-05-10T12:00:00Z"), "db"),
			},
			p: snapshot.Policy{Within: within("2d")}, loc: utc,
		},
		{
			// Within 1m of March 31 goes back to March 3 (Go normalizes
			// February 31); a snapshot in the future is not the newest.
			name: "keep-within-months-future",
			snaps: []*snapshot.Snapshot{
				snapAt(1, mustTime("2027-03-02T23:00:00Z"), "db"),
				snapAt(2, mustTime("2027-03-03T00:00:01Z"), "db"),
				snapAt(3, mustTime("2027-03-20T00:00:00Z"), "db"),
				snapAt(4, mustTime("2027-03-31T00:00:00Z"), "db"),
				snapAt(5, mustTime("2031-01-01T00:00:00Z"), "db"),
			},
			p: snapshot.Policy{Within: within("1m")}, loc: utc,
		},
		{
			// Groups by host and source, last and tags together; each group
			// gets its own counts.
			name: "groups-last-tags",
			snaps: []*snapshot.Snapshot{
				snapAt(1, mustTime("2026-05-01T01:00:00Z"), "db-1", "weekly-full"),
				snapAt(2, mustTime("2026-05-01T02:00:00Z"), "db-2"),
				snapAt(3, mustTime("2026-05-01T03:00:00Z"), "db-1"),
				snapAt(4, mustTime("2026-05-01T04:00:00Z"), "db-2", "pinned"),
				snapAt(5, mustTime("2026-05-01T05:00:00Z"), "db-1"),
				snapAt(6, mustTime("2026-05-01T06:00:00Z"), "db-2"),
				snapAt(7, mustTime("2026-05-01T07:00:00Z"), "db-1"),
				snapAt(8, mustTime("2026-05-01T08:00:00Z"), "db-2"),
			},
			p: snapshot.Policy{Last: 2, Tags: []string{"pinned", "weekly-full"}},
			g: snapshot.GroupBy{Host: true, Source: true}, loc: utc,
		},
		{
			name: "no-grouping",
			snaps: []*snapshot.Snapshot{
				snapAt(1, mustTime("2026-05-01T01:00:00Z"), "db-1"),
				snapAt(2, mustTime("2026-05-01T02:00:00Z"), "db-2"),
				snapAt(3, mustTime("2026-05-02T03:00:00Z"), "db-1"),
				snapAt(4, mustTime("2026-05-02T04:00:00Z"), "db-2"),
			},
			p: snapshot.Policy{Daily: 1, Last: 1}, loc: utc,
		},
		{
			// A mix over a year and a half of daily snapshots at 02:00
			// New York time.
			name:  "mixed-long-history",
			snaps: series(mustTime("2025-06-15T06:00:00Z"), 24*time.Hour, 560),
			p:     snapshot.Policy{Last: 3, Daily: 7, Weekly: 5, Monthly: 12, Yearly: 3}, loc: ny,
		},
		{
			name:  "empty-policy",
			snaps: series(mustTime("2026-05-01T00:00:00Z"), time.Hour, 3),
			loc:   utc,
		},
		{
			// -1 is unlimited: every day's newest.
			name:  "daily-unlimited",
			snaps: series(mustTime("2026-05-01T00:00:00Z"), 10*time.Hour, 10),
			p:     snapshot.Policy{Daily: -1}, loc: utc,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := now
			if !tc.now.IsZero() {
				n = tc.now
			}
			groups := snapshot.ApplyPolicy(tc.snaps, tc.p, tc.g, tc.loc, n)
			got := renderPolicy(groups, tc.p, tc.g, tc.loc, n)
			kept := 0
			for _, g := range groups {
				for _, d := range g.Decisions {
					if d.Keep != (len(d.Reasons) > 0) {
						t.Fatalf("snapshot %s: keep=%v with reasons %q", d.Snapshot.ID.Str(), d.Keep, d.Reasons)
					}
					if d.Keep {
						kept++
					}
				}
			}
			if kept == 0 && len(tc.snaps) > 0 {
				t.Fatal("the policy removed every snapshot of a group; ApplyPolicy must keep the newest under any non-empty count rule")
			}
			golden(t, filepath.Join("testdata", "policy", tc.name+".golden"), got)
		})
	}
}

// golden compares got with the file, or rewrites it with -update.
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./snapshot -run Policy -update to create it)", err)
	}
	if string(want) != got {
		t.Errorf("%s differs from the golden file (go test -run Policy -update rewrites it after review):\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestPolicyParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want snapshot.Duration
		err  bool
	}{
		{"7d", snapshot.Duration{Days: 7}, false},
		{"36h", snapshot.Duration{Hours: 36}, false},
		{"1y6m", snapshot.Duration{Years: 1, Months: 6}, false},
		{"2y3m4d5h", snapshot.Duration{Years: 2, Months: 3, Days: 4, Hours: 5}, false},
		{"", snapshot.Duration{}, true},
		{"5d1y", snapshot.Duration{}, true},
		{"10s", snapshot.Duration{}, true},
		{"-1d", snapshot.Duration{}, true},
	} {
		got, err := snapshot.ParseDuration(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseDuration(%q) = %+v, %v", tc.in, got, err)
		}
	}
	for _, tc := range []struct {
		in   string
		want snapshot.GroupBy
		err  bool
	}{
		{"host,source", snapshot.GroupBy{Host: true, Source: true}, false},
		{"host", snapshot.GroupBy{Host: true}, false},
		{"source", snapshot.GroupBy{Source: true}, false},
		{"none", snapshot.GroupBy{}, false},
		{"tags", snapshot.GroupBy{}, true},
	} {
		got, err := snapshot.ParseGroupBy(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseGroupBy(%q) = %+v, %v", tc.in, got, err)
		}
	}
}
