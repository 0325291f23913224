package repo

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Lock timing (docs/design.md, "Locks and concurrency"). Every snap that
// shares a repository must agree on LockStaleAfter, so it is part of the
// format, not an option.
const (
	// LockRefreshInterval is how often a holder writes its lock anew.
	LockRefreshInterval = 5 * time.Minute
	// LockStaleAfter is how old a lock object must be for others to ignore
	// it: its holder died, or lost it.
	LockStaleAfter = 30 * time.Minute
	// lockValidFor is how long a holder trusts its own last write. Less than
	// LockStaleAfter by one refresh interval, which absorbs clock skew
	// between hosts and the time from the check to the write it guards.
	lockValidFor = LockStaleAfter - LockRefreshInterval
	lockVersion  = 1
)

// ErrLocked is returned when another process holds a conflicting lock.
var ErrLocked = errors.New("repository is locked")

// ErrLockLost is returned by Lock.Err once the lock can no longer be
// trusted: a refresh failed or came too late.
var ErrLockLost = errors.New("repository lock lost")

// LockInfo is the content of a lock object: sealed JSON in
// locks/shared-<hash> or locks/exclusive-<hash>.
type LockInfo struct {
	Version   int       `json:"version"`
	Time      time.Time `json:"time"` // when this object was written, by the writer's clock (for messages)
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Exclusive bool      `json:"exclusive"`
	// Nonce makes every lock object unique, so two writes never collide on
	// a name and a refresh is always a new object.
	Nonce   string `json:"nonce"`
	Command string `json:"command,omitempty"` // for messages: backup, prune, check
	// Process names the writing process on its machine, so that another
	// snap on the same machine can tell at once that it is gone. Absent
	// where the system does not say (and in locks of older snaps).
	Process *ProcessInfo `json:"process,omitempty"`
}

// ProcessInfo tells one process apart from every other that ran on its
// machine: the kernel's boot id, the pid namespace (two containers on
// one kernel have their own pids) and the process's start time, so a pid
// reused after the writer died is not taken for the writer.
type ProcessInfo struct {
	BootID string `json:"boot_id"`
	PIDNS  uint64 `json:"pid_ns"`
	Start  uint64 `json:"start"` // clock ticks after boot
}

// machine is this process's view of where it runs (thisMachine).
type machine struct {
	bootID string
	pidNS  uint64
	ok     bool
}

// processInfo describes process pid of this machine, or nil when the
// system does not say.
func (m machine) processInfo(pid int) *ProcessInfo {
	if !m.ok {
		return nil
	}
	start, err := processStart(pid)
	if err != nil {
		return nil
	}
	return &ProcessInfo{BootID: m.bootID, PIDNS: m.pidNS, Start: start}
}

func (li LockInfo) String() string {
	kind := "shared"
	if li.Exclusive {
		kind = "exclusive"
	}
	cmd := ""
	if li.Command != "" {
		cmd = " by " + li.Command
	}
	return fmt.Sprintf("%s lock%s on host %s (pid %d), written %s", kind, cmd, li.Host, li.PID, li.Time.UTC().Format(time.RFC3339))
}

// LockOptions say what lock to take and how.
type LockOptions struct {
	Exclusive bool
	Command   string
	Host      string           // empty: os.Hostname
	PID       int              // zero: os.Getpid
	Now       func() time.Time // nil: time.Now; the holder's own clock, never compared with others'
	// RetryFor is how long to keep trying while another process holds a
	// conflicting lock; zero fails at once.
	RetryFor time.Duration
	// RefreshEvery overrides LockRefreshInterval for the background
	// refresh (tests); negative turns the background refresh off.
	RefreshEvery time.Duration
	Log          *slog.Logger
}

