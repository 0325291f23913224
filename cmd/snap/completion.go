package main

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// Shell completion and the man page, both made from the command
// definitions, so the flags they offer are the flags snap has.
//
// The bash and zsh scripts ask the binary for candidates through the hidden
// "snap __complete -- WORD..." and never run the command line being typed.
// urfave/cli's own mechanism (EnableBashCompletion) does: it runs the line
// with --generate-bash-completion appended and relies on that flag staying
// last, which flagsFirst breaks ("snap restore latest --target <TAB>"
// would restore into a directory named --generate-bash-completion), and
// its scripts pass a bare "--" for "snap backup --<TAB>", which turns the
// completion off and runs the backup.

// completionShells are the shells "snap completion" writes scripts for.
var completionShells = []string{"bash", "zsh", "fish"}

func completionCommand() *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script: " + strings.Join(completionShells, ", "),
		ArgsUsage: "SHELL",
		Description: "Load it in the running shell or install it once:\n" +
			"   bash: source <(snap completion bash), or save it as /etc/bash_completion.d/snap\n" +
			"   zsh:  source <(snap completion zsh) after compinit, or save it as _snap in a directory on $fpath\n" +
			"   fish: snap completion fish | source, or save it as ~/.config/fish/completions/snap.fish",
		OnUsageError: usageError,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit(fmt.Sprintf("completion: name one shell: %s (see snap completion --help)", strings.Join(completionShells, ", ")), exitUsage)
			}
			var script string
			switch shell := c.Args().First(); shell {
			case "bash":
				script = bashCompletion
			case "zsh":
				script = zshCompletion
			case "fish":
				s, err := fishCompletion(c.App)
				if err != nil {
					return fmt.Errorf("fish completion: %w", err)
				}
				script = s
			default:
				return cli.Exit(fmt.Sprintf("completion: no script for %q: the shells are %s (see snap completion --help)", shell, strings.Join(completionShells, ", ")), exitUsage)
			}
			_, err := io.WriteString(c.App.Writer, script)
			return err
		},
	}
}

// completeCommand answers the completion scripts: its arguments are the
// words after the program name up to the cursor, the last one the word
// being typed (maybe empty); it prints one candidate a line, a tab and a
// description after it. Nothing printed means: complete file names.
func completeCommand() *cli.Command {
	return &cli.Command{
		Name:            "__complete",
		Hidden:          true,
		HideHelp:        true,
		SkipFlagParsing: true,
		Action: func(c *cli.Context) error {
			words := c.Args().Slice()
			if len(words) > 0 && words[0] == "--" { // the scripts pass "--" so flagsFirst keeps the order
				words = words[1:]
			}
			for _, cand := range completions(c.App, words) {
				fmt.Fprintf(c.App.Writer, "%s\t%s\n", cand.word, cand.usage)
			}
			return nil
		},
	}
}

type candidate struct{ word, usage string }

// completions returns what may follow words[:len-1] and start with the
// last word. It reads the line the way snap parses it: flags anywhere,
// a flag that takes a value consumes the next word, "--" ends the flags.
func completions(app *cli.App, words []string) []candidate {
	if len(words) == 0 {
		words = []string{""}
	}
	done, cur := words[:len(words)-1], words[len(words)-1]
	var cmd *cli.Command // nil: the top level
	flags, subs := app.Flags, app.Commands
	given := map[string]bool{}
	args := 0 // positional arguments at this level
	wantValue := false
	for _, w := range done {
		switch {
		case wantValue:
			wantValue = false
		case w == "--":
			return nil // positional arguments only
		case strings.HasPrefix(w, "-") && w != "-":
			name, _, _ := strings.Cut(strings.TrimLeft(w, "-"), "=")
			if f := lookupFlag(flags, name); f != nil {
				given[f.Names()[0]] = true
			}
			wantValue = takesValue(flags, w)
		default:
			if args == 0 {
				if c := lookupCommand(subs, w); c != nil {
					cmd, flags, subs = c, commandFlags(c), c.Subcommands
					if c.Name == "help" {
						subs = app.Commands
					}
					clear(given)
					continue
				}
			}
			args++
		}
	}
	if wantValue || strings.HasPrefix(cur, "-") && strings.Contains(cur, "=") {
		return nil // a flag's value
	}
	var out []candidate
	if strings.HasPrefix(cur, "-") {
		for _, f := range flags {
			df, ok := f.(cli.DocGenerationFlag)
			if !ok || !visible(f) || given[f.Names()[0]] && !repeatable(f) {
				continue
			}
			for _, n := range f.Names() {
				w := "--" + n
				if len(n) == 1 {
					w = "-" + n
				}
				if strings.HasPrefix(w, cur) {
					out = append(out, candidate{w, oneLine(df.GetUsage())})
				}
			}
		}
		return out
	}
	if args == 0 {
		for _, c := range subs {
			if !c.Hidden && strings.HasPrefix(c.Name, cur) {
				out = append(out, candidate{c.Name, oneLine(c.Usage)})
			}
		}
	}
	if cmd != nil && cmd.Name == "completion" && args == 0 {
		for _, s := range completionShells {
			if strings.HasPrefix(s, cur) {
				out = append(out, candidate{s, s + " completion script"})
			}
		}
	}
	return out
}

