package chain

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
)

const testChain = "00112233445566778899aabbccddeeff"

// resp encodes one command as Redis writes it to the AOF.
func resp(args ...string) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

// ts is a #TS: annotation of aof-timestamp-enabled.
func tsNote(sec int64) []byte { return fmt.Appendf(nil, "#TS:%d\r\n", sec) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// testTails are valid tail objects of every shape: one mark, several,
// with no bytes, with gaps, chunked.
func testTails() map[string]*Tail {
	set := resp("SET", "k", "v")
	id := func(s string) repo.ID { return repo.Hash([]byte(s)) }
	return map[string]*Tail{
		"one mark": {Chain: testChain, Host: "cache-1", File: "appendonly.aof.3.incr.aof", Seq: 3, Offset: 1234, End: 1234 + int64(len(set)),
			Ends: []int64{1234 + int64(len(set))}, Times: []int64{1764688000123}, Sinces: []int64{1764688000001}, Data: set},
		"marks": {Chain: testChain, Host: "cache-1", File: "appendonly.aof.1.incr.aof", Seq: 1, Offset: 0, End: 3 * int64(len(set)), Level: 2, Timestamps: true,
			Ends: []int64{int64(len(set)), int64(len(set)), 3 * int64(len(set))}, Times: []int64{1000, 2000, 3000}, Sinces: []int64{500, 1000, 2000},
			Data: cat(set, set, set)},
		"no bytes": {Chain: testChain, File: "appendonly.aof.1.incr.aof", Seq: 1, Offset: 77, End: 77,
			Ends: []int64{77}, Times: []int64{5000}, Sinces: []int64{5000}},
		"gaps": {Chain: testChain, File: "a.incr", Seq: 2, Offset: 10, End: 10 + 2*int64(len(set)), Level: 1,
			Ends: []int64{10 + int64(len(set)), 10 + 2*int64(len(set))}, Times: []int64{1000, 90000}, Sinces: []int64{0, 1000}, Gaps: []int{0, 1},
			Data: cat(set, set)},
		"chunked": {Chain: testChain, Host: "h", File: "appendonly.aof.9.incr.aof", Seq: 9, Offset: 100, End: 400, Level: 6,
			Ends: []int64{150, 400}, Times: []int64{1, 2}, Sinces: []int64{0, 1}, Gaps: []int{1},
			Chunks: []repo.ID{id("a"), id("b"), id("c")}, Sizes: []uint32{100, 100, 100}},
	}
}

// normalized is t with empty slices as nil: JSON gives [] for "gaps": [],
// Encode then leaves it out.
func normalized(t *Tail) Tail {
	c := *t
	if len(c.Ends) == 0 {
		c.Ends = nil
	}
	if len(c.Times) == 0 {
		c.Times = nil
	}
	if len(c.Sinces) == 0 {
		c.Sinces = nil
	}
	if len(c.Gaps) == 0 {
		c.Gaps = nil
	}
	if len(c.Chunks) == 0 {
		c.Chunks = nil
	}
	if len(c.Sizes) == 0 {
		c.Sizes = nil
	}
	if len(c.Data) == 0 {
		c.Data = nil
	}
	return c
}

func equalTails(a, b *Tail) bool { return reflect.DeepEqual(normalized(a), normalized(b)) }

func TestTailRoundTrip(t *testing.T) {
	for name, tl := range testTails() {
		t.Run(name, func(t *testing.T) {
			enc, err := tl.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(enc)
			if err != nil {
				t.Fatal(err)
			}
			if !equalTails(got, tl) {
				t.Fatalf("decoded %+v\nwant %+v", got, tl)
			}
			if got.Version != tailVersion {
				t.Fatalf("version %d", got.Version)
			}
			// Its name parses back to its ref.
			nm := tl.prefix() + "-" + repo.Hash(enc).String()
			ref, ok := ParseName(nm, 42)
			want := tl.ref()
			want.Name, want.Size = nm, 42
			if !ok || ref != want {
				t.Fatalf("ParseName(%q) = %+v, %v; want %+v", nm, ref, ok, want)
			}
		})
	}
}

func TestValidateRejects(t *testing.T) {
	for _, tt := range []struct {
		name   string
		base   string
		mutate func(*Tail)
		want   string
	}{
		{"version 0", "marks", func(t *Tail) { t.Version = 0 }, "version 0"},
		{"newer version", "marks", func(t *Tail) { t.Version = 2 }, "upgrade snap"},
		{"chain id short", "marks", func(t *Tail) { t.Chain = testChain[1:] }, "not 32 hex"},
		{"chain id upper case", "marks", func(t *Tail) { t.Chain = strings.ToUpper(testChain) }, "not 32 hex"},
		{"chain id not hex", "marks", func(t *Tail) { t.Chain = "g" + testChain[1:] }, "not 32 hex"},
		{"seq 0", "marks", func(t *Tail) { t.Seq = 0 }, "seq 0"},
		{"offset negative", "no bytes", func(t *Tail) { t.Offset = -1 }, "bytes [-1"},
		{"end before offset", "no bytes", func(t *Tail) { t.End = 76 }, "bytes [77, 76)"},
		{"level -1", "marks", func(t *Tail) { t.Level = -1 }, "level -1"},
		{"level 7", "marks", func(t *Tail) { t.Level = maxLevel + 1 }, "level 7"},
		{"no marks", "no bytes", func(t *Tail) { t.Ends, t.Times, t.Sinces = nil, nil, nil }, "0 ends"},
		{"fewer times", "marks", func(t *Tail) { t.Times = t.Times[:2] }, "3 ends, 2 times"},
		{"fewer sinces", "marks", func(t *Tail) { t.Sinces = t.Sinces[:2] }, "3 ends, 3 times, 2 sinces"},
		{"file with a slash", "marks", func(t *Tail) { t.File = "a/b" }, "file"},
		{"file empty", "marks", func(t *Tail) { t.File = "" }, "file"},
		{"file dot dot", "marks", func(t *Tail) { t.File = ".." }, "file"},
		{"ends out of order", "marks", func(t *Tail) { t.Ends[1] = t.Ends[0] - 1 }, "mark 1"},
		{"end before offset", "one mark", func(t *Tail) { t.Ends[0] = t.Offset - 1 }, "mark 0"},
		{"times out of order", "marks", func(t *Tail) { t.Times[2] = t.Times[1] - 1 }, "mark 2"},
		{"time negative", "no bytes", func(t *Tail) { t.Times[0], t.Sinces[0] = -5, -5 }, "mark 0"},
		{"since after time", "marks", func(t *Tail) { t.Sinces[0] = t.Times[0] + 1 }, "mark 0"},
		{"since negative", "marks", func(t *Tail) { t.Sinces[0] = -1 }, "mark 0"},
		{"since before the mark before", "marks", func(t *Tail) { t.Sinces[1] = t.Times[0] - 1 }, "starts before"},
		{"last end is not End", "marks", func(t *Tail) { t.End++ }, "last mark ends at"},
		{"last end is not End, chunked", "chunked", func(t *Tail) { t.Ends[1] = 399 }, "last mark ends at"},
		{"gap index too large", "gaps", func(t *Tail) { t.Gaps = []int{2} }, "gap index 2"},
		{"gap index negative", "gaps", func(t *Tail) { t.Gaps = []int{-1} }, "gap index -1"},
		{"gaps repeated", "gaps", func(t *Tail) { t.Gaps = []int{1, 1} }, "gap index 1"},
		{"gaps out of order", "gaps", func(t *Tail) { t.Gaps = []int{1, 0} }, "gap index 0"},
		{"inline too short", "marks", func(t *Tail) { t.Data = t.Data[1:] }, "inline bytes"},
		{"inline too long", "marks", func(t *Tail) { t.Data = append(t.Data, '*') }, "inline bytes"},
		{"inline bytes missing", "one mark", func(t *Tail) { t.Data = nil }, "0 inline bytes"},
		{"inline bytes for no bytes", "no bytes", func(t *Tail) { t.Data = []byte("x") }, "1 inline bytes"},
		{"inline over MaxInline", "no bytes", func(t *Tail) {
			t.End = t.Offset + MaxInline + 1
			t.Ends[0] = t.End
			t.Data = make([]byte, MaxInline+1)
		}, "inline bytes"},
		{"chunk sizes short", "chunked", func(t *Tail) { t.Sizes[2] = 99 }, "chunks hold 299 bytes"},
		{"chunk sizes long", "chunked", func(t *Tail) { t.Sizes[0] = 101 }, "chunks hold 301 bytes"},
		{"chunk of size 0", "chunked", func(t *Tail) { t.Sizes = []uint32{150, 0, 150} }, "size 0"},
		{"more sizes than chunks", "chunked", func(t *Tail) { t.Sizes = append(t.Sizes, 1) }, "3 chunks, 4 sizes"},
		{"sizes without chunks", "marks", func(t *Tail) { t.Sizes = []uint32{uint32(len(t.Data))} }, "0 chunks, 1 sizes"},
		{"both inline and chunks", "chunked", func(t *Tail) { t.Data = make([]byte, 300) }, "both inline bytes and chunks"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tl := testTails()[tt.base]
			tl.Version = tailVersion
			if err := tl.Validate(); err != nil {
				t.Fatalf("the valid tail: %v", err)
			}
			tt.mutate(tl)
			err := tl.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error with %q", err, tt.want)
			}
			if _, err := tl.Encode(); err == nil && !strings.Contains(tt.name, "version") {
				t.Fatal("Encode stored an invalid tail") // (Encode sets the version)
			}
		})
	}
}