// Lock is a held lock. Its object is rewritten in the background every
// RefreshEvery until Unlock.
type Lock struct {
	r       *Repository
	o       LockOptions
	process *ProcessInfo

	mu      sync.Mutex
	name    string // of the current lock object
	info    LockInfo
	lost    error // sticky
	lastErr error // the last refresh's failure; nil after a success

	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// Lock takes a shared or exclusive lock on the repository: it writes its
// own lock object, then lists the others. A shared lock conflicts with a
// live exclusive one, an exclusive lock with any live lock. On conflict it
// removes its object and, within o.RetryFor, tries again after a pause;
// an exclusive locker that meets only shared locks keeps its object
// meanwhile, so that new shared lockers wait for it. If two processes
// race, both may back off; neither can miss the other, because each lists
// only after its own object is stored.
//
// Whether another lock is live is judged without the writer's clock
// (lockJudge): a lock of a process of this machine that is gone is
// removed at once; others are stale once the storage's clock says they
// were not refreshed for LockStaleAfter.
func (r *Repository) Lock(ctx context.Context, o LockOptions) (*Lock, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.PID == 0 {
		o.PID = os.Getpid()
	}
	if o.RefreshEvery == 0 {
		o.RefreshEvery = LockRefreshInterval
	}
	if o.Log == nil {
		o.Log = r.log
	}
	m := thisMachine()
	l := &Lock{r: r, o: o, process: m.processInfo(o.PID)}
	j := &lockJudge{host: o.Host, m: m, now: o.Now, seen: map[string]time.Time{}, log: o.Log}
	var waited time.Duration
	pause := 500 * time.Millisecond
	var name string       // own object while it stands; empty when removed
	var written time.Time // when it was written, by the holder's clock
	var info LockInfo
	for {
		if name == "" {
			var err error
			if name, info, err = l.write(ctx); err != nil {
				return nil, err
			}
			written = o.Now()
		}
		conflict, err := r.findConflict(ctx, name, o.Exclusive, j)
		if err == nil && conflict == nil {
			l.name, l.info = name, info
			l.start(ctx)
			return l, nil
		}
		// An exclusive locker that meets only shared locks keeps its
		// object while it waits (it drains them): shared lockers that
		// come after see it and wait in turn, so the backups under way
		// finish and a steady stream of new ones (a fleet's) cannot
		// starve it. Against another exclusive locker both back off, as
		// any two racing lockers may.
		drain := err == nil && o.Exclusive && !conflict.Exclusive && waited < o.RetryFor
		if !drain {
			l.remove(ctx, name)
			name = ""
		}
		if err != nil {
			return nil, err
		}
		if waited >= o.RetryFor {
			return nil, fmt.Errorf("%w: %s; %s", ErrLocked, conflict, lockHint(o.RetryFor))
		}
		// Jitter, so two that keep colliding stop doing so.
		d := min(pause+rand.N(pause/2), o.RetryFor-waited)
		msg := "repository is locked; waiting"
		if drain {
			msg = "waiting for the shared locks to end; new ones wait for this one"
		}
		o.Log.Info(msg, "held", conflict.String(), "wait", d.Round(time.Millisecond))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			if name != "" {
				l.remove(ctx, name)
			}
			return nil, ctx.Err()
		case <-t.C:
		}
		waited += d
		pause = min(2*pause, 30*time.Second)
		// A drain longer than a refresh interval rewrites the object, as
		// a held lock's refresh does, so that it does not go stale.
		if name != "" && o.RefreshEvery > 0 && o.Now().Sub(written) >= o.RefreshEvery {
			old := name
			if name, info, err = l.write(ctx); err != nil {
				l.remove(ctx, old)
				return nil, err
			}
			written = o.Now()
			l.remove(ctx, old)
		}
	}
}

func lockHint(retry time.Duration) string {
	h := fmt.Sprintf("a lock of a process that died goes stale %v after its last refresh, or at once for the next snap on the same machine (snap unlock removes stale locks)", LockStaleAfter)
	if retry == 0 {
		return "try again later, or wait for it with --retry-lock DURATION; " + h
	}
	return fmt.Sprintf("gave up after waiting %v; %s", retry, h)
}

// Lock object names: the kind, so that a shared locker need read only
// the exclusive locks, then the hash of the stored bytes.
const (
	sharedLockPrefix    = "shared-"
	exclusiveLockPrefix = "exclusive-"
)

func lockName(exclusive bool, sealed []byte) string {
	if exclusive {
		return exclusiveLockPrefix + Hash(sealed).String()
	}
	return sharedLockPrefix + Hash(sealed).String()
}

// parseLockName returns whether a lock object name is exclusive and
// whether it is a lock object name at all.
func parseLockName(name string) (exclusive, ok bool) {
	rest, excl := strings.CutPrefix(name, exclusiveLockPrefix)
	if !excl {
		var shared bool
		if rest, shared = strings.CutPrefix(name, sharedLockPrefix); !shared {
			return false, false
		}
	}
	_, err := ParseID(rest)
	return excl, err == nil
}

