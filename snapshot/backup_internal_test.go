package snapshot

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/snapbackup/snap/chunker"
	"github.com/snapbackup/snap/source"
)

// BenchmarkReadFile is the backup's reading side alone: one reader reads a
// 256 MiB file from the page cache and cuts it with the default chunker,
// and a worker only returns the chunk buffers.
func BenchmarkReadFile(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, 256<<20)
	rand.NewChaCha8([32]byte{1}).Read(data)
	if err := os.WriteFile(filepath.Join(dir, "000001.sst"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	ch, err := chunker.New(chunker.DefaultParams([32]byte{2}))
	if err != nil {
		b.Fatal(err)
	}
	f := source.File{Name: "000001.sst", Role: source.RoleTable, Length: -1}
	rd, err := source.NewFrozen(source.Listing{}, dir, nil).Open(f)
	if err != nil {
		b.Fatal(err)
	}
	defer rd.Close()
	bufs := newChunkBufs(2 * chunker.DefaultAvg)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		out := make(chan chunkJob, 2)
		var wg sync.WaitGroup
		wg.Go(func() {
			for c := range out {
				bufs.put(c.data)
			}
		})
		j := &fileJob{file: f, out: File{Length: rd.Length()}}
		err := readFile(context.Background(), ch, j, rd, bufs, out, &Progress{}, nil)
		close(out)
		wg.Wait()
		if err != nil {
			b.Fatal(err)
		}
	}
}
