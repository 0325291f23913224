package repo_test

// Microbenchmarks through the public API: blob ids and pack writing into
// the in-memory backend. Sealing alone is in bench_internal_test.go. Run
//
//	go test -run '^$' -bench . -benchmem ./repo/
//
// They report; they assert nothing about speed.

import (
	"encoding/binary"
	"sync/atomic"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/mem"
)

// benchRepo is a fresh repository in memory with a cheap KDF.
func benchRepo(b *testing.B, compression string) *repo.Repository {
	b.Helper()
	r, err := repo.Init(b.Context(), mem.New(), "bench password",
		repo.InitOptions{Compression: compression, KDF: repo.KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}},
		repo.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	return r
}

// BenchmarkBlobID is the keyed BLAKE3-256 of a 1 MiB chunk.
func BenchmarkBlobID(b *testing.B) {
	r := benchRepo(b, "fastest")
	plain := repo.BenchInput("random", 1<<20)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		r.BlobID(plain)
	}
}

// BenchmarkSaveBlob stores new 1 MiB chunks: id, compression, sealing,
// packing and uploading full packs to the in-memory backend (which copies
// them), with the repository's default compression. "parallel" runs
// SaveBlob from GOMAXPROCS goroutines, as the backup pipeline does.
func BenchmarkSaveBlob(b *testing.B) {
	for _, kind := range []string{"sst", "random"} {
		base := repo.BenchInput(kind, 1<<20)
		b.Run(kind+"/serial", func(b *testing.B) {
			r := benchRepo(b, "")
			plain := append([]byte(nil), base...)
			var n uint64
			b.SetBytes(int64(len(plain)))
			b.ReportAllocs()
			for b.Loop() {
				n++
				binary.LittleEndian.PutUint64(plain, n) // a new blob every time
				if _, err := r.SaveBlob(b.Context(), repo.DataBlob, r.BlobID(plain), plain); err != nil {
					b.Fatal(err)
				}
			}
			if err := r.Flush(b.Context()); err != nil {
				b.Fatal(err)
			}
		})
		b.Run(kind+"/parallel", func(b *testing.B) {
			r := benchRepo(b, "")
			var next atomic.Uint64
			b.SetBytes(int64(len(base)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				plain := append([]byte(nil), base...)
				for pb.Next() {
					binary.LittleEndian.PutUint64(plain, next.Add(1))
					if _, err := r.SaveBlob(b.Context(), repo.DataBlob, r.BlobID(plain), plain); err != nil {
						b.Error(err)
						return
					}
				}
			})
			if err := r.Flush(b.Context()); err != nil {
				b.Fatal(err)
			}
		})
	}
}
