package repo_test

// These tests read and write a repository by docs/design.md alone, with the
// primitives it names, so a change in the code that changes what is stored
// fails here until the spec (and this independent reader) change with it.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/mem"
)

// specKeys are the keys docs/design.md derives from the master key.
type specKeys struct {
	master, enc, chunkID, gear [32]byte
}

func specOpen(t *testing.T, key []byte, sealed []byte) []byte {
	t.Helper()
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) < 40 {
		t.Fatalf("sealed form of %d bytes", len(sealed))
	}
	plain, err := aead.Open(nil, sealed[:24], sealed[24:], nil)
	if err != nil {
		t.Fatalf("open sealed form per spec: %v", err)
	}
	return plain
}

func specSeal(t *testing.T, key []byte, plain []byte) []byte {
	t.Helper()
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, 24, 24+len(plain)+16)
	nonce[0] = 7 // any nonce will do for a test
	return aead.Seal(nonce, nonce, plain, nil)
}

// specUnwrap reads the only key file of be as the spec describes it.
func specUnwrap(t *testing.T, be repo.Backend, pw string) specKeys {
	t.Helper()
	keys := list(t, be, repo.KeyFile)
	if len(keys) != 1 {
		t.Fatalf("%d key files", len(keys))
	}
	var name string
	for name = range keys {
	}
	raw := backendtest.LoadAll(t, be, repo.Handle{Type: repo.KeyFile, Name: name})
	if repo.Hash(raw).String() != name {
		t.Errorf("key file %s is not named by its hash", name)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"version", "created", "hostname", "user", "kdf", "time", "memory_kib", "threads", "salt", "data"} {
		if _, ok := fields[f]; !ok && f != "hostname" && f != "user" {
			t.Errorf("key file lacks %q", f)
		}
		delete(fields, f)
	}
	if len(fields) != 0 {
		t.Errorf("key file has fields the spec does not name: %v", fields)
	}
	var kf struct {
		Version   int    `json:"version"`
		KDF       string `json:"kdf"`
		Time      uint32 `json:"time"`
		MemoryKiB uint32 `json:"memory_kib"`
		Threads   uint8  `json:"threads"`
		Salt      []byte `json:"salt"`
		Data      []byte `json:"data"`
	}
	if err := json.Unmarshal(raw, &kf); err != nil {
		t.Fatal(err)
	}
	if kf.Version != 1 || kf.KDF != "argon2id" || len(kf.Salt) != 32 {
		t.Errorf("key file: version %d, kdf %q, %d-byte salt", kf.Version, kf.KDF, len(kf.Salt))
	}
	wrap := argon2.IDKey([]byte(pw), kf.Salt, kf.Time, kf.MemoryKiB, kf.Threads, 32)
	var inner struct {
		Master []byte `json:"master"`
	}
	if err := json.Unmarshal(specOpen(t, wrap, kf.Data), &inner); err != nil || len(inner.Master) != 32 {
		t.Fatalf("wrapped master key: %v, %d bytes", err, len(inner.Master))
	}
	var k specKeys
	copy(k.master[:], inner.Master)
	blake3.DeriveKey("snap repository v1 2026-11 encryption key", k.master[:], k.enc[:])
	blake3.DeriveKey("snap repository v1 2026-11 chunk id key", k.master[:], k.chunkID[:])
	blake3.DeriveKey("snap repository v1 2026-11 chunker gear seed", k.master[:], k.gear[:])
	return k
}

func TestFormatMatchesSpec(t *testing.T) {
	for _, version := range []int{1, 2} {
		t.Run(fmt.Sprintf("version %d", version), func(t *testing.T) { testFormatMatchesSpec(t, version) })
	}
}

