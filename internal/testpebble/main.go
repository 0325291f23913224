// Command testpebble is a test helper, not part of snap. End-to-end tests
// run it in a separate process to create, checkpoint, read and hold open a
// real Pebble v2 database, so that snap's backup of database directories is
// tested against the files and locks Pebble really makes.
//
// Usage:
//
//	testpebble put DIR PREFIX FROM N   write keys PREFIX%08d, i in [FROM, FROM+N), then flush
//	testpebble checkpoint DIR CKPT     db.Checkpoint(CKPT); CKPT must not exist
//	testpebble scan DIR                print "key\tvalue\n" for every key, in order
//	testpebble hold DIR                open DIR, print "open <pid>\n", close on stdin EOF
//	testpebble lockfile PATH           F_SETLK write lock on PATH, print "locked <pid>\n",
//	                                   unlock on stdin EOF
//
// Errors go to stderr and exit with status 1.
//
// Pebble locks DIR/LOCK with a process-associated POSIX record lock:
// fcntl(F_SETLK) of F_WRLCK over the whole file (vfs/file_lock_unix.go,
// defaultFS.Lock), taken even when opened ReadOnly. lockfile takes the same
// kind of lock so tests can fake a live database without Pebble.
package main

import (
	"bufio"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/cockroachdb/pebble/v2"
	"golang.org/x/sys/unix"
)

const usage = `usage:
  testpebble put DIR PREFIX FROM N
  testpebble checkpoint DIR CKPT
  testpebble scan DIR
  testpebble hold DIR
  testpebble lockfile PATH`

// batchKeys bounds the memory of one put batch.
const batchKeys = 10000

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "testpebble: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	cmd, args := args[0], args[1:]
	want := map[string]int{"put": 4, "checkpoint": 2, "scan": 1, "hold": 1, "lockfile": 1}
	n, ok := want[cmd]
	if !ok {
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
	if len(args) != n {
		return fmt.Errorf("%s takes %d arguments, got %d\n%s", cmd, n, len(args), usage)
	}
	switch cmd {
	case "put":
		from, err := strconv.Atoi(args[2])
		if err != nil || from < 0 {
			return fmt.Errorf("put: bad FROM %q", args[2])
		}
		count, err := strconv.Atoi(args[3])
		if err != nil || count < 0 {
			return fmt.Errorf("put: bad N %q", args[3])
		}
		return put(args[0], args[1], from, count)
	case "checkpoint":
		return checkpoint(args[0], args[1])
	case "scan":
		return scan(args[0], stdout)
	case "hold":
		return hold(args[0], stdin, stdout)
	default:
		return lockFile(args[0], stdin, stdout)
	}
}

// value returns the value put stores under key: the key, ":" and the first
// 90 hex digits of SHA-512(key), about 100 bytes, so that tables are not
// trivially small and a test can recompute any value.
func value(key string) string {
	sum := sha512.Sum512([]byte(key))
	return key + ":" + hex.EncodeToString(sum[:])[:90]
}

