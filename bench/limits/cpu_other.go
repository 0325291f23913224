//go:build !unix

package main

// cpuSeconds is not measured here; MB per CPU-second is left out.
func cpuSeconds() float64 { return 0 }
