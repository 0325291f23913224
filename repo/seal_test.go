package repo_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
)

// hexBytes is matchless but skewed: random hex digits.
func hexBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = "0123456789abcdef"[rng.IntN(16)]
	}
	return b
}

// recordBytes are JSON-like records with no random payload: very
// compressible, the way small uncompressed tables of structured values are.
func recordBytes(rng *rand.Rand, n int) []byte {
	var b []byte
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, `{"id":%d,"user":%d,"type":"%s","status":"%s","ts":"2026-11-21T16:%02d:%02d.%03dZ"}`+"\n",
			i, rng.IntN(1000), words[rng.IntN(len(words))], words[rng.IntN(4)], rng.IntN(60), rng.IntN(60), rng.IntN(1000))
	}
	return b[:n]
}

// aofBytes is a Redis append-only file of counters updated over and over.
func aofBytes(rng *rand.Rand, n int) []byte {
	var b []byte
	for len(b) < n {
		key := fmt.Sprintf("user:%d:visits", rng.IntN(5000))
		b = fmt.Appendf(b, "*2\r\n$4\r\nINCR\r\n$%d\r\n%s\r\n", len(key), key)
	}
	return b[:n]
}

type autoInput struct {
	name  string
	plain []byte
	want  repo.Compression
}

func autoInputs(rng *rand.Rand) []autoInput {
	half := append(randomBytes(rng, 256<<10), textBytes(rng, 256<<10)...)
	return []autoInput{
		{"random large", randomBytes(rng, 700<<10), repo.CompressionNone},
		{"random small", randomBytes(rng, 20<<10), repo.CompressionNone},
		{"random tiny", randomBytes(rng, 3), repo.CompressionNone},
		{"empty", nil, repo.CompressionNone},
		{"text large", textBytes(rng, 900<<10), repo.CompressionZstd},
		{"text small", textBytes(rng, 5000), repo.CompressionZstd},
		{"records large", recordBytes(rng, 2<<20), repo.CompressionZstd},
		{"records just over the whole-blob size", recordBytes(rng, 64<<10+1), repo.CompressionZstd},
		{"aof", aofBytes(rng, 3<<20), repo.CompressionZstd},
		{"hex", hexBytes(rng, 300<<10), repo.CompressionZstd},
		{"hex small", hexBytes(rng, 30<<10), repo.CompressionZstd},
		{"zeros", make([]byte, 1<<20), repo.CompressionZstd},
		{"half random, half text", half, repo.CompressionZstd},
	}
}

