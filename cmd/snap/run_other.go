//go:build !unix

package main

import "os/exec"

// ownProcessGroup has nothing to do where there are no process groups.
func ownProcessGroup(*exec.Cmd) {}
