// Package testredis runs a real redis-server (7.0 or later) for tests: on
// 127.0.0.1 and a free port, with its AOF on and fsynced on every write,
// always stopped when the test ends. Debian's redis-server and redis-tools
// packages provide it and redis-check-aof; `make deps` installs both.
//
// It is modelled on internal/testserver, which does the same for the
// RocksDB test server.
package testredis

import (
	"bufio"
	"bytes"
	"context"
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

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/snapbackup/snap/internal/testproc"
)

// ErrNoRedis means redis-server 7 or later, or redis-check-aof, is not on
// PATH.
var ErrNoRedis = errors.New("redis-server is not installed: run `make deps` (or apt-get install redis-server redis-tools)")

// StartTimeout bounds how long Start waits for the server to answer PING
// (it answers LOADING while it reads its AOF).
const StartTimeout = 20 * time.Second

// stopTimeout bounds how long Stop waits after SIGTERM before SIGKILL.
const stopTimeout = 10 * time.Second

// minMajor is the oldest Redis with the multi-part AOF (a manifest and
// its base and incr files in appendonlydir) that the Redis source reads.
const minMajor = 7

// Available reports whether redis-server 7 or later and redis-check-aof
// are on PATH, wrapping ErrNoRedis when not.
func Available() error {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return fmt.Errorf("%w (%v)", ErrNoRedis, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return fmt.Errorf("%w (%s --version: %v)", ErrNoRedis, bin, err)
	}
	major, ok := versionMajor(string(out))
	if !ok {
		return fmt.Errorf("%w (%s --version said %q)", ErrNoRedis, bin, strings.TrimSpace(string(out)))
	}
	if major < minMajor {
		return fmt.Errorf("%w (%s is Redis %d; want %d or later)", ErrNoRedis, bin, major, minMajor)
	}
	if _, err := exec.LookPath("redis-check-aof"); err != nil {
		return fmt.Errorf("%w (%v)", ErrNoRedis, err)
	}
	return nil
}

// versionMajor reads the major version from what redis-server --version
// prints: "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 ...".
func versionMajor(out string) (int, bool) {
	_, rest, ok := strings.Cut(out, " v=")
	if !ok {
		return 0, false
	}
	major, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(major)
	return n, err == nil
}

// Require skips the test when Available fails, except under CI=true,
// where it fails the test: CI must run these tests.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// Options configure a server.
type Options struct {
	Dir        string   // Redis's dir, where appendonlydir goes (required; made if missing)
	Timestamps bool     // aof-timestamp-enabled yes: "#TS:<unix seconds>" annotations in the AOF
	Args       []string // more config as name, value pairs: "auto-aof-rewrite-min-size", "64kb"
	Port       int      // 0: a free port
}

// Command returns the command line that runs redis-server with o on
// port, logging to logFile, in the foreground: what Start runs, for a test
// that has another program start the server as its child (snap run
// --follow). o.Dir and logFile should be absolute.
func Command(o Options, port int, logFile string) ([]string, error) {
	if o.Dir == "" {
		return nil, errors.New("testredis: Options.Dir is required")
	}
	if len(o.Args)%2 != 0 {
		return nil, fmt.Errorf("testredis: Options.Args %q: want name, value pairs", o.Args)
	}
	args := []string{"redis-server",
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", o.Dir,
		"--appendonly", "yes",
		"--appendfsync", "always",
		"--save", "",
		"--daemonize", "no",
		"--protected-mode", "yes",
		"--logfile", logFile,
	}
	if o.Timestamps {
		args = append(args, "--aof-timestamp-enabled", "yes")
	}
	for i := 0; i < len(o.Args); i += 2 {
		args = append(args, "--"+strings.TrimPrefix(o.Args[i], "--"), o.Args[i+1])
	}
	return args, nil
}

// Server is a running redis-server.
type Server struct {
	Addr string // 127.0.0.1:Port
	Dir  string // absolute
	Port int

	o       Options
	logFile string

	mu      sync.Mutex
	proc    *process // the current run; Restart replaces it
	clients []*redis.Client
}

// process is one run of redis-server.
type process struct {
	cmd  *exec.Cmd
	out  *testproc.Buffer // stdout and stderr: what Redis says before its log is open
	done chan struct{}    // closed when the process has exited
	err  error            // its exit status, set before done closes

	stopOnce sync.Once
	stopErr  error
}

