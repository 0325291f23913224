// Package testserver builds and runs cmd/rocksdb-server, a real RocksDB
// behind the Redis protocol and the FREEZE contract, for tests and demos.
//
// The server needs Debian's librocksdb-dev (and rocksdb-tools for ldb in
// tests); `make deps` installs both. This package itself is pure Go.
package testserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snapbackup/snap/internal/testproc"
)

// ErrNoRocksDB means librocksdb-dev is not installed.
var ErrNoRocksDB = errors.New("librocksdb-dev is not installed: run `make deps` (or apt-get install librocksdb-dev rocksdb-tools)")

// StartTimeout bounds how long Start waits for the server to answer PING.
const StartTimeout = 20 * time.Second

// stopTimeout bounds how long Stop waits after SIGTERM before SIGKILL.
const stopTimeout = 10 * time.Second

// Available reports whether RocksDB's headers and library are installed,
// wrapping ErrNoRocksDB when not.
func Available() error {
	var missing []string
	if !anyExists("/usr/include/rocksdb/db.h", "/usr/local/include/rocksdb/db.h") {
		missing = append(missing, "rocksdb/db.h")
	}
	libs, _ := filepath.Glob("/usr/lib/*/librocksdb.so")
	more, _ := filepath.Glob("/usr/lib*/librocksdb.so")
	local, _ := filepath.Glob("/usr/local/lib*/librocksdb.so")
	if len(libs)+len(more)+len(local) == 0 {
		missing = append(missing, "librocksdb.so")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w (missing %s)", ErrNoRocksDB, strings.Join(missing, ", "))
	}
	return nil
}

func anyExists(paths ...string) bool {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// Build compiles cmd/rocksdb-server of the module at moduleRoot with
// -tags rocksdb into outDir and returns the binary's path. The binary is
// written under a temporary name and renamed, so a process already running
// an older build is not disturbed. Go's build cache makes repeated calls
// cheap, but callers should still build once per process.
func Build(ctx context.Context, moduleRoot, outDir string) (string, error) {
	if err := Available(); err != nil {
		return "", fmt.Errorf("build rocksdb-server: %w", err)
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return "", fmt.Errorf("build rocksdb-server: %w", err)
	}
	bin := filepath.Join(outDir, "rocksdb-server")
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "rocksdb", "-o", tmp, "./cmd/rocksdb-server")
	cmd.Dir = moduleRoot
	out, err := cmd.CombinedOutput()
	if err != nil {
		os.Remove(tmp)
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "rocksdb/") && strings.Contains(msg, "No such file") ||
			strings.Contains(msg, "cannot find -lrocksdb") {
			return "", fmt.Errorf("build rocksdb-server in %s: %w\n%s", moduleRoot, ErrNoRocksDB, msg)
		}
		return "", fmt.Errorf("build rocksdb-server in %s: %w\n%s", moduleRoot, err, msg)
	}
	if err := os.Rename(tmp, bin); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("build rocksdb-server: %w", err)
	}
	return bin, nil
}

