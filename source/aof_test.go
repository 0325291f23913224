package source

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// aofCmd is a command as Redis writes it to the AOF.
func aofCmd(args ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b.String()
}

// aofScanAll scans data at once and returns the items.
func aofScanAll(data []byte, off int64) (*AOFScanner, []AOFItem, int, error) {
	sc := NewAOFScanner(off)
	var items []AOFItem
	n, err := sc.Scan(data, func(it AOFItem) error {
		items = append(items, it)
		return nil
	})
	return sc, items, n, err
}

// aofScanPieces feeds data to a scanner in pieces whose sizes come from sizes
// (cycled; 1 byte each if empty), carrying what Scan left, as a follower
// reading a growing file does. It checks what holds after every call.
func aofScanPieces(t *testing.T, data []byte, off int64, sizes []int) (*AOFScanner, []AOFItem, int, error) {
	t.Helper()
	sc := NewAOFScanner(off)
	var items []AOFItem
	fn := func(it AOFItem) error {
		if sc.Offset() != it.End {
			t.Fatalf("in fn: Offset %d, item ends at %d", sc.Offset(), it.End)
		}
		items = append(items, it)
		return nil
	}
	var carry []byte
	consumed := 0
	for i, k := 0, 0; i < len(data); k++ {
		size := 1
		if len(sizes) > 0 {
			size = sizes[k%len(sizes)]
		}
		end := min(i+size, len(data))
		buf := append(carry, data[i:end]...)
		i = end
		n, err := sc.Scan(buf, fn)
		if n < 0 || n > len(buf) {
			t.Fatalf("Scan consumed %d of %d bytes", n, len(buf))
		}
		consumed += n
		if err != nil {
			return sc, items, consumed, err
		}
		if sc.Offset() != off+int64(consumed) {
			t.Fatalf("Offset %d after consuming %d bytes from %d", sc.Offset(), consumed, off)
		}
		// Again with the same remainder: nothing new is complete.
		if n, err := sc.Scan(buf[n:], fn); n != 0 || err != nil {
			t.Fatalf("Scan of the remainder again: %d, %v", n, err)
		}
		carry = buf[n:]
	}
	return sc, items, consumed, nil
}

// checkAOFScanner checks the invariants between a scanner's counters.
func checkAOFScanner(t *testing.T, sc *AOFScanner, items []AOFItem, off int64) {
	t.Helper()
	at := off
	for i, it := range items {
		if it.Off != at || it.End <= it.Off {
			t.Fatalf("item %d is [%d, %d), want it to start at %d", i, it.Off, it.End, at)
		}
		if it.Args == 0 && (it.Cmd != "" || it.TS < -1) || it.Args > 0 && it.TS != -1 {
			t.Fatalf("item %d: %+v", i, it)
		}
		at = it.End
	}
	if sc.Offset() != at {
		t.Fatalf("Offset %d, items end at %d", sc.Offset(), at)
	}
	if sc.SafeOffset() > sc.Offset() || sc.SafeOffset() < off {
		t.Fatalf("SafeOffset %d, Offset %d, start %d", sc.SafeOffset(), sc.Offset(), off)
	}
	if !sc.InMulti() && (sc.SafeOffset() != sc.Offset() || sc.PendingCommands() != 0) {
		t.Fatalf("outside MULTI: SafeOffset %d, Offset %d, pending %d", sc.SafeOffset(), sc.Offset(), sc.PendingCommands())
	}
	if sc.InMulti() && sc.PendingCommands() < 1 {
		t.Fatalf("in MULTI with %d pending commands", sc.PendingCommands())
	}
	var cmds int64
	for _, it := range items {
		if it.Args > 0 {
			cmds++
		}
	}
	if sc.Commands() != cmds {
		t.Fatalf("Commands %d, %d items are commands", sc.Commands(), cmds)
	}
}