// write stores a new lock object dated now.
func (l *Lock) write(ctx context.Context) (string, LockInfo, error) {
	var nonce [16]byte
	if _, err := crand.Read(nonce[:]); err != nil {
		return "", LockInfo{}, err
	}
	info := LockInfo{
		Version: lockVersion, Time: l.o.Now(), Host: l.o.Host, PID: l.o.PID,
		Exclusive: l.o.Exclusive, Nonce: hex.EncodeToString(nonce[:]), Command: l.o.Command,
		Process: l.process,
	}
	plain, err := json.Marshal(info)
	if err != nil {
		return "", info, err
	}
	sealed := l.r.keys.Seal(nil, plain)
	name := lockName(l.o.Exclusive, sealed)
	h := Handle{Type: LockFile, Name: name}
	if err := l.r.be.Save(ctx, h, sealed); err != nil {
		return name, info, fmt.Errorf("write lock %s: %w", h, err)
	}
	return name, info, nil
}

func (l *Lock) remove(ctx context.Context, name string) {
	h := Handle{Type: LockFile, Name: name}
	if err := l.r.be.Remove(context.WithoutCancel(ctx), h); err != nil && !errors.Is(err, ErrNotFound) {
		l.o.Log.Warn("could not remove lock; it goes stale by itself", "lock", name, "err", err)
	}
}

// LockState is what a locker makes of another process's lock object.
type LockState string

const (
	LockLive       LockState = "live"
	LockStale      LockState = "stale"      // not refreshed for LockStaleAfter
	LockDead       LockState = "dead"       // its process ran on this machine and is gone
	LockUnreadable LockState = "unreadable" // cannot be read or decoded
)

// lockJudge decides whether lock objects are live without trusting the
// clocks of the hosts that wrote them: a host whose clock is hours off
// must neither steal a live lock nor keep a dead one alive.
//
//   - A lock written on this machine (same host name, boot id and pid
//     namespace) whose process is gone, or whose pid now belongs to a
//     process that started later, is dead at once.
//   - Otherwise its age is the storage's time of the judge's own object,
//     just written, less the storage's time of the lock object: both come
//     from the storage's clock. A refresh is a new object, so the age is
//     the time since the last refresh.
//   - Where the storage reports no times, the lock is stale once this
//     process has seen the same object for LockStaleAfter (by its own
//     clock, which measures only its own waiting).
type lockJudge struct {
	host       string
	m          machine
	storageNow time.Time // of the judge's own object; zero when unknown
	now        func() time.Time
	seen       map[string]time.Time // first sight of each object, by now
	log        *slog.Logger
}

func (j *lockJudge) state(lk StoredLock) LockState {
	if lk.Err != nil {
		return LockUnreadable
	}
	if j.dead(lk.Info) {
		return LockDead
	}
	if !j.storageNow.IsZero() && !lk.Stored.IsZero() {
		if j.storageNow.Sub(lk.Stored) > LockStaleAfter {
			return LockStale
		}
		return LockLive
	}
	if j.seen != nil {
		now := j.now()
		first, ok := j.seen[lk.Name]
		if !ok {
			j.seen[lk.Name] = now
		} else if now.Sub(first) > LockStaleAfter {
			return LockStale
		}
	}
	return LockLive
}

// dead reports whether the lock's process ran on this machine and no
// longer runs. Anything it cannot tell for certain counts as alive.
func (j *lockJudge) dead(li LockInfo) bool {
	p := li.Process
	if p == nil || !j.m.ok || li.Host != j.host || p.BootID != j.m.bootID || p.PIDNS != j.m.pidNS {
		return false
	}
	start, err := processStart(li.PID)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return true
	case err != nil:
		return false
	}
	return start != p.Start
}

// findConflict returns a live lock other than own that conflicts: an
// exclusive one if there is any, so that an exclusive locker knows whether
// it meets only shared locks.
// A shared locker reads only exclusive lock objects. A lock object removed
// while it is read is no conflict; one that cannot be read is an error. A
// dead process's lock is removed, with a log line.
func (r *Repository) findConflict(ctx context.Context, own string, exclusive bool, j *lockJudge) (*LockInfo, error) {
	var ownStored time.Time
	locks, err := r.listLocks(ctx, func(fi FileInfo, excl bool) bool {
		if fi.Name == own {
			ownStored = fi.ModTime
			return false
		}
		return exclusive || excl
	})
	if err != nil {
		return nil, err
	}
	j.storageNow = ownStored
	var shared *LockInfo
	for _, lk := range locks {
		switch j.state(lk) {
		case LockUnreadable:
			return nil, fmt.Errorf("%w: lock %s cannot be read: %v (snap unlock removes unreadable locks)", ErrLocked, lk.Name, lk.Err)
		case LockDead:
			r.removeDeadLock(ctx, lk, j.log)
		case LockLive:
			info := lk.Info
			if info.Exclusive {
				return &info, nil
			}
			if shared == nil {
				shared = &info
			}
		}
	}
	return shared, nil
}

