package repo

import (
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// Compression "auto" chooses per blob from a sample of it (docs/design.md,
// "Blobs"). The thresholds come from BenchmarkSealCalibrate and
// BenchmarkSealAuto in seal_bench_test.go (docs/performance.md,
// "Compression per chunk"):
//
//   - a blob whose sample does not shrink below autoRawRatio is stored as
//     it is: snappy tables of random values and random bytes sample at
//     1.00 and compress to 0.998-1.000 at SpeedDefault, while every
//     compressible input sampled at 0.83 or less;
//   - one whose sample shrinks below autoHardRatio is compressed at
//     SpeedDefault: only very compressible data (a Redis AOF samples at
//     0.16 and SpeedDefault stores 4% less than SpeedFastest; repetitive
//     tables of about a tenth of their size are where SpeedDefault stored
//     40% less in issue 19, and was faster);
//   - the rest is compressed at SpeedFastest: on tables and JSON that
//     sample at 0.29-0.83 SpeedDefault stored 0.4-3% less (6% more on
//     time series) for 2-3 times the CPU.
const (
	autoRawRatio  = 0.97
	autoHardRatio = 0.20

	// A blob up to autoWhole bytes is its own sample: it is compressed
	// whole at SpeedFastest, and that result is kept unless it says to
	// store the blob as it is, or to try SpeedDefault too (the shorter of
	// the two is kept).
	autoWhole = 64 << 10
	// Larger blobs are sampled in autoPieces pieces of autoPiece bytes,
	// evenly spread from the first byte to the last, compressed as one.
	autoPieces = 4
	autoPiece  = 4 << 10
)

// encoders are a repository's zstd encoders for its writers, made once and
// shared (EncodeAll is safe for concurrent use; each encoder allocates its
// state on first use, so one that is never needed costs nothing).
type encoders struct {
	fast *zstd.Encoder // the level's encoder; auto: samples and the middle class
	hard *zstd.Encoder // auto only: very compressible blobs
	auto bool

	samples sync.Pool // *[]byte of room for a sample and its compressed form
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
	newEnc := func(level zstd.EncoderLevel, allLit bool) (*zstd.Encoder, error) {
		return zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderCRC(false),
			zstd.WithEncoderConcurrency(concurrency), zstd.WithZeroFrames(true),
			zstd.WithAllLitEntropyCompression(allLit), zstd.WithLowerEncoderMem(lowMemory))
	}
	var err error
	switch {
	case comp == "off":
	case e.auto:
		// SpeedFastest skips the entropy coding of literals in blocks
		// without matches, which is what makes it fast on incompressible
		// data; auto stores such data as it is before it gets here, and
		// the entropy coding is what shrinks matchless but skewed data
		// (hex ids: 0.56 instead of 0.60 of the plaintext).
		if e.fast, err = newEnc(zstd.SpeedFastest, true); err != nil {
			return nil, err
		}
		if e.hard, err = newEnc(zstd.SpeedDefault, true); err != nil {
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
		switch r := ratio(len(out)-n, len(plain)); {
		case r >= autoRawRatio:
			return dst, false
		case r < autoHardRatio:
			// Both results are at hand for a small blob: keep the
			// shorter (SpeedDefault's is longer on some small ones).
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
	switch r := e.sampleRatio(plain); {
	case r >= autoRawRatio:
		return dst, false
	case r < autoHardRatio:
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
	const size = autoPieces * autoPiece
	bp, ok := e.samples.Get().(*[]byte)
	if !ok {
		b := make([]byte, 0, 2*size+1024)
		bp = &b
	}
	s := appendSample((*bp)[:0], plain)
	out := e.fast.EncodeAll(s, s[len(s):])
	r := ratio(len(out), len(s))
	*bp = s[:0]
	e.samples.Put(bp)
	return r
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

// sealBlob compresses (as the compression setting decides, and only when
// that shrinks it) and encrypts plain into a pooled buffer. The payload is
// compressed to where the sealed blob's ciphertext goes and encrypted in
// place, so each blob is written once by zstd and once by the cipher, with
// no copy between.
func (r *Repository) sealBlob(plain []byte) ([]byte, Compression) {
	buf := r.getBuf(Overhead + len(plain))[:nonceSize]
	comp := CompressionNone
	buf, ok := r.enc.compress(plain, buf)
	if ok {
		comp = CompressionZstd
	} else {
		buf = append(buf, plain...)
	}
	return r.keys.sealInPlace(buf), comp
}