// frame is a tail object's plaintext with a header the test chooses.
func frame(header string, data []byte) []byte {
	b := append(binary.AppendUvarint(nil, uint64(len(header))), header...)
	e, _ := coders()
	return e.EncodeAll(append(b, data...), nil)
}

func TestDecodeRejects(t *testing.T) {
	good := `{"version":1,"chain":"` + testChain + `","host":"","file":"f.incr","seq":1,"offset":0,"end":0,"level":0,"ends":[0],"times":[1],"sinces":[1]}`
	if _, err := Decode(frame(good, nil)); err != nil {
		t.Fatalf("the good header: %v", err)
	}
	huge := append(binary.AppendUvarint(nil, maxHeader+1), '{')
	e, _ := coders()
	for _, tt := range []struct {
		name  string
		plain []byte
	}{
		{"not zstd", []byte("not a frame")},
		{"empty", nil},
		{"empty frame", e.EncodeAll(nil, nil)},
		{"header longer than the frame", e.EncodeAll(append(binary.AppendUvarint(nil, 100), "{}"...), nil)},
		{"header over maxHeader", e.EncodeAll(huge, nil)},
		{"unknown field", frame(strings.Replace(good, `"level":0`, `"level":0,"colour":1`, 1), nil)},
		{"not JSON", frame("{nope", nil)},
		{"trailing bytes after the header", frame(good+`{"version":7}`, nil)},
		{"bytes for an empty range", frame(good, []byte("x"))},
		{"invalid", frame(strings.Replace(good, `"seq":1`, `"seq":0`, 1), nil)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Decode(tt.plain)
			if err == nil {
				t.Fatalf("decoded %+v", got)
			}
			if !errors.Is(err, repo.ErrCorrupt) {
				t.Fatalf("%v: not ErrCorrupt", err)
			}
		})
	}
	// A newer version is not corruption: it asks for a newer snap.
	_, err := Decode(frame(strings.Replace(good, `"version":1`, `"version":2`, 1), nil))
	if err == nil || errors.Is(err, repo.ErrCorrupt) || !strings.Contains(err.Error(), "upgrade snap") {
		t.Fatalf("newer version: %v", err)
	}
}

