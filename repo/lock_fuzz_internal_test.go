package repo

// Internal: lock objects are decoded by unexported functions.

import (
	"encoding/json"
	"errors"
	"os"
	"testing"
	"time"
)

// FuzzDecodeLock feeds arbitrary names and plaintexts (sealed with the
// repository key, so they reach the JSON decoder) and arbitrary sealed
// bytes: decoding never panics, and what it accepts is consistent.
func FuzzDecodeLock(f *testing.F) {
	k, err := deriveKeys(fuzzMaster)
	if err != nil {
		f.Fatal(err)
	}
	r := &Repository{keys: k}
	good, _ := json.Marshal(LockInfo{Version: 1, Time: time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC), Host: "h", PID: 1, Exclusive: true, Nonce: "00"})
	f.Add(true, good, false)
	f.Add(false, good, false)
	f.Add(false, []byte(`{"exclusive":false}`), false)
	f.Add(true, []byte(`{"time":"not a time"}`), false)
	f.Add(false, []byte(`null`), true)
	f.Fuzz(func(t *testing.T, exclusive bool, plain []byte, raw bool) {
		sealed := plain
		if !raw {
			sealed = k.Seal(nil, plain)
		}
		name := lockName(exclusive, sealed)
		if excl, ok := parseLockName(name); !ok || excl != exclusive {
			t.Fatalf("parseLockName(%q) = %v, %v", name, excl, ok)
		}
		info, err := r.decodeLock(name, sealed)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("decode error not marked corrupt: %v", err)
			}
			return
		}
		if info.Exclusive != exclusive {
			t.Fatalf("accepted a lock whose content says exclusive=%v under name %s", info.Exclusive, name)
		}
		// Another name for the same bytes is refused.
		if _, err := r.decodeLock(lockName(!exclusive, sealed), sealed); err == nil {
			t.Fatal("accepted a lock under the other kind's name")
		}
	})
}

func FuzzParseLockName(f *testing.F) {
	for _, s := range []string{"shared-" + string(make([]byte, 64)), "exclusive-00", "shared-", "", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		excl, ok := parseLockName(name)
		if !ok {
			return
		}
		prefix := sharedLockPrefix
		if excl {
			prefix = exclusiveLockPrefix
		}
		if len(name) != len(prefix)+64 || name[:len(prefix)] != prefix {
			t.Fatalf("accepted %q", name)
		}
	})
}

// TestLockDeadOnlyWhenCertain: a lock counts as its dead process's only
// when it was written on this machine (host, boot id, pid namespace) and
// its pid is gone or belongs to a process that started at another time.
func TestLockDeadOnlyWhenCertain(t *testing.T) {
	m := thisMachine()
	if !m.ok {
		t.Skip("no /proc")
	}
	own := m.processInfo(os.Getpid())
	if own == nil {
		t.Fatal("no process info for this process")
	}
	j := &lockJudge{host: "here", m: m}
	info := func(host string, pid int, p ProcessInfo) LockInfo {
		return LockInfo{Host: host, PID: pid, Process: &p}
	}
	reused := *own
	reused.Start++
	otherBoot := *own
	otherBoot.BootID = "another-boot"
	otherNS := *own
	otherNS.PIDNS++
	for _, c := range []struct {
		name string
		li   LockInfo
		dead bool
	}{
		{"this process", info("here", os.Getpid(), *own), false},
		{"pid reused by a later process", info("here", os.Getpid(), reused), true},
		{"no such pid", info("here", 1<<30, *own), true},
		{"another host", info("there", 1<<30, *own), false},
		{"another boot", info("here", 1<<30, otherBoot), false},
		{"another pid namespace", info("here", 1<<30, otherNS), false},
		{"an older snap's lock", LockInfo{Host: "here", PID: 1 << 30}, false},
	} {
		if got := j.dead(c.li); got != c.dead {
			t.Errorf("%s: dead = %v, want %v", c.name, got, c.dead)
		}
	}
}
