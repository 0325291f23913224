// Command snap makes consistent, deduplicated, encrypted snapshots of a live
// RocksDB server's files and restores them. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"runtime/trace"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/snapbackup/snap/internal/gcfloor"
	"github.com/snapbackup/snap/repo"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// go-redis logs dial failures through a package-wide logger; snap
	// reports them itself, with the address and a hint.
	redis.SetLogger(quietRedis{})
	// snap's heap is mostly large pointer-free buffers, which the
	// collector frees cheaply: collecting at 40% growth instead of 100%
	// keeps peak memory near what is live at little CPU cost. Under
	// gcFloor nothing is collected: a short command allocates its few tens
	// of MiB without a collection at every 40% (package gcfloor). GOGC
	// wins.
	setGC(gcFloor)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	app := newApp(os.Stdout, os.Stderr)
	stopProfile := startProfile(os.Getenv("SNAP_CPUPROFILE"), os.Stderr)
	stopTrace := startTrace(os.Getenv("SNAP_TRACE"), os.Stderr)
	err := app.RunContext(ctx, flagsFirst(app, os.Args))
	stopTrace()
	stopProfile()
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// startProfile writes a CPU profile to path (SNAP_CPUPROFILE, for
// performance work) until the returned function is called.
func startProfile(path string, stderr io.Writer) func() {
	return startRecording("SNAP_CPUPROFILE", path, stderr, pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// startTrace writes an execution trace to path (SNAP_TRACE, for finding
// where a pipeline's goroutines wait: go tool trace) until the returned
// function is called.
func startTrace(path string, stderr io.Writer) func() {
	return startRecording("SNAP_TRACE", path, stderr, trace.Start, trace.Stop)
}

// startRecording creates path and starts a runtime recorder into it; the
// returned function stops it and closes the file. Without a path, or when
// it cannot start (said on stderr, naming env), nothing is recorded.
func startRecording(env, path string, stderr io.Writer, start func(io.Writer) error, stop func()) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		if err = start(f); err != nil {
			f.Close()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "snap: %s: %v\n", env, err)
		return func() {}
	}
	return func() {
		stop()
		f.Close()
	}
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

// globalOptions are the flags every command shares.
type globalOptions struct {
	repo         string
	passwordFile string
	json         bool
	connections  int
	storage      storageOptions
	log          *slog.Logger
	stdout       io.Writer
	stderr       io.Writer
	stdin        *os.File
}

func newApp(stdout, stderr io.Writer) *cli.App {
	out := &stdoutWriter{w: stdout}
	return &cli.App{
		Name:        "snap",
		Usage:       "consistent, deduplicated, encrypted snapshots of live databases: a RocksDB server that answers FREEZE, database directories, Redis through its AOF",
		Description: exitCodesHelp,
		Version:     version,
		Writer:      out, ErrWriter: stderr,
		Flags: globalFlags(),
		Commands: []*cli.Command{
			command(initCommand()), command(backupCommand()), command(restoreCommand()), command(lsCommand()), command(diffCommand()),
			command(runCommand()), command(followCommand()), command(agentCommand()), command(clusterCommand()),
			command(forgetCommand()), command(pruneCommand()), command(checkCommand()), command(statsCommand()), command(unlockCommand()), command(keyCommand()), command(copyCommand()), command(repairCommand()),
			completionCommand(), completeCommand(), manCommand(), // completion.go: made from the definitions above, without the global flags
		},
		ExitErrHandler: jsonError(out), // main prints the message and exits
		OnUsageError:   usageError,
	}
}

// globalFlags are accepted before the command and after it:
// "snap --json ls" and "snap ls --json" mean the same.
func globalFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "repo", Aliases: []string{"r"}, EnvVars: []string{"SNAP_REPO"}, Usage: "repository location: a local directory or gs://bucket/prefix"},
		&cli.StringFlag{Name: "password-file", EnvVars: []string{"SNAP_PASSWORD_FILE"}, Usage: "read the repository password, or a generated key, from `FILE` (or set SNAP_PASSWORD)"},
		&cli.BoolFlag{Name: "json", Usage: "print machine-readable JSON on stdout instead of text"},
		&cli.IntFlag{Name: "connections", DefaultText: "2, or 8 for gs://", EnvVars: []string{"SNAP_CONNECTIONS"}, Usage: "parallel reads and writes to the repository"},
		&cli.StringFlag{Name: "log-level", Value: "info", EnvVars: []string{"SNAP_LOG_LEVEL"}, Usage: "debug, info, warn or error (logs go to stderr)"},
	}, storageFlags()...)
}

