package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/schedule"
	"github.com/snapbackup/snap/snapshot"
)

// Agent is a node's side of a cluster: it joins, writes its heartbeat,
// polls the cluster's request (one small read per poll), takes its part
// of every group it is a member of (requested, and with a schedule the
// group at every boundary), and writes its status in each.
type Agent struct {
	Store *Store
	// Member describes the node: Node, Host, Kind, Server, Data, Every
	// (heartbeat), Poll, Schedule, GroupTimeout, MaxSkew, Program.
	Member Member
	// Backup takes the node's part of group g: gets ready, waits for
	// g.FreezeAt and freezes then (snapshot.BackupOptions.Group), or
	// fails with snapshot.ErrMissedFreeze when ready more than maxLate
	// after it.
	Backup func(ctx context.Context, g *snapshot.GroupRef, maxLate time.Duration) (*snapshot.Snapshot, error)
	// After runs after each part (retention); may be nil.
	After func(ctx context.Context)
	// Prepare is how long before a scheduled moment the part starts
	// getting ready (open the repository, load its index, lock); zero:
	// the smaller of 30s and a quarter of the schedule.
	Prepare time.Duration
	Log     *slog.Logger
	Now     func() time.Time
	// Joined, when set, is closed once the node is a member.
	Joined chan<- struct{}
}