func TestAOFScan(t *testing.T) {
	type item struct {
		text string
		cmd  string
		args int
		ts   int64
	}
	ann := func(text string, ts int64) item { return item{text, "", 0, ts} }
	command := func(args ...string) item {
		return item{aofCmd(args...), strings.ToUpper(args[0]), len(args), -1}
	}
	for _, tc := range []struct {
		name    string
		items   []item
		tail    string // an item not complete yet
		multi   bool
		safe    int // index of the item SafeOffset is at the start of; -1: Offset
		pending int64
		lastTS  int64
	}{
		{name: "empty", safe: -1, lastTS: -1},
		{
			name: "plain",
			items: []item{
				ann("#TS:1700000000\r\n", 1700000000), command("SELECT", "0"), command("set", "k", "v"),
				command("Set", "bin", "a\r\n*1\r\n#x\r\n$"), command("SET", "", ""), ann("#other\r\n", -1),
				ann("#TS:\r\n", -1), ann("#TS:12x\r\n", -1), ann("#TS:99999999999999999999\r\n", -1),
				ann("#ts:5\r\n", -1), ann("#\r\n", -1), ann("#TS:0042\r\n", 42),
			},
			tail: "*3\r\n$3\r\nSET\r\n$1\r\nk", safe: -1, lastTS: 42,
		},
		{
			name: "transaction",
			items: []item{
				command("SELECT", "1"), command("MULTI"), ann("#TS:5\r\n", 5), command("incr", "n"),
				command("EXEC"), command("multi"), command("set", "a", "b"), command("DiScArD"),
				command("MULTI"), {"*01\r\n$004\r\nEXEC\r\n", "EXEC", 1, -1}, // leading zeros are digits
			},
			safe: -1, lastTS: 5,
		},
		{
			name:  "open transaction",
			items: []item{command("SET", "a", "b"), command("MULTI"), command("SET", "c", "d"), ann("#TS:7\r\n", 7), command("DEL", "a")},
			tail:  "*1\r\n$4\r\nEX", multi: true, safe: 1, pending: 3, lastTS: 7,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const off = 1000
			var data []byte
			var want []AOFItem
			safe := int64(-1)
			for i, it := range tc.items {
				at := off + int64(len(data))
				if i == tc.safe {
					safe = at
				}
				data = append(data, it.text...)
				want = append(want, AOFItem{Off: at, End: off + int64(len(data)), Cmd: it.cmd, Args: it.args, TS: it.ts})
			}
			whole := off + int64(len(data))
			if safe < 0 {
				safe = whole
			}
			data = append(data, tc.tail...)
			check := func(sc *AOFScanner, items []AOFItem, n int, err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				if n != int(whole-off) {
					t.Errorf("consumed %d bytes, want %d", n, whole-off)
				}
				if !reflect.DeepEqual(items, want) {
					t.Errorf("items\n%+v\nwant\n%+v", items, want)
				}
				if sc.Offset() != whole || sc.SafeOffset() != safe || sc.InMulti() != tc.multi ||
					sc.PendingCommands() != tc.pending || sc.LastTS() != tc.lastTS {
					t.Errorf("Offset %d SafeOffset %d InMulti %v PendingCommands %d LastTS %d, want %d %d %v %d %d",
						sc.Offset(), sc.SafeOffset(), sc.InMulti(), sc.PendingCommands(), sc.LastTS(),
						whole, safe, tc.multi, tc.pending, tc.lastTS)
				}
				checkAOFScanner(t, sc, items, off)
			}
			sc, items, n, err := aofScanAll(data, off)
			check(sc, items, n, err)
			for _, size := range []int{1, 2, 3, 7, 64} {
				sc, items, n, err := aofScanPieces(t, data, off, []int{size})
				check(sc, items, n, err)
			}
			n, err = AOFBoundary(data, off)
			if err != nil || n != int(whole-off) {
				t.Errorf("AOFBoundary: %d, %v, want %d", n, err, whole-off)
			}
		})
	}
}

