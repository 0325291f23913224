package main

import (
	"os"
	"runtime"
)

// ioProcs doubles GOMAXPROCS for a backup or restore and returns the
// number of Ps there were (one per core, or the container's CPU limit) and
// the function that sets it back. Both spend much of their time in reads,
// writes and fsyncs (direct I/O never returns early from the page cache),
// and Go keeps a goroutine's P while it is blocked in a system call, so
// with one P per core the cores idle while the compressing or decoding
// goroutines wait for a P (a trace of a cold 2 GiB restore: Ps held in
// system calls for 3.4 of 7.2 P-seconds). The callers size their workers
// by the returned count, so memory does not grow with the Ps.
//
// Setting GOMAXPROCS turns off the runtime's tracking of the container's
// CPU limit, so the function turns it back on, unless the GOMAXPROCS
// environment variable had turned it off (snap run lives for months).
func ioProcs() (procs int, restore func()) {
	procs = runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(2 * procs)
	return procs, func() {
		if os.Getenv("GOMAXPROCS") != "" {
			runtime.GOMAXPROCS(procs)
		} else {
			runtime.SetDefaultGOMAXPROCS()
		}
	}
}