func TestParseNameRejects(t *testing.T) {
	hash := strings.Repeat("ab", repo.IDSize)
	ok := testChain + "-3-10-20-1000-2000-n"
	if _, good := ParseName(ok+"-"+hash, 1); !good {
		t.Fatalf("%s does not parse", ok)
	}
	fields := func(f ...string) string { return strings.Join(f, "-") + "-" + hash }
	for _, tt := range []struct{ name, in string }{
		{"six fields", fields(testChain, "3", "10", "20", "1000", "n")},
		{"eight fields", fields(testChain, "3", "10", "20", "1000", "2000", "3000", "n")},
		{"no hash", ok},
		{"seq 01", fields(testChain, "03", "10", "20", "1000", "2000", "n")},
		{"offset 00", fields(testChain, "3", "00", "20", "1000", "2000", "n")},
		{"end +20", fields(testChain, "3", "10", "+20", "1000", "2000", "n")},
		{"testT0 01000", fields(testChain, "3", "10", "20", "01000", "2000", "n")},
		{"empty number", fields(testChain, "3", "", "20", "1000", "2000", "n")},
		{"negative offset", testChain + "-3--10-20-1000-2000-n-" + hash},
		{"number too large", fields(testChain, "3", "10", "99999999999999999999", "1000", "2000", "n")},
		{"not a number", fields(testChain, "3", "1e3", "2000", "1000", "2000", "n")},
		{"seq 0", fields(testChain, "0", "10", "20", "1000", "2000", "n")},
		{"end before offset", fields(testChain, "3", "20", "10", "1000", "2000", "n")},
		{"t1 before testT0", fields(testChain, "3", "10", "20", "2000", "1000", "n")},
		{"flag x", fields(testChain, "3", "10", "20", "1000", "2000", "x")},
		{"flag gg", fields(testChain, "3", "10", "20", "1000", "2000", "gg")},
		{"flag empty", fields(testChain, "3", "10", "20", "1000", "2000", "")},
		{"flag upper case", fields(testChain, "3", "10", "20", "1000", "2000", "G")},
		{"chain short", fields(testChain[2:], "3", "10", "20", "1000", "2000", "n")},
		{"chain upper case", fields(strings.ToUpper(testChain), "3", "10", "20", "1000", "2000", "n")},
		{"hash short", ok + "-" + hash[2:]},
		{"hash upper case", ok + "-" + strings.ToUpper(hash)},
		{"hash not hex", ok + "-" + "zz" + hash[2:]},
		{"empty", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if ref, good := ParseName(tt.in, 1); good {
				t.Fatalf("ParseName(%q) = %+v", tt.in, ref)
			}
		})
	}
}