// commandFlags are the flags c accepts: its own, the global ones that
// command() appended, and --help, which urfave/cli adds when c runs.
func commandFlags(c *cli.Command) []cli.Flag {
	if c.HideHelp || cli.HelpFlag == nil || slices.Contains(c.Flags, cli.HelpFlag) {
		return c.Flags
	}
	return append(slices.Clip(c.Flags), cli.HelpFlag)
}

func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		if slices.Contains(f.Names(), name) {
			return f
		}
	}
	return nil
}

func lookupCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func visible(f cli.Flag) bool {
	vf, ok := f.(cli.VisibleFlag)
	return !ok || vf.IsVisible()
}

func repeatable(f cli.Flag) bool {
	sf, ok := f.(cli.DocGenerationSliceFlag)
	return ok && sf.IsSliceFlag()
}

// oneLine makes a usage string fit a completion line; backquotes mark
// help placeholders ("`FILE`").
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "`", "")), " ")
}

// The scripts pass the words up to the cursor to "snap __complete" and
// offer what it prints; when it prints nothing, file names.
const bashCompletion = `# bash completion for snap, from "snap completion bash".
# Load it with:  source <(snap completion bash)
_snap_complete() {
    local cur words cword
    if declare -F _get_comp_words_by_ref >/dev/null 2>&1; then
        # from the bash-completion package: keeps --repo=DIR and gs://b whole
        _get_comp_words_by_ref -n =: cur words cword
    else
        words=("${COMP_WORDS[@]}")
        cword=$COMP_CWORD
    fi
    local line IFS=$'\n'
    COMPREPLY=()
    for line in $("${words[0]}" __complete -- "${words[@]:1:cword}" 2>/dev/null); do
        COMPREPLY+=("${line%%$'\t'*}")
    done
}
complete -o default -F _snap_complete snap
`

const zshCompletion = `#compdef snap
# zsh completion for snap, from "snap completion zsh".
# Load it with:  source <(snap completion zsh)   (after compinit)
# or save it as _snap in a directory on $fpath.
_snap() {
    local line
    local -a cands
    for line in "${(@f)$("${words[1]}" __complete -- "${(@)words[2,CURRENT]}" 2>/dev/null)}"; do
        [[ -n $line ]] || continue
        cands+=("${${line%%$'\t'*}//:/\\:}:${line#*$'\t'}")
    done
    if (( ${#cands} )); then
        _describe -t snap snap cands
    else
        _files
    fi
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _snap "$@"
else
    compdef _snap snap
fi
`

// fishCompletion is urfave/cli's fish script for app, with three changes:
// no second --help and --version (app.Flags has them once it has run);
// string flags complete file names (its -f would stop fish completing
// --repo DIR or --password-file FILE; numbers and durations keep -f);
// and no file names where the command belongs.
func fishCompletion(app *cli.App) (string, error) {
	fa := &cli.App{Name: app.Name, HideHelp: app.HideHelp, HideVersion: app.HideVersion}
	for _, f := range app.Flags {
		if f != cli.HelpFlag && f != cli.VersionFlag {
			fa.Flags = append(fa.Flags, f)
		}
	}
	fa.Flags = fileFlags(fa.Flags)
	fa.Commands = mapCommands(app.Commands, func(c *cli.Command) { c.Flags = fileFlags(c.Flags) })
	s, err := fa.ToFishCompletion()
	if err != nil {
		return "", err
	}
	// Backquotes mark help placeholders ("`FILE`"); the template has none.
	s = strings.ReplaceAll(s, "`", "")
	return s + "# before the command, a command or a flag, not a file name\n" +
		"complete -c " + app.Name + " -n '__fish_" + app.Name + "_no_subcommand' -f\n", nil
}

