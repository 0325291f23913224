//go:build unix

package fdlimit

import "golang.org/x/sys/unix"

// softLimit is the soft RLIMIT_NOFILE, 0 if unknown. (Go raises it to the
// hard limit at start-up, so it is what this process may really open.)
func softLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return uint64(rl.Cur)
}
