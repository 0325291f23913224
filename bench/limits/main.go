//go:build linux

// Command limits measures what this machine can do at best on the
// benchmark's data set, with the libraries snap uses and one goroutine per
// core: reading the files from the page cache (and from disk when the cache
// can be dropped), keyed BLAKE3, zstd at snap's levels, and
// XChaCha20-Poly1305. bench/run.sh prints the result beside the
// snap/restic/borg table, so the table says how close snap is to the
// machine.
//
// Work is split into 1 MiB blocks (about snap's average chunk) taken from
// the data set's SST files, and spread over the goroutines.
package main

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/sys/unix"

	"github.com/snapbackup/snap/internal/directio"
)

// Result is one measured limit.
type Result struct {
	Name    string  `json:"name"`
	MBps    float64 `json:"mb_per_s"`          // 10^6 bytes of input per second, all goroutines
	PerCore float64 `json:"per_core_mb_per_s"` // MBps / goroutines
	Ratio   float64 `json:"ratio,omitempty"`   // output/input, for compression
	Bytes   int64   `json:"bytes"`             // input bytes processed
	Seconds float64 `json:"seconds"`           // wall time
	CPUS    float64 `json:"cpu_s"`             // user+sys CPU time of this process
	// MBperCPUs is input bytes per CPU second: what one core does when it
	// is not shared, a number other load on the machine does not lower
	// the way it lowers MBps.
	MBperCPUs float64 `json:"mb_per_cpu_s"`
	Threads   int     `json:"threads"`           // goroutines used
	Source    string  `json:"source,omitempty"`  // which data
	Skipped   bool    `json:"skipped,omitempty"` // not measured; Note says why
	Note      string  `json:"note,omitempty"`
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "limits:", err)
		os.Exit(1)
	}
}

