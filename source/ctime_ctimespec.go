//go:build darwin || freebsd || netbsd

package source

import "syscall"

func ctimeNs(st *syscall.Stat_t) int64 { return st.Ctimespec.Nano() }