// command adds the global flags to a command's own.
func command(c *cli.Command) *cli.Command {
	c.Flags = append(c.Flags, globalFlags()...)
	c.OnUsageError = usageError
	if action := c.Action; action != nil {
		c.Action = func(cc *cli.Context) error { return interrupted(cc.Context, action(cc)) }
	}
	return c
}

// usageError makes a bad flag exit with exitUsage and a pointer to help,
// instead of the whole help text.
func usageError(c *cli.Context, err error, _ bool) error {
	name := ""
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		name = " " + c.Command.Name
	}
	return cli.Exit(fmt.Sprintf("%v (see snap%s --help)", err, name), exitUsage)
}

// setContext returns the innermost context in which the flag was given,
// or c itself when it was given nowhere (its default applies).
func setContext(c *cli.Context, name string) *cli.Context {
	for _, l := range c.Lineage() {
		if l.IsSet(name) {
			return l
		}
	}
	return c
}

func globals(c *cli.Context) (*globalOptions, error) {
	str := func(name string) string { return setContext(c, name).String(name) }
	var level slog.Level
	if err := level.UnmarshalText([]byte(str("log-level"))); err != nil {
		return nil, cli.Exit(fmt.Sprintf("--log-level %q: want debug, info, warn or error", str("log-level")), exitUsage)
	}
	g := &globalOptions{
		repo:         str("repo"),
		passwordFile: str("password-file"),
		json:         setContext(c, "json").Bool("json"),
		stdout:       c.App.Writer,
		stderr:       c.App.ErrWriter,
		stdin:        os.Stdin,
	}
	g.log = slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
	if g.repo == "" {
		return nil, cli.Exit("no repository given: use --repo DIR or set SNAP_REPO", exitUsage)
	}
	so, err := parseStorageOptions(c, g.repo, g.log)
	if err != nil {
		return nil, err
	}
	g.storage, g.connections = so, so.connections
	if g.connections < 1 {
		return nil, cli.Exit("--connections must be at least 1", exitUsage)
	}
	return g, nil
}

// password reads the repository password: SNAP_PASSWORD_FILE or
// --password-file, then SNAP_PASSWORD, then a prompt on a terminal.
func (g *globalOptions) password(confirm bool) (string, error) {
	if g.passwordFile != "" {
		data, err := os.ReadFile(g.passwordFile)
		if err != nil {
			return "", fmt.Errorf("read password file: %w", err)
		}
		pw := strings.TrimRight(string(data), "\r\n")
		if pw == "" {
			return "", fmt.Errorf("password file %s is empty", g.passwordFile)
		}
		return pw, nil
	}
	if pw, ok := os.LookupEnv("SNAP_PASSWORD"); ok && pw != "" {
		return pw, nil
	}
	fd := int(g.stdin.Fd())
	if !term.IsTerminal(fd) {
		return "", errors.New("no password: set SNAP_PASSWORD or SNAP_PASSWORD_FILE, or use --password-file")
	}
	fmt.Fprint(g.stderr, "repository password: ")
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(g.stderr)
	if err != nil {
		return "", err
	}
	if confirm {
		fmt.Fprint(g.stderr, "enter the password again: ")
		again, err := term.ReadPassword(fd)
		fmt.Fprintln(g.stderr)
		if err != nil {
			return "", err
		}
		if string(again) != string(pw) {
			return "", errors.New("the passwords do not match")
		}
	}
	if len(pw) == 0 {
		return "", errors.New("empty password")
	}
	return string(pw), nil
}