func TestAOFScanErrors(t *testing.T) {
	long := func(n int) string { return "#" + strings.Repeat("a", n-3) + "\r\n" } // an n-byte annotation
	ok := aofCmd("SET", "k", "v")
	for _, tc := range []struct {
		in   string
		off  int    // -1: no error, the input ends inside an item
		msg  string // part of the message
		good int    // bytes of whole items before the error
	}{
		{in: "x", off: 0, msg: "expected '*' or '#'"},
		{in: ok + "\r\n", off: len(ok), msg: `found "\r"`, good: len(ok)},
		{in: "*\r\n", off: 1, msg: "argument count: expected a digit"},
		{in: "*0\r\n", off: 0, msg: "argument count 0"},
		{in: "*-1\r\n", off: 1, msg: "expected a digit"},
		{in: "*+1\r\n", off: 1, msg: "expected a digit"},
		{in: "* 1\r\n", off: 1, msg: "expected a digit"},
		{in: "*1 \r\n", off: 2, msg: "expected a digit or"},
		{in: "*1\n", off: 2, msg: "expected a digit or"},
		{in: "*1\rx", off: 3, msg: `expected \n after \r`},
		{in: "*1048577\r\n", off: 0, msg: "over the limit"},
		{in: "*1048576\r\n", off: -1},
		{in: "*1234567890123456789", off: -1},
		{in: "*12345678901234567890", off: 20, msg: "more than 19 digits"},
		{in: "*99999999999999999999\r\n", off: 20, msg: "more than 19 digits"},
		{in: "*9999999999999999999\r\n", off: 0, msg: "over the limit"},
		{in: "*1\r\n#", off: 4, msg: "expected '$' starting argument 1 of 1"},
		{in: "*2\r\n$1\r\na\r\n*", off: 11, msg: "expected '$' starting argument 2 of 2"},
		{in: "*1\r\n$\r\n", off: 5, msg: "length of argument 1: expected a digit"},
		{in: "*1\r\n$-1\r\n", off: 5, msg: "length of argument 1: expected a digit"},
		{in: "*1\r\n$536870913\r\n", off: 4, msg: "over the limit"},
		{in: "*1\r\n$536870912\r\n", off: -1},
		{in: "*1\r\n$3\r\nSETx", off: 11, msg: `expected \r\n after the 3 bytes of argument 1`},
		{in: "*1\r\n$3\r\nSET\rx", off: 12, msg: `expected \n after the 3 bytes`},
		{in: "*1\r\n$3\r\nSET\r", off: -1},
		{in: "*1\r\n$3\r\nSE", off: -1},
		{in: "#abc\n", off: 4, msg: `\n alone`},
		{in: "#\n", off: 1, msg: `\n alone`},
		{in: "#a\rb", off: -1},
		{in: long(1023), off: -1, good: 1023},
		{in: long(1024), off: 0, msg: "annotation longer than 1023 bytes"},
		{in: long(1023)[:1022], off: -1},
		{in: long(1024)[:1023], off: 0, msg: "annotation longer than 1023 bytes"},
		{in: aofCmd("MULTI") + aofCmd("multi"), off: len(aofCmd("MULTI")), msg: "MULTI inside MULTI", good: len(aofCmd("MULTI"))},
		{in: aofCmd("exec"), off: 0, msg: "EXEC outside MULTI"},
		{in: aofCmd("MULTI") + aofCmd("EXEC") + aofCmd("DISCARD"), off: len(aofCmd("MULTI") + aofCmd("EXEC")), msg: "DISCARD outside MULTI", good: len(aofCmd("MULTI") + aofCmd("EXEC"))},
	} {
		const base = 100
		for _, size := range []int{0, 1, 5} {
			var sc *AOFScanner
			var n int
			var err error
			if size == 0 {
				sc, _, n, err = aofScanAll([]byte(tc.in), base)
			} else {
				sc, _, n, err = aofScanPieces(t, []byte(tc.in), base, []int{size})
			}
			if tc.off < 0 {
				if err != nil || n != tc.good {
					t.Errorf("%q in pieces of %d: consumed %d, %v; want %d, nil", tc.in, size, n, err, tc.good)
				}
				continue
			}
			var ae *AOFError
			if !errors.As(err, &ae) || ae.Off != base+int64(tc.off) || !strings.Contains(ae.Msg, tc.msg) || n != tc.good {
				t.Errorf("%q in pieces of %d: consumed %d, %v; want %d, an error at %d with %q", tc.in, size, n, err, tc.good, base+tc.off, tc.msg)
				continue
			}
			if want := fmt.Sprintf("AOF stream at offset %d: ", ae.Off); !strings.HasPrefix(err.Error(), want) {
				t.Errorf("%q: message %q", tc.in, err)
			}
			// Stuck: the same error again, also for good bytes.
			if n, err2 := sc.Scan([]byte(ok), nil); n != 0 || err2 != err {
				t.Errorf("%q: Scan after the error: %d, %v", tc.in, n, err2)
			}
			if sc.Offset() != base+int64(tc.good) {
				t.Errorf("%q: Offset %d after the error, want %d", tc.in, sc.Offset(), base+tc.good)
			}
		}
	}
}

func TestAOFScanFnError(t *testing.T) {
	data := []byte(aofCmd("SET", "a", "1") + aofCmd("SET", "b", "2") + aofCmd("SET", "c", "3"))
	sc := NewAOFScanner(0)
	stop := errors.New("stop")
	calls := 0
	n, err := sc.Scan(data, func(it AOFItem) error {
		calls++
		if calls == 2 {
			return stop
		}
		return nil
	})
	one := len(aofCmd("SET", "a", "1"))
	if err != stop || n != 2*one || calls != 2 || sc.Offset() != int64(2*one) {
		t.Fatalf("Scan: %d, %v after %d calls, Offset %d", n, err, calls, sc.Offset())
	}
	// Not stuck: fn's error is not the stream's.
	if n, err := sc.Scan(data[n:], nil); n != one || err != nil {
		t.Fatalf("Scan of the rest: %d, %v", n, err)
	}
	if sc.Commands() != 3 {
		t.Fatalf("Commands %d", sc.Commands())
	}
}