func run() error {
	dir := flag.String("dir", "", "the data directory (required)")
	sample := flag.Int64("sample", 256<<20, "at most this many bytes of SST data are held in memory for the CPU limits")
	threads := flag.Int("threads", runtime.GOMAXPROCS(0), "goroutines")
	cold := flag.Bool("cold", false, "also measure a read from disk after dropping the page cache")
	evictMode := flag.String("evict", "drop", "with -cold, how to empty the page cache: drop (/proc/sys/vm/drop_caches, needs root) or fadvise (POSIX_FADV_DONTNEED on the data files, as bench/evict does)")
	jsonOut := flag.String("json", "", "also write the results as JSON to this file")
	scratch := flag.String("scratch", "", "with -cold: a directory on the repository's disk for the direct write limits")
	flag.Parse()
	if *dir == "" {
		return fmt.Errorf("-dir is required")
	}
	files, err := dataFiles(*dir)
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("no .sst or .log files in %s", *dir)
	}
	n := *threads
	var results []Result
	var evict func() error
	switch *evictMode {
	case "drop":
		evict = dropCaches
	case "fadvise":
		evict = func() error { return fadviseFiles(files) }
	default:
		return fmt.Errorf("-evict %q: want drop or fadvise", *evictMode)
	}

	if *cold {
		if err := evict(); err != nil {
			results = append(results, Result{Name: "disk read (cold cache)", Skipped: true, Note: err.Error()})
		} else {
			r, err := readAll(files, n, false)
			if err != nil {
				return err
			}
			r.Name = "disk read (cold cache)"
			results = append(results, r)
			rs, err := diskLimits(files, n, *scratch, evict)
			if err != nil {
				return err
			}
			results = append(results, rs...)
		}
	}
	if _, err := readAll(files, n, false); err != nil { // warm the cache
		return err
	}
	r, err := readAll(files, n, false)
	if err != nil {
		return err
	}
	r.Name = "page-cache read"
	results = append(results, r)

	blocks, err := loadSample(files, *sample)
	if err != nil {
		return err
	}
	var key [32]byte
	rand.Read(key[:])
	results = append(results, measure("BLAKE3 keyed", n, blocks, func() func([]byte) int {
		h, _ := blake3.NewKeyed(key[:])
		var sum [32]byte
		return func(b []byte) int {
			h.Reset()
			h.Write(b)
			h.Sum(sum[:0])
			return 0
		}
	}))
	var compressed [][]byte // for the decode limit
	for _, lv := range []struct {
		name  string
		level zstd.EncoderLevel
	}{{"fastest", zstd.SpeedFastest}, {"default", zstd.SpeedDefault}, {"better", zstd.SpeedBetterCompression}} {
		res := measure("zstd encode "+lv.name, n, blocks, func() func([]byte) int {
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(lv.level), zstd.WithEncoderConcurrency(1),
				zstd.WithEncoderCRC(false), zstd.WithZeroFrames(true))
			var buf []byte
			return func(b []byte) int {
				buf = enc.EncodeAll(b, buf[:0])
				return len(buf)
			}
		})
		if lv.level == zstd.SpeedFastest {
			// Encode once more, keeping the frames, outside the timing.
			enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(lv.level), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false))
			compressed = make([][]byte, len(blocks))
			for i, b := range blocks {
				compressed[i] = enc.EncodeAll(b, nil)
			}
			enc.Close()
		}
		results = append(results, res)
	}
	dec := measureBlocks("zstd decode (fastest frames)", n, compressed, func() func([]byte) int {
		d, _ := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1))
		var buf []byte
		return func(b []byte) int {
			var err error
			buf, err = d.DecodeAll(b, buf[:0])
			if err != nil {
				panic(err)
			}
			return len(buf)
		}
	}, true)
	results = append(results, dec)
	var ckey [32]byte
	rand.Read(ckey[:])
	results = append(results, measure("XChaCha20-Poly1305 seal", n, blocks, func() func([]byte) int {
		aead, _ := chacha20poly1305.NewX(ckey[:])
		nonce := make([]byte, aead.NonceSize())
		var buf []byte
		return func(b []byte) int {
			rand.Read(nonce)
			buf = aead.Seal(buf[:0], nonce, b, nil)
			return 0
		}
	}))

	printResults(os.Stdout, results, n)
	if *jsonOut != "" {
		data, err := json.MarshalIndent(map[string]any{"threads": n, "results": results}, "", "  ")
		if err != nil {
			return err
		}
		return os.WriteFile(*jsonOut, append(data, '\n'), 0o644)
	}
	return nil
}

// dataFiles lists the database's table and log files, largest first.
func dataFiles(dir string) ([]string, error) {
	var files []string
	for _, pat := range []string{"*.sst", "*.log"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			return nil, err
		}
		files = append(files, m...)
	}
	sizes := map[string]int64{}
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		sizes[f] = fi.Size()
	}
	sort.Slice(files, func(i, j int) bool { return sizes[files[i]] > sizes[files[j]] })
	return files, nil
}

func dropCaches() error {
	// Written dirty pages cannot be dropped; sync first, as `sync; echo 3` does.
	if f, err := os.Open("/"); err == nil {
		f.Sync()
		f.Close()
	}
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("cannot drop the page cache: %v", err)
	}
	return nil
}

// fadviseFiles drops the page cache of the files without root: sync, then
// POSIX_FADV_DONTNEED over each (clean pages only, hence the sync).
func fadviseFiles(files []string) error {
	unix.Sync()
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		f.Close()
		if err != nil {
			return fmt.Errorf("fadvise %s: %w", name, err)
		}
	}
	return nil
}

// readAll reads every file with n goroutines, through the page cache 1 MiB
// at a time or, when direct, around it a huge page at a time into huge
// pages, as a restore reads packs (directio.AllocHuge).
func readAll(files []string, n int, direct bool) (Result, error) {
	var next, total atomic.Int64
	var firstErr error
	var once sync.Once
	cpu0 := cpuSeconds()
	start := time.Now()
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			buf := directio.Alloc(1 << 20)
			if direct {
				h := directio.AllocHuge(directio.HugePage)
				defer h.Free()
				buf = h.B
			}
			for {
				i := int(next.Add(1) - 1)
				if i >= len(files) {
					return
				}
				if err := readFile(files[i], buf, direct, &total); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return Result{}, firstErr
	}
	d := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	b := total.Load()
	return Result{MBps: float64(b) / 1e6 / d, Bytes: b, Seconds: d, Threads: n, PerCore: float64(b) / 1e6 / d / float64(n),
		CPUS: cpu, MBperCPUs: perCPU(b, cpu), Source: fmt.Sprintf("%d .sst and .log files", len(files))}, nil
}

