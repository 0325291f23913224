//go:build race

package repo

// raceEnabled skips tests too slow under the race detector that it has no
// use for (measurements).
const raceEnabled = true
