package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStartRecording: SNAP_CPUPROFILE and SNAP_TRACE write their files
// when stopped, and a path that cannot be created is said on stderr and
// records nothing, without failing the command.
func TestStartRecording(t *testing.T) {
	dir := t.TempDir()
	prof, tr := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "trace.out")
	var stderr strings.Builder
	stopP, stopT := startProfile(prof, &stderr), startTrace(tr, &stderr)
	x := 0
	for i := range 1 << 20 {
		x += i
	}
	_ = x
	stopT()
	stopP()
	for _, p := range []string{prof, tr} {
		if fi, err := os.Stat(p); err != nil || fi.Size() == 0 {
			t.Errorf("%s: %v, %v", p, fi, err)
		}
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %q", stderr.String())
	}
	startTrace(filepath.Join(dir, "missing", "trace.out"), &stderr)()
	if !strings.Contains(stderr.String(), "snap: SNAP_TRACE: open ") {
		t.Errorf("stderr for a bad path: %q", stderr.String())
	}
	startProfile("", &stderr)()
}