// TestAOFScanLarge feeds a command with many arguments in small pieces: it
// must not be parsed again from its start each time.
func TestAOFScanLarge(t *testing.T) {
	args := []string{"RPUSH", "list"}
	for i := range 50000 {
		args = append(args, strconv.Itoa(i))
	}
	data := []byte(aofCmd(args...))
	sc, items, n, err := aofScanPieces(t, data, 0, []int{100})
	if err != nil || n != len(data) || len(items) != 1 || items[0].Args != len(args) || items[0].Cmd != "RPUSH" {
		t.Fatalf("%d of %d bytes, %v, %+v", n, len(data), err, items)
	}
	checkAOFScanner(t, sc, items, 0)
}

// TestAOFScanAllocs: scanning a stream of known commands allocates nothing.
func TestAOFScanAllocs(t *testing.T) {
	data := aofSetStream(1000, 100)
	sc := NewAOFScanner(0)
	var cmds int
	fn := func(it AOFItem) error {
		if it.Cmd == "SET" {
			cmds++
		}
		return nil
	}
	if _, err := sc.Scan(data, fn); err != nil { // interns the names
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if n, err := sc.Scan(data, fn); err != nil || n != len(data) {
			t.Fatal(n, err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations a Scan of %d commands", allocs, 1000)
	}
	if cmds != 22*1000 { // AllocsPerRun runs it once more to warm up
		t.Errorf("%d SETs", cmds)
	}
}

// aofSetStream is n SET commands with values of size bytes.
func aofSetStream(n, size int) []byte {
	rnd := rand.New(rand.NewSource(1))
	val := make([]byte, size)
	var b []byte
	b = append(b, aofCmd("SELECT", "0")...)
	for i := range n {
		rnd.Read(val)
		b = append(b, aofCmd("SET", fmt.Sprintf("key:%08d", i), string(val))...)
	}
	return b
}

func BenchmarkAOFScan(b *testing.B) {
	data := aofSetStream(100000, 100)
	var cmds int64
	fn := func(it AOFItem) error {
		if it.Args > 0 {
			cmds++
		}
		return nil
	}
	b.Run("whole", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := NewAOFScanner(0).Scan(data, fn); err != nil {
				b.Fatal(err)
			}
		}
	})
	// As a follower reads: 64 KiB at a time, carrying the cut item.
	b.Run("64KiB", func(b *testing.B) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		buf := make([]byte, 0, 1<<17)
		for b.Loop() {
			sc := NewAOFScanner(0)
			buf = buf[:0]
			for i := 0; i < len(data); i += 1 << 16 {
				buf = append(buf, data[i:min(i+1<<16, len(data))]...)
				n, err := sc.Scan(buf, fn)
				if err != nil {
					b.Fatal(err)
				}
				buf = buf[:copy(buf, buf[n:])]
			}
		}
	})
}

// aofRefScan is a plain reading of the stream rules, for FuzzAOFScan to
// compare the scanner with: the whole items at the start of data and the
// offset of the first malformed byte or item, -1 if none.
func aofRefScan(data []byte, off int64) (items []AOFItem, bad int64) {
	// num reads digits and "\r\n" at data[i:]: the value, the index after,
	// and whether it is incomplete (0), done (1) or bad at index j (2).
	num := func(i int) (v uint64, j int, state int) {
		d := 0
		for i+d < len(data) && '0' <= data[i+d] && data[i+d] <= '9' {
			d++
		}
		switch {
		case d > 19:
			return 0, i + 19, 2
		case i+d == len(data):
			return 0, 0, 0
		case d == 0 || data[i+d] != '\r':
			return 0, i + d, 2
		case i+d+1 == len(data):
			return 0, 0, 0
		case data[i+d+1] != '\n':
			return 0, i + d + 1, 2
		}
		v, _ = strconv.ParseUint(string(data[i:i+d]), 10, 64)
		return v, i + d + 2, 1
	}
	at := func(i int) int64 { return off + int64(i) }
	inMulti := false
	i := 0
	for i < len(data) {
		it := AOFItem{Off: at(i), TS: -1}
		switch data[i] {
		case '#':
			nl := bytes.IndexByte(data[i:], '\n')
			if nl < 0 || nl >= 1023 {
				if len(data)-i >= 1023 {
					return items, at(i)
				}
				return items, -1
			}
			if data[i+nl-1] != '\r' {
				return items, at(i + nl)
			}
			line := string(data[i : i+nl-1])
			if ts, ok := strings.CutPrefix(line, "#TS:"); ok && len(ts) > 0 && len(ts) <= 19 && strings.Trim(ts, "0123456789") == "" {
				if v, err := strconv.ParseInt(ts, 10, 64); err == nil {
					it.TS = v
				}
			}
			i += nl + 1
		case '*':
			argc, j, st := num(i + 1)
			if st != 1 {
				return items, map[int]int64{0: -1, 2: at(j)}[st]
			}
			if argc == 0 || argc > 1<<20 {
				return items, at(i)
			}
			var name []byte
			for a := 0; a < int(argc); a++ {
				if j == len(data) {
					return items, -1
				}
				if data[j] != '$' {
					return items, at(j)
				}
				n, k, st := num(j + 1)
				if st != 1 {
					return items, map[int]int64{0: -1, 2: at(k)}[st]
				}
				if n > 512<<20 {
					return items, at(j)
				}
				end := k + int(n)
				switch {
				case end < len(data) && data[end] != '\r':
					return items, at(end)
				case end+1 < len(data) && data[end+1] != '\n':
					return items, at(end + 1)
				case end+2 > len(data):
					return items, -1
				}
				if a == 0 {
					name = data[k:end]
				}
				j = end + 2
			}
			up := []byte(string(name))
			for x, c := range up {
				if 'a' <= c && c <= 'z' {
					up[x] = c - 'a' + 'A'
				}
			}
			it.Cmd = string(up)
			it.Args = int(argc)
			switch it.Cmd {
			case "MULTI":
				if inMulti {
					return items, at(i)
				}
				inMulti = true
			case "EXEC", "DISCARD":
				if !inMulti {
					return items, at(i)
				}
				inMulti = false
			}
			i = j
		default:
			return items, at(i)
		}
		it.End = at(i)
		items = append(items, it)
	}
	return items, -1
}

