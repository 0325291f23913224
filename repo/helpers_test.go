package repo_test

import (
	"bytes"
	"encoding/binary"
	"flag"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
)

// seed makes every random input reproducible: a failure logs the seed, and
// -seed=N replays it.
var seed = flag.Uint64("seed", 1, "seed for random test data")

const password = "correct horse battery staple"

// cheapKDF keeps Argon2id from dominating the tests.
var cheapKDF = repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// smallChunker keeps per-pack buffers (pack size + max chunk) small.
func smallOptions() repo.InitOptions {
	return repo.InitOptions{
		ChunkerMin: 16 << 10, ChunkerAvg: 64 << 10, ChunkerMax: 256 << 10,
		PackSize: 1 << 20, KDF: cheapKDF,
	}
}

func newRand(t testing.TB) *rand.Rand {
	t.Helper()
	t.Logf("seed %d", *seed)
	return rand.New(rand.NewPCG(*seed, uint64(len(t.Name()))))
}

func initRepo(t testing.TB, be repo.Backend, o repo.InitOptions) *repo.Repository {
	t.Helper()
	if o.KDF == (repo.KDFParams{}) {
		o.KDF = cheapKDF
	}
	r, err := repo.Init(t.Context(), be, password, o, repo.Options{})
	if err != nil {
		t.Fatalf("init: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func openRepo(t testing.TB, be repo.Backend) *repo.Repository {
	t.Helper()
	r, err := repo.Open(t.Context(), be, password, repo.Options{})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// randomBytes is incompressible.
func randomBytes(rng *rand.Rand, n int) []byte {
	var s [32]byte
	for i := range 4 {
		binary.LittleEndian.PutUint64(s[8*i:], rng.Uint64())
	}
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

var words = strings.Fields("the quick brown fox jumps over lazy dog rocksdb sst wal manifest key value level compaction")

// textBytes compresses well: words from a small vocabulary.
func textBytes(rng *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
		b.WriteByte(' ')
	}
	return b.Bytes()[:n]
}

// rewrite replaces a stored object, as an attacker or a bad disk might.
func rewrite(t testing.TB, be repo.Backend, h repo.Handle, change func([]byte) []byte) {
	t.Helper()
	data := change(backendtest.LoadAll(t, be, h))
	if err := be.Remove(t.Context(), h); err != nil {
		t.Fatalf("remove %v: %v", h, err)
	}
	if err := be.Save(t.Context(), h, data); err != nil {
		t.Fatalf("save %v: %v", h, err)
	}
}

// list returns name -> size of every object of type typ.
func list(t testing.TB, be repo.Backend, typ repo.FileType) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	err := be.List(t.Context(), typ, func(fi repo.FileInfo) error {
		out[fi.Name] = fi.Size
		return nil
	})
	if err != nil {
		t.Fatalf("list %s: %v", typ, err)
	}
	return out
}

func mustParseID(t testing.TB, s string) repo.ID {
	t.Helper()
	id, err := repo.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
