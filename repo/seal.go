package repo

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/bits"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Compression "auto" chooses per blob (docs/design.md, "Blobs"). The
// thresholds come from BenchmarkSealCalibrate in seal_bench_test.go, over
// RocksDB-format tables, JSON, an AOF, random bytes and real db_bench
// tables (docs/performance.md, "Compression per chunk"):
//
//   - a blob whose sample does not shrink below autoRawRatio is stored as
//     it is: snappy tables of random values and random bytes sample at
//     1.00 (SpeedDefault makes them 0.998-1.000), every compressible input
//     at 0.87 or less;
//   - one whose sample shrinks below autoHardRatio is compressed at
//     SpeedDefault: very compressible data (an AOF samples at 0.16;
//     SpeedDefault stores 4% less than SpeedFastest there);
//   - so is one whose content repeats from far back (farShare at least
//     autoFarShare): SpeedFastest's table forgets a position within about
//     farReach, SpeedDefault's long table does not, so on db_bench's
//     tables (far share 0.11-0.32 a chunk) SpeedDefault stored 9-29% less;
//   - the rest is compressed at SpeedFastest: on tables and JSON with a
//     far share of at most 0.095 a chunk SpeedDefault stored 0.4-3% less
//     (6% more on time series) for 2-3 times the CPU.
const (
	autoRawRatio  = 0.97
	autoHardRatio = 0.20
	autoFarShare  = 0.10

	// A blob up to autoWhole bytes is its own sample: it is compressed
	// whole at SpeedFastest, and that result is kept unless it says to
	// store the blob as it is, or far repeats say to try SpeedDefault too
	// (the shorter of the two is kept). Below this size a 16 KiB sample
	// would cost too large a share. A low ratio alone does not send a
	// small blob to SpeedDefault: on small tables of time series (0.14)
	// SpeedDefault stored 6% more, on AOFs and records no less.
	autoWhole = 256 << 10
	// Larger blobs are sampled in autoPieces pieces of autoPiece bytes,
	// evenly spread from the first byte to the last, compressed as one
	// (eight of 2 KiB told time series from AOFs less well).
	autoPieces = 4
	autoPiece  = 4 << 10
	// farShare's anchor byte is the one the sample holds closest to
	// autoAnchors times (8 a KiB: a byte of the content, not of the
	// framing around it, which a rarer byte tends to be).
	autoAnchors = 128
	farReach    = 64 << 10
)

// encoders are a repository's zstd encoders for its writers, made once and
// shared (EncodeAll is safe for concurrent use; each encoder allocates its
// state on first use, so one that is never needed costs nothing).
type encoders struct {
	fast *zstd.Encoder // the level's encoder; auto: samples and the middle class
	hard *zstd.Encoder // auto only: very compressible blobs, far repeats
	auto bool

	samples sync.Pool // *[]byte of room for a sample and its compressed form
	far     sync.Pool // *farTable
}

// newEncoders makes the encoders for compression setting comp, which is
// known (knownCompression). lowMemory keeps one encoder state per level,
// with zstd's smaller buffers.
func newEncoders(comp string, lowMemory bool) (*encoders, error) {
	e := &encoders{auto: comp == "auto"}
	concurrency := runtime.GOMAXPROCS(0)
	if lowMemory {
		concurrency = 1
	}
	newEnc := func(level zstd.EncoderLevel, allLit bool, opts ...zstd.EOption) (*zstd.Encoder, error) {
		return zstd.NewWriter(nil, append([]zstd.EOption{zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false),
			zstd.WithEncoderConcurrency(concurrency), zstd.WithZeroFrames(true),
			zstd.WithAllLitEntropyCompression(allLit), zstd.WithLowerEncoderMem(lowMemory)}, opts...)...)
	}
	var err error
	switch {
	case comp == "off":
	case e.auto:
		// SpeedFastest skips the entropy coding of literals in blocks
		// without matches, which is what makes it fast on incompressible
		// data; auto's sample keeps such data from it (but for blobs of
		// at most autoWhole), and the entropy coding is what shrinks
		// matchless but skewed data (tables of hex ids: 0.56 of the
		// plaintext instead of 0.60).
		if e.fast, err = newEnc(zstd.SpeedFastest, true); err != nil {
			return nil, err
		}
		// With lowMemory (a follower's AOF chunks, mostly under 1 MiB)
		// SpeedDefault's history is 1 MiB instead of 8: BenchmarkSealMemory.
		var hardOpts []zstd.EOption
		if lowMemory {
			hardOpts = append(hardOpts, zstd.WithWindowSize(1<<20))
		}
		if e.hard, err = newEnc(zstd.SpeedDefault, true, hardOpts...); err != nil {
			e.fast.Close()
			return nil, err
		}
	default:
		level := CompressionLevels[comp]
		if e.fast, err = newEnc(level, level >= zstd.SpeedDefault); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *encoders) close() {
	if e.fast != nil {
		e.fast.Close()
	}
	if e.hard != nil {
		e.hard.Close()
	}
}