func aofFuzzSeeds() []string {
	return []string{
		"",
		aofCmd("SELECT", "0") + aofCmd("SET", "k", "v"),
		"#TS:1700000000\r\n" + aofCmd("SELECT", "0") + aofCmd("set", "a", "b\r\n$1\r\n") + "#TS:1700000001\r\n",
		aofCmd("MULTI") + aofCmd("INCR", "n") + "#TS:5\r\n" + aofCmd("EXEC") + aofCmd("multi") + aofCmd("DEL", "x") + aofCmd("discard"),
		aofCmd("MULTI") + aofCmd("SET", "a", "b"),
		aofCmd("MULTI") + aofCmd("MULTI"),
		aofCmd("EXEC"),
		"*2\r\n$3\r\nGET\r\n$-1\r\n",
		"*0\r\n",
		"*1\r\n$0\r\n\r\n", // a command named ""
		"#x\n",
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nab",
		"garbage",
	}
}

// FuzzAOFScan: scanning in pieces gives what scanning at once does, and both
// agree with aofRefScan.
func FuzzAOFScan(f *testing.F) {
	for i, s := range aofFuzzSeeds() {
		f.Add([]byte(s), []byte{1}, uint32(i))
		f.Add([]byte(s), []byte{2, 7, 0, 30}, uint32(0))
	}
	f.Fuzz(func(t *testing.T, data, pieces []byte, start uint32) {
		off := int64(start)
		sc, items, n, err := aofScanAll(data, off)
		if n < 0 || n > len(data) {
			t.Fatalf("consumed %d of %d", n, len(data))
		}
		checkAOFScanner(t, sc, items, off)
		if sc.Offset() != off+int64(n) {
			t.Fatalf("Offset %d after consuming %d from %d", sc.Offset(), n, off)
		}
		var ae *AOFError
		if err != nil && (!errors.As(err, &ae) || ae.Off < sc.Offset() || ae.Off > off+int64(len(data))) {
			t.Fatalf("error %v with Offset %d", err, sc.Offset())
		}

		wantItems, bad := aofRefScan(data, off)
		if !reflect.DeepEqual(items, wantItems) {
			t.Fatalf("items\n%+v\nreference\n%+v", items, wantItems)
		}
		if (err != nil) != (bad >= 0) || err != nil && ae.Off != bad {
			t.Fatalf("error %v, reference has one at %d", err, bad)
		}

		sizes := make([]int, len(pieces))
		for i, p := range pieces {
			sizes[i] = int(p) + 1
		}
		sc2, items2, n2, err2 := aofScanPieces(t, data, off, sizes)
		if !reflect.DeepEqual(items2, items) {
			t.Fatalf("in pieces %v: items\n%+v\nat once\n%+v", sizes, items2, items)
		}
		if n2 != n || fmt.Sprint(err2) != fmt.Sprint(err) ||
			sc2.Offset() != sc.Offset() || sc2.SafeOffset() != sc.SafeOffset() || sc2.InMulti() != sc.InMulti() ||
			sc2.LastTS() != sc.LastTS() || sc2.Commands() != sc.Commands() || sc2.PendingCommands() != sc.PendingCommands() {
			t.Fatalf("in pieces %v: %d, %v, Offset %d SafeOffset %d; at once %d, %v, Offset %d SafeOffset %d",
				sizes, n2, err2, sc2.Offset(), sc2.SafeOffset(), n, err, sc.Offset(), sc.SafeOffset())
		}
		if bn, berr := AOFBoundary(data, off); bn != n || fmt.Sprint(berr) != fmt.Sprint(err) {
			t.Fatalf("AOFBoundary: %d, %v; Scan: %d, %v", bn, berr, n, err)
		}
	})
}