// testFormatMatchesSpec: version 1 names an index file by its hash;
// version 2 by <tag>-<hash>, the tag of the host a scoped writer works
// for: the first 8 bytes, in hex, of the BLAKE3 of the host name keyed
// with the host tag key.
func testFormatMatchesSpec(t *testing.T, version int) {
	rng := newRand(t)
	be := mem.New()
	o := smallOptions()
	o.KDF = repo.KDFParams{Time: 2, MemoryKiB: 128, Threads: 1}
	o.FormatVersion = version
	r := initRepo(t, be, o)
	k := specUnwrap(t, be, password)
	prefix := ""
	if version >= 2 {
		var tagKey [32]byte
		blake3.DeriveKey("snap repository v2 2026-12 host tag key", k.master[:], tagKey[:])
		th, err := blake3.NewKeyed(tagKey[:])
		if err != nil {
			t.Fatal(err)
		}
		th.Write([]byte("host-a"))
		prefix = fmt.Sprintf("%x-", th.Sum(nil)[:8])
		if got := r.HostTag("host-a") + "-"; got != prefix {
			t.Fatalf("host tag %q, want %q", got, prefix)
		}
		r.ScopeTo("host-a")
	}

	// Config.
	cfgPlain := specOpen(t, k.enc[:], backendtest.LoadAll(t, be, repo.Handle{Type: repo.ConfigFile}))
	var cfg map[string]any
	if err := json.Unmarshal(cfgPlain, &cfg); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"version": float64(version), "id": r.Config().ID, "chunker_min": float64(o.ChunkerMin),
		"chunker_avg": float64(o.ChunkerAvg), "chunker_max": float64(o.ChunkerMax),
		"pack_size": float64(o.PackSize), "compression": "auto"}
	if len(cfg) != len(want) {
		t.Errorf("config %v, want %v", cfg, want)
	}
	for f, v := range want {
		if cfg[f] != v {
			t.Errorf("config %s = %v, want %v", f, cfg[f], v)
		}
	}

	// Derived keys.
	if r.ChunkerParams().Seed != k.gear {
		t.Error("chunker seed is not the derived gear seed")
	}
	h, err := blake3.NewKeyed(k.chunkID[:])
	if err != nil {
		t.Fatal(err)
	}
	h.Write([]byte("abc"))
	if got := r.BlobID([]byte("abc")); !bytes.Equal(got[:], h.Sum(nil)) {
		t.Error("blob id is not the keyed BLAKE3 with the chunk id key")
	}

	// Packs and index.
	blobs := makeBlobs(rng, r, 30, 100<<10)
	saveBlobs(t, r, blobs)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	wantBlobs := map[repo.ID]testBlob{}
	for _, b := range blobs {
		wantBlobs[b.id] = b
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	type place struct {
		pack                repo.ID
		typ, comp           byte
		off, length, rawLen uint64
	}
	inPacks := map[repo.ID]place{}
	for name := range list(t, be, repo.PackFile) {
		pack := backendtest.LoadAll(t, be, repo.Handle{Type: repo.PackFile, Name: name})
		if repo.Hash(pack).String() != name {
			t.Fatalf("pack %s is not named by its hash", name)
		}
		hl := int(binary.LittleEndian.Uint32(pack[len(pack)-4:]))
		hdr := specOpen(t, k.enc[:], pack[len(pack)-4-hl:len(pack)-4])
		if len(hdr)%42 != 0 {
			t.Fatalf("pack header of %d bytes", len(hdr))
		}
		off := 0
		for e := hdr; len(e) > 0; e = e[42:] {
			typ, comp := e[0], e[1]
			sealedLen := int(binary.LittleEndian.Uint32(e[2:]))
			plainLen := int(binary.LittleEndian.Uint32(e[6:]))
			id := repo.ID(e[10:42])
			payload := specOpen(t, k.enc[:], pack[off:off+sealedLen])
			switch comp {
			case 0:
			case 1:
				if payload, err = dec.DecodeAll(payload, nil); err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("compression %d", comp)
			}
			b, ok := wantBlobs[id]
			if !ok || !bytes.Equal(payload, b.plain) || len(payload) != plainLen || byte(b.typ) != typ || byte(b.comp) != comp {
				t.Fatalf("pack %s: blob %s does not match what was saved", name[:8], id.Str())
			}
			inPacks[id] = place{mustParseID(t, name), typ, comp, uint64(off), uint64(sealedLen), uint64(plainLen)}
			off += sealedLen
		}
		if off != len(pack)-4-hl {
			t.Errorf("pack %s: entries cover %d bytes of %d", name[:8], off, len(pack)-4-hl)
		}
	}
	if len(inPacks) != len(blobs) {
		t.Errorf("packs hold %d blobs, saved %d", len(inPacks), len(blobs))
	}

	inIndex := map[repo.ID]place{}
	for name := range list(t, be, repo.IndexFile) {
		stored := backendtest.LoadAll(t, be, repo.Handle{Type: repo.IndexFile, Name: name})
		if prefix+repo.Hash(stored).String() != name {
			t.Fatalf("index %s is not named %q and its hash", name, prefix)
		}
		b := specOpen(t, k.enc[:], stored)
		if string(b[:8]) != "SNAPIDX\x01" {
			t.Fatalf("index starts %q", b[:8])
		}
		b = b[8:]
		uv := func() uint64 {
			v, n := binary.Uvarint(b)
			if n <= 0 {
				t.Fatal("bad uvarint")
			}
			b = b[n:]
			return v
		}
		if n := uv(); n != 0 {
			t.Errorf("%d superseded", n)
		}
		for range uv() {
			pack := repo.ID(b[:32])
			b = b[32:]
			for range uv() {
				id := repo.ID(b[:32])
				p := place{pack: pack, typ: b[32], comp: b[33]}
				b = b[34:]
				p.off, p.length, p.rawLen = uv(), uv(), uv()
				inIndex[id] = p
			}
		}
		if len(b) != 0 {
			t.Errorf("index: %d trailing bytes", len(b))
		}
	}
	if len(inIndex) != len(inPacks) {
		t.Errorf("index holds %d blobs, packs %d", len(inIndex), len(inPacks))
	}
	for id, p := range inPacks {
		if inIndex[id] != p {
			t.Errorf("blob %s: index says %+v, pack %+v", id.Str(), inIndex[id], p)
		}
	}
}

