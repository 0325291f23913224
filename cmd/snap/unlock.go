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
	now       func() time.Time
}

func unlockCommand() *cli.Command {
	return &cli.Command{
		Name:  "unlock",
		Usage: "remove stale locks (those not refreshed for 30 minutes)",
		Description: "A lock is refreshed every 5 minutes while its process runs, so a lock older than 30 minutes\n" +
			"belongs to a process that died. --remove-all also removes live locks: only when you know\n" +
			"that no snap process uses the repository.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "remove-all", Usage: "remove every lock, also those of running processes"},
		},
		Action: func(c *cli.Context) error {
			g, err := globals(c)
			if err != nil {
				return err
			}
			return runUnlock(c.Context, unlockOptions{globalOptions: g, removeAll: c.Bool("remove-all"), now: time.Now})
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
	Error     string    `json:"error,omitempty"`
}

func toLockJSON(lk repo.StoredLock) lockJSON {
	j := lockJSON{Name: lk.Name, Time: lk.Info.Time, Host: lk.Info.Host, PID: lk.Info.PID, Exclusive: lk.Info.Exclusive, Command: lk.Info.Command}
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
	now := o.now()
	removed, rerr := r.RemoveLocks(ctx, o.removeAll, now)
	left, err := r.ListLocks(ctx)
	if err != nil {
		return err
	}
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
		if lk.Err != nil {
			fmt.Fprintf(o.stdout, "removed unreadable lock %s: %v\n", lk.Name, lk.Err)
		} else {
			fmt.Fprintf(o.stdout, "removed %s\n", lk.Info)
		}
	}
	fmt.Fprintf(o.stdout, "%d locks removed\n", len(removed))
	for _, lk := range left {
		switch {
		case lk.Err != nil:
			fmt.Fprintf(o.stdout, "left: unreadable lock %s: %v\n", lk.Name, lk.Err)
		case lk.Info.Stale(now):
			fmt.Fprintf(o.stdout, "left: stale %s\n", lk.Info)
		default:
			fmt.Fprintf(o.stdout, "still held (live): %s\n", lk.Info)
		}
	}
	return rerr
}