func TestParseAOFManifest(t *testing.T) {
	b := func(name string, seq int64) *AOFFile { return &AOFFile{name, seq, 'b'} }
	f := func(name string, seq int64, typ byte) AOFFile { return AOFFile{name, seq, typ} }
	for _, tc := range []struct {
		name, in string
		want     AOFManifest
		encoded  string // Encode's output if not in
	}{
		{
			name: "redis 7.0",
			in:   "file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
			want: AOFManifest{Base: b("appendonly.aof.1.base.rdb", 1), Incrs: []AOFFile{f("appendonly.aof.1.incr.aof", 1, 'i')}},
		},
		{
			name: "history",
			in: "file appendonly.aof.3.base.rdb seq 3 type b\n" +
				"file appendonly.aof.2.incr.aof seq 2 type h\n" +
				"file appendonly.aof.2.base.rdb seq 2 type h\n" +
				"file appendonly.aof.3.incr.aof seq 3 type i\n" +
				"file appendonly.aof.4.incr.aof seq 4 type i\n",
			want: AOFManifest{
				Base:    b("appendonly.aof.3.base.rdb", 3),
				History: []AOFFile{f("appendonly.aof.2.incr.aof", 2, 'h'), f("appendonly.aof.2.base.rdb", 2, 'h')},
				Incrs:   []AOFFile{f("appendonly.aof.3.incr.aof", 3, 'i'), f("appendonly.aof.4.incr.aof", 4, 'i')},
			},
		},
		{
			name: "quoted names",
			in: "file \"my aof.1.base.rdb\" seq 1 type b\n" +
				"file \"a\\\"b\\x01\\n\\r\\t\\a\\b\\xff'c\" seq 2 type h\n" +
				"file \"my aof.1.incr.aof\" seq 1 type i\n",
			want: AOFManifest{
				Base:    b("my aof.1.base.rdb", 1),
				History: []AOFFile{f("a\"b\x01\n\r\t\a\b\xff'c", 2, 'h')},
				Incrs:   []AOFFile{f("my aof.1.incr.aof", 1, 'i')},
			},
		},
		{
			name: "no base",
			in:   "file a.1.incr.aof seq 1 type i\nfile a.2.incr.aof seq 2 type i\n",
			want: AOFManifest{Incrs: []AOFFile{f("a.1.incr.aof", 1, 'i'), f("a.2.incr.aof", 2, 'i')}},
		},
		{name: "empty", in: "", want: AOFManifest{}},
		{
			name: "loose",
			in: "# a comment\n" +
				"  type i  SEQ 0007\tFILE x.incr   \r\n" +
				"file 'it\\'s' seq 3 type h extra value\n" +
				"file \"q\\zx\" seq 4 type h\n" + // an unknown escape is the letter
				"file ab\"c d\" seq 5 type h\n" + // quotes inside a word, as sdssplitargs reads them
				"file '\\'q\"x' seq 6 type h\n" +
				"file y seq 9 type h file z\n" + // the last one counts, as in Redis
				"file \xe9t\xe9 seq 8 type i\n" +
				"#no newline",
			want: AOFManifest{
				History: []AOFFile{f("it's", 3, 'h'), f("qzx", 4, 'h'), f("abc d", 5, 'h'), f("'q\"x", 6, 'h'), f("z", 9, 'h')},
				Incrs:   []AOFFile{f("x.incr", 7, 'i'), f("\xe9t\xe9", 8, 'i')},
			},
			encoded: "file \"it's\" seq 3 type h\nfile qzx seq 4 type h\nfile \"abc d\" seq 5 type h\n" +
				"file \"'q\\\"x\" seq 6 type h\nfile z seq 9 type h\nfile x.incr seq 7 type i\nfile \"\\xe9t\\xe9\" seq 8 type i\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseAOFManifest([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*m, tc.want) {
				t.Fatalf("parsed\n%+v\nwant\n%+v", *m, tc.want)
			}
			want := tc.encoded
			if want == "" {
				want = tc.in
			}
			enc := m.Encode()
			if string(enc) != want {
				t.Fatalf("Encode:\n%q\nwant\n%q", enc, want)
			}
			m2, err := ParseAOFManifest(enc)
			if err != nil || !reflect.DeepEqual(m2, m) {
				t.Fatalf("Encode then Parse: %+v, %v", m2, err)
			}
		})
	}
}