// Start starts redis-server with o, waits until it answers PING and
// registers a cleanup that closes the Clients and stops it. It skips the
// test as Require does when Redis is missing, and fails it, with the
// tail of Redis's log, when the server does not come up.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	Require(t)
	if o.Dir == "" {
		t.Fatal("testredis: Options.Dir is required")
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	o.Dir = dir
	// The log lives outside Dir, which holds only what Redis persists.
	s := &Server{Dir: dir, o: o, logFile: filepath.Join(t.TempDir(), "redis.log")}
	for attempt := 0; ; attempt++ {
		port := o.Port
		if port == 0 {
			if port, err = testproc.FreePort(); err != nil {
				t.Fatal(err)
			}
		}
		err = s.start(port)
		if err == nil {
			break
		}
		// Another process took the port between our probe and the
		// server's bind: try another one. Anything else is final.
		if o.Port != 0 || !errors.Is(err, testproc.ErrPortTaken) || attempt == 4 {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		s.mu.Lock()
		clients := s.clients
		s.clients = nil
		s.mu.Unlock()
		for _, c := range clients {
			c.Close()
		}
		if err := s.Stop(); err != nil {
			t.Errorf("stop redis-server: %v", err)
		} else if t.Failed() {
			t.Logf("redis-server on %s logged:\n%s", s.Addr, s.LogTail())
		}
	})
	return s
}

// start runs the server on port and waits until it answers as itself.
func (s *Server) start(port int) error {
	args, err := Command(s.o, port, s.logFile)
	if err != nil {
		return err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p := &process{cmd: exec.Command(args[0], args[1:]...), out: &testproc.Buffer{}, done: make(chan struct{})}
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	s.mu.Lock()
	s.proc, s.Addr, s.Port = p, addr, port
	s.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), StartTimeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		// A PONG alone could come from another server on the port, while
		// ours fails to bind: check that it is ours.
		if ping(addr) == nil {
			if pid, err := serverPID(addr); err == nil && pid == p.cmd.Process.Pid {
				return nil
			}
		}
		select {
		case <-p.done:
			tail := s.LogTail()
			if strings.Contains(strings.ToLower(tail), "address already in use") {
				return fmt.Errorf("start redis-server on %s: %w", addr, testproc.ErrPortTaken)
			}
			return fmt.Errorf("start redis-server on %s: %v\n%s", addr, p.err, tail)
		case <-ctx.Done():
			p.kill()
			return fmt.Errorf("start redis-server on %s: no PONG within %v\n%s", addr, StartTimeout, s.LogTail())
		case <-tick.C:
		}
	}
}

// Stop shuts the server down with SIGTERM, on which Redis fsyncs its AOF
// and exits, waits up to 10 s and then kills it. It returns an error if the
// server did not exit with status 0 by itself. Calling it again returns
// the first result.
func (s *Server) Stop() error {
	s.mu.Lock()
	p, addr := s.proc, s.Addr
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	p.stopOnce.Do(func() {
		select {
		case <-p.done:
			// Already gone: killed, or crashed (reported).
			if p.err != nil && !testproc.Killed(p.err) {
				p.stopErr = fmt.Errorf("redis-server on %s exited early: %v\n%s", addr, p.err, s.LogTail())
			}
			return
		default:
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			p.stopErr = fmt.Errorf("stop redis-server on %s: %w", addr, err)
		}
		select {
		case <-p.done:
			if p.err != nil {
				p.stopErr = fmt.Errorf("redis-server on %s: %v\n%s", addr, p.err, s.LogTail())
			}
		case <-time.After(stopTimeout):
			p.kill()
			p.stopErr = fmt.Errorf("redis-server on %s ignored SIGTERM for %v; killed\n%s", addr, stopTimeout, s.LogTail())
		}
	})
	return p.stopErr
}

// Kill crashes the server (SIGKILL, also to an AOF rewrite child) and
// waits for it to exit. What it wrote survives as after a crash; with
// appendfsync always, every acknowledged write is in the AOF.
func (s *Server) Kill() {
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		p.stopOnce.Do(p.kill)
	}
}

// kill sends SIGKILL to the server's process group and waits for it.
func (p *process) kill() {
	// The server leads its own group (sysProcAttr), so a fork that
	// rewrites the AOF dies with it.
	if err := killGroup(p.cmd.Process.Pid); err != nil {
		p.cmd.Process.Kill()
	}
	<-p.done
}

// Restart stops the server and starts it again on the same port and dir
// with the same options; it fails t if either fails.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.Stop(); err != nil {
		t.Fatalf("restart: %v", err)
	}
	if err := s.start(s.Port); err != nil {
		t.Fatalf("restart: %v", err)
	}
}

// Client returns a go-redis client for the server, closed at the test's
// cleanup. It reconnects across Restart.
func (s *Server) Client() *redis.Client {
	c := newClient(s.Addr)
	s.mu.Lock()
	s.clients = append(s.clients, c)
	s.mu.Unlock()
	return c
}

