//go:build linux || openbsd || dragonfly || solaris || illumos

package source

import "syscall"

func ctimeNs(st *syscall.Stat_t) int64 { return st.Ctim.Nano() }