func TestParseAOFManifestErrors(t *testing.T) {
	ok := "file a seq 1 type i\n"
	for _, tc := range []struct{ in, msg string }{
		{"file a seq 1 type i", "line 1: no newline"},
		{ok + "\n", "line 2: blank line"},
		{ok + " \t\r\n", "line 2: blank line"},
		{"file a seq 1 type\n", "5 words"},
		{"file a seq 1\n", "4 words"},
		{"file a seq 1 type i x\n", "7 words"},
		{"file a seq 1 tipe i\n", "no type"},
		{"fil a seq 1 type i\n", "no file"},
		{"file a sek 1 type i\n", "no seq"},
		{"file \"\" seq 1 type i\n", "empty file name"},
		{"file '' seq 1 type i\n", "empty file name"},
		{"file a/b seq 1 type i\n", "is a path"},
		{"file /a seq 1 type i\n", "is a path"},
		{"file a\\b seq 1 type i\n", "is a path"},
		{"file \"a\\x00b\" seq 1 type i\n", "NUL"},
		{"file a\x00b seq 1 type i\n", "NUL"},
		{"file . seq 1 type i\n", `file name "."`},
		{"file .. seq 1 type i\n", `file name ".."`},
		{"file " + strings.Repeat("a", 256) + " seq 1 type i\n", "over 255"},
		{"file " + strings.Repeat("\x01", 255) + " seq 1 type i\n", "once written"},
		{"file a seq 0 type i\n", "seq \"0\""},
		{"file a seq -1 type i\n", "seq \"-1\""},
		{"file a seq +1 type i\n", "seq \"+1\""},
		{"file a seq 1x type i\n", "seq \"1x\""},
		{"file a seq \"\" type i\n", "seq \"\""},
		{"file a seq 9223372036854775808 type i\n", "seq"},
		{"file a seq 1 type x\n", "type \"x\""},
		{"file a seq 1 type bb\n", "type \"bb\""},
		{"file a seq 1 type B\n", "type \"B\""},
		{"file a seq 1 type \"\"\n", "type \"\""},
		{"file a seq 1 type b\nfile b seq 2 type b\n", "line 2: a second base"},
		{"file a seq 2 type i\nfile b seq 2 type i\n", "line 2: incr seq 2 after incr seq 2"},
		{"file a seq 2 type i\nfile b seq 1 type i\n", "line 2: incr seq 1 after incr seq 2"},
		{"file \"a seq 1 type i\n", "unbalanced quotes"},
		{"file 'a seq 1 type i\n", "unbalanced quotes"},
		{"file \"a\"b seq 1 type i\n", "closing quote"},
		{"file 'a'b seq 1 type i\n", "closing quote"},
		{"  # not a comment\n", "words"},
		{"file " + strings.Repeat("a", 1010) + " seq 1 type i\n", "line 1: longer than 1023"},
		{"#" + strings.Repeat("a", 1023) + "\n", "line 1: longer than 1023"},
		{strings.Repeat("# comment\n", aofManifestMax/10+1), "larger than"},
		{strings.Repeat("file "+strings.Repeat("\x01", 240)+" seq 1 type h\n", aofManifestMax/260), "once written"},
	} {
		_, err := ParseAOFManifest([]byte(tc.in))
		if err == nil || !strings.HasPrefix(err.Error(), "AOF manifest: ") || !strings.Contains(err.Error(), tc.msg) {
			in := tc.in
			if len(in) > 80 {
				in = in[:80] + "..."
			}
			t.Errorf("%q: %v, want an error with %q", in, err, tc.msg)
		}
	}
	// The longest line Redis reads is fine.
	line := "file " + strings.Repeat("a", 255) + " seq 1 type i"
	line += strings.Repeat(" k v", (1023-len(line))/4)
	line += strings.Repeat(" ", 1023-len(line))
	if _, err := ParseAOFManifest([]byte(line + "\n")); len(line) != 1023 || err != nil {
		t.Errorf("a line of %d bytes: %v", len(line), err)
	}
}

// FuzzAOFManifest: what parses, Encode writes back as the same manifest.
func FuzzAOFManifest(f *testing.F) {
	for _, s := range []string{
		"file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n",
		"file \"my aof.2.base.rdb\" seq 2 type b\nfile \"my aof.1.incr.aof\" seq 1 type h\nfile \"my aof.2.incr.aof\" seq 2 type i\n",
		"# c\nfile 'a\\'b' SEQ 3 Type h x y\nfile \"\\x41\\n\" seq 4 type i\r\n",
		"file a\"b c\" seq 1 type i\n",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseAOFManifest(data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "AOF manifest: ") {
				t.Fatalf("error %q", err)
			}
			return
		}
		enc := m.Encode()
		m2, err := ParseAOFManifest(enc)
		if err != nil {
			t.Fatalf("Encode wrote %q: %v", enc, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("parsed\n%+v\nEncode then Parse\n%+v", m, m2)
		}
		if enc2 := m2.Encode(); !bytes.Equal(enc, enc2) {
			t.Fatalf("Encode %q then %q", enc, enc2)
		}
	})
}