func (r *Repository) removeDeadLock(ctx context.Context, lk StoredLock, log *slog.Logger) {
	h := Handle{Type: LockFile, Name: lk.Name}
	err := r.be.Remove(ctx, h)
	if err != nil && !errors.Is(err, ErrNotFound) {
		log.Warn("could not remove the lock of a process that no longer runs; ignoring it", "lock", lk.Info.String(), "err", err)
		return
	}
	log.Info("removed the lock of a process that no longer runs on this machine", "lock", lk.Info.String())
}

// StoredLock is one lock object as ListLocks found it.
type StoredLock struct {
	Name   string
	Info   LockInfo
	Stored time.Time // by the storage's clock; zero when it does not say
	Err    error     // the object could not be read or decoded
	State  LockState // set by RemoveLocks
}

// ListLocks reads every lock object, oldest first. Objects removed while
// being read are left out.
func (r *Repository) ListLocks(ctx context.Context) ([]StoredLock, error) {
	return r.listLocks(ctx, func(FileInfo, bool) bool { return true })
}

func (r *Repository) listLocks(ctx context.Context, want func(fi FileInfo, exclusive bool) bool) ([]StoredLock, error) {
	var found []FileInfo
	if err := r.be.List(ctx, LockFile, func(fi FileInfo) error {
		excl, ok := parseLockName(fi.Name)
		if !ok {
			r.log.Warn("ignoring stray object", "type", LockFile, "name", fi.Name)
			return nil
		}
		if want(fi, excl) {
			found = append(found, fi)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list locks: %w", err)
	}
	out := make([]StoredLock, len(found))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.conns)
	for i, fi := range found {
		g.Go(func() error {
			out[i].Name, out[i].Stored = fi.Name, fi.ModTime
			info, err := r.loadLock(gctx, fi.Name)
			if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) {
				return err
			}
			out[i].Info, out[i].Err = info, err
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	kept := out[:0]
	for _, lk := range out {
		if !errors.Is(lk.Err, ErrNotFound) {
			kept = append(kept, lk)
		}
	}
	sort.Slice(kept, func(i, j int) bool { return kept[i].Stored.Before(kept[j].Stored) })
	return kept, nil
}

// loadLock reads and verifies one lock object.
func (r *Repository) loadLock(ctx context.Context, name string) (LockInfo, error) {
	var info LockInfo
	h := Handle{Type: LockFile, Name: name}
	sealed, err := loadAll(ctx, r.be, h)
	if err != nil {
		return info, fmt.Errorf("load %s: %w", h, err)
	}
	return r.decodeLock(name, sealed)
}

// decodeLock verifies and decodes a lock object's stored bytes.
func (r *Repository) decodeLock(name string, sealed []byte) (LockInfo, error) {
	var info LockInfo
	h := Handle{Type: LockFile, Name: name}
	excl, ok := parseLockName(name)
	if !ok {
		return info, fmt.Errorf("%s: %w: not a lock object name", h, ErrCorrupt)
	}
	if lockName(excl, sealed) != name {
		return info, fmt.Errorf("%s: %w: content does not match its name", h, ErrCorrupt)
	}
	plain, err := r.keys.Open(nil, sealed)
	if err != nil {
		return info, fmt.Errorf("%s: %w", h, err)
	}
	if err := json.Unmarshal(plain, &info); err != nil {
		return info, fmt.Errorf("%s: %w: %v", h, ErrCorrupt, err)
	}
	if info.Exclusive != excl {
		return info, fmt.Errorf("%s: %w: its name and content disagree on whether it is exclusive", h, ErrCorrupt)
	}
	return info, nil
}

// RemoveLocks removes stale, dead and unreadable lock objects, or with all
// every lock object. It returns those it removed and those left, each
// with its State. To judge staleness by the storage's clock it writes a
// shared lock object of its own first (command "unlock"), without
// checking for conflicts, and removes it at the end.
func (r *Repository) RemoveLocks(ctx context.Context, all bool) (removed, left []StoredLock, err error) {
	host, _ := os.Hostname()
	probe := &Lock{r: r, o: LockOptions{Command: "unlock", Host: host, PID: os.Getpid(), Now: time.Now, Log: r.log}}
	ownName, _, err := probe.write(ctx)
	if err != nil {
		return nil, nil, err
	}
	defer probe.remove(ctx, ownName)
	var ownStored time.Time
	locks, err := r.listLocks(ctx, func(fi FileInfo, _ bool) bool {
		if fi.Name == ownName {
			ownStored = fi.ModTime
			return false
		}
		return true
	})
	if err != nil {
		return nil, nil, err
	}
	j := &lockJudge{host: host, m: thisMachine(), storageNow: ownStored, log: r.log}
	var errs []error
	for _, lk := range locks {
		lk.State = j.state(lk)
		if !all && lk.State == LockLive {
			left = append(left, lk)
			continue
		}
		h := Handle{Type: LockFile, Name: lk.Name}
		if err := r.be.Remove(ctx, h); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, fmt.Errorf("remove %s: %w", h, err))
			left = append(left, lk)
			continue
		}
		removed = append(removed, lk)
	}
	return removed, left, errors.Join(errs...)
}

// start runs the background refresh.
func (l *Lock) start(ctx context.Context) {
	l.stop, l.done = make(chan struct{}), make(chan struct{})
	if l.o.RefreshEvery < 0 {
		close(l.done)
		return
	}
	go func() {
		defer close(l.done)
		every := l.o.RefreshEvery
		t := time.NewTimer(every)
		defer t.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			next := every
			if err := l.Refresh(ctx); err != nil {
				if errors.Is(err, ErrLockLost) {
					l.o.Log.Error("repository lock lost", "err", err)
					return
				}
				l.o.Log.Warn("refresh repository lock; trying again soon", "err", err)
				next = max(every/5, time.Millisecond)
			}
			t.Reset(next)
		}
	}()
}