// Every kind of input comes back as it went in, from a reopened
// repository, and auto stores incompressible input as it is (the flag
// says none and the blob is its plaintext plus the seal) and the rest
// compressed.
func TestCompressAutoRoundTrip(t *testing.T) {
	rng := newRand(t)
	be := mem.New()
	o := smallOptions()
	o.Compression = "auto"
	r := initRepo(t, be, o)
	inputs := autoInputs(rng)
	for _, in := range inputs {
		if _, err := r.SaveBlob(t.Context(), repo.DataBlob, r.BlobID(in.plain), in.plain); err != nil {
			t.Fatalf("%s: %v", in.name, err)
		}
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	r2, err := repo.Open(t.Context(), be, password, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.LoadIndex(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, in := range inputs {
		id := r2.BlobID(in.plain)
		loc, ok := r2.Index().Lookup(id)
		if !ok {
			t.Fatalf("%s: not in the index", in.name)
		}
		if loc.Compression != in.want {
			t.Errorf("%s: stored with compression %d, want %d", in.name, loc.Compression, in.want)
		}
		if loc.Compression == repo.CompressionNone && int(loc.Length) != len(in.plain)+repo.Overhead {
			t.Errorf("%s: stored as it is in %d bytes, want %d", in.name, loc.Length, len(in.plain)+repo.Overhead)
		}
		if loc.Compression == repo.CompressionZstd && int(loc.Length) >= len(in.plain)+repo.Overhead {
			t.Errorf("%s: compressed to %d bytes, no shorter than the plaintext (%d)", in.name, loc.Length, len(in.plain))
		}
		got, err := r2.LoadBlob(t.Context(), id, nil)
		if err != nil {
			t.Fatalf("%s: %v", in.name, err)
		}
		if !bytes.Equal(got, in.plain) {
			t.Errorf("%s: loaded %d bytes that differ from the %d saved", in.name, len(got), len(in.plain))
		}
	}
}

// storedLength saves plain into a fresh repository at compression comp and
// returns the blob's stored length and compression.
func storedLength(t *testing.T, comp string, lowMemory bool, plain []byte) (uint32, repo.Compression) {
	t.Helper()
	o := smallOptions()
	o.Compression = comp
	o.KDF = cheapKDF
	r, err := repo.Init(t.Context(), mem.New(), password, o, repo.Options{LowMemory: lowMemory})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	id := r.BlobID(plain)
	if _, err := r.SaveBlob(t.Context(), repo.DataBlob, id, plain); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	loc, ok := r.Index().Lookup(id)
	if !ok {
		t.Fatal("blob not in the index")
	}
	got, err := r.LoadBlob(t.Context(), id, nil)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("load at %s: %v (equal: %v)", comp, err, bytes.Equal(got, plain))
	}
	return loc.Length, loc.Compression
}

// Highly compressible input ends smaller under auto than under fastest, in
// both memory modes (a small blob, which auto compresses both ways, ends
// no larger); input that fastest leaves alone is not paid for: auto's blob
// is exactly the plaintext plus the seal.
func TestCompressAutoHarder(t *testing.T) {
	rng := newRand(t)
	for _, in := range []struct {
		name    string
		plain   []byte
		smaller bool
	}{
		{"records", recordBytes(rng, 1<<20), true},
		{"aof", aofBytes(rng, 1<<20), true},
		{"aof small", aofBytes(rng, 40<<10), false},
		{"records small", recordBytes(rng, 40<<10), false},
	} {
		for _, low := range []bool{false, true} {
			fast, _ := storedLength(t, "fastest", low, in.plain)
			auto, comp := storedLength(t, "auto", low, in.plain)
			if comp != repo.CompressionZstd || auto > fast || in.smaller && auto == fast {
				t.Errorf("%s (low memory %v): auto stored %d bytes (compression %d), fastest %d; want compressed, fewer (or as many: %v)",
					in.name, low, auto, comp, fast, !in.smaller)
			}
		}
	}
	plain := randomBytes(rng, 1<<20)
	if n, comp := storedLength(t, "auto", false, plain); comp != repo.CompressionNone || int(n) != len(plain)+repo.Overhead {
		t.Errorf("random: auto stored %d bytes with compression %d, want %d as it is", n, comp, len(plain)+repo.Overhead)
	}
}

// The config accepts auto, and new repositories get it; a repository made
// with an older setting keeps it, and a backup may override it either way.
func TestConfigCompression(t *testing.T) {
	rng := newRand(t)
	text := textBytes(rng, 100<<10)
	for _, tc := range []struct {
		init, override, want string
		wantComp             repo.Compression
	}{
		{"", "", "auto", repo.CompressionZstd},
		{"auto", "", "auto", repo.CompressionZstd},
		{"fastest", "", "fastest", repo.CompressionZstd},
		{"default", "", "default", repo.CompressionZstd},
		{"better", "", "better", repo.CompressionZstd},
		{"off", "", "off", repo.CompressionNone},
		{"off", "auto", "off", repo.CompressionZstd},
		{"auto", "off", "auto", repo.CompressionNone},
	} {
		t.Run(tc.init+"+"+tc.override, func(t *testing.T) {
			be := mem.New()
			o := smallOptions()
			o.Compression = tc.init
			initRepo(t, be, o).Close()
			r, err := repo.Open(t.Context(), be, password, repo.Options{Compression: tc.override})
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if got := r.Config().Compression; got != tc.want {
				t.Errorf("config compression %q, want %q", got, tc.want)
			}
			if err := r.LoadIndex(t.Context()); err != nil {
				t.Fatal(err)
			}
			id := r.BlobID(text)
			if _, err := r.SaveBlob(t.Context(), repo.DataBlob, id, text); err != nil {
				t.Fatal(err)
			}
			if err := r.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			if loc, _ := r.Index().Lookup(id); loc.Compression != tc.wantComp {
				t.Errorf("blob compression %d, want %d", loc.Compression, tc.wantComp)
			}
		})
	}
	o := smallOptions()
	o.Compression = "lz4"
	if _, err := repo.Init(t.Context(), mem.New(), password, o, repo.Options{}); err == nil || !strings.Contains(err.Error(), "want auto, off, fastest, default or better") {
		t.Errorf("init with compression lz4: %v, want the known settings listed", err)
	}
	be := mem.New()
	initRepo(t, be, smallOptions()).Close()
	if _, err := repo.Open(t.Context(), be, password, repo.Options{Compression: "lz4"}); err == nil || !strings.Contains(err.Error(), `unknown compression "lz4"`) {
		t.Errorf("open with compression lz4: %v, want unknown compression", err)
	}
}
