package repo

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// thisMachine identifies the running kernel and this process's pid
// namespace, so a lock can tell whether its writer ran here: the boot id
// changes with every boot, and the namespace tells two containers apart
// that share a kernel (and perhaps a host name). Without /proc it says
// nothing, and locks fall back to the time rule.
func thisMachine() machine {
	boot, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return machine{}
	}
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/pid", &st); err != nil {
		return machine{}
	}
	return machine{bootID: string(bytes.TrimSpace(boot)), pidNS: st.Ino, ok: true}
}

// processStart returns when process pid started, in clock ticks after
// boot (field 22 of /proc/PID/stat): with the pid, it names one process
// for the life of the machine, so a reused pid is not taken for the old
// process. It wraps fs.ErrNotExist when no such process runs.
func processStart(pid int) (uint64, error) {
	if pid <= 0 {
		return 0, fmt.Errorf("pid %d: %w", pid, fs.ErrNotExist)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatStart(string(b))
}

// parseStatStart reads the start time out of a /proc/PID/stat line. The
// command name, field 2, is in parentheses and may hold spaces and
// parentheses itself, so the fields are counted from the last ')'.
func parseStatStart(stat string) (uint64, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed /proc stat line")
	}
	f := strings.Fields(stat[i+1:]) // from field 3, the state
	if len(f) < 20 {
		return 0, errors.New("short /proc stat line")
	}
	return strconv.ParseUint(f[19], 10, 64)
}
