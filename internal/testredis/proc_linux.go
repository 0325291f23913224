package testredis

import "syscall"

// sysProcAttr puts the server in a process group of its own, so that kill
// reaches an AOF rewrite child too, and has Linux send it SIGTERM if the
// test process dies without stopping it (a timeout's panic, a SIGKILL),
// so no server outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killGroup sends SIGKILL to the process group pid leads.
func killGroup(pid int) error { return syscall.Kill(-pid, syscall.SIGKILL) }