// Refresh writes the lock anew and removes the previous object. A lock
// whose last write is older than LockStaleAfter less one refresh interval
// (by the holder's clock) is lost for good: others may have taken it for
// stale, so a later write must not revive it.
func (l *Lock) Refresh(ctx context.Context) error {
	l.mu.Lock()
	if l.lost != nil {
		err := l.lost
		l.mu.Unlock()
		return err
	}
	if err := l.expiredLocked(); err != nil {
		l.mu.Unlock()
		return err
	}
	prevTime := l.info.Time
	l.mu.Unlock()

	name, info, err := l.write(ctx)
	l.mu.Lock()
	if err != nil {
		l.lastErr = err
		l.mu.Unlock()
		return err
	}
	// The new object must have landed while the old one was still live.
	if gap := l.o.Now().Sub(prevTime); gap > lockValidFor {
		l.lost = fmt.Errorf("%w: refreshed %v after the previous write, later than the %v a holder may wait", ErrLockLost, gap.Round(time.Second), lockValidFor)
		l.mu.Unlock()
		l.remove(ctx, name)
		return l.lost
	}
	old := l.name
	l.name, l.info, l.lastErr = name, info, nil
	l.mu.Unlock()
	l.remove(ctx, old)
	return nil
}

// expiredLocked marks the lock lost when its last write is too old.
func (l *Lock) expiredLocked() error {
	if age := l.o.Now().Sub(l.info.Time); age > lockValidFor {
		l.lost = fmt.Errorf("%w: not refreshed for %v (other processes may take it for stale after %v)", ErrLockLost, age.Round(time.Second), LockStaleAfter)
	}
	return l.lost
}

// Err reports whether the lock can still be trusted: nil unless it was
// lost or its last refresh failed. Check it right before a write that the
// lock protects (a backup's snapshot, a prune's deletions).
func (l *Lock) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lost != nil {
		return l.lost
	}
	if err := l.expiredLocked(); err != nil {
		return err
	}
	if l.lastErr != nil {
		return fmt.Errorf("%w: the last refresh failed: %v", ErrLockLost, l.lastErr)
	}
	return nil
}

// Name is the name of the current lock object.
func (l *Lock) Name() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.name
}

// Unlock stops the refresh and removes the lock object. It works also on a
// cancelled ctx, so an interrupted command does not leave its lock behind.
func (l *Lock) Unlock(ctx context.Context) {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.done
	l.mu.Lock()
	name := l.name
	l.mu.Unlock()
	l.remove(ctx, name)
}

// Exclusive reports whether the lock is exclusive.
func (l *Lock) Exclusive() bool { return l.o.Exclusive }
