//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// ownProcessGroup starts the server in its own process group, so a Ctrl-C
// on a terminal reaches only snap, which takes the final backup and then
// passes the signal on.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
