//go:build !linux

package repo

import "errors"

// thisMachine knows nothing without Linux's /proc: locks then use the time
// rule alone.
func thisMachine() machine { return machine{} }

func processStart(int) (uint64, error) { return 0, errors.New("no process start times on this system") }
