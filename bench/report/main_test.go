package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const testTSV = "step\ttool\trun\tcache\twall_s\tuser_s\tsys_s\tmax_rss_kib\trepo_bytes\tdata_bytes\tload1\tnote\n" +
	"backup-1\tsnap\t1\tcold\t1.000\t1.5\t0.1\t102400\t600000\t1000000\t0.5\t\n" +
	"backup-1\tsnap\t2\tcold\t3.000\t1.5\t0.1\t102400\t600000\t1000000\t0.5\t\n" +
	"backup-1\trestic\t1\tcold\t4.000\t3.0\t0.2\t204800\t500000\t1000000\t0.5\t\n" +
	"backup-1\trestic\t2\tcold\t4.000\t3.0\t0.2\t204800\t500000\t1000000\t0.5\t\n" +
	"backup-1\tsnap\t1\twarm\t1.000\t1.0\t0.1\t102400\t600000\t1000000\t0.5\t\n" +
	"backup-1\trestic\t1\twarm\t3.000\t2.0\t0.2\t204800\t500000\t1000000\t0.5\t\n" +
	"backup-1\tldb\t1\tcold\tn/a\t\t\t\t\t\t\tBackupEngine opens RocksDB databases\n" +
	"backup-2\tldb\t1\twarm\t0.500\t0.2\t0.1\t10240\t900000\t1010000\t0.5\t\n" +
	"backup-2\tsnap\t1\twarm\t0.250\t0.2\t0.1\t10240\t610000\t1010000\t0.5\t\n"

func writeFiles(t *testing.T) (dir, meta, tsv string) {
	dir = t.TempDir()
	meta, tsv = filepath.Join(dir, "meta.env"), filepath.Join(dir, "m.tsv")
	if err := os.WriteFile(tsv, []byte(testTSV), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(meta, []byte("shape=dir\nsize_label=64MiB\nruns=2\nevict=fadvise\nevict_resident_max=0\ndata_bytes_1=1000000\nload_before= 21:00 up 1 day, load average: 1.50, 1.00, 0.90\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, meta, tsv
}

// report runs the report over meta, tsv and lim (may be "") into dir and
// returns the markdown and the JSON file's path.
func report(t *testing.T, dir, meta, tsv, lim string) (md, js string) {
	t.Helper()
	mdPath, js := filepath.Join(dir, "r.md"), filepath.Join(dir, "r.json")
	if err := run(meta, tsv, lim, "", "", mdPath, js); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(mdPath)
	if err != nil {
		t.Fatal(err)
	}
	return string(out), js
}

func TestReportMediansRatiosAndNA(t *testing.T) {
	dir, meta, tsv := writeFiles(t)
	s, js := report(t, dir, meta, tsv, "")
	for _, want := range []string{
		"| 1. first backup | snap | 2.00 (1.00-3.00) |", // cold median of 1 and 3, with the range
		"| 1. first backup | restic | 4.00 (4.00-4.00) |",
		"n/a: BackupEngine opens RocksDB databases",
		"| 1. first backup | restic | 0.50 (2.00x) |", // cold time snap/restic 2/4
		"| 0.33 (3.00x) |", // warm 1/3
		"| 2. incremental backup | ldb backup/restore |  |  |  | 0.50 (2.00x) |",
		"| incremental, speed vs ldb backup | > 1x | | 2 yes |",
		"| first backup, repository vs restic | ≤ 1.06 | 1.2 no |",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}

	sum := filepath.Join(dir, "all.md")
	if err := runCombine([]string{js, js}, sum); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(sum)
	if err != nil {
		t.Fatal(err)
	}
	s = string(out)
	for _, want := range []string{
		"| dir | 1. first backup | cold | 2.00 | 4.00 (0.50) | | n/a |",
		"| dir | 2. incremental backup | warm | 0.25 | | | 0.50 (0.50) |",
		"| 1.50 → ? |",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}

func TestReportRejectsBadRows(t *testing.T) {
	dir, meta, _ := writeFiles(t)
	for name, body := range map[string]string{
		"short": "header\nbackup-1\tsnap\t1\tcold\t1.0\n",
		"bad":   "header\nbackup-1\tsnap\t1\tcold\tfast\t1\t1\t1\t1\t1\t1\t\n",
	} {
		tsv := filepath.Join(dir, name+".tsv")
		if err := os.WriteFile(tsv, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := run(meta, tsv, "", "", "", "", ""); err == nil || !strings.Contains(err.Error(), name+".tsv:2") {
			t.Errorf("%s: err = %v, want one naming line 2", name, err)
		}
	}
	if err := runCombine([]string{filepath.Join(dir, "nope.json")}, ""); err == nil {
		t.Error("combine of a missing file: no error")
	}
}

// TestReportStealExcluded reads measurements with the steal_s column
// beside ones without it, and reports the first backup's CPU use against
// the CPU time the host gave as well as against the wall time.
func TestReportStealExcluded(t *testing.T) {
	dir, meta, _ := writeFiles(t)
	tsv := filepath.Join(dir, "steal.tsv")
	// Cold: 1.6 CPU-s in 1 s on 2 cores of which 0.4 s were stolen: 160%
	// of the wall time, 200% of what was given. Warm: no steal recorded
	// (an old 12-column row), so no such row for it.
	body := "step\ttool\trun\tcache\twall_s\tuser_s\tsys_s\tmax_rss_kib\trepo_bytes\tdata_bytes\tload1\tsteal_s\tnote\n" +
		"backup-1\tsnap\t1\tcold\t1.000\t1.5\t0.1\t102400\t600000\t1000000\t0.5\t0.40\t\n" +
		"backup-1\trestic\t1\tcold\t4.000\t3.0\t0.2\t204800\t500000\t1000000\t0.5\t0.10\t\n" +
		"backup-1\trestic\t1\twarm\tn/a\t\t\t\t\t\t\t\trestic was not installed\n" +
		"backup-1\tsnap\t1\twarm\t1.000\t1.5\t0.1\t102400\t600000\t1000000\t0.5\t\n"
	lim := filepath.Join(dir, "limits.json")
	for p, b := range map[string]string{tsv: body, lim: `{"threads": 2, "results": []}`} {
		if err := os.WriteFile(p, []byte(b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, js := report(t, dir, meta, tsv, lim)
	for _, want := range []string{
		"| first backup, CPU % (every core busy: 200 on 2) | ≥ 90 × cores | 160 no | 160 no |",
		"| first backup, CPU % of the CPU time the host gave (steal excluded) | ≥ 90 × cores | 200 yes | |",
		"n/a: restic was not installed",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
	js2, err := os.ReadFile(js)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js2), `"steal_s": 0.4`) {
		t.Errorf("JSON lacks the run's steal:\n%s", js2)
	}
}
