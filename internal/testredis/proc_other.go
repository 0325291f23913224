//go:build !linux

package testredis

import (
	"errors"
	"syscall"
)

// sysProcAttr: elsewhere the server shares the test's process group.
func sysProcAttr() *syscall.SysProcAttr { return nil }

// killGroup is not done here: kill falls back to killing the server alone.
func killGroup(int) error { return errors.New("no process groups here") }