// ModuleRoot finds the directory holding go.mod, walking up from the
// working directory (a package's directory under `go test`).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// RequireRocksDB skips the test when RocksDB is not installed, except under
// CI=true, where a missing RocksDB fails the test: CI must run these tests.
func RequireRocksDB(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// built caches Binary's result per process. Package-level state, against
// the house rule, because every test of a test binary shares one build and
// a library cannot hook TestMain.
var built struct {
	sync.Mutex
	bin string
}

// Binary builds the server once per test process and returns its path,
// skipping or failing the test as RequireRocksDB does. The binary lives in
// the user's cache directory, one per module checkout, replaced atomically
// by each build.
func Binary(t testing.TB) string {
	t.Helper()
	RequireRocksDB(t)
	built.Lock()
	defer built.Unlock()
	if built.bin != "" {
		return built.bin
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// go test caches results by the files a test opens or stats; building
	// in a subprocess hides the server's sources, so look at them here.
	src := filepath.Join(root, "cmd", "rocksdb-server")
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		os.Stat(filepath.Join(src, e.Name()))
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(cache, "snap-testserver", hex.EncodeToString(sum[:8]))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := Build(ctx, root, dir)
	if err != nil {
		t.Fatal(err)
	}
	built.bin = bin
	return bin
}

// Server is a running rocksdb-server.
type Server struct {
	Addr    string // host:port
	Port    int
	DataDir string

	cmd   *exec.Cmd
	stdin io.WriteCloser // closing it makes the server exit (--exit_on_stdin_eof)
	log   *testproc.Buffer
	done  chan struct{} // closed when the process has exited
	err   error         // the process's exit status, set before done closes

	stopOnce sync.Once
	stopErr  error
}

// Start runs bin on 127.0.0.1 with a free port and a database in dataDir
// (created if missing), waits until it answers PING and registers Stop with
// t.Cleanup. With a nil t a failure panics; non-test code should use Run.
func Start(t testing.TB, bin, dataDir string, extraArgs ...string) *Server {
	if t != nil {
		t.Helper()
	}
	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	s, err := Run(ctx, bin, dataDir, extraArgs...)
	if err != nil {
		if t == nil {
			panic(err)
		}
		t.Fatal(err)
	}
	if t != nil {
		t.Cleanup(func() {
			if err := s.Stop(); err != nil {
				t.Errorf("stop rocksdb-server: %v", err)
			} else if t.Failed() {
				t.Logf("rocksdb-server on %s said:\n%s", s.Addr, s.Log())
			}
		})
	}
	return s
}

// Run is Start for non-test code: ctx bounds only the start-up; the server
// runs until Stop or Kill (or until this process exits: the server watches
// its stdin).
func Run(ctx context.Context, bin, dataDir string, extraArgs ...string) (*Server, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := testproc.FreePort()
		if err != nil {
			return nil, err
		}
		s, err := run(ctx, bin, dataDir, port, extraArgs)
		if err == nil {
			return s, nil
		}
		lastErr = err
		// Another process took the port between our probe and the
		// server's bind: try another one. Anything else is final.
		if !errors.Is(err, testproc.ErrPortTaken) {
			return nil, err
		}
	}
	return nil, lastErr
}

func run(ctx context.Context, bin, dataDir string, port int, extraArgs []string) (*Server, error) {
	args := append([]string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--rocksdb_db_path", dataDir,
		"--rocksdb_create_if_missing_one_off",
		"--exit_on_stdin_eof",
	}, extraArgs...)
	s := &Server{
		Addr:    net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		Port:    port,
		DataDir: dataDir,
		cmd:     exec.Command(bin, args...),
		log:     &testproc.Buffer{},
		done:    make(chan struct{}),
	}
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	stdin, err := s.cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s.stdin = stdin
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.done)
	}()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if ping(s.Addr) == nil {
			return s, nil
		}
		select {
		case <-s.done:
			out := s.Log()
			if strings.Contains(out, "address already in use") {
				return nil, fmt.Errorf("start rocksdb-server on %s: %w", s.Addr, testproc.ErrPortTaken)
			}
			return nil, fmt.Errorf("start rocksdb-server on %s: %v\n%s", s.Addr, s.err, out)
		case <-ctx.Done():
			s.Kill()
			return nil, fmt.Errorf("start rocksdb-server on %s: no PONG: %w\n%s", s.Addr, ctx.Err(), s.Log())
		case <-tick.C:
		}
	}
}

// ping sends one RESP PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(c, "*1\r\n$4\r\nPING\r\n"); err != nil {
		return err
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "+PONG\r\n" {
		return fmt.Errorf("ping %s: unexpected reply %q", addr, buf)
	}
	return nil
}

// Log returns what the server wrote to stdout and stderr so far.
func (s *Server) Log() string { return s.log.String() }

// Stop asks the server to shut down (SIGTERM), waits up to 10s, then kills
// it. It returns an error if the server did not exit cleanly. Calling it
// again, or after Kill, returns the first result.
func (s *Server) Stop() error {
	s.stopOnce.Do(func() {
		select {
		case <-s.done:
			// Already gone (killed, or crashed: report the latter).
			if s.err != nil && !testproc.Killed(s.err) {
				s.stopErr = fmt.Errorf("rocksdb-server on %s exited early: %v\n%s", s.Addr, s.err, s.Log())
			}
			return
		default:
		}
		if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			s.stopErr = fmt.Errorf("stop rocksdb-server on %s: %w", s.Addr, err)
		}
		select {
		case <-s.done:
			if s.err != nil {
				s.stopErr = fmt.Errorf("rocksdb-server on %s: %v\n%s", s.Addr, s.err, s.Log())
			}
		case <-time.After(stopTimeout):
			s.cmd.Process.Kill()
			<-s.done
			s.stopErr = fmt.Errorf("rocksdb-server on %s ignored SIGTERM for %v; killed\n%s", s.Addr, stopTimeout, s.Log())
		}
		s.stdin.Close()
	})
	return s.stopErr
}

// Kill crashes the server (SIGKILL) and waits for it to exit. What it wrote
// to the OS survives, as after a process crash; nothing more is fsynced.
func (s *Server) Kill() error {
	err := s.cmd.Process.Kill()
	<-s.done
	s.stopOnce.Do(func() { s.stdin.Close() })
	if err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill rocksdb-server on %s: %w", s.Addr, err)
	}
	return nil
}
