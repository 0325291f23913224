//go:build rocksdb

// Command rocksdb-server is a RocksDB server that speaks the Redis protocol
// and the FREEZE contract of docs/design.md (see BRIEF.md). It stands in for
// the closed-source sada-sliding server in tests and demos.
//
// Build it with `go build -tags rocksdb ./cmd/rocksdb-server` (needs
// Debian's librocksdb-dev). Exit codes: 0 after SIGTERM/SIGINT, 1 on a
// runtime error, 2 on bad flags.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

type options struct {
	port            int
	bind            string
	dbPath          string
	createIfMissing bool
	writeBufferSize int
	l0Trigger       int
	timeTick        time.Duration
	sync            bool
	exitOnStdinEOF  bool
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	logger := log.New(os.Stderr, "", 0)
	fl := flag.NewFlagSet("rocksdb-server", flag.ContinueOnError)
	var o options
	fl.IntVar(&o.port, "port", 9015, "TCP `port` to listen on (0 picks a free one)")
	fl.StringVar(&o.bind, "bind", "127.0.0.1", "`address` to listen on")
	fl.StringVar(&o.dbPath, "rocksdb_db_path", "", "RocksDB database `directory` (required)")
	fl.BoolVar(&o.createIfMissing, "rocksdb_create_if_missing_one_off", false, "create the database if it does not exist")
	fl.Int64("version_timestamp_ms", 0, "accepted for compatibility with sada-sliding, ignored")
	fl.IntVar(&o.writeBufferSize, "write_buffer_size", 4<<20, "memtable size in `bytes`; small values make many SSTs")
	fl.IntVar(&o.l0Trigger, "level0_file_num_compaction_trigger", 4, "level-0 files that start a compaction (large values keep flushed tables in place)")
	fl.DurationVar(&o.timeTick, "time_tick", time.Second, "how often to record the time key that SHCARD time counts (0 disables)")
	fl.BoolVar(&o.sync, "sync", false, "fsync the WAL on every write")
	fl.BoolVar(&o.exitOnStdinEOF, "exit_on_stdin_eof", false, "shut down when stdin closes (so a test server dies with its parent)")
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() > 0 {
		logger.Printf("rocksdb-server: unexpected argument %q", fl.Arg(0))
		return 2
	}
	if o.dbPath == "" {
		logger.Print("rocksdb-server: --rocksdb_db_path is required")
		return 2
	}
	if o.writeBufferSize <= 0 || o.timeTick < 0 || o.l0Trigger < 1 {
		logger.Print("rocksdb-server: --write_buffer_size and --level0_file_num_compaction_trigger must be > 0 and --time_tick >= 0")
		return 2
	}
	if err := serve(o, logger); err != nil {
		logger.Printf("rocksdb-server: %v", err)
		return 1
	}
	return 0
}

func serve(o options, logger *log.Logger) error {
	// Catch signals before anything can answer PING, so a client that
	// stops us right after start-up still gets a clean shutdown.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	if !o.createIfMissing {
		_, err := os.Stat(filepath.Join(o.dbPath, "CURRENT"))
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no database in %s (CURRENT is missing); pass --rocksdb_create_if_missing_one_off to create one", o.dbPath)
		}
		if err != nil {
			return fmt.Errorf("check database %s: %w", o.dbPath, err)
		}
	}
	d, err := openDB(o.dbPath, o.createIfMissing, o.writeBufferSize, o.l0Trigger, o.sync)
	if err != nil {
		return fmt.Errorf("open rocksdb %s: %w", o.dbPath, err)
	}
	h := &handler{db: d, logger: logger}
	srv, err := h.listen(net.JoinHostPort(o.bind, strconv.Itoa(o.port)))
	if err != nil {
		return errors.Join(err, closeDB(d, o.dbPath))
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if o.timeTick > 0 {
		wg.Go(func() { h.tick(ctx, o.timeTick) })
	}

	stdinEOF := make(chan struct{})
	if o.exitOnStdinEOF {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(stdinEOF)
		}()
	}
	logger.Printf("listening on %s", srv.Addr())

	select {
	case s := <-stop:
		logger.Printf("rocksdb-server: %v, shutting down", s)
	case <-stdinEOF:
		logger.Print("rocksdb-server: stdin closed, shutting down")
	}
	srv.Close() // waits for running commands
	cancel()
	wg.Wait()
	return closeDB(d, o.dbPath)
}

func closeDB(d *db, path string) error {
	if err := d.close(); err != nil {
		return fmt.Errorf("close rocksdb %s: %w", path, err)
	}
	return nil
}

// timeKeyPrefix starts the keys that record, once per tick, that the server
// was up in a given unix second; SHCARD time counts them.
const timeKeyPrefix = "\x00time:"

func timeKey(sec int64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(sec))
	return timeKeyPrefix + string(b[:])
}

func (h *handler) tick(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		empty := ""
		if err := h.db.write([]op{{key: timeKey(time.Now().Unix()), value: &empty}}); err != nil {
			h.logger.Printf("rocksdb-server: record time: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
