package repo

// Benchmarks behind compression "auto" (seal.go) and the table in
// docs/performance.md, "Compression per chunk":
//
//	go test -run '^$' -bench 'SealAuto|SealSample|SealCalibrate' -benchtime 3x ./repo/
//
// The inputs are what snap stores: RocksDB-format tables (Pebble's
// sstable writer in RocksDB's block-based format, bloom filters, 4 KiB
// blocks) of bench/gen-like records, uncompressed and snappy, large (cut
// into 1 MiB chunks, as the chunker does) and small (one blob per table,
// as a small write buffer makes); JSON-like text (a WAL, an AOF); random
// bytes. They report; they assert nothing about speed.

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/objstorage/objstorageprovider"
	"github.com/cockroachdb/pebble/v2/sstable"
	"github.com/klauspost/compress/zstd"
)

// benchKinds are sealKinds and, from SNAP_SEAL_FILES (a space-separated
// list of globs), real files as "files:GLOB" (1 MiB chunks, or whole
// files when smaller; up to the input's size).
func benchKinds() []string {
	kinds := slices.Clone(sealKinds)
	for _, g := range strings.Fields(os.Getenv("SNAP_SEAL_FILES")) {
		kinds = append(kinds, "files:"+g)
	}
	return kinds
}

// sealKinds are the benchmark inputs, in table order.
var sealKinds = []string{"sst-none", "sst-none-small", "sst-lean-small", "sst-snappy", "sst-snappy-small",
	"sst-dbbench", "sst-dbbench-snappy", "sst-dbbench-small", "sst-series-small", "sst-hex-small", "sst-random-values", "json", "aof", "random"}

// sealInput returns reproducible blobs of one kind, about total bytes in
// all: 1 MiB chunks, or whole small tables for the -small kinds.
func sealInput(tb testing.TB, kind string, total int) [][]byte {
	tb.Helper()
	const chunk = 1 << 20
	cut := func(b []byte) [][]byte {
		var out [][]byte
		for len(b) > 0 {
			n := min(chunk, len(b))
			out = append(out, b[:n])
			b = b[n:]
		}
		return out
	}
	rng := rand.New(rand.NewPCG(7, uint64(len(kind))))
	small := func(comp *sstable.CompressionProfile, payload float64) [][]byte {
		var out [][]byte
		for n := 0; n < total; {
			t := benchTable(tb, rng, comp, 96<<10+rng.IntN(96<<10), payload)
			out = append(out, t)
			n += len(t)
		}
		return out
	}
	switch kind {
	case "sst-none":
		return cut(benchTable(tb, rng, sstable.NoCompression, total, 400))
	case "sst-none-small":
		return small(sstable.NoCompression, 400)
	case "sst-lean-small":
		return small(sstable.NoCompression, 0)
	case "sst-snappy":
		return cut(benchTable(tb, rng, sstable.SnappyCompression, total, 400))
	case "sst-snappy-small":
		return small(sstable.SnappyCompression, 400)
	case "sst-dbbench":
		return cut(benchTable(tb, rng, sstable.NoCompression, total, -4))
	case "sst-dbbench-snappy":
		return cut(benchTable(tb, rng, sstable.SnappyCompression, total, -4))
	case "sst-dbbench-small":
		return small(sstable.NoCompression, -4)
	case "sst-series-small":
		return small(sstable.NoCompression, -3)
	case "sst-hex-small":
		return small(sstable.NoCompression, -2)
	case "sst-random-values":
		return cut(benchTable(tb, rng, sstable.SnappyCompression, total, -1))
	case "aof":
		return cut(benchAOF(rng, total))
	case "json", "random":
		return cut(BenchInput(kind, total))
	}
	if glob, ok := strings.CutPrefix(kind, "files:"); ok {
		files, err := filepath.Glob(glob)
		if err != nil || len(files) == 0 {
			tb.Fatalf("input %s: no files (%v)", kind, err)
		}
		var out [][]byte
		for n := 0; n < total && len(files) > 0; files = files[1:] {
			b, err := os.ReadFile(files[0])
			if err != nil {
				tb.Fatal(err)
			}
			for _, c := range cut(b) {
				out = append(out, c)
				n += len(c)
			}
		}
		return out
	}
	tb.Fatalf("unknown input %q", kind)
	return nil
}

type nopCloser struct{ *bytes.Buffer }

func (nopCloser) Close() error { return nil }