func fileFlags(flags []cli.Flag) []cli.Flag {
	out := make([]cli.Flag, len(flags))
	for i, f := range flags {
		switch f := f.(type) {
		case *cli.StringFlag:
			c := *f
			c.TakesFile = true
			out[i] = &c
		case *cli.StringSliceFlag:
			c := *f
			c.TakesFile = true
			out[i] = &c
		default:
			out[i] = f
		}
	}
	return out
}

// mapCommands returns copies of cmds and their subcommands, each changed
// by edit, so the generators do not change the app's own commands. It
// leaves out the "help" subcommand that urfave/cli gives a command when
// it runs (the one printing this script has it).
func mapCommands(cmds []*cli.Command, edit func(*cli.Command)) []*cli.Command {
	return mapCommandsAt(cmds, edit, true)
}

func mapCommandsAt(cmds []*cli.Command, edit func(*cli.Command), top bool) []*cli.Command {
	var out []*cli.Command
	for _, c := range cmds {
		if !top && c.Name == "help" {
			continue
		}
		cc := *c
		cc.Subcommands = mapCommandsAt(c.Subcommands, edit, false)
		edit(&cc)
		out = append(out, &cc)
	}
	return out
}

func manCommand() *cli.Command {
	return &cli.Command{
		Name:   "man",
		Usage:  "print snap's man page (section 1); make man writes it to bin/snap.1",
		Hidden: true,
		Action: func(c *cli.Context) error {
			page, err := manPage(c.App)
			if err != nil {
				return fmt.Errorf("man page: %w", err)
			}
			_, err = io.WriteString(c.App.Writer, page)
			return err
		},
	}
}

// manPage renders app as a section 1 man page, app.Description (the exit
// codes) after an introduction. The global flags are listed
// once, not under every command that accepts them; a default taken from
// this machine's host name says so instead of naming the machine the
// page was made on.
func manPage(app *cli.App) (string, error) {
	global := map[string]bool{}
	for _, f := range app.Flags {
		global[f.Names()[0]] = true
	}
	ma := &cli.App{
		Name:  app.Name,
		Usage: app.Usage,
		Description: "snap backs up a database server's files (a RocksDB server that answers FREEZE, a closed\n" +
			"database directory, or a redis-server's append-only file) into a deduplicated, encrypted\n" +
			"repository in a local directory or on Google Cloud Storage, and restores them.\n\n" +
			"The global options are accepted before the command and after it. An option's environment\n" +
			"variable, shown in brackets, sets it when the option is not given.\n\n" + app.Description,
		Flags: manFlags(app.Flags),
		Commands: mapCommands(app.Commands, func(c *cli.Command) {
			var own []cli.Flag
			for _, f := range c.Flags {
				if !global[f.Names()[0]] {
					own = append(own, f)
				}
			}
			c.Flags = manFlags(own)
		}),
	}
	return ma.ToManWithSection(1)
}

func manFlags(flags []cli.Flag) []cli.Flag {
	host := hostname()
	var out []cli.Flag
	for _, f := range flags {
		df, ok := f.(cli.DocGenerationFlag)
		if !ok || !visible(f) {
			continue
		}
		// The page says the default and the environment variable itself:
		// urfave/cli's " (default: x)" after a "[$VAR]" reads as a
		// markdown link, and the page loses both.
		usage := df.GetUsage()
		if def := df.GetDefaultText(); df.TakesValue() {
			if def == "" {
				def = df.GetValue()
			}
			if u, err := strconv.Unquote(def); err == nil {
				def = u
			}
			if def == host {
				def = "this machine's host name"
			}
			if def != "" {
				usage += " (default: " + def + ")"
			}
		}
		if env := df.GetEnvVars(); len(env) > 0 {
			usage += " [$" + strings.Join(env, ", $") + "]"
		}
		out = append(out, manFlag{df, usage})
	}
	return out
}

// manFlag is a flag as the man page shows it: its usage says the rest.
type manFlag struct {
	cli.DocGenerationFlag
	usage string
}

func (f manFlag) GetUsage() string       { return f.usage }
func (f manFlag) GetDefaultText() string { return "" }
func (f manFlag) GetValue() string       { return "" }
func (f manFlag) IsVisible() bool        { return true }
