package main

import (
	"bytes"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// runApp runs snap in process, as main does but without flagsFirst.
func runApp(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := newApp(&out, io.Discard).Run(append([]string{"snap"}, args...))
	return out.String(), err
}

// candidates is what "snap __complete -- words..." offers.
func candidates(t *testing.T, words ...string) []string {
	t.Helper()
	out, err := runApp(t, append([]string{"__complete", "--"}, words...)...)
	if err != nil {
		t.Fatalf("__complete %q: %v", words, err)
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if line == "" {
			continue
		}
		word, _, ok := strings.Cut(line, "\t")
		if !ok {
			t.Errorf("__complete %q: line %q has no tab", words, line)
		}
		got = append(got, word)
	}
	return got
}

func TestCompletionCandidates(t *testing.T) {
	var commands []string
	for _, c := range newApp(io.Discard, io.Discard).Commands {
		if !c.Hidden {
			commands = append(commands, c.Name)
		}
	}
	commands = append(commands, "help")
	var backupFlags []string
	for _, f := range command(backupCommand()).Flags {
		backupFlags = append(backupFlags, "--"+f.Names()[0])
	}
	backupFlags = append(backupFlags, "--help")

	cases := []struct {
		words []string
		want  []string // exactly these; nil: none (the shell completes file names)
	}{
		{[]string{""}, commands},
		{[]string{"ba"}, []string{"backup"}},
		{[]string{"--repo", "/r", "res"}, []string{"restore"}}, // a global flag's value is skipped
		{[]string{"-r", "/r", "--json", "pr"}, []string{"prune"}},
		{[]string{"--"}, []string{"--repo", "--password-file", "--json", "--connections", "--log-level", "--limit-upload", "--limit-download", "--limit-read", "--help", "--version"}},
		// a command's own flags, then the global ones command() appends
		{[]string{"backup", "--"}, backupFlags},
		{[]string{"backup", "--re"}, []string{"--retry-lock", "--repo"}},
		{[]string{"backup", "-"}, append(slices.Insert(slices.Clone(backupFlags), slices.Index(backupFlags, "--repo")+1, "-r"), "-h")},
		{[]string{"--json", "backup", "--repo=/r", "--re"}, []string{"--retry-lock"}}, // given once is enough
		{[]string{"backup", "-r", "/r", "--re"}, []string{"--retry-lock"}},            // also by its alias
		{[]string{"backup", "--tag", "a", "--ta"}, []string{"--tag"}},                 // repeatable
		{[]string{"restore", "abcd", "--ta"}, []string{"--target", "--tag", "--tar"}}, // after an argument
		{[]string{"restore", "--target", "--ta"}, nil},                                // the value of --target
		{[]string{"restore", "abcd", "--target", ""}, nil},                            // the value of --target
		{[]string{"backup", "--repo="}, nil},                                          // a value after =
		{[]string{"restore", "--", "--ta"}, nil},                                      // after --, arguments only
		{[]string{"prune", "-n", "--dry"}, nil},                                       // -n is --dry-run
		{[]string{"backup", ""}, nil},                                                 // no arguments to name
		{[]string{"completion", ""}, []string{"bash", "zsh", "fish"}},
		{[]string{"completion", "z"}, []string{"zsh"}},
		{[]string{"completion", "zsh", ""}, nil},
		{[]string{"help", "res"}, []string{"restore"}},
		{[]string{"__c"}, nil}, // hidden
		{nil, commands},
	}
	for _, tc := range cases {
		if got := candidates(t, tc.words...); !slices.Equal(got, tc.want) {
			t.Errorf("complete %q:\n got %q\nwant %q", tc.words, got, tc.want)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	// urfave/cli's mechanism runs the typed line; see completion.go.
	if newApp(io.Discard, io.Discard).EnableBashCompletion {
		t.Error("EnableBashCompletion is on")
	}
	for _, shell := range completionShells {
		script, err := runApp(t, "completion", shell)
		if err != nil {
			t.Fatalf("completion %s: %v", shell, err)
		}
		if shell == "fish" {
			checkFish(t, script)
		} else {
			for _, want := range []string{"__complete --", "snap"} {
				if !strings.Contains(script, want) {
					t.Errorf("%s script lacks %q:\n%s", shell, want, script)
				}
			}
		}
		if strings.Contains(script, "generate-bash-completion") {
			t.Errorf("%s script uses --generate-bash-completion", shell)
		}
		if _, err := exec.LookPath(shell); err != nil {
			t.Logf("no %s: its syntax is not checked", shell)
			continue
		}
		cmd := exec.Command(shell, "-n")
		cmd.Stdin = strings.NewReader(script)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", shell, err, out)
		}
	}
}

// checkFish checks the fish script: complete lines for every command and
// for the flags of each, its own and the global ones.
func checkFish(t *testing.T, script string) {
	t.Helper()
	lines := map[string]bool{}
	inFunc := false
	for _, l := range strings.Split(script, "\n") {
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "function "):
			inFunc = true
		case inFunc:
			inFunc = l != "end"
		case strings.HasPrefix(l, "complete -c snap ") || strings.HasPrefix(l, "complete -r -c snap "):
			lines[l] = true
		default:
			t.Errorf("fish: not a complete line: %q", l)
		}
	}
	has := func(parts ...string) bool {
		for l := range lines {
			if !slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(l, p) }) {
				return true
			}
		}
		return false
	}
	app := newApp(io.Discard, io.Discard)
	for _, c := range app.Commands {
		if c.Hidden {
			if has("'" + c.Name + "'") {
				t.Errorf("fish: hidden command %s offered", c.Name)
			}
			continue
		}
		if !has("__fish_snap_no_subcommand", "-a '"+c.Name+"'") {
			t.Errorf("fish: no line for command %s", c.Name)
		}
		for _, f := range c.Flags {
			if !has("__fish_seen_subcommand_from "+c.Name+"'", " -l "+f.Names()[0]+" ") {
				t.Errorf("fish: no line for %s --%s", c.Name, f.Names()[0])
			}
		}
	}
	// --repo takes a directory: fish must not be told -f (no files);
	// --connections takes a number.
	for l := range lines {
		if strings.Contains(l, " -l repo ") && strings.Contains(l, " -f ") {
			t.Errorf("fish: --repo does not complete file names: %s", l)
		}
		if strings.Contains(l, " -l connections ") && !strings.Contains(l, " -f ") {
			t.Errorf("fish: --connections completes file names: %s", l)
		}
	}
	if n := strings.Count(script, "__fish_snap_no_subcommand' -f -l help "); n != 1 {
		t.Errorf("fish: --help %d times at the top", n)
	}
}

