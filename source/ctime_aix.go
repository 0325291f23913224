//go:build aix

package source

import "syscall"

func ctimeNs(st *syscall.Stat_t) int64 { return st.Ctim.Sec*1e9 + int64(st.Ctim.Nsec) }
