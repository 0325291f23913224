package repo

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// auto stores a snappy table of random values as it is, although zstd
// would make it a little shorter: the sample says it does not pay, so
// the blob is not compressed at all. Compressible tables are compressed.
func TestSealAutoSkipsWhatDoesNotPay(t *testing.T) {
	e, err := newEncoders("auto", false)
	if err != nil {
		t.Fatal(err)
	}
	defer e.close()
	for _, kind := range []string{"sst-random-values", "random"} {
		for i, p := range sealInput(t, kind, 2<<20) {
			if out, ok := e.compress(p, []byte("x")); ok || !bytes.Equal(out, []byte("x")) {
				t.Errorf("%s blob %d: compressed (%v) to %d bytes, want stored as it is", kind, i, ok, len(out))
			}
		}
	}
	for _, kind := range []string{"sst-none", "sst-snappy", "sst-hex-small", "json", "aof"} {
		for i, p := range sealInput(t, kind, 2<<20) {
			if out, ok := e.compress(p, nil); !ok || len(out) >= len(p) {
				t.Errorf("%s blob %d: compressed %v to %d of %d bytes, want compressed", kind, i, ok, len(out), len(p))
			}
		}
	}
}

// Whatever auto does with a blob, it decodes to the same bytes, and what
// dst held before stays in front.
func FuzzSealAuto(f *testing.F) {
	f.Add([]byte{}, uint8(0))
	f.Add(bytes.Repeat([]byte("abc"), 30000), uint8(3))
	f.Add(BenchInput("json", 100<<10), uint8(1))
	f.Add(BenchInput("random", 70<<10), uint8(2))
	e, err := newEncoders("auto", false)
	if err != nil {
		f.Fatal(err)
	}
	defer e.close()
	dec, err := zstd.NewReader(nil)
	if err != nil {
		f.Fatal(err)
	}
	defer dec.Close()
	f.Fuzz(func(t *testing.T, p []byte, reps uint8) {
		// Repeating the input reaches the sampled sizes from short seeds.
		p = bytes.Repeat(p, int(reps%40)+1)
		prefix := []byte("nonce")
		out, ok := e.compress(p, append([]byte(nil), prefix...))
		if !bytes.HasPrefix(out, prefix) {
			t.Fatalf("prefix lost: %q", out[:min(len(out), 8)])
		}
		got := out[len(prefix):]
		if !ok {
			if len(got) != 0 {
				t.Fatalf("not compressed, yet %d bytes appended", len(got))
			}
			return
		}
		if len(got) >= len(p) {
			t.Fatalf("kept a compressed form of %d bytes for %d", len(got), len(p))
		}
		plain, err := dec.DecodeAll(got, nil)
		if err != nil || !bytes.Equal(plain, p) {
			t.Fatalf("decode: %v (equal %v)", err, bytes.Equal(plain, p))
		}
	})
}
