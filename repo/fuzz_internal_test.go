package repo

// Internal: decodeKeyFile and the Keys of a repository are unexported.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

var fuzzMaster = MasterKey{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}

const (
	fuzzPassword  = "fuzz password"
	fuzzGenerated = "snapkey1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
)

func FuzzDecodeKeyFile(f *testing.F) {
	cheap := KDFParams{Time: 1, MemoryKiB: 8, Threads: 1}
	kf, err := newKeyFile(fuzzMaster, fuzzPassword, cheap, time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(kf)
	gkf, err := newGeneratedKeyFile(fuzzMaster, fuzzGenerated, time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(gkf)
	f.Add([]byte(`{"version":1,"kdf":"blake3","time":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA==","data":""}`))
	f.Add([]byte(`{"version":1,"kdf":"blake3","salt":"AAAAAAAAAAAAAAAAAAAAAA==","data":"AAAA"}`))
	compact := new(bytes.Buffer)
	if err := json.Compact(compact, kf); err != nil {
		f.Fatal(err)
	}
	f.Add(compact.Bytes())
	// Key files before the user field, and with odd users.
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(kf, &fields); err != nil {
		f.Fatal(err)
	}
	for _, u := range []string{"", `null`, `"root"`, `"\u0000\n"`, `42`} {
		delete(fields, "user")
		if u != "" {
			fields["user"] = json.RawMessage(u)
		}
		b, err := json.Marshal(fields)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":1,"memory_kib":8,"threads":1,"salt":"AAAAAAAAAAAAAAAAAAAAAA==","data":""}`))
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":100,"memory_kib":4194304,"threads":255}`))
	// At the bounds and just past them.
	salt := `"salt":"AAAAAAAAAAAAAAAAAAAAAA=="`
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":8,"memory_kib":1048576,"threads":16,` + salt + `}`))
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":9,"memory_kib":1048576,"threads":2,` + salt + `}`))
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":1,"memory_kib":1048577,"threads":2,` + salt + `}`))
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":1,"memory_kib":8,"threads":17,` + salt + `}`))
	f.Add([]byte(`{"version":1,"kdf":"argon2id","time":4294967295,"memory_kib":4294967295,"threads":1,` + salt + `}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		kf, err := decodeKeyFile(data)
		if err != nil {
			if kf != nil {
				t.Fatal("key file and error")
			}
			return
		}
		if kf.Version != keyFileVersion || len(kf.Salt) < 16 ||
			!(kf.KDF == "argon2id" && kf.KDFParams.validate() == nil || kf.KDF == "blake3" && kf.KDFParams == (KDFParams{})) {
			t.Fatalf("accepted %+v", kf)
		}
		if kf.generated() {
			// A generated key's file opens only with a generated key,
			// to the master key it was made with or not at all.
			if _, err := kf.open(fuzzPassword); !errors.Is(err, ErrWrongPassword) {
				t.Fatalf("a generated key's file, opened with a password: %v", err)
			}
			mk, err := kf.open(fuzzGenerated)
			if err == nil && mk != fuzzMaster {
				t.Fatalf("a changed generated key's file opened to another master key")
			}
			if err != nil && !errors.Is(err, ErrWrongPassword) && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v", err)
			}
			return
		}
		// What a crafted key file can make Open spend.
		if p := kf.KDFParams; p.Time > 100 || p.MemoryKiB > 1<<20 || uint64(p.Time)*uint64(p.MemoryKiB) > 8<<20 || p.Threads > 16 {
			t.Fatalf("accepted Argon2id parameters past the bounds: %+v", p)
		}
		// Running Argon2id is affordable only for cheap parameters.
		if kf.Time > 2 || kf.MemoryKiB > 1024 || kf.Threads > 4 {
			return
		}
		mk, err := kf.open(fuzzPassword)
		if err == nil && mk != fuzzMaster {
			t.Fatalf("a changed key file opened to another master key")
		}
		if err != nil && !errors.Is(err, ErrWrongPassword) && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("open: %v", err)
		}
	})
}

func FuzzOpenSealed(f *testing.F) {
	k, err := deriveKeys(fuzzMaster)
	if err != nil {
		f.Fatal(err)
	}
	// The only inputs that may open: what k sealed. Fixed nonces, because
	// every fuzz worker process builds this list anew and must agree.
	seal := func(n byte, plain []byte) []byte {
		nonce := bytes.Repeat([]byte{n}, k.aead.NonceSize())
		return k.aead.Seal(nonce, nonce, plain, nil)
	}
	sealed := [][]byte{
		seal(1, nil),
		seal(2, []byte("hello")),
		seal(3, bytes.Repeat([]byte{0xaa}, 1000)),
	}
	for _, s := range sealed {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add(make([]byte, Overhead-1))
	f.Add(make([]byte, Overhead))
	f.Add(make([]byte, 100))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := k.Open([]byte("dst"), in)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("open: %v, want ErrCorrupt", err)
			}
			return
		}
		known := false
		for _, s := range sealed {
			known = known || bytes.Equal(s, in)
		}
		if !known {
			t.Fatalf("opened %d bytes that k never sealed", len(in))
		}
		if len(out) != 3+len(in)-Overhead || string(out[:3]) != "dst" {
			t.Fatalf("opened %d bytes to %d", len(in), len(out))
		}
	})
}

// Sealing appends to dst without touching what is there, and two seals of
// one plaintext differ (random nonces).
func TestSealOpen(t *testing.T) {
	k, err := deriveKeys(fuzzMaster)
	if err != nil {
		t.Fatal(err)
	}
	for _, plain := range [][]byte{nil, {0}, bytes.Repeat([]byte("x"), 1<<16)} {
		dst := make([]byte, 3, 5)
		copy(dst, "abc")
		s1 := k.Seal(dst, plain)
		s2 := k.Seal(nil, plain)
		if string(s1[:3]) != "abc" || len(s1) != 3+len(plain)+Overhead || len(s2) != len(plain)+Overhead {
			t.Fatalf("seal of %d bytes: lengths %d, %d", len(plain), len(s1), len(s2))
		}
		if bytes.Equal(s1[3:], s2) {
			t.Error("two seals are equal: nonce reuse")
		}
		got, err := k.Open(nil, s1[3:])
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("open: %v", err)
		}
	}
	other, _ := deriveKeys(MasterKey{9})
	if _, err := other.Open(nil, k.Seal(nil, []byte("secret"))); !errors.Is(err, ErrCorrupt) {
		t.Errorf("open with another key: %v", err)
	}
}

// TestSealInPlace: sealing where the plaintext lies gives what Open reads
// back, in the buffer's own array when it has room for the tag.
func TestSealInPlace(t *testing.T) {
	k, err := deriveKeys(fuzzMaster)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 1, 100, 1 << 16} {
		plain := bytes.Repeat([]byte{byte(n)}, n)
		for _, room := range []int{Overhead, 0} { // room for the tag, or none
			b := make([]byte, nonceSize, nonceSize+n+room)
			b = append(b, plain...)
			sealed := k.sealInPlace(b)
			if len(sealed) != n+Overhead {
				t.Fatalf("%d bytes: sealed to %d", n, len(sealed))
			}
			if inPlace := &sealed[0] == &b[0]; inPlace != (room > 0) {
				t.Errorf("%d bytes, room %d: in place %v", n, room, inPlace)
			}
			got, err := k.Open(nil, sealed)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("%d bytes: open: %v", n, err)
			}
		}
	}
}

// FuzzDecodeConfig: a config that decodes always yields a usable chunker.
func FuzzDecodeConfig(f *testing.F) {
	f.Add([]byte(`{"version":1,"id":"00","chunker_min":524288,"chunker_avg":1048576,"chunker_max":8388608,"pack_size":16777216,"compression":"fastest"}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(`{"version":1,"chunker_min":64,"chunker_avg":128,"chunker_max":256}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := DecodeConfig(data)
		if err != nil {
			return
		}
		if cfg.Version < 1 || cfg.Version > FormatVersion {
			t.Fatalf("accepted version %d", cfg.Version)
		}
		if _, err := cfg.chunkerParams([32]byte{}); err != nil {
			t.Fatalf("accepted chunker parameters that do not validate: %v", err)
		}
	})
}

// FuzzOpenBlob: openBlob, given a blob sealed with the repository's key
// (as a writer holding the key, or a bug, could store any bytes) or not
// sealed at all, either returns exactly the plaintext the entry names, in
// the caller's buffer when it had room, or fails with ErrCorrupt; it never
// panics. body is the blob's stored plaintext: a zstd frame when zstd is
// set.
func FuzzOpenBlob(f *testing.F) {
	k, err := deriveKeys(fuzzMaster)
	if err != nil {
		f.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true))
	if err != nil {
		f.Fatal(err)
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(uint64(maxBlobSize)+1))
	if err != nil {
		f.Fatal(err)
	}
	defer dec.Close()
	r := &Repository{keys: k, dec: dec}
	text := bytes.Repeat([]byte("snap blob "), 300)
	f.Add(true, true, uint32(len(text)), enc.EncodeAll(text, nil), 7)
	f.Add(true, false, uint32(len(text)), text, 0)
	f.Add(true, true, uint32(len(text)+1), enc.EncodeAll(text, nil), 4095)
	f.Add(true, true, uint32(10), enc.EncodeAll(text, nil), 1)
	f.Add(false, true, uint32(5), []byte("not sealed at all, just bytes"), 0)
	f.Add(true, true, uint32(0), []byte{}, 0)
	f.Fuzz(func(t *testing.T, sealIt, zstdOn bool, rawLen uint32, body []byte, pad int) {
		if rawLen > 1<<20 {
			rawLen %= 1 << 20 // keep each input's buffers small
		}
		sealed := body
		if sealIt {
			sealed = k.Seal(nil, body)
		}
		// The entry claims the id of what the body should decode to, when
		// it decodes at all, so a success is possible and must be exact.
		var want []byte
		if zstdOn {
			want, _ = dec.DecodeAll(body, nil)
		} else {
			want = body
		}
		e := BlobEntry{ID: k.BlobID(want), RawLength: rawLen, Length: uint32(len(sealed))}
		if zstdOn {
			e.Compression = CompressionZstd
		}
		pad = int(uint(pad) % 4096)
		buf := make([]byte, pad+int(rawLen)+Overhead)
		got, err := r.openBlob(e, append([]byte(nil), sealed...), buf[pad:pad])
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("openBlob: %v, want ErrCorrupt", err)
			}
			return
		}
		if !sealIt {
			t.Fatal("opened bytes that were never sealed")
		}
		if len(got) != int(rawLen) || !bytes.Equal(got, want) {
			t.Fatalf("opened %d bytes, want the %d the entry names", len(got), rawLen)
		}
		if len(got) > 0 && &got[0] != &buf[pad] {
			t.Fatal("plaintext not in the caller's buffer, which had room")
		}
	})
}

// The Argon2id bounds admit the default and what snap init allows at its
// edges, and nothing costlier.
func TestKDFBounds(t *testing.T) {
	for _, tc := range []struct {
		p  KDFParams
		ok bool
	}{
		{DefaultKDF, true},
		{KDFParams{Time: 1, MemoryKiB: 8, Threads: 1}, true},
		{KDFParams{Time: 8, MemoryKiB: 1 << 20, Threads: 2}, true},    // 1 GiB, the work cap
		{KDFParams{Time: 100, MemoryKiB: 80 << 10, Threads: 2}, true}, // 100 passes over 80 MiB
		{KDFParams{Time: 1, MemoryKiB: 8, Threads: 16}, true},
		{KDFParams{Time: 9, MemoryKiB: 1 << 20, Threads: 2}, false},
		{KDFParams{Time: 100, MemoryKiB: 82 << 10, Threads: 2}, false},
		{KDFParams{Time: 1, MemoryKiB: 1<<20 + 1, Threads: 2}, false},
		{KDFParams{Time: 101, MemoryKiB: 8, Threads: 2}, false},
		{KDFParams{Time: 0, MemoryKiB: 8, Threads: 2}, false},
		{KDFParams{Time: 1, MemoryKiB: 7, Threads: 2}, false},
		{KDFParams{Time: 1, MemoryKiB: 8, Threads: 0}, false},
		{KDFParams{Time: 1, MemoryKiB: 8, Threads: 17}, false},
		{KDFParams{Time: 1<<32 - 1, MemoryKiB: 1<<32 - 1, Threads: 255}, false},
	} {
		if err := tc.p.validate(); (err == nil) != tc.ok {
			t.Errorf("validate(%+v) = %v, want ok %v", tc.p, err, tc.ok)
		}
	}
}

// FuzzReadBounded: reading an object whole returns exactly its bytes when
// they are within the bound (and the listed size, when there is one), and
// otherwise fails with ErrCorrupt having read at most one byte past the
// limit; it never panics.
func FuzzReadBounded(f *testing.F) {
	f.Add([]byte("hello"), int64(5), int64(-1), uint8(0))
	f.Add([]byte("hello"), int64(4), int64(-1), uint8(1))
	f.Add([]byte("hello"), int64(100), int64(5), uint8(2))
	f.Add([]byte("hello"), int64(100), int64(3), uint8(0))
	f.Add([]byte("hello"), int64(100), int64(9), uint8(1))
	f.Add([]byte{}, int64(0), int64(0), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, bound, size int64, chunk uint8) {
		bound = max(bound, 0) % (1 << 16)
		if size < -1 || size > 1<<16 {
			size = -1
		}
		src := &countingReader{rd: bytes.NewReader(data), chunk: int(chunk) + 1}
		got, err := readBounded(src, SnapshotFile, size, bound)
		limit := bound
		if size >= 0 {
			limit = min(size, bound)
		}
		if src.n > limit+1 {
			t.Fatalf("read %d bytes with a limit of %d", src.n, limit)
		}
		if int64(len(data)) > limit {
			if !errors.Is(err, ErrCorrupt) || got != nil {
				t.Fatalf("%d bytes, limit %d: %d bytes, %v; want ErrCorrupt", len(data), limit, len(got), err)
			}
			return
		}
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%d bytes, limit %d: got %d bytes, %v", len(data), limit, len(got), err)
		}
	})
}

// countingReader hands out at most chunk bytes a read and counts them.
type countingReader struct {
	rd    io.Reader
	chunk int
	n     int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.rd.Read(p[:min(len(p), r.chunk)])
	r.n += int64(n)
	return n, err
}

// FuzzParsePackTrailer: a header length is accepted only if it fits the
// pack and is within what any pack header can be.
func FuzzParsePackTrailer(f *testing.F) {
	f.Add([]byte{40, 0, 0, 0}, int64(44))
	f.Add([]byte{0, 0, 0, 16}, int64(1<<30))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, int64(1<<32))
	f.Add([]byte{1, 2}, int64(100))
	f.Fuzz(func(t *testing.T, tail []byte, packSize int64) {
		n, err := parsePackTrailer(tail, packSize)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("parse: %v, want ErrCorrupt", err)
			}
			return
		}
		if int64(n) < Overhead || int64(n) > packSize-packTrailerSize || n > maxPackHeader {
			t.Fatalf("accepted header length %d for a pack of %d bytes", n, packSize)
		}
	})
}
