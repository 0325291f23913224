// Command redisload writes SET commands to a redis-server at a fixed rate
// for a duration, one pipeline per batch (10 ms), and prints the rate it
// achieved: the load of bench/redis.sh's lag row.
//
// Keys are "key:%012d" of a random number below -keys and values -size
// bytes, as redis-benchmark -t set -r KEYS -d SIZE writes them (values all
// 'x'; -value random for values that compress less). A batch that starts
// late sends what is due by then, so the rate holds over the run as long as
// the server keeps up; -late says how many batches started a whole batch
// late.
//
// Output, one line on stdout:
//
//	sets=600000 seconds=60.002 rate=9999.7 late=0 max_late_ms=3.1
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6379", "redis-server `ADDRESS`")
	rate := flag.Float64("rate", 10000, "SET commands per second")
	duration := flag.Duration("duration", time.Minute, "how long to write")
	batch := flag.Duration("batch", 10*time.Millisecond, "one pipeline every `DURATION`")
	size := flag.Int("size", 100, "value size in bytes")
	keys := flag.Int("keys", 1000000, "random keys below this number")
	value := flag.String("value", "x", "value bytes: x (as redis-benchmark) or random (printable, about 6 bits each)")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if *rate <= 0 || *duration <= 0 || *batch <= 0 || *size < 0 || *keys < 1 {
		fmt.Fprintln(os.Stderr, "redisload: -rate, -duration, -batch and -keys must be positive, -size not negative")
		os.Exit(2)
	}
	if *value != "x" && *value != "random" {
		fmt.Fprintln(os.Stderr, "redisload: -value must be x or random")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *rate, *duration, *batch, *size, *keys, *value, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "redisload:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string, rate float64, duration, batch time.Duration, size, keys int, value string, seed uint64) error {
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping %s: %w", addr, err)
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	// Values are slices of one pool, so random values cost no time per
	// command.
	pool := make([]byte, size+64<<10)
	for i := range pool {
		if value == "x" {
			pool[i] = 'x'
		} else {
			pool[i] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"[rng.IntN(64)]
		}
	}

	start := time.Now()
	var sent, late int64
	var maxLate time.Duration
	for i := int64(1); ; i++ {
		at := start.Add(time.Duration(i) * batch)
		if at.Sub(start) > duration {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(at)):
		}
		if l := time.Since(at); l > maxLate {
			maxLate = l
		}
		if time.Since(at) > batch {
			late++
		}
		due := int64(rate * at.Sub(start).Seconds())
		n := due - sent
		if n <= 0 {
			continue
		}
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for range n {
				k := fmt.Sprintf("key:%012d", rng.IntN(keys))
				off := rng.IntN(len(pool) - size + 1)
				p.Set(ctx, k, pool[off:off+size], 0)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("pipeline of %d SET: %w", n, err)
		}
		sent += n
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("sets=%d seconds=%.3f rate=%.1f late=%d max_late_ms=%.1f\n", sent, secs, float64(sent)/secs, late, float64(maxLate.Microseconds())/1000)
	return nil
}