func TestCompletionUsage(t *testing.T) {
	for _, args := range [][]string{{"powershell"}, {}, {"bash", "zsh"}, {"--bogus", "bash"}} {
		out, err := runApp(t, append([]string{"completion"}, args...)...)
		var ec cli.ExitCoder
		if !errors.As(err, &ec) || ec.ExitCode() != exitUsage {
			t.Errorf("completion %q: %v, want a usage error", args, err)
			continue
		}
		if out != "" {
			t.Errorf("completion %q printed %q", args, out)
		}
		if len(args) > 0 && args[0] == "--bogus" {
			continue
		}
		for _, shell := range completionShells {
			if !strings.Contains(ec.Error(), shell) {
				t.Errorf("completion %q: %q does not name %s", args, ec.Error(), shell)
			}
		}
	}
}

// TestManPage runs what make man runs and checks the page names every
// command and every flag, the global ones once.
func TestManPage(t *testing.T) {
	page, err := runApp(t, "man")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(page, ".nh\n.TH snap 1") {
		t.Errorf("not a section 1 man page:\n%.200s", page)
	}
	before, commands, ok := strings.Cut(page, "\n.SH COMMANDS")
	if !ok {
		t.Fatalf("no COMMANDS section:\n%s", page)
	}
	app := newApp(io.Discard, io.Discard)
	for _, f := range app.Flags {
		if !strings.Contains(before, `\fB--`+f.Names()[0]) {
			t.Errorf("global flag --%s missing", f.Names()[0])
		}
		if strings.Contains(commands, `\fB--`+f.Names()[0]) {
			t.Errorf("global flag --%s listed under a command", f.Names()[0])
		}
	}
	global := map[string]bool{}
	for _, f := range app.Flags {
		global[f.Names()[0]] = true
	}
	for _, c := range app.Commands {
		heading := "\n.SH " + c.Name + "\n"
		if c.Hidden {
			if strings.Contains(page, heading) {
				t.Errorf("hidden command %s in the page", c.Name)
			}
			continue
		}
		_, section, ok := strings.Cut(commands, heading)
		if !ok {
			t.Errorf("command %s missing", c.Name)
			continue
		}
		section, _, _ = strings.Cut(section, "\n.SH ")
		for _, f := range c.Flags {
			if !global[f.Names()[0]] && !strings.Contains(section, `\fB--`+f.Names()[0]) {
				t.Errorf("%s --%s missing", c.Name, f.Names()[0])
			}
		}
	}
	for _, want := range []string{"[$SNAP_REPO]", "(default: info) [$SNAP_LOG_LEVEL]", "(default: this machine's host name)", "Exit codes:"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if host := hostname(); strings.Contains(page, "(default: "+host+")") {
		t.Errorf("page names this machine, %s, as a default", host)
	}
}
