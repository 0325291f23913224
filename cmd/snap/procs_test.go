package main

import (
	"os"
	"runtime"
	"testing"
)

// TestIOProcs: a backup or restore runs with twice the Ps, sizes its
// workers by the Ps there were, and leaves GOMAXPROCS as it found it,
// whether the runtime or the environment had set it.
func TestIOProcs(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	for _, env := range []string{"", "7"} {
		if env == "" && os.Getenv("GOMAXPROCS") != "" {
			continue // the runtime's default is not what this test runs with
		}
		t.Setenv("GOMAXPROCS", env)
		procs, restore := ioProcs()
		if procs != before || runtime.GOMAXPROCS(0) != 2*before {
			t.Errorf("GOMAXPROCS=%q: ioProcs = %d with %d Ps; want %d and %d", env, procs, runtime.GOMAXPROCS(0), before, 2*before)
		}
		restore()
		if got := runtime.GOMAXPROCS(0); got != before {
			t.Errorf("GOMAXPROCS=%q: %d Ps after, want %d", env, got, before)
		}
	}
}
