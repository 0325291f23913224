package repo

// Microbenchmarks of the blob path that need the package's internals
// (sealing without a backend). Those that go through the public API and
// the in-memory backend are in bench_test.go, package repo_test: an internal
// test cannot import repo/mem, which imports repo. Run them with
//
//	go test -run '^$' -bench . -benchmem ./repo/
//
// They report; they assert nothing about speed. The whole-system benchmark
// is `make bench` (docs/performance.md).

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"

	"github.com/klauspost/compress/snappy"
)

// BenchInput returns n reproducible bytes of one kind of benchmark input:
//
//   - "json": JSON-like records (ids, timestamps, enumerations, a random
//     base64 payload), what applications keep in RocksDB;
//   - "sst": the same records snappy-compressed in 4 KiB blocks, roughly
//     what an SST file holds;
//   - "random": incompressible bytes.
//
// Exported for bench_test.go (package repo_test) only.
func BenchInput(kind string, n int) []byte {
	rng := rand.New(rand.NewPCG(1, uint64(len(kind))))
	switch kind {
	case "random":
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	case "json":
		return benchJSON(rng, n)
	case "sst":
		var out []byte
		for len(out) < n {
			out = append(out, snappy.Encode(nil, benchJSON(rng, 4<<10))...)
		}
		return out[:n]
	}
	panic("unknown benchmark input " + kind)
}

func benchJSON(rng *rand.Rand, n int) []byte {
	types := []string{"order.created", "order.paid", "user.login", "page.view", "cart.item_added", "payment.failed"}
	statuses := []string{"pending", "active", "completed", "failed"}
	countries := []string{"US", "DE", "FR", "GB", "BR", "IN", "JP"}
	agents := []string{"Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0", "okhttp/4.12.0",
		"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"}
	words := []string{"alpha", "bravo", "vip", "trial", "promo", "express", "legacy", "beta"}
	b := make([]byte, 0, n+4096)
	raw := make([]byte, 2048)
	for id := 0; len(b) < n; id++ {
		b = append(b, `{"id":`...)
		b = strconv.AppendInt(b, int64(id), 10)
		b = fmt.Appendf(b, `,"uuid":"%08x-%04x-4%03x-%04x-%012x","ts":"2026-11-21T16:%02d:%02d.%03dZ","created_ms":%d`,
			rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xfff, rng.Uint32()&0xffff, rng.Uint64()&0xffffffffffff,
			rng.IntN(60), rng.IntN(60), rng.IntN(1000), 1763742412000+rng.Int64N(3600000))
		b = fmt.Appendf(b, `,"user_id":%d,"account":"acct_%x","type":"%s","status":"%s","country":"%s","amount":%d.%02d`,
			rng.IntN(20_000_000), rng.Uint32(), types[rng.IntN(len(types))], statuses[rng.IntN(len(statuses))],
			countries[rng.IntN(len(countries))], rng.IntN(500), rng.IntN(100))
		b = fmt.Appendf(b, `,"ip":"10.%d.%d.%d","ua":"%s","tags":["%s","%s"],"attrs":{"score":%d,"variant":"%s-%d"}`,
			rng.IntN(256), rng.IntN(256), rng.IntN(256), agents[rng.IntN(len(agents))], words[rng.IntN(len(words))],
			words[rng.IntN(len(words))], rng.IntN(100000), words[rng.IntN(len(words))], rng.IntN(1000))
		pl := min(int(rng.ExpFloat64()*400), len(raw))
		for i := range pl {
			raw[i] = byte(rng.Uint32())
		}
		b = append(b, `,"payload":"`...)
		b = base64.StdEncoding.AppendEncode(b, raw[:pl])
		b = append(b, "\"}\n"...)
	}
	return b[:n]
}

// benchRepository is a Repository without a backend, enough to seal blobs.
func benchRepository(b *testing.B, compression string) *Repository {
	b.Helper()
	keys, err := deriveKeys(MasterKey{1, 2, 3})
	if err != nil {
		b.Fatal(err)
	}
	cfg := Config{Version: FormatVersion, ChunkerMin: 512 << 10, ChunkerAvg: 1 << 20, ChunkerMax: 8 << 20,
		PackSize: DefaultPackSize, Compression: compression}
	r, err := newRepository(nil, keys, cfg, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return r
}

// BenchmarkSeal is XChaCha20-Poly1305 over one 1 MiB blob.
func BenchmarkSeal(b *testing.B) {
	r := benchRepository(b, "off")
	plain := BenchInput("random", 1<<20)
	dst := make([]byte, 0, len(plain)+Overhead)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		dst = r.keys.Seal(dst[:0], plain)
	}
}

// BenchmarkSealBlob is what SaveBlob does to a chunk before packing it:
// compress (kept only if smaller) and seal, per input kind and level. The
// ratio metric is sealed bytes over plaintext bytes.
func BenchmarkSealBlob(b *testing.B) {
	for _, kind := range []string{"json", "sst", "random"} {
		plain := BenchInput(kind, 1<<20)
		for _, level := range []string{"off", "fastest", "default", "better"} {
			b.Run(kind+"/"+level, func(b *testing.B) {
				r := benchRepository(b, level)
				b.SetBytes(int64(len(plain)))
				b.ReportAllocs()
				var sealedLen int
				for b.Loop() {
					sealed, _ := r.sealBlob(plain)
					sealedLen = len(sealed)
					r.putBuf(sealed)
				}
				b.ReportMetric(float64(sealedLen)/float64(len(plain)), "ratio")
			})
		}
	}
}