// Config contents a reader must refuse, written with the real keys.
func TestOpenConfigContents(t *testing.T) {
	be := mem.New()
	initRepo(t, be, smallOptions())
	k := specUnwrap(t, be, password)
	h := repo.Handle{Type: repo.ConfigFile}
	good := specOpen(t, k.enc[:], backendtest.LoadAll(t, be, h))
	edit := func(f func(map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(good, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name    string
		plain   []byte
		corrupt bool   // errors.Is(err, ErrCorrupt)
		msg     string // in the error
	}{
		{"unchanged", good, false, ""},
		{"unknown field", edit(func(m map[string]any) { m["future"] = true }), false, ""},
		{"version 3", edit(func(m map[string]any) { m["version"] = 3 }), false, "upgrade snap"},
		{"version 0", edit(func(m map[string]any) { m["version"] = 0 }), true, "version 0"},
		{"no version", edit(func(m map[string]any) { delete(m, "version") }), true, ""},
		{"chunker avg", edit(func(m map[string]any) { m["chunker_avg"] = 100000 }), true, ""},
		{"chunker max", edit(func(m map[string]any) { m["chunker_max"] = 1 << 30 }), true, ""},
		// Writer defaults a reader does not need: tolerated (a newer snap
		// may add a compression level), and the writer falls back.
		{"pack size", edit(func(m map[string]any) { m["pack_size"] = 1000 }), false, ""},
		{"compression", edit(func(m map[string]any) { m["compression"] = "lz4" }), false, ""},
		{"not json", []byte("version 1"), true, ""},
		{"wrong types", edit(func(m map[string]any) { m["version"] = "1" }), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rewrite(t, be, h, func([]byte) []byte { return specSeal(t, k.enc[:], tc.plain) })
			r, err := repo.Open(t.Context(), be, password, repo.Options{})
			if tc.name == "unchanged" || tc.name == "unknown field" || tc.name == "pack size" || tc.name == "compression" {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				r.Close()
				return
			}
			if err == nil || r != nil {
				t.Fatalf("open: %v, %v; want an error", r, err)
			}
			if errors.Is(err, repo.ErrCorrupt) != tc.corrupt || !strings.Contains(err.Error(), tc.msg) || errors.Is(err, repo.ErrWrongPassword) {
				t.Errorf("open: %v; want corrupt=%v, containing %q", err, tc.corrupt, tc.msg)
			}
		})
	}
}

// A forged key file must not make Open spend unbounded time or memory.
func TestOpenForgedKeyFile(t *testing.T) {
	be := mem.New()
	initRepo(t, be, smallOptions())
	var orig []byte
	for name := range list(t, be, repo.KeyFile) {
		orig = backendtest.LoadAll(t, be, repo.Handle{Type: repo.KeyFile, Name: name})
	}
	for _, tc := range []struct {
		name   string
		change func(m map[string]any)
		msg    string
	}{
		{"memory", func(m map[string]any) { m["memory_kib"] = 4<<20 + 1 }, "out of range"},
		{"memory over 1 GiB", func(m map[string]any) { m["memory_kib"] = 1<<20 + 8 }, "out of range"},
		{"work over 8 GiB-passes", func(m map[string]any) { m["memory_kib"], m["time"] = 128<<10, 65 }, "out of range"},
		{"time", func(m map[string]any) { m["time"] = 101 }, "out of range"},
		{"threads", func(m map[string]any) { m["threads"] = 0 }, "out of range"},
		{"threads over 16", func(m map[string]any) { m["threads"] = 17 }, "out of range"},
		{"version", func(m map[string]any) { m["version"] = 3 }, "upgrade snap"},
		{"kdf", func(m map[string]any) { m["kdf"] = "scrypt" }, "scrypt"},
		{"salt", func(m map[string]any) { m["salt"] = "AAAA" }, "salt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var m map[string]any
			if err := json.Unmarshal(orig, &m); err != nil {
				t.Fatal(err)
			}
			tc.change(m)
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			fbe := mem.New()
			for _, h := range []repo.Handle{{Type: repo.ConfigFile}, {Type: repo.KeyFile, Name: repo.Hash(b).String()}} {
				data := b
				if h.Type == repo.ConfigFile {
					data = backendtest.LoadAll(t, be, h)
				}
				if err := fbe.Save(t.Context(), h, data); err != nil {
					t.Fatal(err)
				}
			}
			r, err := repo.Open(t.Context(), fbe, password, repo.Options{})
			if err == nil || r != nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("open: %v, %v; want an error containing %q", r, err, tc.msg)
			}
			if kh := "keys/" + repo.Hash(b).String(); err != nil && !strings.Contains(err.Error(), kh) {
				t.Errorf("open: %v; want the key file %s named", err, kh)
			}
			if tc.msg == "out of range" && !errors.Is(err, repo.ErrCorrupt) {
				t.Errorf("open: %v; want ErrCorrupt", err)
			}
		})
	}
}

// Several key files: any that opens is enough, broken ones do not hide it.
func TestOpenSeveralKeyFiles(t *testing.T) {
	be := mem.New()
	initRepo(t, be, smallOptions())
	for _, junk := range [][]byte{[]byte("not json"), []byte(`{"version":1}`)} {
		if err := be.Save(t.Context(), repo.Handle{Type: repo.KeyFile, Name: repo.Hash(junk).String()}, junk); err != nil {
			t.Fatal(err)
		}
	}
	openRepo(t, be)
	_, err := repo.Open(t.Context(), be, "wrong", repo.Options{})
	if !errors.Is(err, repo.ErrWrongPassword) {
		t.Errorf("open with a wrong password: %v", err)
	}
	if n := len(list(t, be, repo.KeyFile)); n != 3 {
		t.Errorf("%d key files", n)
	}
}