// FuzzTailDecode: Decode never panics, refuses with ErrCorrupt (or asks
// for a newer snap), and what it accepts encodes again to a tail that
// decodes equal, under a name that parses to its ref. Each input is tried
// as stored plaintext and as the content of a zstd frame, so that the
// mutator reaches the header and bytes, which a frame's checksum guards.
func FuzzTailDecode(f *testing.F) {
	for _, tl := range testTails() {
		enc, err := tl.Encode()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(enc)
		_, d := coders()
		plain, err := d.DecodeAll(enc, nil)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(plain)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecode(t, data)
		e, _ := coders()
		checkDecode(t, e.EncodeAll(data, nil))
	})
}

func checkDecode(t *testing.T, plain []byte) {
	t1, err := Decode(plain)
	if err != nil {
		if t1 != nil {
			t.Fatalf("Decode returned a tail and %v", err)
		}
		if !errors.Is(err, repo.ErrCorrupt) && !strings.Contains(err.Error(), "upgrade snap") {
			t.Fatalf("error is not ErrCorrupt: %v", err)
		}
		return
	}
	enc, err := t1.Encode()
	if err != nil {
		t.Fatalf("a decoded tail does not encode: %v", err)
	}
	t2, err := Decode(enc)
	if err != nil {
		t.Fatalf("an encoded tail does not decode: %v", err)
	}
	if !equalTails(t1, t2) {
		t.Fatalf("decoded %+v\nthen %+v", t1, t2)
	}
	nm := t1.prefix() + "-" + repo.Hash(enc).String()
	ref, ok := ParseName(nm, int64(len(enc)))
	want := t1.ref()
	want.Name, want.Size = nm, int64(len(enc))
	if !ok || ref != want {
		t.Fatalf("ParseName(%q) = %+v, %v; want %+v", nm, ref, ok, want)
	}
}

