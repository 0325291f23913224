//go:build !unix

package fdlimit

func softLimit() uint64 { return 0 }
