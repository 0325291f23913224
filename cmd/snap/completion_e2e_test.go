package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// completionCases are command lines being typed, the last word where the
// cursor is, and the candidates a shell offers; none: file names.
var completionCases = []struct {
	words []string
	want  []string
}{
	{[]string{"snap", "ba"}, []string{"backup"}},
	{[]string{"snap", "--repo", "/r", "res"}, []string{"restore"}},
	{[]string{"snap", "backup", "--re"}, []string{"--repo", "--retry-lock"}},
	{[]string{"snap", "backup", "--lim"}, []string{"--limit-download", "--limit-read", "--limit-upload"}},
	{[]string{"snap", "restore", "latest", "--ta"}, []string{"--tag", "--tar", "--target"}},
	{[]string{"snap", "restore", "latest", "--target", ""}, nil},
	{[]string{"snap", "completion", ""}, []string{"bash", "fish", "zsh"}},
}

// TestCompletionBinary asks the built binary, as the scripts do.
func TestCompletionBinary(t *testing.T) {
	e := newEnv(t)
	for _, tc := range completionCases {
		r := e.ok(nil, append([]string{"__complete", "--"}, tc.words[1:]...)...)
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
			if word, _, _ := strings.Cut(line, "\t"); word != "" {
				got = append(got, word)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q: got %q, want %q", tc.words, got, tc.want)
		}
	}
	r := e.run("completion", "powershell")
	if r.code != 2 || !strings.Contains(r.stderr, "bash, zsh, fish") || r.stdout != "" {
		t.Errorf("completion powershell: exit %d, stdout %q, stderr %q; want 2 and the shells", r.code, r.stdout, r.stderr)
	}
}

// TestCompletionBash sources the bash script and calls its function the
// way bash does on TAB, with and without the bash-completion package.
func TestCompletionBash(t *testing.T) {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	var script strings.Builder
	script.WriteString(`source <(snap completion bash) || exit 1
t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; _snap_complete; echo "${COMPREPLY[*]}"; }
`)
	for _, tc := range completionCases {
		script.WriteString("t")
		for _, w := range tc.words {
			fmt.Fprintf(&script, " '%s'", w)
		}
		script.WriteString("\n")
	}
	preludes := map[string]string{"plain bash": ""}
	if _, err := os.Stat("/usr/share/bash-completion/bash_completion"); err == nil {
		preludes["bash-completion"] = "source /usr/share/bash-completion/bash_completion\n"
	}
	for name, prelude := range preludes {
		cmd := exec.Command("bash", "--norc", "--noprofile", "-c", prelude+script.String())
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(snapBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		if len(lines) != len(completionCases) {
			t.Fatalf("%s: %d lines for %d cases:\n%s", name, len(lines), len(completionCases), out)
		}
		for i, tc := range completionCases {
			got := strings.Fields(lines[i])
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s %q: got %q, want %q", name, tc.words, got, tc.want)
			}
		}
	}
}

// TestCompletionFish loads the fish script and asks fish what it offers.
func TestCompletionFish(t *testing.T) {
	if _, err := exec.LookPath("fish"); err != nil {
		t.Skip("no fish")
	}
	e := newEnv(t)
	script := e.ok(nil, "completion", "fish").stdout
	file := filepath.Join(t.TempDir(), "snap.fish")
	if err := os.WriteFile(file, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir() // where fish looks for file names
	for _, name := range []string{"backup.txt", "repo"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"snap ba", []string{"backup"}},
		{"snap backup --repo re", []string{"repo"}},
		{"snap backup --re", []string{"--repo", "--retry-lock"}},
		{"snap restore --ta", []string{"--tag", "--tar", "--target"}},
		{"snap prune --keep-l", []string{"--keep-last"}},
	} {
		cmd := exec.Command("fish", "--no-config", "-c", "source "+file+"; complete -C '"+tc.line+"'")
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish %q: %v\n%s", tc.line, err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if word, _, _ := strings.Cut(l, "\t"); word != "" {
				got = append(got, word)
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("fish %q: got %q, want %q", tc.line, got, tc.want)
		}
	}
}