func put(dir, prefix string, from, n int) (err error) {
	opts := options()
	// New databases get the newest format so tests see current table
	// formats; for an existing one this only ratchets forward.
	opts.FormatMajorVersion = pebble.FormatNewest
	db, err := open(dir, opts)
	if err != nil {
		return err
	}
	defer closeDB(db, dir, &err)

	b := db.NewBatch()
	defer func() { b.Close() }()
	for i := from; i < from+n; i++ {
		key := fmt.Sprintf("%s%08d", prefix, i)
		if err := b.Set([]byte(key), []byte(value(key)), nil); err != nil {
			return fmt.Errorf("set %s: %w", key, err)
		}
		if b.Count() >= batchKeys {
			if err := b.Commit(pebble.NoSync); err != nil {
				return fmt.Errorf("commit batch in %s: %w", dir, err)
			}
			b.Close()
			b = db.NewBatch()
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		return fmt.Errorf("commit batch in %s: %w", dir, err)
	}
	// Flush syncs the memtable to an SST and the manifest, so the keys do not
	// live only in an unsynced WAL.
	if err := db.Flush(); err != nil {
		return fmt.Errorf("flush %s: %w", dir, err)
	}
	return nil
}

func checkpoint(dir, ckpt string) (err error) {
	db, err := open(dir, options())
	if err != nil {
		return err
	}
	defer closeDB(db, dir, &err)
	if err := db.Checkpoint(ckpt); err != nil {
		return fmt.Errorf("checkpoint %s to %s: %w", dir, ckpt, err)
	}
	return nil
}

func scan(dir string, stdout io.Writer) (err error) {
	opts := options()
	// ReadOnly still takes the LOCK file lock (and creates LOCK if it is
	// missing), but writes nothing else: no WAL, flush or compaction.
	opts.ReadOnly = true
	db, err := open(dir, opts)
	if err != nil {
		return err
	}
	defer closeDB(db, dir, &err)

	it, err := db.NewIter(nil)
	if err != nil {
		return fmt.Errorf("iterate %s: %w", dir, err)
	}
	w := bufio.NewWriter(stdout)
	for it.First(); it.Valid(); it.Next() {
		w.Write(it.Key())
		w.WriteByte('\t')
		w.Write(it.Value())
		w.WriteByte('\n')
	}
	if err := errors.Join(it.Error(), it.Close()); err != nil {
		return fmt.Errorf("iterate %s: %w", dir, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write scan of %s: %w", dir, err)
	}
	return nil
}

func hold(dir string, stdin io.Reader, stdout io.Writer) (err error) {
	db, err := open(dir, options())
	if err != nil {
		return err
	}
	defer closeDB(db, dir, &err)
	if _, err := fmt.Fprintf(stdout, "open %d\n", os.Getpid()); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return waitEOF(stdin)
}

func lockFile(path string, stdin io.Reader, stdout io.Writer) error {
	// Read-write, because a write lock needs a descriptor open for writing.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart} // Len 0: whole file
	if err := unix.FcntlFlock(f.Fd(), unix.F_SETLK, &lk); err != nil {
		return fmt.Errorf("lock %s: %w%s", path, err, holder(path))
	}
	if _, err := fmt.Fprintf(stdout, "locked %d\n", os.Getpid()); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if err := waitEOF(stdin); err != nil {
		return err
	}
	// Closing f drops the lock.
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

func waitEOF(stdin io.Reader) error {
	if _, err := io.Copy(io.Discard, stdin); err != nil {
		return fmt.Errorf("read stdin: %w", err)
	}
	return nil
}

func options() *pebble.Options {
	return &pebble.Options{Logger: quietLogger{}}
}

func open(dir string, opts *pebble.Options) (*pebble.DB, error) {
	db, err := pebble.Open(dir, opts)
	if err != nil {
		// Pebble returns the bare errno from fcntl, which does not say that
		// the database is locked or by whom.
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			lock := filepath.Join(dir, "LOCK")
			return nil, fmt.Errorf("open %s: %s is locked: %w%s", dir, lock, err, holder(lock))
		}
		return nil, fmt.Errorf("open %s: %w", dir, err)
	}
	return db, nil
}

func closeDB(db *pebble.DB, dir string, err *error) {
	if cerr := db.Close(); cerr != nil && *err == nil {
		*err = fmt.Errorf("close %s: %w", dir, cerr)
	}
}

// holder names the process holding a conflicting lock on path, or returns
// "" if that cannot be found out.
func holder(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: io.SeekStart}
	if err := unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk); err != nil || lk.Type == unix.F_UNLCK {
		return ""
	}
	return fmt.Sprintf(" (held by pid %d)", lk.Pid)
}

// quietLogger drops Pebble's informational messages so that put prints
// nothing on success; errors still reach stderr.
type quietLogger struct{}

func (quietLogger) Infof(string, ...any) {}

func (quietLogger) Errorf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "testpebble: pebble: "+format+"\n", args...)
}

func (quietLogger) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "testpebble: pebble: "+format+"\n", args...)
	os.Exit(1)
}