// readFile reads name to its end into buf, adding what it read to total.
func readFile(name string, buf []byte, direct bool, total *atomic.Int64) error {
	if !direct {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		for {
			k, err := f.Read(buf)
			total.Add(int64(k))
			if err == io.EOF {
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	f, err := directio.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	for off := int64(0); ; {
		k, err := f.ReadUpTo(buf, off)
		total.Add(int64(k))
		off += int64(k)
		if err != nil || k < len(buf) {
			return err
		}
	}
}

// diskLimits measures the device the way snap's restore uses it: direct
// reads of the files, direct writes made durable, and both at once (a
// restore reads packs while it writes files). Each runs after the page
// cache was dropped.
func diskLimits(files []string, n int, scratch string, evict func() error) ([]Result, error) {
	var out []Result
	// cold runs measure after dropping the page cache and names the result.
	cold := func(name string, measure func() (Result, error)) error {
		if err := evict(); err != nil {
			return err
		}
		r, err := measure()
		if err != nil {
			return err
		}
		r.Name = name
		out = append(out, r)
		return nil
	}
	if err := cold("disk read, direct", func() (Result, error) { return readAll(files, n, true) }); err != nil {
		return nil, err
	}
	if scratch == "" {
		return out, nil
	}
	var size int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		size += fi.Size()
	}
	size = min(size, 1<<30)
	if err := cold("disk write, direct + fsync", func() (Result, error) { return writeDirect(scratch, n, size) }); err != nil {
		return nil, err
	}
	err := cold("disk read + write at once, direct", func() (Result, error) {
		cpu0 := cpuSeconds()
		start := time.Now()
		var rr, wr Result
		var rerr, werr error
		var wg sync.WaitGroup
		wg.Go(func() { rr, rerr = readAll(files, n, true) })
		wg.Go(func() { wr, werr = writeDirect(scratch, n, size) })
		wg.Wait()
		if err := errors.Join(rerr, werr); err != nil {
			return Result{}, err
		}
		d := time.Since(start).Seconds()
		cpu := cpuSeconds() - cpu0
		b := rr.Bytes + wr.Bytes
		return Result{MBps: float64(b) / 1e6 / d, Bytes: b, Seconds: d,
			Threads: 2 * n, PerCore: float64(b) / 1e6 / d / float64(n), CPUS: cpu, MBperCPUs: perCPU(b, cpu),
			Source: fmt.Sprintf("%d MiB read and %d MiB written, counted together", rr.Bytes>>20, wr.Bytes>>20)}, nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// writeDirect writes size bytes of random data into n new files in dir, a
// huge page at a time from huge pages with direct I/O, as a restore
// writes its files, fsyncs them and removes them.
func writeDirect(dir string, n int, size int64) (Result, error) {
	h := directio.AllocHuge(directio.HugePage)
	defer h.Free()
	block := h.B
	rand.Read(block)
	per := (size / int64(n)) &^ int64(len(block)-1)
	cpu0 := cpuSeconds()
	start := time.Now()
	errs := make([]error, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() {
			name := filepath.Join(dir, fmt.Sprintf("limits-write-%d", k))
			defer os.Remove(name)
			f, err := directio.Create(name, 0o600)
			if err != nil {
				errs[k] = err
				return
			}
			defer f.Close()
			for off := int64(0); off < per && err == nil; off += int64(len(block)) {
				err = f.WriteFull(block)
			}
			if err == nil {
				err = f.Sync()
			}
			errs[k] = err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return Result{}, err
		}
	}
	d := time.Since(start).Seconds()
	cpu := cpuSeconds() - cpu0
	b := per * int64(n)
	return Result{MBps: float64(b) / 1e6 / d, Bytes: b, Seconds: d, Threads: n, PerCore: float64(b) / 1e6 / d / float64(n),
		CPUS: cpu, MBperCPUs: perCPU(b, cpu), Source: fmt.Sprintf("%d new files of %d MiB, fsynced", n, per>>20)}, nil
}

// loadSample reads up to limit bytes of SST data into 1 MiB blocks, taking
// an equal share of every table so the sample is not one file's.
func loadSample(files []string, limit int64) ([][]byte, error) {
	var ssts []string
	var total int64
	for _, f := range files {
		if strings.HasSuffix(f, ".sst") {
			fi, err := os.Stat(f)
			if err != nil {
				return nil, err
			}
			ssts = append(ssts, f)
			total += fi.Size()
		}
	}
	if len(ssts) == 0 {
		ssts = files
		total = 1
	}
	frac := 1.0
	if total > limit {
		frac = float64(limit) / float64(total)
	}
	const block = 1 << 20
	var blocks [][]byte
	for _, f := range ssts {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		keep := int(float64(len(data)) * frac)
		for off := 0; off+block <= keep || (off < keep && off == 0); off += block {
			end := min(off+block, len(data))
			blocks = append(blocks, data[off:end:end])
		}
	}
	return blocks, nil
}

// measure runs work over every block once, with n goroutines that each get
// their own state from newWorker. work returns output bytes (for a ratio) or 0.
func measure(name string, n int, blocks [][]byte, newWorker func() func([]byte) int) Result {
	return measureBlocks(name, n, blocks, newWorker, false)
}

func measureBlocks(name string, n int, blocks [][]byte, newWorker func() func([]byte) int, outIsInput bool) Result {
	workers := make([]func([]byte) int, n)
	for i := range workers {
		workers[i] = newWorker()
		if len(blocks) > 0 {
			workers[i](blocks[0]) // warm up tables and buffers
		}
	}
	var next atomic.Int64
	var in, out atomic.Int64
	cpu0 := cpuSeconds()
	start := time.Now()
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(func() {
			var myIn, myOut int64
			for {
				i := int(next.Add(1) - 1)
				if i >= len(blocks) {
					break
				}
				myIn += int64(len(blocks[i]))
				myOut += int64(w(blocks[i]))
			}
			in.Add(myIn)
			out.Add(myOut)
		})
	}
	wg.Wait()
	d := time.Since(start).Seconds()
	r := Result{Name: name, Seconds: d, CPUS: cpuSeconds() - cpu0, Threads: n, Source: "sst sample"}
	r.Bytes = in.Load()
	if outIsInput { // decoding: count the decompressed bytes
		r.Bytes, r.Ratio = out.Load(), float64(in.Load())/float64(max(out.Load(), 1))
	} else if out.Load() > 0 {
		r.Ratio = float64(out.Load()) / float64(r.Bytes)
	}
	r.MBps = float64(r.Bytes) / 1e6 / d
	r.PerCore = r.MBps / float64(n)
	r.MBperCPUs = perCPU(r.Bytes, r.CPUS)
	return r
}

func perCPU(bytes int64, cpu float64) float64 {
	if cpu <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / cpu
}

func printResults(w io.Writer, rs []Result, n int) {
	fmt.Fprintf(w, "| limit (%d goroutines) | MB/s | MB/s per core | MB per CPU-s | ratio | bytes |\n|---|--:|--:|--:|--:|--:|\n", n)
	for _, r := range rs {
		if r.Skipped {
			fmt.Fprintf(w, "| %s | n/a | | | | %s |\n", r.Name, r.Note)
			continue
		}
		ratio := ""
		if r.Ratio > 0 {
			ratio = fmt.Sprintf("%.3f", r.Ratio)
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.0f | %s | %.0f MiB |\n", r.Name, r.MBps, r.PerCore, r.MBperCPUs, ratio, float64(r.Bytes)/(1<<20))
	}
}