// TestAOFRedis reads what a real Redis 7 writes: the manifest (with history
// files and quoted names) and incr files with timestamps and transactions.
func TestAOFRedis(t *testing.T) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "redis.sock")
	cmd := exec.Command(bin, "--port", "0", "--unixsocket", sock, "--dir", dir, "--daemonize", "no",
		"--appendonly", "yes", "--aof-timestamp-enabled", "yes", "--save", "",
		"--appendfilename", "snap test.aof", "--aof-disable-auto-gc", "yes")
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("redis-server:\n%s", log.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rdb := redis.NewClient(&redis.Options{Network: "unix", Addr: sock})
	defer rdb.Close()
	for rdb.Ping(ctx).Err() != nil {
		select {
		case <-exited:
			t.Fatal("redis-server exited")
		case <-ctx.Done():
			t.Fatal("redis-server does not answer")
		case <-time.After(20 * time.Millisecond):
		}
	}
	do := func(args ...any) {
		t.Helper()
		if err := rdb.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	}
	write := func(tag string) {
		t.Helper()
		do("SET", tag+":a", "x\r\n*1\r\n#TS:1\r\n")
		if _, err := rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Incr(ctx, tag+":n")
			p.RPush(ctx, tag+":l", "1", "2", "3")
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		do("DEL", tag+":a")
	}
	write("one")
	do("BGREWRITEAOF")
	for {
		info, err := rdb.Info(ctx, "persistence").Result()
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(info, "aof_rewrite_in_progress:0") && strings.Contains(info, "aof_rewrite_scheduled:0") &&
			strings.Contains(info, "aof_last_bgrewrite_status:ok") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("rewrite does not end")
		case <-time.After(20 * time.Millisecond):
		}
	}
	write("two")

	aofDir := filepath.Join(dir, "appendonlydir")
	data, err := os.ReadFile(filepath.Join(aofDir, "snap test.aof.manifest"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ParseAOFManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	want := AOFManifest{
		Base:    &AOFFile{"snap test.aof.2.base.rdb", 2, 'b'},
		History: []AOFFile{{"snap test.aof.1.incr.aof", 1, 'h'}, {"snap test.aof.1.base.rdb", 1, 'h'}},
		Incrs:   []AOFFile{{"snap test.aof.2.incr.aof", 2, 'i'}},
	}
	if !reflect.DeepEqual(*m, want) {
		t.Fatalf("manifest %q parsed as\n%+v\nwant\n%+v", data, *m, want)
	}
	if enc := m.Encode(); !bytes.Equal(enc, data) {
		t.Fatalf("Encode:\n%q\nRedis wrote\n%q", enc, data)
	}

	for _, name := range []string{"snap test.aof.1.incr.aof", "snap test.aof.2.incr.aof"} {
		data, err := os.ReadFile(filepath.Join(aofDir, name))
		if err != nil {
			t.Fatal(err)
		}
		sc, items, n, err := aofScanAll(data, 0)
		if err != nil || n != len(data) {
			t.Fatalf("%s: %d of %d bytes, %v", name, n, len(data), err)
		}
		checkAOFScanner(t, sc, items, 0)
		var cmds []string
		for _, it := range items {
			if it.Args > 0 {
				cmds = append(cmds, it.Cmd)
			}
		}
		if got := strings.Join(cmds, " "); got != "SELECT SET MULTI INCR RPUSH EXEC DEL" {
			t.Errorf("%s: commands %s", name, got)
		}
		if name == "snap test.aof.1.incr.aof" && (items[0].Args != 0 || items[0].TS < time.Now().Add(-time.Hour).Unix()) {
			t.Errorf("%s: first item %+v, want a timestamp", name, items[0])
		}
		// A prefix of the file is never malformed, and SafeOffset is the
		// last cut outside MULTI..EXEC in it.
		safe := []int64{0}
		for _, it := range items {
			if it.Cmd == "MULTI" {
				continue
			}
			if it.Cmd == "EXEC" || safe[len(safe)-1] == it.Off {
				safe = append(safe, it.End)
			}
		}
		for cut := 0; cut <= len(data); cut++ {
			sc, _, _, err := aofScanAll(data[:cut], 0)
			want := int64(0)
			for _, s := range safe {
				if s <= int64(cut) {
					want = s
				}
			}
			if err != nil || sc.SafeOffset() != want {
				t.Fatalf("%s cut at %d: %v, SafeOffset %d, want %d", name, cut, err, sc.SafeOffset(), want)
			}
		}
	}
}
