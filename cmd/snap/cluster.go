package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/urfave/cli/v2"

	"github.com/snapbackup/snap/cluster"
	"github.com/snapbackup/snap/snapshot"
)

// minMaxSkew is the smallest --max-skew a group may ask for: what a
// timer's wake-up and a FREEZE round trip leave to spare.
const minMaxSkew = 10 * time.Millisecond

func clusterFlag() cli.Flag {
	return &cli.StringFlag{Name: "cluster", EnvVars: []string{"SNAP_CLUSTER"}, Usage: "the cluster's `NAME` (required)"}
}

func clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "cluster groups: one consistent snapshot of many nodes, with per-node status",
		Description: "Nodes join a cluster with snap run --cluster NAME --node NODE (or snap agent). A group\n" +
			"snapshot asks every member to freeze at one moment; each writes its part and its status\n" +
			"through the repository. See docs/cluster.md.",
		Subcommands: []*cli.Command{
			command(&cli.Command{
				Name:   "nodes",
				Usage:  "list the members of a cluster with their last heartbeat",
				Flags:  []cli.Flag{clusterFlag()},
				Action: clusterAction(runClusterNodes),
			}),
			command(&cli.Command{
				Name:  "snapshot",
				Usage: "ask every member for its part of a new group; prints its uuid and returns at once (--wait: waits for the end)",
				Flags: []cli.Flag{clusterFlag(),
					&cli.DurationFlag{Name: "timeout", Value: 10 * time.Minute, Usage: "after the freeze moment, how long members have for their parts before they count as missing"},
					&cli.DurationFlag{Name: "max-skew", Value: time.Second, Usage: "how far from the freeze moment a member's freeze may be"},
					&cli.DurationFlag{Name: "lead", Usage: "how far ahead the freeze moment is", DefaultText: "twice the slowest member's poll interval, plus 2s"},
					&cli.BoolFlag{Name: "wait", Usage: "wait until the group ends; exit 0 only if it completed"},
				},
				Action: clusterAction(runClusterSnapshot),
			}),
			command(&cli.Command{
				Name:   "status",
				Usage:  "the state of a group and of each node's part",
				Flags:  []cli.Flag{clusterFlag(), &cli.StringFlag{Name: "group", Usage: "the group's `UUID` (required)"}},
				Action: clusterAction(runClusterStatus, "group"),
			}),
			command(&cli.Command{
				Name:   "ls",
				Usage:  "list a cluster's groups, newest first, with their state",
				Flags:  []cli.Flag{clusterFlag()},
				Action: clusterAction(runClusterLs),
			}),
			command(&cli.Command{
				Name:  "remove",
				Usage: "take a node out of the cluster (it is no member of later groups)",
				Flags: []cli.Flag{clusterFlag(), &cli.StringFlag{Name: "node", Usage: "the node's `NAME` (required)"},
					&cli.BoolFlag{Name: "force", Usage: "also when its heartbeat is recent (its agent would join again)"}},
				Action: clusterAction(runClusterRemove, "node"),
			}),
		},
	}
}

type clusterCtx struct {
	*globalOptions
	c     *cli.Context
	store *cluster.Store
	st    *cluster.State
}

// clusterAction opens the repository and loads the cluster for fn; a
// cluster no node ever joined is an error. --cluster and the flags named
// in required must be given.
func clusterAction(fn func(ctx context.Context, cc *clusterCtx) error, required ...string) cli.ActionFunc {
	return func(c *cli.Context) error {
		g, err := globals(c)
		if err != nil {
			return err
		}
		name := c.String("cluster")
		for _, f := range append([]string{"cluster"}, required...) {
			if c.String(f) == "" {
				return cli.Exit(fmt.Sprintf("snap cluster %s needs --%s", c.Command.Name, f), exitUsage)
			}
		}
		if err := snapshot.CheckName("cluster", name); err != nil {
			return err
		}
		if c.NArg() > 0 {
			return cli.Exit(fmt.Sprintf("snap cluster %s takes no arguments (%q)", c.Command.Name, c.Args().First()), exitUsage)
		}
		r, err := g.openRepo(c.Context, "")
		if err != nil {
			return err
		}
		defer r.Close()
		s, err := cluster.NewStore(r, name, nil)
		if err != nil {
			return err
		}
		st, err := s.Load(c.Context)
		if err != nil {
			return err
		}
		if !st.Known() {
			return fmt.Errorf("%w %s in %s: no node has joined it (snap run --cluster %s --node NODE ..., or snap agent)", cluster.ErrUnknownCluster, name, g.repo, name)
		}
		return fn(c.Context, &clusterCtx{globalOptions: g, c: c, store: s, st: st})
	}
}

