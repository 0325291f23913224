package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/repo"
)

type unlockOptions struct {
	*globalOptions
	removeAll bool
}

func unlockCommand() *cli.Command {
	return &cli.Command{
		Name:  "unlock",
		Usage: "remove stale locks (those of processes that died)",
		Description: "A lock is refreshed every 5 minutes while its process runs, so a lock the storage has not seen\n" +
			"refreshed for 30 minutes belongs to a process that died; so does a lock written on this machine\n" +
			"by a process that no longer runs. --remove-all also removes live locks: only when you know\n" +
			"that no snap process uses the repository.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "remove-all", Usage: "remove every lock, also those of running processes"},
		},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			return runUnlock(c.Context, unlockOptions{globalOptions: g, removeAll: c.Bool("remove-all")})
		},
	}
}

type lockJSON struct {
	Name      string    `json:"name"`
	Time      time.Time `json:"time,omitzero"`
	Host      string    `json:"host,omitempty"`
	PID       int       `json:"pid,omitempty"`
	Exclusive bool      `json:"exclusive"`
	Command   string    `json:"command,omitempty"`
	State     string    `json:"state"` // live, stale, dead or unreadable
	Error     string    `json:"error,omitempty"`
}

func toLockJSON(lk repo.StoredLock) lockJSON {
	j := lockJSON{Name: lk.Name, Time: lk.Info.Time, Host: lk.Info.Host, PID: lk.Info.PID, Exclusive: lk.Info.Exclusive, Command: lk.Info.Command, State: string(lk.State)}
	if lk.Err != nil {
		j.Error = lk.Err.Error()
	}
	return j
}

func runUnlock(ctx context.Context, o unlockOptions) error {
	r, err := o.openRepo(ctx, "")
	if err != nil {
		return err
	}
	defer r.Close()
	removed, left, rerr := r.RemoveLocks(ctx, o.removeAll)
	if o.json {
		out := map[string][]lockJSON{"removed": {}, "remaining": {}}
		for _, lk := range removed {
			out["removed"] = append(out["removed"], toLockJSON(lk))
		}
		for _, lk := range left {
			out["remaining"] = append(out["remaining"], toLockJSON(lk))
		}
		if err := json.NewEncoder(o.stdout).Encode(out); err != nil {
			return err
		}
		return rerr
	}
	for _, lk := range removed {
		switch lk.State {
		case repo.LockUnreadable:
			fmt.Fprintf(o.stdout, "removed unreadable lock %s: %v\n", lk.Name, lk.Err)
		case repo.LockLive:
			fmt.Fprintf(o.stdout, "removed (live) %s\n", lk.Info)
		default:
			fmt.Fprintf(o.stdout, "removed (%s) %s\n", lk.State, lk.Info)
		}
	}
	fmt.Fprintf(o.stdout, "%d locks removed\n", len(removed))
	for _, lk := range left {
		switch lk.State {
		case repo.LockLive:
			fmt.Fprintf(o.stdout, "still held (live): %s\n", lk.Info)
		case repo.LockUnreadable:
			fmt.Fprintf(o.stdout, "left (could not remove): unreadable lock %s: %v\n", lk.Name, lk.Err)
		default:
			fmt.Fprintf(o.stdout, "left (could not remove): %s %s\n", lk.State, lk.Info)
		}
	}
	return rerr
}
