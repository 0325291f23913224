package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/snapbackup/snap/repo"
)

type keyOptions struct {
	*globalOptions
	retryLock       time.Duration
	newPasswordFile string
	id              string
}

func keyCommand() *cli.Command {
	newPassword := &cli.StringFlag{Name: "new-password-file", EnvVars: []string{"SNAP_NEW_PASSWORD_FILE"},
		Usage: "read the new password from `FILE` (trailing newline ignored); without it snap asks twice on a terminal"}
	return &cli.Command{
		Name:  "key",
		Usage: "list, add, remove and change the repository's passwords (one key file each)",
		Description: "Every password is a key file wrapping the same master key. add, remove and passwd take the\n" +
			"exclusive lock (they wait for running backups with --retry-lock); remove refuses the key in use\n" +
			"and the last key; passwd adds the new key before it removes the one in use.",
		Subcommands: []*cli.Command{
			command(&cli.Command{
				Name:  "list",
				Usage: "list the keys: id, when and where each was made, and which one the password opened",
				Action: func(c *cli.Context) error {
					o, err := keyFlags(c, 0)
					if err != nil {
						return err
					}
					return runKeyList(c.Context, o)
				},
			}),
			command(&cli.Command{
				Name:  "add",
				Usage: "add a password: a new key file for the password in --new-password-file",
				Flags: []cli.Flag{newPassword, lockRetryFlag()},
				Action: func(c *cli.Context) error {
					o, err := keyFlags(c, 0)
					if err != nil {
						return err
					}
					return runKeyAdd(c.Context, o)
				},
			}),
			command(&cli.Command{
				Name:      "remove",
				Usage:     "remove a password: the key file ID (a unique prefix of at least 4 hex digits)",
				ArgsUsage: "ID",
				Flags:     []cli.Flag{lockRetryFlag()},
				Action: func(c *cli.Context) error {
					o, err := keyFlags(c, 1)
					if err != nil {
						return err
					}
					return runKeyRemove(c.Context, o)
				},
			}),
			command(&cli.Command{
				Name:  "passwd",
				Usage: "change the password: add a key for the new password, then remove the key in use",
				Flags: []cli.Flag{newPassword, lockRetryFlag()},
				Action: func(c *cli.Context) error {
					o, err := keyFlags(c, 0)
					if err != nil {
						return err
					}
					return runKeyPasswd(c.Context, o)
				},
			}),
		},
	}
}

// keyFlags reads a key subcommand's flags and its nargs arguments.
func keyFlags(c *cli.Context, nargs int) (keyOptions, error) {
	g, err := globals(c)
	if err != nil {
		return keyOptions{}, err
	}
	name := "key " + c.Command.Name
	if c.NArg() != nargs {
		if nargs == 0 {
			return keyOptions{}, cli.Exit(fmt.Sprintf("%s takes no arguments (see snap %s --help)", name, name), exitUsage)
		}
		return keyOptions{}, cli.Exit(fmt.Sprintf("%s takes one key id: snap key list shows them (see snap %s --help)", name, name), exitUsage)
	}
	o := keyOptions{globalOptions: g, id: c.Args().First()}
	if c.Command.Name == "add" || c.Command.Name == "passwd" {
		o.newPasswordFile = c.String("new-password-file")
		if o.newPasswordFile == "" && !term.IsTerminal(int(g.stdin.Fd())) {
			return o, cli.Exit(fmt.Sprintf("%s: give the new password with --new-password-file FILE (snap asks for it only on a terminal)", name), exitUsage)
		}
	}
	if c.Command.Name != "list" {
		o.retryLock = c.Duration("retry-lock")
	}
	return o, nil
}

// newPassword reads the new password from --new-password-file, or asks
// for it twice on the terminal.
func (o keyOptions) newPassword() (string, error) {
	if o.newPasswordFile != "" {
		data, err := os.ReadFile(o.newPasswordFile)
		if err != nil {
			return "", fmt.Errorf("read new password file: %w", err)
		}
		pw := strings.TrimRight(string(data), "\r\n")
		if pw == "" {
			return "", fmt.Errorf("new password file %s is empty", o.newPasswordFile)
		}
		return pw, nil
	}
	fd := int(o.stdin.Fd())
	fmt.Fprint(o.stderr, "new password: ")
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(o.stderr)
	if err != nil {
		return "", err
	}
	fmt.Fprint(o.stderr, "enter the new password again: ")
	again, err := term.ReadPassword(fd)
	fmt.Fprintln(o.stderr)
	if err != nil {
		return "", err
	}
	if string(again) != string(pw) {
		return "", errors.New("the new passwords do not match; nothing changed")
	}
	if len(pw) == 0 {
		return "", errors.New("empty new password; nothing changed")
	}
	return string(pw), nil
}