// openRepo opens the repository named by the global options.
func (g *globalOptions) openRepo(ctx context.Context, compression string) (*repo.Repository, error) {
	return g.openRepoWith(ctx, repo.Options{Compression: compression})
}

// openRepoWith opens the repository with o, whose log and connections
// come from g.
func (g *globalOptions) openRepoWith(ctx context.Context, o repo.Options) (*repo.Repository, error) {
	be, err := openStorage(ctx, g.storage, false)
	if err != nil {
		return nil, err
	}
	pw, err := g.password(false)
	if err != nil {
		return nil, err
	}
	o.Log, o.Connections = g.log, g.connections
	r, err := repo.Open(ctx, be, pw, o)
	if err != nil {
		be.Close()
		return nil, err
	}
	return r, nil
}

// isTerminal reports whether w is a terminal, for progress display.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// flagsFirst moves a command's positional arguments after its flags, so
// "snap restore ID --target DIR" works: urfave/cli stops parsing flags at
// the first argument. "--" ends the flags as usual.
func flagsFirst(app *cli.App, args []string) []string {
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") { // global flags
		if takesValue(app.Flags, args[i]) {
			i++
		}
		i++
	}
	if i >= len(args) {
		return args
	}
	cmd := app.Command(args[i])
	if cmd == nil {
		return args
	}
	// "snap key add FILE --flag": the words after the subcommand are
	// sorted by the subcommand's flags; flags before it stay there.
	for len(cmd.Subcommands) > 0 {
		j := i + 1
		for j < len(args) && strings.HasPrefix(args[j], "-") && args[j] != "-" && args[j] != "--" {
			if takesValue(cmd.Flags, args[j]) {
				j++
			}
			j++
		}
		if j >= len(args) {
			break
		}
		sub := lookupCommand(cmd.Subcommands, args[j])
		if sub == nil {
			break
		}
		cmd, i = sub, j
	}
	out := append([]string{}, args[:i+1]...)
	var positional []string
	for j := i + 1; j < len(args); j++ {
		a := args[j]
		switch {
		case a == "--":
			positional = append(positional, args[j:]...)
			j = len(args)
		case strings.HasPrefix(a, "-") && a != "-":
			out = append(out, a)
			if takesValue(cmd.Flags, a) && j+1 < len(args) {
				j++
				out = append(out, args[j])
			}
		default:
			positional = append(positional, a)
		}
	}
	return append(out, positional...)
}

// takesValue reports whether arg ("--name" or "-n", without "=value") names
// a flag that consumes the next argument.
func takesValue(flags []cli.Flag, arg string) bool {
	name := strings.TrimLeft(arg, "-")
	if strings.Contains(name, "=") {
		return false
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if bf, ok := f.(*cli.BoolFlag); ok && bf != nil {
				return false
			}
			return true
		}
	}
	return false
}

// gcPercent is snap's GOGC unless the environment sets one.
const gcPercent = 40

// longRunning drops the floor for the commands that run for months (run,
// follow, agent): what they save is a few collections at start, what the
// floor could cost them is a heap that grows to gcFloor before each
// collection, and their memory is what is budgeted (a follower: at most
// 50 MiB, docs/performance.md, "Results, redis").
func longRunning() { setGC(0) }

// setGC runs the collector at gcPercent above floor bytes of heap, unless
// the GOGC environment variable is set: then the runtime's own setting
// stays.
func setGC(floor uint64) {
	if _, ok := os.LookupEnv("GOGC"); !ok {
		gcfloor.Start(gcPercent, floor)
	}
}

// gcFloor is the heap below which snap does not collect garbage. An
// incremental backup of 2.5 MB: CPU 92-102 ms with none, 79-81 with 32 MiB,
// 67-74 with 64 MiB, and peak RSS 34-35 MiB in all three (the floor holds
// what was garbage; what the collections freed was soon needed again).
// 32 keeps the smallest commands (prune, ls: 25 MiB) far under restic's.
const gcFloor = 32 << 20
