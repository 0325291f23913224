package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
)

// Exit codes, restic's numbers so that wrappers written for it work;
// documented in README.md and in snap --help (exitCodesHelp).
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitIncomplete  = 3  // backup saved, but marked partial
	exitNoRepo      = 10 // no repository at the location
	exitLocked      = 11 // another process holds a conflicting lock
	exitPassword    = 12 // no key opens with the password
	exitInterrupted = 130
)

const exitCodesHelp = `Exit codes: 0 success, 1 error, 2 usage error, 3 backup saved but incomplete
(a --source dir snapshot marked partial), 10 no repository at --repo, 11 repository
locked by another process, 12 wrong password, 130 interrupted (SIGINT, SIGTERM).
With --json, a command that fails before printing its result prints
{"error": "...", "code": N} on stdout.`

// errIncomplete marks a backup that saved a snapshot that is not whole:
// a dir snapshot with files that changed while they were read.
var errIncomplete = errors.New("backup incomplete")

// interruptedError is a command's error after SIGINT or SIGTERM
// cancelled its context: it stopped because of the signal.
type interruptedError struct{ err error }

func (e *interruptedError) Error() string { return e.err.Error() }
func (e *interruptedError) Unwrap() error { return e.err }

// interrupted marks err as caused by a signal when ctx (main's, which
// the signals cancel) is done. Exit codes a command chose stay.
func interrupted(ctx context.Context, err error) error {
	var ec cli.ExitCoder
	if err == nil || ctx.Err() == nil || errors.As(err, &ec) {
		return err
	}
	return &interruptedError{err}
}

// codeOf maps an error to its exit code: the one place that knows them.
func codeOf(err error) int {
	var ie *interruptedError
	var ec cli.ExitCoder
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ie):
		return exitInterrupted
	case errors.As(err, &ec):
		return ec.ExitCode()
	case errors.Is(err, errIncomplete):
		return exitIncomplete
	case errors.Is(err, repo.ErrNoRepository):
		return exitNoRepo
	case errors.Is(err, repo.ErrLocked):
		return exitLocked
	case errors.Is(err, repo.ErrWrongPassword):
		return exitPassword
	}
	return exitError
}

// exitCode prints err on stderr and returns the exit code.
func exitCode(err error, stderr io.Writer) int {
	if msg := errMessage(err); msg != "" {
		fmt.Fprintln(stderr, "snap:", msg)
	}
	return codeOf(err)
}

// errMessage is what snap says about err ("" for an exit code without a
// message).
func errMessage(err error) string {
	if err == nil {
		return ""
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.Error()
	}
	return err.Error()
}

// stdoutWriter remembers whether a command printed anything, so a failed
// --json command prints its error object only where it printed no result:
// stdout always holds one JSON value.
type stdoutWriter struct {
	w       io.Writer
	written bool
}

func (s *stdoutWriter) Write(p []byte) (int, error) {
	s.written = s.written || len(p) > 0
	return s.w.Write(p)
}

// jsonError is urfave's ExitErrHandler: it runs once when a command
// fails (bad flags included). With --json it prints the error as
// {"error": "...", "code": N} on stdout, unless the command already
// printed its result there (check that found problems, a partial backup):
// then the exit code alone says so. main prints the message on stderr.
func jsonError(out *stdoutWriter) cli.ExitErrHandlerFunc {
	return func(c *cli.Context, err error) {
		if err == nil || out.written || !setContext(c, "json").Bool("json") {
			return
		}
		json.NewEncoder(out).Encode(struct {
			Error string `json:"error"`
			Code  int    `json:"code"`
		}{errMessage(err), codeOf(err)})
	}
}
