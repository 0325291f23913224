//go:build unix

package repo

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process used: on a shared machine a fairer
// measure than the wall clock, and what issue 18 counts (a backup's CPU).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