type keyJSON struct {
	ID      string    `json:"id"`
	Host    string    `json:"host"`
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Current bool      `json:"current"`
	Error   string    `json:"error,omitempty"` // the key file cannot be read
}

func toKeyJSON(k repo.KeyInfo) keyJSON {
	j := keyJSON{ID: k.ID, Host: k.Host, User: k.User, Created: k.Created, Current: k.Current}
	if k.Err != nil {
		j.Error = k.Err.Error()
	}
	return j
}

// shortKey is a key id as the text output shows it; key remove takes it.
func shortKey(id string) string { return id[:min(len(id), 8)] }

func runKeyList(ctx context.Context, o keyOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	keys, err := r.ListKeys(ctx)
	if err != nil {
		return err
	}
	if o.json {
		out := make([]keyJSON, 0, len(keys))
		for _, k := range keys {
			out = append(out, toKeyJSON(k))
		}
		return json.NewEncoder(o.stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, " \tID\tCREATED\tHOST\tUSER")
	for _, k := range keys {
		mark := " "
		if k.Current {
			mark = "*"
		}
		if k.Err != nil {
			fmt.Fprintf(tw, "%s\t%s\t(unreadable: %v)\t\t\n", mark, shortKey(k.ID), k.Err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", mark, shortKey(k.ID), k.Created.Local().Format("2006-01-02 15:04:05"), k.Host, k.User)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "%s (* the one the password opened)\n", plural(len(keys), "key"))
	return nil
}

// keyChange opens the repository, reads the new password if the change
// needs one, and runs change under the exclusive lock.
func (o keyOptions) keyChange(ctx context.Context, command string, needPassword bool, change func(*repo.Repository, *repo.Lock, string) error) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	var pw string
	if needPassword {
		if pw, err = o.newPassword(); err != nil {
			return err
		}
	}
	lk, err := r.Lock(ctx, repo.LockOptions{Exclusive: true, Command: command, RetryFor: o.retryLock, Log: o.log})
	if err != nil {
		return err
	}
	defer lk.Unlock(ctx)
	return change(r, lk, pw)
}

func runKeyAdd(ctx context.Context, o keyOptions) error {
	return o.keyChange(ctx, "key add", true, func(r *repo.Repository, lk *repo.Lock, pw string) error {
		k, err := r.AddKey(ctx, lk, pw)
		if err != nil {
			return err
		}
		if o.json {
			return json.NewEncoder(o.stdout).Encode(map[string]any{"added": toKeyJSON(k)})
		}
		fmt.Fprintf(o.stdout, "added key %s (%s on %s): its password opens the repository too\n", shortKey(k.ID), userStr(k.User), k.Host)
		return nil
	})
}

func runKeyRemove(ctx context.Context, o keyOptions) error {
	return o.keyChange(ctx, "key remove", false, func(r *repo.Repository, lk *repo.Lock, _ string) error {
		k, err := r.RemoveKey(ctx, lk, o.id)
		if err != nil {
			return err
		}
		if o.json {
			return json.NewEncoder(o.stdout).Encode(map[string]any{"removed": toKeyJSON(k)})
		}
		fmt.Fprintf(o.stdout, "removed key %s (%s on %s, created %s): its password no longer opens the repository\n",
			shortKey(k.ID), userStr(k.User), k.Host, k.Created.Local().Format("2006-01-02 15:04:05"))
		return nil
	})
}

func runKeyPasswd(ctx context.Context, o keyOptions) error {
	return o.keyChange(ctx, "key passwd", true, func(r *repo.Repository, lk *repo.Lock, pw string) error {
		added, removed, err := r.ChangePassword(ctx, lk, pw)
		if err != nil {
			return err
		}
		if o.json {
			return json.NewEncoder(o.stdout).Encode(map[string]any{"added": toKeyJSON(added), "removed": toKeyJSON(removed)})
		}
		fmt.Fprintf(o.stdout, "password changed: added key %s, removed key %s; the old password no longer opens the repository\n",
			shortKey(added.ID), shortKey(removed.ID))
		return nil
	})
}

// plural is "1 key", "2 keys".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func userStr(u string) string {
	if u == "" {
		return "unknown user"
	}
	return u
}
