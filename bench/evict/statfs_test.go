//go:build linux

package main

import "golang.org/x/sys/unix"

type unixStatfs struct{ unix.Statfs_t }

func statfs(path string, s *unixStatfs) error { return unix.Statfs(path, &s.Statfs_t) }

func (s *unixStatfs) isTmpfs() bool { return s.Type == unix.TMPFS_MAGIC }
