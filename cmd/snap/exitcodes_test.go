package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
)

func TestExitCodeOf(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{errors.New("boom"), exitError},
		{cli.Exit("bad flag", exitUsage), exitUsage},
		{fmt.Errorf("%w: snapshot 1234abcd is marked partial", errIncomplete), exitIncomplete},
		{fmt.Errorf("%w at /nowhere (run snap init)", repo.ErrNoRepository), exitNoRepo},
		{fmt.Errorf("%w: exclusive lock by prune", repo.ErrLocked), exitLocked},
		{fmt.Errorf("lock: %w", repo.ErrLockLost), exitError},
		{errors.Join(repo.ErrWrongPassword, errors.New("keys/x: corrupt")), exitPassword},
		{interrupted(cancelled, fmt.Errorf("save pack: %w", context.Canceled)), exitInterrupted},
		// A signal that came while a lock was awaited: interrupted wins.
		{interrupted(cancelled, fmt.Errorf("%w: held", repo.ErrLocked)), exitInterrupted},
		// An exit code a command chose stays (run: the server's status).
		{interrupted(cancelled, cli.Exit("server exited with status 143", 143)), 143},
		{interrupted(context.Background(), errors.New("boom")), exitError},
	} {
		if got := codeOf(tc.err); got != tc.want {
			t.Errorf("codeOf(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
	if err := interrupted(cancelled, nil); err != nil {
		t.Errorf("interrupted(nil) = %v", err)
	}
}

// TestJSONErrorInProcess: with --json a failure prints one object on
// stdout, {"error", "code"}, and the message on stderr as well; a usage
// error too.
func TestJSONErrorInProcess(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none")
	t.Setenv("SNAP_PASSWORD", "pw")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--repo", missing, "ls", "--json"}, exitNoRepo, "no snap repository at " + missing},
		{[]string{"--json", "--repo", missing, "diff", "abcd"}, exitUsage, "diff takes two snapshot ids"},
		// --json before the command: known even though the command's
		// own flags do not parse (after it, urfave drops every flag).
		{[]string{"--json", "--repo", missing, "ls", "--bogus"}, exitUsage, "flag provided but not defined: -bogus"},
	} {
		code, out, errs := snap(t, tc.args...)
		var obj map[string]any
		if err := json.Unmarshal([]byte(out), &obj); err != nil {
			t.Errorf("snap %s: stdout is not one JSON object: %v\n%s", strings.Join(tc.args, " "), err, out)
			continue
		}
		msg, _ := obj["error"].(string)
		if code != tc.code || len(obj) != 2 || obj["code"] != float64(tc.code) || !strings.Contains(msg, tc.msg) ||
			!strings.Contains(errs, "snap: "+msg) {
			t.Errorf("snap %s: exit %d, stdout %s, stderr %s; want exit %d and {\"error\": %q..., \"code\": %d} on stdout, the message on stderr",
				strings.Join(tc.args, " "), code, out, errs, tc.code, tc.msg, tc.code)
		}
	}
	// Without --json, stdout stays empty.
	if code, out, _ := snap(t, "--repo", missing, "ls"); code != exitNoRepo || out != "" {
		t.Errorf("ls without --json: exit %d, stdout %q", code, out)
	}
}
