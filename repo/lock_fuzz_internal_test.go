package repo

// Internal: lock objects are decoded by unexported functions.

import (
	"encoding/json"
	"errors"
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