// benchTable writes a RocksDB-format table of about size bytes of
// bench/gen-like records: keys "evt:%016x" of distinct hashed numbers,
// JSON values whose random base64 payload averages payload bytes (0: none;
// -1: values of 100-1000 random bytes instead of records; -2: values of
// 32-256 random hex digits, as tables of hashes and ids hold).
func benchTable(tb testing.TB, rng *rand.Rand, comp *sstable.CompressionProfile, size int, payload float64) []byte {
	tb.Helper()
	type kv struct{ k, v []byte }
	var kvs []kv
	var text, pool []byte
	poolPos := 0
	for n := 0; n < size; {
		var v []byte
		switch {
		case payload == -1:
			v = make([]byte, 100+rng.IntN(900))
			for i := range v {
				v[i] = byte(rng.Uint32())
			}
		case payload == -4:
			if len(pool) == 0 {
				pool = dbBenchPool(rng)
			}
			if poolPos+100 > len(pool) {
				poolPos = 0
			}
			v = pool[poolPos : poolPos+100]
			poolPos += 100
		case payload == -3:
			v = fmt.Appendf(nil, `{"host":"web-%d","cpu":%d.%d,"mem":%d,"status":"ok"}`, rng.IntN(8), rng.IntN(100), rng.IntN(10), 1000+rng.IntN(50))
		case payload == -2:
			v = make([]byte, 32+rng.IntN(224))
			for i := range v {
				v[i] = "0123456789abcdef"[rng.IntN(16)]
			}
		default:
			i := bytes.IndexByte(text, '\n')
			if i < 0 { // the last record is cut short
				text = benchRecords(rng, 1<<20, payload)
				continue
			}
			v, text = text[:i], text[i+1:]
		}
		k := fmt.Appendf(nil, "evt:%016x", rng.Uint64())
		if payload == -4 {
			k = fmt.Appendf(nil, "%016d", rng.Uint64N(1e16))
		}
		if payload == -3 {
			k = fmt.Appendf(nil, "m:%013d", 1764000000000+len(kvs)*1000)
		}
		kvs = append(kvs, kv{k, v})
		n += len(k) + len(v)
	}
	slices.SortFunc(kvs, func(a, b kv) int { return bytes.Compare(a.k, b.k) })
	var buf bytes.Buffer
	w := sstable.NewWriter(objstorageprovider.NewRemoteWritable(nopCloser{&buf}), sstable.WriterOptions{
		TableFormat: sstable.TableFormatRocksDBv2, Compression: comp, BlockSize: 4 << 10,
		FilterPolicy: bloom.FilterPolicy(10),
	})
	for _, e := range kvs {
		if err := w.Set(e.k, e.v); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// dbBenchPool is db_bench's value pool (RandomGenerator): 1 MiB of
// 100-byte pieces, each 50 random printable characters written twice
// (--compression_ratio 0.5); values are its successive 100-byte slices.
func dbBenchPool(rng *rand.Rand) []byte {
	pool := make([]byte, 0, 1<<20)
	for len(pool) < 1<<20 {
		var raw [50]byte
		for i := range raw {
			raw[i] = byte(' ' + rng.IntN(95))
		}
		pool = append(append(pool, raw[:]...), raw[:]...)
	}
	return pool
}

// benchAOF is a Redis append-only file of counters and small hashes
// updated over and over: what snap follow ships.
func benchAOF(rng *rand.Rand, n int) []byte {
	var b []byte
	for len(b) < n {
		key := fmt.Sprintf("user:%d", rng.IntN(5000))
		switch rng.IntN(3) {
		case 0:
			b = fmt.Appendf(b, "*2\r\n$4\r\nINCR\r\n$%d\r\n%s:visits\r\n", len(key)+7, key)
		case 1:
			v := fmt.Sprint(rng.IntN(100000))
			b = fmt.Appendf(b, "*4\r\n$4\r\nHSET\r\n$%d\r\n%s\r\n$5\r\nscore\r\n$%d\r\n%s\r\n", len(key), key, len(v), v)
		default:
			v := fmt.Sprintf(`{"last_seen":%d,"page":"/p/%d"}`, 1764000000+len(b)/64, rng.IntN(300))
			b = fmt.Appendf(b, "*3\r\n$3\r\nSET\r\n$%d\r\n%s:last\r\n$%d\r\n%s\r\n", len(key)+5, key, len(v), v)
		}
	}
	return b[:n]
}

// benchRecords is benchJSON with a chosen mean payload.
func benchRecords(rng *rand.Rand, n int, payload float64) []byte {
	if payload == 400 {
		return benchJSON(rng, n)
	}
	// benchJSON's records with the payload cut to the wanted mean: the
	// payload is the last field, so cutting it keeps the structure.
	full := benchJSON(rng, n)
	var out []byte
	for line := range bytes.Lines(full) {
		i := bytes.LastIndex(line, []byte(`,"payload":"`))
		if i < 0 {
			continue
		}
		out = append(out, line[:i]...)
		pl := int(rng.ExpFloat64() * payload * 4 / 3)
		out = append(out, `,"payload":"`...)
		out = append(out, line[i+12:min(i+12+pl, len(line)-3)]...)
		out = append(out, "\"}\n"...)
	}
	return out
}

func benchEncoders(b *testing.B, comp string) *encoders {
	b.Helper()
	e, err := newEncoders(comp, false)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.close)
	return e
}

// BenchmarkSealAuto seals every blob of each input at each setting:
// MB/s of plaintext, and stored/plain (sealed bytes over plaintext). For
// auto, raw/fast/hard are the fractions of the input's bytes it stored
// as they are, at SpeedFastest and at SpeedDefault.
func BenchmarkSealAuto(b *testing.B) {
	keys, err := deriveKeys(MasterKey{1})
	if err != nil {
		b.Fatal(err)
	}
	for _, kind := range benchKinds() {
		blobs := sealInput(b, kind, 8<<20)
		var total int
		for _, p := range blobs {
			total += len(p)
		}
		for _, comp := range []string{"off", "fastest", "default", "better", "auto"} {
			b.Run(kind+"/"+comp, func(b *testing.B) {
				e := benchEncoders(b, comp)
				r := &Repository{keys: keys, enc: e}
				var stored int
				cpuLoop(b, total, func() {
					stored = 0
					for _, p := range blobs {
						sealed, _ := r.sealBlob(p)
						stored += len(sealed)
						r.putBuf(sealed)
					}
				})
				b.ReportMetric(float64(stored)/float64(total), "stored/plain")
				if comp == "auto" {
					var class [3]int
					for _, p := range blobs {
						class[autoClass(e, p)] += len(p)
					}
					for i, name := range []string{"raw", "fast", "hard"} {
						b.ReportMetric(float64(class[i])/float64(total), name)
					}
				}
			})
		}
	}
}

// cpuLoop runs fn as b's loop on one OS thread, n bytes an iteration,
// and reports MB per CPU-second of that thread beside the wall-time MB/s.
func cpuLoop(b *testing.B, n int, fn func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.SetBytes(int64(n))
	c0 := threadCPU()
	for b.Loop() {
		fn()
	}
	if c := threadCPU() - c0; c > 0 {
		b.ReportMetric(float64(n)*float64(b.N)/c.Seconds()/1e6, "MB/cpu-s")
	}
}

// autoClass is the class auto puts p in: 0 stored as it is, 1 SpeedFastest,
// 2 SpeedDefault.
func autoClass(e *encoders, p []byte) int {
	if len(p) <= autoWhole {
		switch {
		case ratio(len(e.fast.EncodeAll(p, nil)), len(p)) >= autoRawRatio:
			return 0
		case len(p) > farReach && e.farShare(p, anchorByte(p[:autoPieces*autoPiece])) >= autoFarShare:
			return 2
		}
		return 1
	}
	r, c := e.sample(p)
	switch {
	case r >= autoRawRatio:
		return 0
	case r < autoHardRatio || e.farShare(p, c) >= autoFarShare:
		return 2
	}
	return 1
}

// BenchmarkSealSample is the cost of the two estimators auto could use on a
// 1 MiB chunk, as MB/s of the chunk (a chunk's compression at SpeedFastest
// runs at 300-700 MB/s): the sample compressed at SpeedFastest, and the
// order-0 entropy of the same sample's bytes.
func BenchmarkSealSample(b *testing.B) {
	for _, kind := range []string{"sst-none", "sst-snappy", "json", "random"} {
		p := sealInput(b, kind, 1<<20)[0]
		e := benchEncoders(b, "auto")
		b.Run(kind+"/zstd", func(b *testing.B) {
			cpuLoop(b, len(p), func() { e.sampleRatio(p) })
		})
		b.Run(kind+"/far", func(b *testing.B) {
			_, c := e.sample(p)
			cpuLoop(b, len(p), func() { e.farShare(p, c) })
		})
		b.Run(kind+"/entropy", func(b *testing.B) {
			s := make([]byte, 0, autoPieces*autoPiece)
			cpuLoop(b, len(p), func() { entropyRatio(appendSample(s[:0], p)) })
		})
	}
}

// entropyRatio is the order-0 entropy of p's bytes over 8 bits: what a
// Huffman coder alone could make of p, blind to repeats.
func entropyRatio(p []byte) float64 {
	var hist [256]int
	for _, c := range p {
		hist[c]++
	}
	var h float64
	for _, n := range hist {
		if n > 0 {
			q := float64(n) / float64(len(p))
			h -= q * math.Log2(q)
		}
	}
	return h / 8
}

// BenchmarkSealCalibrate logs, per input, what each estimator predicted
// and what each level made of the blobs (compressed/plain, summed over the
// input): the numbers autoRawRatio and autoHardRatio were chosen from. Run
// with -v to see them.
func BenchmarkSealCalibrate(b *testing.B) {
	levels := map[string]*encoders{}
	for _, l := range []string{"fastest", "default", "better", "auto"} {
		levels[l] = benchEncoders(b, l)
	}
	lit, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false),
		zstd.WithZeroFrames(true), zstd.WithAllLitEntropyCompression(true))
	if err != nil {
		b.Fatal(err)
	}
	defer lit.Close()
	for b.Loop() {
	}
	b.Logf("%-18s %7s %8s %11s %8s %11s %8s %8s %8s %8s %8s", "input", "blobs", "sample", "min/max", "far", "min/max", "entropy", "fastest", "fast+lit", "default", "better")
	for _, kind := range benchKinds() {
		blobs := sealInput(b, kind, 8<<20)
		var total, fast, flit, def, better int
		var sample, ent, far float64
		flo, fhi := math.Inf(1), math.Inf(-1)
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, p := range blobs {
			total += len(p)
			var r float64
			if len(p) <= autoWhole {
				r = ratio(len(levels["fastest"].fast.EncodeAll(p, nil)), len(p))
			} else {
				r = levels["auto"].sampleRatio(p)
			}
			lo, hi = min(lo, r), max(hi, r)
			if len(p) > farReach {
				c := anchorByte(p[:autoPieces*autoPiece])
				if len(p) > autoWhole {
					_, c = levels["auto"].sample(p)
				}
				f := levels["auto"].farShare(p, c)
				far += f * float64(len(p))
				flo, fhi = min(flo, f), max(fhi, f)
			}
			sample += r * float64(len(p))
			s := p
			if len(p) > autoPieces*autoPiece {
				s = appendSample(nil, p)
			}
			ent += entropyRatio(s) * float64(len(p))
			fast += len(levels["fastest"].fast.EncodeAll(p, nil))
			flit += len(lit.EncodeAll(p, nil))
			def += len(levels["default"].fast.EncodeAll(p, nil))
			better += len(levels["better"].fast.EncodeAll(p, nil))
		}
		t := float64(total)
		b.Logf("%-18s %7d %8.3f  %.2f/%.2f %8.3f  %.2f/%.2f %8.3f %8.3f %8.3f %8.3f %8.3f", kind, len(blobs), sample/t, lo, hi,
			far/t, flo, fhi, ent/t, float64(fast)/t, float64(flit)/t, float64(def)/t, float64(better)/t)
	}
}