// compress appends the compressed form of plain to dst and reports whether
// it is kept: false (dst returned as it was) when the blob is to be stored
// as it is, because compression is off, would not make it shorter, or
// (auto) its sample says it would not shrink enough to pay.
func (e *encoders) compress(plain, dst []byte) ([]byte, bool) {
	if e.fast == nil {
		return dst, false
	}
	n := len(dst)
	if !e.auto {
		return keepShorter(e.fast.EncodeAll(plain, dst), n, len(plain))
	}
	if len(plain) <= autoWhole {
		out := e.fast.EncodeAll(plain, dst)
		if ratio(len(out)-n, len(plain)) >= autoRawRatio {
			return dst, false
		}
		if len(plain) > farReach && e.farShare(plain, anchorByte(plain[:autoPieces*autoPiece])) >= autoFarShare {
			// Both results are at hand for a small blob: keep the
			// shorter.
			m := len(out)
			out = e.hard.EncodeAll(plain, out)
			if len(out)-m < m-n {
				out = append(out[:n], out[m:]...)
			} else {
				out = out[:m]
			}
		}
		return keepShorter(out, n, len(plain))
	}
	switch r, c := e.sample(plain); {
	case r >= autoRawRatio:
		return dst, false
	case r < autoHardRatio || e.farShare(plain, c) >= autoFarShare:
		return keepShorter(e.hard.EncodeAll(plain, dst), n, len(plain))
	}
	return keepShorter(e.fast.EncodeAll(plain, dst), n, len(plain))
}

// keepShorter keeps out, plain's compressed form after out[:n], only when
// it is shorter than plain.
func keepShorter(out []byte, n, plain int) ([]byte, bool) {
	if len(out)-n < plain {
		return out, true
	}
	return out[:n], false
}

func ratio(compressed, plain int) float64 {
	if plain == 0 {
		return 1
	}
	return float64(compressed) / float64(plain)
}

// sampleRatio compresses a sample of plain, which is longer than
// autoPieces*autoPiece, at SpeedFastest and returns compressed/sample.
func (e *encoders) sampleRatio(plain []byte) float64 {
	r, _ := e.sample(plain)
	return r
}

// sample returns sampleRatio and the byte whose count in the sample is
// closest to autoAnchors: farShare's anchor.
func (e *encoders) sample(plain []byte) (float64, byte) {
	const size = autoPieces * autoPiece
	bp, ok := e.samples.Get().(*[]byte)
	if !ok {
		b := make([]byte, 0, 2*size+1024)
		bp = &b
	}
	s := appendSample((*bp)[:0], plain)
	out := e.fast.EncodeAll(s, s[len(s):])
	r := ratio(len(out), len(s))
	c := anchorByte(s)
	*bp = s[:0]
	e.samples.Put(bp)
	return r, c
}

// anchorByte is the byte s, a sample of autoPieces*autoPiece bytes, holds
// closest to autoAnchors times.
func anchorByte(s []byte) byte {
	var hist [256]int32
	for _, b := range s {
		hist[b]++
	}
	c, best := byte(0), int32(math.MaxInt32)
	for i, n := range hist {
		if d := abs32(n - autoAnchors); n > 0 && d < best {
			c, best = byte(i), d
		}
	}
	return c
}

func abs32(x int32) int32 {
	if x < 0 {
		return -x
	}
	return x
}

// appendSample appends autoPieces pieces of autoPiece bytes of plain to
// dst, the first at plain's start, the last at its end.
func appendSample(dst, plain []byte) []byte {
	step := (len(plain) - autoPiece) / (autoPieces - 1)
	for i := range autoPieces {
		dst = append(dst, plain[i*step:i*step+autoPiece]...)
	}
	return dst
}

// farTable is farShare's memory: fingerprints of anchors and where the
// latest of each was, overwritten on collision as zstd's own tables are.
type farTable struct {
	fp  [farSlots]uint64
	pos [farSlots]int32
}

const farSlots = 1 << 13

// farShare estimates how much of plain repeats only from far back, beyond
// where SpeedFastest finds matches (its 32K-entry table forgets a position
// within about farReach bytes on compressible data) but SpeedDefault
// still does. Anchors are the occurrences of byte c (chosen from the
// sample, about 8 a KiB) that a hash of the 16 bytes after them keeps (a
// quarter), so a repeated string has its anchors at the same places in
// every copy. The share is of anchors whose 16 bytes were last seen more
// than farReach bytes earlier. Sixteen, not eight: JSON repeats short
// combinations of fields from far back, which SpeedDefault gains little
// from (0.10 of anchors with 8 bytes, 0.05-0.09 with 16, against
// 0.11-0.32 on db_bench's tables).
func (e *encoders) farShare(plain []byte, c byte) float64 {
	t, ok := e.far.Get().(*farTable)
	if !ok {
		t = new(farTable)
	} else {
		clear(t.fp[:])
	}
	defer e.far.Put(t)
	var anchors, far int
	for i := 0; ; {
		j := bytes.IndexByte(plain[i:], c)
		if j < 0 || i+j+17 > len(plain) {
			break
		}
		i += j + 1
		fp := binary.LittleEndian.Uint64(plain[i:]) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(plain[i+8:])*0xC2B2AE3D27D4EB4F, 31)
		fp |= 1 // 0 marks an empty slot
		m := fp * 0x9E3779B97F4A7C15
		if m>>62 != 0 { // a quarter of them, by content: about two per KiB
			continue
		}
		h := m >> (62 - 13) & (farSlots - 1)
		anchors++
		if t.fp[h] == fp && i-int(t.pos[h]) > farReach {
			far++
		}
		t.fp[h], t.pos[h] = fp, int32(i)
	}
	if anchors == 0 {
		return 0
	}
	return float64(far) / float64(anchors)
}

// sealBlob compresses (as the compression setting decides, and only when
// that shrinks it) and encrypts plain into a pooled buffer. The payload is
// compressed to where the sealed blob's ciphertext goes and encrypted in
// place, so each blob is written once by zstd and once by the cipher, with
// no copy between; one stored as it is is encrypted from where it lies.
func (r *Repository) sealBlob(plain []byte) ([]byte, Compression) {
	buf := r.getBuf(Overhead + len(plain))[:nonceSize]
	if buf, ok := r.enc.compress(plain, buf); ok {
		return r.keys.sealInPlace(buf), CompressionZstd
	}
	return r.keys.sealTo(buf, plain), CompressionNone
}