func newClient(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr,
		// CLIENT SETINFO and maintenance notifications are newer than
		// Redis 7.0, which answers them with errors go-redis logs.
		DisableIdentity:          true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	})
}

// logTailBytes bounds what LogTail returns.
const logTailBytes = 8 << 10

// LogTail returns the end of what the server logged, and what it wrote to
// stdout and stderr (messages from before its log file was open).
func (s *Server) LogTail() string {
	var b strings.Builder
	s.mu.Lock()
	p := s.proc
	s.mu.Unlock()
	if p != nil {
		if out := strings.TrimSpace(p.out.String()); out != "" {
			b.WriteString(tail(out, logTailBytes))
			b.WriteByte('\n')
		}
	}
	data, err := os.ReadFile(s.logFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(&b, "(read %s: %v)\n", s.logFile, err)
	}
	b.WriteString(tail(string(data), logTailBytes))
	return b.String()
}

// tail is the end of s, at most n bytes, from a line's start.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// RewriteAOF runs BGREWRITEAOF and waits until that rewrite finished,
// failing t if it did not succeed within StartTimeout.
func (s *Server) RewriteAOF(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), StartTimeout)
	defer cancel()
	c := newClient(s.Addr)
	defer c.Close()
	before, err := persistence(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.BgRewriteAOF(ctx).Err(); err != nil {
		t.Fatalf("BGREWRITEAOF: %v", err)
	}
	for {
		info, err := persistence(ctx, c)
		if err != nil {
			t.Fatalf("wait for BGREWRITEAOF: %v", err)
		}
		// Done: none running or waiting, and one more that succeeded
		// (aof_rewrites) or failed than before.
		if info["aof_rewrite_in_progress"] == "0" && info["aof_rewrite_scheduled"] == "0" {
			if info["aof_rewrites"] != before["aof_rewrites"] {
				return
			}
			if info["aof_rewrites_consecutive_failures"] != before["aof_rewrites_consecutive_failures"] {
				t.Fatalf("BGREWRITEAOF failed\n%s", s.LogTail())
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("wait for BGREWRITEAOF: %v\n%s", ctx.Err(), s.LogTail())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// persistence returns INFO persistence as name: value.
func persistence(ctx context.Context, c *redis.Client) (map[string]string, error) {
	text, err := c.Info(ctx, "persistence").Result()
	if err != nil {
		return nil, fmt.Errorf("INFO persistence: %w", err)
	}
	info := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":"); ok {
			info[k] = v
		}
	}
	return info, nil
}

// CheckAOF runs redis-check-aof on the manifest in aofDir (Redis's
// dir/appendonlydir) and fails t with its output unless it finds the
// manifest and every file it names valid. redis-check-aof 7.0 checks a
// multi-part AOF when given the manifest's path, and refuses a directory.
func CheckAOF(t testing.TB, aofDir string) {
	t.Helper()
	manifests, err := filepath.Glob(filepath.Join(aofDir, "*.manifest"))
	if err != nil || len(manifests) != 1 {
		t.Fatalf("check AOF in %s: want one *.manifest, found %q (%v)", aofDir, manifests, err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-check-aof", manifests[0]).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("All AOF files and manifest are valid")) {
		t.Fatalf("redis-check-aof %s: %v\n%s", manifests[0], err, out)
	}
}

// ping sends one RESP PING and expects +PONG.
func ping(addr string) error {
	reply, err := command(addr, "PING")
	if err != nil {
		return err
	}
	if reply != "PONG" {
		return fmt.Errorf("ping %s: unexpected reply %q", addr, reply)
	}
	return nil
}

// serverPID asks the server at addr for its process id.
func serverPID(addr string) (int, error) {
	info, err := command(addr, "INFO", "server")
	if err != nil {
		return 0, err
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("INFO server on %s: no process_id", addr)
}

// command sends one command in RESP on a new connection and returns a
// simple-string or bulk-string reply; an error reply (-LOADING while the
// AOF loads) is an error.
func command(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	var req strings.Builder
	fmt.Fprintf(&req, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&req, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, req.String()); err != nil {
		return "", err
	}
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"):
		return line[1:], nil
	case strings.HasPrefix(line, "-"):
		return "", fmt.Errorf("%s on %s: %s", args[0], addr, line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 || n > 1<<20 {
			return "", fmt.Errorf("%s on %s: bad reply %q", args[0], addr, line)
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(rd, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return "", fmt.Errorf("%s on %s: unexpected reply %q", args[0], addr, line)
}