// BenchmarkSealMemory reports the heap a repository's encoders keep once
// they have compressed 1 MiB chunks of every class (an AOF, which auto
// compresses at SpeedDefault, and an uncompressed table, at SpeedFastest),
// per setting and memory mode, from two goroutines: what auto's second
// encoder costs.
func BenchmarkSealMemory(b *testing.B) {
	blobs := append(sealInput(b, "aof", 4<<20), sealInput(b, "sst-none", 4<<20)...)
	for _, comp := range []string{"fastest", "default", "auto"} {
		for _, low := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/lowmem=%v", comp, low), func(b *testing.B) {
				var heap uint64
				for b.Loop() {
					var m0, m1 runtime.MemStats
					runtime.GC()
					runtime.ReadMemStats(&m0)
					e, err := newEncoders(comp, low)
					if err != nil {
						b.Fatal(err)
					}
					done := make(chan struct{})
					for g := range 2 {
						go func() {
							defer func() { done <- struct{}{} }()
							dst := make([]byte, 0, 2<<20)
							for i := g; i < len(blobs); i += 2 {
								dst, _ = e.compress(blobs[i], dst[:0])
							}
						}()
					}
					<-done
					<-done
					runtime.GC()
					runtime.ReadMemStats(&m1)
					heap = m1.HeapInuse - m0.HeapInuse
					e.close()
				}
				b.ReportMetric(float64(heap)/(1<<20), "heap-MiB")
			})
		}
	}
}
