// Package fdlimit sizes how many files a backup or restore keeps open at
// once, so that a database of thousands of files fits under a process's
// descriptor limit (RLIMIT_NOFILE) with room for everything else: pack
// files, connections, the runtime's own.
package fdlimit

// Max is the most files a window holds, whatever the limit: beyond a few
// hundred, more open files only cost kernel memory.
const Max = 256

// Window returns how many files to keep open at once: a quarter of the
// soft descriptor limit, but at least least (what the caller needs to
// keep its goroutines busy), never more than half the limit, at most Max,
// and at least 1. Where the limit is unknown it is Max.
func Window(least int) int {
	return window(softLimit(), least)
}

// window is Window for a soft limit of soft descriptors (0: unknown).
func window(soft uint64, least int) int {
	if soft == 0 {
		return Max
	}
	n := max(soft/4, uint64(max(least, 0)))
	n = min(n, soft/2, Max)
	return int(max(n, 1))
}
