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
	generateKey     string // --generate-key: the file to write a new generated key to
	id              string
}

// generateKeyFlag is --generate-key, for init, key add and key passwd.
func generateKeyFlag(what string) *cli.StringFlag {
	return &cli.StringFlag{Name: "generate-key", Usage: "instead of a password, " + what + " a generated key: 256 random bits that snap writes " +
		"to the new `FILE` (mode 0600) and that opens the repository with --password-file FILE at no cost, where a password costs every " +
		"command its key stretching (Argon2id); for unattended backups, kept in a secret store"}
}

// writeGeneratedKey makes a new generated key and writes it to the new
// file path, synced, before anything in the repository names it: a key
// file is never stored whose key was not kept first.
func writeGeneratedKey(path string) (string, error) {
	k, err := repo.NewGeneratedKey()
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return "", fmt.Errorf("--generate-key %s: the file exists; snap writes a generated key only to a new file, and never overwrites one", path)
		}
		return "", fmt.Errorf("--generate-key: %w", err)
	}
	if _, err = f.WriteString(k + "\n"); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return "", fmt.Errorf("--generate-key: write %s: %w", path, err)
	}
	return k, nil
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
				Usage: "add a password: a new key file for the password in --new-password-file (or for a generated key)",
				Flags: []cli.Flag{newPassword, generateKeyFlag("add"), lockRetryFlag()},
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
				Usage: "change the password: add a key for the new password (or a generated key), then remove the key in use",
				Flags: []cli.Flag{newPassword, generateKeyFlag("change to"), lockRetryFlag()},
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
		o.newPasswordFile, o.generateKey = c.String("new-password-file"), c.String("generate-key")
		if o.newPasswordFile != "" && o.generateKey != "" {
			return o, cli.Exit(fmt.Sprintf("%s: give --new-password-file or --generate-key, not both", name), exitUsage)
		}
		if o.newPasswordFile == "" && o.generateKey == "" && !term.IsTerminal(int(g.stdin.Fd())) {
			return o, cli.Exit(fmt.Sprintf("%s: give the new password with --new-password-file FILE, or --generate-key FILE (snap asks for a password only on a terminal)", name), exitUsage)
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
	Kind    string    `json:"kind,omitempty"` // password or generated; empty when unreadable
	Host    string    `json:"host"`
	User    string    `json:"user"`
	Created time.Time `json:"created"`
	Current bool      `json:"current"`
	Error   string    `json:"error,omitempty"` // the key file cannot be read
}

// keyKind names what opens k.
func keyKind(k repo.KeyInfo) string {
	switch {
	case k.Err != nil:
		return ""
	case k.Generated:
		return "generated"
	}
	return "password"
}

func toKeyJSON(k repo.KeyInfo) keyJSON {
	j := keyJSON{ID: k.ID, Kind: keyKind(k), Host: k.Host, User: k.User, Created: k.Created, Current: k.Current}
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
	fmt.Fprintln(tw, " \tID\tKIND\tCREATED\tHOST\tUSER")
	for _, k := range keys {
		mark := " "
		if k.Current {
			mark = "*"
		}
		if k.Err != nil {
			fmt.Fprintf(tw, "%s\t%s\t(unreadable: %v)\t\t\t\n", mark, shortKey(k.ID), k.Err)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", mark, shortKey(k.ID), keyKind(k), k.Created.Local().Format("2006-01-02 15:04:05"), k.Host, k.User)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(o.stdout, "%s (* the one that opened the repository)\n", plural(len(keys), "key"))
	return nil
}

// keyChange opens the repository, reads the new password (or writes the
// new generated key) if the change needs one, and runs change under the
// exclusive lock. A generated key's file is removed again if the change
// fails before it stored a key file for it (change says whether it did).
func (o keyOptions) keyChange(ctx context.Context, command string, needPassword bool, change func(*repo.Repository, *repo.Lock, string) (bool, error)) (err error) {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	var pw string
	stored := false
	if needPassword && o.generateKey != "" {
		if pw, err = writeGeneratedKey(o.generateKey); err != nil {
			return err
		}
		defer func() {
			if err != nil && !stored {
				os.Remove(o.generateKey)
			}
		}()
	} else if needPassword {
		if pw, err = o.newPassword(); err != nil {
			return err
		}
	}
	lk, err := r.Lock(ctx, repo.LockOptions{Exclusive: true, Command: command, RetryFor: o.retryLock, Log: o.log})
	if err != nil {
		return err
	}
	defer lk.Unlock(ctx)
	stored, err = change(r, lk, pw)
	return err
}

func runKeyAdd(ctx context.Context, o keyOptions) error {
	return o.keyChange(ctx, "key add", true, func(r *repo.Repository, lk *repo.Lock, pw string) (bool, error) {
		add := r.AddKey
		if o.generateKey != "" {
			add = r.AddGeneratedKey
		}
		k, err := add(ctx, lk, pw)
		if err != nil {
			return false, err
		}
		if o.json {
			return true, json.NewEncoder(o.stdout).Encode(map[string]any{"added": toKeyJSON(k)})
		}
		if o.generateKey != "" {
			fmt.Fprintf(o.stdout, "added key %s (%s on %s): the generated key in %s opens the repository too (--password-file %s)\n",
				shortKey(k.ID), userStr(k.User), k.Host, o.generateKey, o.generateKey)
			return true, nil
		}
		fmt.Fprintf(o.stdout, "added key %s (%s on %s): its password opens the repository too\n", shortKey(k.ID), userStr(k.User), k.Host)
		return true, nil
	})
}

func runKeyRemove(ctx context.Context, o keyOptions) error {
	return o.keyChange(ctx, "key remove", false, func(r *repo.Repository, lk *repo.Lock, _ string) (bool, error) {
		k, err := r.RemoveKey(ctx, lk, o.id)
		if err != nil {
			return false, err
		}
		if o.json {
			return false, json.NewEncoder(o.stdout).Encode(map[string]any{"removed": toKeyJSON(k)})
		}
		fmt.Fprintf(o.stdout, "removed key %s (%s on %s, created %s): it no longer opens the repository\n",
			shortKey(k.ID), userStr(k.User), k.Host, k.Created.Local().Format("2006-01-02 15:04:05"))
		return false, nil
	})
}

func runKeyPasswd(ctx context.Context, o keyOptions) error {
	return o.keyChange(ctx, "key passwd", true, func(r *repo.Repository, lk *repo.Lock, pw string) (bool, error) {
		added, removed, err := r.ChangePassword(ctx, lk, pw, o.generateKey != "")
		if err != nil {
			return added.ID != "", err // stored, if the old key's removal failed
		}
		if o.json {
			return true, json.NewEncoder(o.stdout).Encode(map[string]any{"added": toKeyJSON(added), "removed": toKeyJSON(removed)})
		}
		if o.generateKey != "" {
			fmt.Fprintf(o.stdout, "key changed: added key %s, the generated key in %s (--password-file %s); removed key %s, which no longer opens the repository\n",
				shortKey(added.ID), o.generateKey, o.generateKey, shortKey(removed.ID))
			return true, nil
		}
		fmt.Fprintf(o.stdout, "password changed: added key %s, removed key %s; the old password no longer opens the repository\n",
			shortKey(added.ID), shortKey(removed.ID))
		return true, nil
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