// FuzzParseName: ParseName never panics, and a name it accepts is the
// name Tail.prefix gives a tail of those fields (and Tail.ref the ref).
func FuzzParseName(f *testing.F) {
	hash := repo.Hash([]byte("x")).String()
	for _, tl := range testTails() {
		f.Add(tl.prefix() + "-" + hash)
	}
	f.Add(testChain + "-1-0-0-0-0-g-" + hash)
	f.Add(testChain + "-9223372036854775807-9223372036854775807-9223372036854775807-9223372036854775807-9223372036854775807-n-" + hash)
	f.Add(testChain + "-01-0-0-0-0-n-" + hash)
	f.Add(testChain + "-1-0-0-0-0-n")
	f.Add("")
	f.Fuzz(func(t *testing.T, name string) {
		ref, ok := ParseName(name, 7)
		if !ok {
			if ref != (Ref{}) {
				t.Fatalf("refused %q but returned %+v", name, ref)
			}
			return
		}
		if ref.Name != name || ref.Size != 7 {
			t.Fatalf("ref %+v of %q", ref, name)
		}
		tl := &Tail{Chain: ref.Chain, Seq: ref.Seq, Offset: ref.Offset, End: ref.End, Times: []int64{ref.T0, ref.T1}}
		if ref.Gap {
			tl.Gaps = []int{0}
		}
		prefix, _, _ := repo.SplitNamed(name)
		if p := tl.prefix(); p != prefix {
			t.Fatalf("%q parses to %+v, whose prefix is %q", name, ref, p)
		}
		got := tl.ref()
		got.Name, got.Size = name, 7
		if got != ref {
			t.Fatalf("%q parses to %+v; its tail's ref is %+v", name, ref, got)
		}
	})
}

// TestEncodeRefusesHugeHeader: a tail with more marks than a header holds
// is refused by Encode, not stored for Decode to refuse.
func TestEncodeRefusesHugeHeader(t *testing.T) {
	const testT0 = 1764688000000
	mk := func(n int) *Tail {
		tl := &Tail{Chain: testChain, File: "appendonly.aof.1.incr.aof", Seq: 1, Offset: 1 << 30, End: 1 << 30}
		for i := range n {
			// 100 ms ticks, no bytes: the smallest marks.
			tm := int64(testT0 + 100*i)
			tl.Ends, tl.Times, tl.Sinces = append(tl.Ends, tl.End), append(tl.Times, tm), append(tl.Sinces, tm)
		}
		return tl
	}
	day := mk(86400)
	enc, err := day.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(enc); err != nil {
		t.Fatal(err)
	}
	h, _ := json.Marshal(day)
	t.Logf("86400 marks: a header of %d bytes (%.1f a mark), %d stored", len(h), float64(len(h))/86400, len(enc))
	perMark := len(h) / 86400
	n := maxHeader/perMark + 1000
	if _, err := mk(n).Encode(); err == nil || !strings.Contains(err.Error(), "header of") {
		t.Fatalf("%d marks: Encode = %v", n, err)
	}
}