type memberJSON struct {
	Node      string    `json:"node"`
	Host      string    `json:"host"`
	Kind      string    `json:"kind"`
	Server    string    `json:"server,omitempty"`
	Data      string    `json:"data,omitempty"`
	Joined    time.Time `json:"joined"`
	Heartbeat time.Time `json:"heartbeat"`
	Poll      string    `json:"poll"`
	Every     string    `json:"heartbeat_every"`
	Schedule  string    `json:"schedule,omitempty"`
	Alive     bool      `json:"alive"` // a heartbeat within three intervals
}

func alive(m *cluster.Member, now time.Time) bool {
	return now.Sub(m.Heartbeat) <= 3*time.Duration(m.Every)
}

func runClusterNodes(_ context.Context, cc *clusterCtx) error {
	now := time.Now()
	out := []memberJSON{}
	for _, m := range cc.st.Members {
		j := memberJSON{Node: m.Node, Host: m.Host, Kind: m.Kind, Server: m.Server, Data: m.Data, Joined: m.Joined, Heartbeat: m.Heartbeat,
			Poll: time.Duration(m.Poll).String(), Every: time.Duration(m.Every).String(), Alive: alive(m, now)}
		if m.Schedule > 0 {
			j.Schedule = time.Duration(m.Schedule).String()
		}
		out = append(out, j)
	}
	if cc.json {
		return json.NewEncoder(cc.stdout).Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintf(cc.stdout, "cluster %s has no members\n", cc.store.Cluster())
		return nil
	}
	tw := tabwriter.NewWriter(cc.stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tHOST\tKIND\tJOINED\tLAST HEARTBEAT\tPOLL\tSCHEDULE")
	for _, j := range out {
		hb := fmt.Sprintf("%s ago", now.Sub(j.Heartbeat).Round(time.Second))
		if !j.Alive {
			hb += " (silent)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", j.Node, j.Host, j.Kind, j.Joined.Local().Format(time.DateTime), hb, j.Poll, orDash(j.Schedule))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func runClusterSnapshot(ctx context.Context, cc *clusterCtx) error {
	c := cc.c
	timeout, skew, lead := c.Duration("timeout"), c.Duration("max-skew"), c.Duration("lead")
	if len(cc.st.Members) == 0 {
		return fmt.Errorf("cluster %s has no members now (every node was removed)", cc.store.Cluster())
	}
	var slowest time.Duration
	var members []string
	for _, m := range cc.st.Members {
		slowest = max(slowest, time.Duration(m.Poll))
		members = append(members, m.Node)
	}
	switch {
	case timeout <= 0:
		return errors.New("--timeout must be positive")
	case skew < minMaxSkew:
		return fmt.Errorf("--max-skew %v: below %v no member can keep it (a timer's wake-up and a FREEZE round trip take that; the members poll every %v, which sets the lead, not the skew)", skew, minMaxSkew, slowest)
	case c.IsSet("lead") && lead < slowest:
		return fmt.Errorf("--lead %v is shorter than the slowest member's poll interval %v: a member could see the request after the freeze moment", lead, slowest)
	}
	if !c.IsSet("lead") {
		lead = 2*slowest + 2*time.Second
	}
	slices.Sort(members)
	now := time.Now()
	q := cluster.Request{UUID: uuid.NewString(), Created: now, FreezeAt: now.Add(lead).Round(time.Millisecond),
		Timeout: cluster.Duration(timeout), MaxSkew: cluster.Duration(skew), Members: members, By: hostname()}
	if err := cc.store.Ask(ctx, cc.st, q); err != nil {
		return err
	}
	if !c.Bool("wait") {
		if cc.json {
			return json.NewEncoder(cc.stdout).Encode(map[string]string{"uuid": q.UUID, "status": cluster.Processing})
		}
		fmt.Fprintf(cc.stdout, "uuid = %s\nstatus = %s\n", q.UUID, cluster.Processing)
		return nil
	}
	if !cc.json {
		fmt.Fprintf(cc.stdout, "uuid = %s\nstatus = %s\n", q.UUID, cluster.Processing)
	}
	cc.log.Info("waiting for the group", "group", q.UUID, "freeze_at", q.FreezeAt, "members", len(members), "timeout", timeout)
	var g *cluster.Group
	for {
		st, err := cc.store.Load(ctx)
		if err != nil {
			return err
		}
		g = st.Group(q.UUID)
		if g != nil && g.Status != cluster.Processing {
			if err := cc.store.Detail(ctx, st, g); err != nil {
				return err
			}
			cc.st = st
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped waiting for group %s, which goes on: %w", q.UUID, context.Cause(ctx))
		case <-time.After(time.Second):
		}
	}
	if err := cc.store.ClearRequest(ctx, q.UUID); err != nil {
		cc.log.Warn("could not remove the finished request; the next request replaces it", "err", err)
	}
	if err := printGroup(cc.stdout, cc.json, g); err != nil {
		return err
	}
	if g.Status != cluster.Completed {
		return fmt.Errorf("group %s %s: %d completed, %d failed, %d missing", g.UUID, g.Status, g.Completed, g.Failed, g.Missing)
	}
	return nil
}

func runClusterStatus(ctx context.Context, cc *clusterCtx) error {
	id := cc.c.String("group")
	if _, err := snapshot.ParseUUID(id); err != nil {
		return err
	}
	g := cc.st.Group(id)
	if g == nil {
		return fmt.Errorf("%w %s in cluster %s (snap cluster ls --cluster %s lists them)", cluster.ErrUnknownGroup, id, cc.store.Cluster(), cc.store.Cluster())
	}
	if err := cc.store.Detail(ctx, cc.st, g); err != nil {
		return err
	}
	return printGroup(cc.stdout, cc.json, g)
}

type groupJSON struct {
	UUID      string               `json:"uuid"`
	Status    string               `json:"status"`
	FreezeAt  time.Time            `json:"freeze_at"`
	Scheduled bool                 `json:"scheduled"`
	Nodes     []cluster.NodeStatus `json:"nodes"`
}

func printGroup(w io.Writer, asJSON bool, g *cluster.Group) error {
	if asJSON {
		return json.NewEncoder(w).Encode(groupJSON{UUID: g.UUID, Status: g.Status, FreezeAt: g.FreezeAt, Scheduled: g.Scheduled, Nodes: g.Nodes})
	}
	kind := "requested"
	if g.Scheduled {
		kind = "scheduled"
	}
	fmt.Fprintf(w, "uuid = %s\nstatus = %s\nfreeze_at = %s (%s)\n", g.UUID, g.Status, g.FreezeAt.Local().Format("2006-01-02 15:04:05.000"), kind)
	tw := tabwriter.NewWriter(w, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tSTATUS\tSNAPSHOT\tSKEW\tERROR")
	for _, n := range g.Nodes {
		snap, skew := "-", "-"
		if n.Snapshot != "" {
			snap = n.Snapshot[:8]
		}
		if n.FrozenAt != nil {
			skew = n.FrozenAt.Sub(g.FreezeAt).Round(time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", n.Node, n.Status, snap, skew, strings.ReplaceAll(orDash(n.Error), "\n", " "))
	}
	return tw.Flush()
}

type groupLineJSON struct {
	UUID      string    `json:"uuid"`
	Status    string    `json:"status"`
	FreezeAt  time.Time `json:"freeze_at"`
	Scheduled bool      `json:"scheduled"`
	Members   int       `json:"members"`
	Completed int       `json:"completed"`
	Failed    int       `json:"failed"`
	Missing   int       `json:"missing"`
}

func runClusterLs(_ context.Context, cc *clusterCtx) error {
	out := []groupLineJSON{}
	for _, g := range cc.st.Groups() {
		out = append(out, groupLineJSON{UUID: g.UUID, Status: g.Status, FreezeAt: g.FreezeAt, Scheduled: g.Scheduled,
			Members: len(g.Nodes), Completed: g.Completed, Failed: g.Failed, Missing: g.Missing})
	}
	if cc.json {
		return json.NewEncoder(cc.stdout).Encode(out)
	}
	if len(out) == 0 {
		fmt.Fprintf(cc.stdout, "cluster %s has no groups yet (snap cluster snapshot --cluster %s)\n", cc.store.Cluster(), cc.store.Cluster())
		return nil
	}
	tw := tabwriter.NewWriter(cc.stdout, 0, 2, 2, ' ', 0)
	fmt.Fprintln(tw, "UUID\tFREEZE AT\tKIND\tSTATUS\tCOMPLETED")
	for _, g := range out {
		kind := "requested"
		if g.Scheduled {
			kind = "scheduled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d/%d\n", g.UUID, g.FreezeAt.Local().Format(time.DateTime), kind, g.Status, g.Completed, g.Members)
	}
	return tw.Flush()
}

func runClusterRemove(ctx context.Context, cc *clusterCtx) error {
	node := cc.c.String("node")
	if err := snapshot.CheckName("node", node); err != nil {
		return err
	}
	m := cc.st.Member(node)
	if m == nil {
		return fmt.Errorf("node %s is not a member of cluster %s", node, cc.store.Cluster())
	}
	if alive(m, time.Now()) && !cc.c.Bool("force") {
		return fmt.Errorf("node %s wrote its heartbeat %s ago: stop its agent first (it would join again), or give --force", node, time.Since(m.Heartbeat).Round(time.Second))
	}
	if err := cc.store.Leave(ctx, cc.st, node); err != nil {
		return err
	}
	if cc.json {
		return json.NewEncoder(cc.stdout).Encode(map[string]string{"cluster": cc.store.Cluster(), "removed": node})
	}
	fmt.Fprintf(cc.stdout, "removed node %s from cluster %s\n", node, cc.store.Cluster())
	return nil
}