// Run runs the agent until ctx is done or stop closes; a part in progress
// when stop closes is finished first (ctx bounds it). Failures to reach
// the repository are logged and retried: a node's agent outlives outages.
func (a *Agent) Run(ctx context.Context, stop <-chan struct{}) error {
	if a.Now == nil {
		a.Now = time.Now
	}
	m := a.Member
	if m.Every <= 0 || m.Poll <= 0 {
		return errors.New("cluster agent: heartbeat and poll intervals must be positive")
	}
	var rec string
	started := a.Now()
	for backoff := time.Second; ; backoff = min(2*backoff, time.Minute) {
		st, err := a.Store.Load(ctx)
		if err == nil {
			m, rec, err = a.Store.Join(ctx, st, m)
		}
		if err == nil {
			break
		}
		a.Log.Error("could not join the cluster; trying again", "cluster", a.Store.cluster, "node", m.Node, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		case <-time.After(backoff):
		}
	}
	a.Log.Info("joined the cluster", "cluster", a.Store.cluster, "node", m.Node, "poll", time.Duration(m.Poll), "heartbeat", time.Duration(m.Every), "schedule", time.Duration(m.Schedule))
	if a.Joined != nil {
		close(a.Joined)
	}
	hbCtx, stopHB := context.WithCancel(context.WithoutCancel(ctx))
	hbDone := make(chan struct{})
	go func() { defer close(hbDone); a.heartbeats(hbCtx, m, rec) }()
	defer func() { stopHB(); <-hbDone }()

	poll := time.NewTicker(time.Duration(m.Poll))
	defer poll.Stop()
	bounds := schedule.Boundaries{Every: time.Duration(m.Schedule)}
	prepare := a.Prepare
	if prepare <= 0 {
		prepare = min(30*time.Second, time.Duration(m.Schedule)/4)
	}
	var next time.Time // the next scheduled moment
	if m.Schedule > 0 {
		next = bounds.Next(a.Now().Add(prepare))
	}
	handled := map[string]bool{}
	for {
		if now := a.Now(); !next.IsZero() && now.After(next.Add(time.Duration(m.MaxSkew))) {
			// A part (of a request) ran past a scheduled moment: this
			// node is missing there.
			a.Log.Warn("missed a scheduled moment while busy with another part", "moment", next.Format(time.RFC3339))
			next = bounds.Next(now.Add(prepare))
		}
		var wake <-chan time.Time
		var timer *time.Timer
		if !next.IsZero() {
			timer = time.NewTimer(next.Add(-prepare).Sub(a.Now()))
			wake = timer.C
		}
		stopTimer := func() {
			if timer != nil {
				timer.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stopTimer()
			return nil
		case <-stop:
			stopTimer()
			return nil
		case <-poll.C:
			stopTimer()
			q, err := a.Store.CurrentRequest(ctx)
			switch {
			case errors.Is(err, repo.ErrNotFound):
				continue
			case err != nil:
				if ctx.Err() == nil {
					a.Log.Warn("could not read the cluster's request; polling on", "err", err)
				}
				continue
			}
			if handled[q.UUID] {
				continue
			}
			handled[q.UUID] = true
			if !slices.Contains(q.Members, m.Node) {
				a.Log.Info("not a member of the requested group (joined after it was asked)", "group", q.UUID)
				continue
			}
			now := a.Now()
			if now.After(q.FreezeAt.Add(time.Duration(q.Timeout))) {
				continue // over before this node saw it: it is missing there
			}
			// A request asked before this agent started may have had its
			// part from an earlier run of the node: two reads, once.
			if q.Created.Before(started) {
				if done, err := a.Store.HasStatus(ctx, q.UUID, q.FreezeAt, m.Node); err != nil || done {
					if err != nil {
						delete(handled, q.UUID) // try again at the next poll
					}
					continue
				}
			}
			a.part(ctx, Status{UUID: q.UUID, FreezeAt: q.FreezeAt, MaxSkew: q.MaxSkew}, time.Duration(q.MaxSkew))
		case <-wake:
			at := next
			next = bounds.Next(at)
			uuid := ScheduledUUID(a.Store.cluster, time.Duration(m.Schedule), at)
			a.part(ctx, Status{UUID: uuid, FreezeAt: at, Schedule: m.Schedule, Timeout: m.GroupTimeout, MaxSkew: m.MaxSkew}, time.Duration(m.MaxSkew))
		}
	}
}

// part takes the node's part of group v.UUID and writes its status.
func (a *Agent) part(ctx context.Context, v Status, maxSkew time.Duration) {
	m := a.Member
	v.Node = m.Node
	ref := &snapshot.GroupRef{Cluster: a.Store.cluster, UUID: v.UUID, Node: m.Node, FreezeAt: v.FreezeAt}
	log := a.Log.With("group", v.UUID, "freeze_at", v.FreezeAt.Format(time.RFC3339Nano))
	log.Info("taking this node's part of the group")
	sn, err := a.Backup(ctx, ref, maxSkew)
	if sn != nil {
		v.Snapshot, v.FrozenAt = sn.ID.String(), sn.Time
	}
	switch {
	case err != nil:
		v.Error = err.Error()
	case sn.Time.Sub(v.FreezeAt).Abs() > maxSkew:
		v.Error = fmt.Sprintf("froze %v from the group's moment, more than the max skew %v", sn.Time.Sub(v.FreezeAt).Round(time.Millisecond), maxSkew)
	default:
		v.Completed = true
	}
	// The status is written even when stopping: it is what the group
	// waits for.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	for attempt, backoff := 1, time.Second; ; attempt, backoff = attempt+1, 2*backoff {
		werr := a.Store.WriteStatus(wctx, v)
		if werr == nil || errors.Is(werr, repo.ErrExists) {
			break
		}
		if attempt == 5 || wctx.Err() != nil {
			log.Error("could not write this node's status in the group", "err", werr)
			break
		}
		time.Sleep(backoff)
	}
	if v.Completed {
		log.Info("part completed", "snapshot", sn.ID.Str(), "skew", sn.Time.Sub(v.FreezeAt).Round(time.Microsecond))
	} else {
		log.Error("part failed", "err", v.Error)
	}
	if a.After != nil && ctx.Err() == nil {
		a.After(ctx)
	}
}

// heartbeats rewrites the member record every Member.Every until ctx is
// done.
func (a *Agent) heartbeats(ctx context.Context, m Member, rec string) {
	t := time.NewTicker(time.Duration(m.Every))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		name, err := a.Store.Heartbeat(ctx, m, rec)
		if err != nil {
			if ctx.Err() == nil {
				a.Log.Warn("heartbeat failed; trying at the next one", "err", err)
			}
			continue
		}
		rec = name
	}
}
