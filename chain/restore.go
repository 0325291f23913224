package chain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// ErrNotCovered is wrapped by the error for a TIME no chain can restore.
var ErrNotCovered = errors.New("no chain covers that second")

// Latest asks a Plan for the end of the chain.
var Latest = time.Time{}

// Plan is what a restore of a chain to a second reads.
type Plan struct {
	Chain *Chain
	Base  *snapshot.Snapshot
	// Tails are the tail objects after the base's position that the
	// restore reads, in stream order.
	Tails []Ref
	// Cutoff is the end of the second restored (exclusive); zero: the end
	// of the chain. Limit is that second, in unix seconds, for #TS:
	// annotations.
	Cutoff time.Time
	Limit  int64
}

// second returns the end (exclusive) of the second at names.
func second(at time.Time) (time.Time, int64) {
	s := at.Unix()
	return time.Unix(s+1, 0), s
}

// PlanAt plans the restore of host's AOF as of the second at (Latest: the
// end of its newest chain), from chains.
func PlanAt(ctx context.Context, r *repo.Repository, chains []*Chain, host string, at time.Time) (*Plan, error) {
	var mine []*Chain
	for _, c := range chains {
		if len(c.Bases) > 0 && (host == "" || c.Host == host) {
			mine = append(mine, c)
		}
	}
	if len(mine) == 0 {
		if host == "" {
			return nil, fmt.Errorf("%w: the repository has no redis snapshot", ErrNotCovered)
		}
		return nil, fmt.Errorf("%w: the repository has no redis snapshot of host %q", ErrNotCovered, host)
	}
	if host == "" {
		hosts := map[string]bool{}
		for _, c := range mine {
			hosts[c.Host] = true
		}
		if len(hosts) > 1 {
			return nil, fmt.Errorf("the repository has redis chains of %d hosts: choose one with --host", len(hosts))
		}
	}
	if at.IsZero() {
		var best *Chain
		for _, c := range mine {
			if best == nil || c.To().After(best.To()) {
				best = c
			}
		}
		return planChain(best, time.Time{}, 0)
	}
	cutoff, limit := second(at)
	// A chain covers the second if it has a base before the second's end
	// and follow saw the server at least up to that second.
	var best *Chain
	for _, c := range mine {
		from, _ := c.From()
		if !from.Before(cutoff) || c.To().Unix() < limit {
			continue
		}
		if best == nil || from.After(mustFrom(best)) {
			best = c
		}
	}
	if best == nil {
		return nil, notCovered(mine, at)
	}
	gaps, err := best.Gaps(ctx, r)
	if err != nil {
		return nil, err
	}
	for _, g := range gaps {
		// Any moment of the second inside the window is unknown.
		if g.From.Before(cutoff) && g.To.After(time.Unix(limit, 0)) {
			return nil, fmt.Errorf("%w: %s is in a gap of %s from %s to %s, when snap follow did not watch the server", ErrNotCovered,
				at.UTC().Format(time.RFC3339), best.Describe(), g.From.UTC().Format(time.RFC3339), g.To.UTC().Format(time.RFC3339))
		}
	}
	return planChain(best, cutoff, limit)
}

func mustFrom(c *Chain) time.Time { t, _ := c.From(); return t }

// notCovered says where the chains of a host are, for a time none covers.
func notCovered(chains []*Chain, at time.Time) error {
	first, _ := chains[0].From()
	last := chains[0].To()
	var spans []string
	for _, c := range chains {
		from, _ := c.From()
		if from.Before(first) {
			first = from
		}
		if c.To().After(last) {
			last = c.To()
		}
		spans = append(spans, fmt.Sprintf("%s to %s", from.UTC().Format(time.RFC3339), c.To().UTC().Format(time.RFC3339)))
	}
	ts := at.UTC().Format(time.RFC3339)
	switch {
	case at.Unix() < first.Unix():
		return fmt.Errorf("%w: %s is before the first restorable second, %s", ErrNotCovered, ts, first.UTC().Format(time.RFC3339))
	case at.Unix() > last.Unix():
		return fmt.Errorf("%w: %s is after the last restorable second, %s", ErrNotCovered, ts, last.UTC().Format(time.RFC3339))
	}
	return fmt.Errorf("%w: %s is in a gap between chains (they cover %s)", ErrNotCovered, ts, strings.Join(spans, "; "))
}

// planChain picks c's newest base before cutoff and the tail objects
// after it.
func planChain(c *Chain, cutoff time.Time, limit int64) (*Plan, error) {
	p := &Plan{Chain: c, Cutoff: cutoff, Limit: limit}
	for _, b := range c.Bases {
		if cutoff.IsZero() || b.Time.Before(cutoff) {
			p.Base = b
		}
	}
	if p.Base == nil {
		return nil, fmt.Errorf("%w: %s has no base before %s", ErrNotCovered, c.Describe(), cutoff.Add(-time.Second).UTC().Format(time.RFC3339))
	}
	// The objects up to the first past the cutoff, and those of the same
	// tick after it (the pieces of one read): #TS: annotations in them
	// may still put commands in the second.
	window := int64(-1)
	for _, t := range c.Tails {
		if !needs(p.Base, t) {
			continue
		}
		if window >= 0 && t.T0 > window {
			break
		}
		p.Tails = append(p.Tails, t)
		if !cutoff.IsZero() && window < 0 && !t.Time().Before(cutoff) {
			window = t.T1
		}
	}
	return p, nil
}

// RestoreOptions configure Restore.
type RestoreOptions struct {
	Target    string // Redis's dir
	Snapshots snapshot.RestoreOptions
	Log       *slog.Logger
}

// Result is what a restore wrote.
type Result struct {
	Dir      string    // the AOF directory written
	At       time.Time // the last mark included (or the base's time)
	Files    int
	Bytes    int64 // tail bytes added to the base's
	Dropped  int64 // commands of a transaction open at the cut, left out
	Manifest string
}

// Restore writes the AOF directory plan describes into o.Target: the
// base snapshot's files, the tail bytes up to the plan's second, cut at
// the last command outside a transaction, and a manifest naming exactly
// those files, in a staging directory renamed to the AOF directory's
// name once everything is durable.
func Restore(ctx context.Context, r *repo.Repository, p *Plan, o RestoreOptions) (*Result, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	pt := p.Base.Redis
	if err := os.MkdirAll(o.Target, 0o755); err != nil {
		return nil, fmt.Errorf("create target %s: %w", o.Target, err)
	}
	final := filepath.Join(o.Target, pt.DirName)
	if _, err := os.Lstat(final); err == nil {
		return nil, fmt.Errorf("%w: %s exists; restore into a Redis dir without an AOF directory", source.ErrTargetHasDatabase, final)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	staging := filepath.Join(o.Target, stagingPrefix+pt.DirName)
	// What an interrupted restore left there is ours.
	if err := os.RemoveAll(staging); err != nil {
		return nil, fmt.Errorf("remove what an interrupted restore left: %w", err)
	}
	so := o.Snapshots
	so.Target = staging
	so.Log = o.Log
	if err := snapshot.Restore(ctx, r, p.Base, so); err != nil {
		return nil, err
	}
	res, err := roll(ctx, r, p, staging, o.Log)
	if err != nil {
		return nil, err
	}
	if err := os.Rename(staging, final); err != nil {
		return nil, err
	}
	if err := snapshot.SyncDir(o.Target); err != nil {
		return nil, err
	}
	res.Dir = final
	return res, nil
}

// stagingPrefix starts the staging directory's name, so a rerun knows it
// as its own.
const stagingPrefix = ".snap-tmp-"

// incrFile is an incr file being written in the staging directory.
type incrFile struct {
	name string
	seq  int64
	f    *os.File
	n    int64 // bytes written
}

// roll appends the plan's tail bytes to the base's incr files in dir,
// cuts the last one and writes the manifest.
func roll(ctx context.Context, r *repo.Repository, p *Plan, dir string, log *slog.Logger) (*Result, error) {
	pt := p.Base.Redis
	res := &Result{At: p.Base.Time}
	man := &source.AOFManifest{}
	if pt.Base != nil {
		man.Base = &source.AOFFile{Name: pt.Base.Name, Seq: pt.Base.Seq, Type: 'b'}
		res.Files++
	}
	var files []*incrFile
	defer func() {
		for _, f := range files {
			if f.f != nil {
				f.f.Close()
			}
		}
	}()
	open := func(name string, seq int64, length int64) (*incrFile, error) {
		path := filepath.Join(dir, name)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		fi, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		if fi.Size() != length {
			f.Close()
			return nil, fmt.Errorf("snapshot %s: %w: incr file %s is %d bytes, the snapshot says %d", p.Base.ID.Str(), repo.ErrCorrupt, name, fi.Size(), length)
		}
		inf := &incrFile{name: name, seq: seq, f: f, n: length}
		files = append(files, inf)
		return inf, nil
	}
	for _, in := range pt.Incrs {
		if _, err := open(in.Name, in.Seq, in.Length); err != nil {
			return nil, err
		}
	}
	bySeq := map[int64]*incrFile{}
	for _, f := range files {
		bySeq[f.seq] = f
	}
	var (
		cur              *incrFile
		sc               *cutter
		written, dropped int64
		stopped          bool
		lastTS           = int64(-1)
	)
	// switchTo makes f the file written, its cutter knowing the state at
	// its end (a point's prefix is scanned: it may end inside a
	// transaction if an older snap took it).
	switchTo := func(f *incrFile, complete bool) error {
		if cur != nil {
			if err := sc.finish(cur, complete); err != nil {
				return err
			}
			written, dropped = written+sc.written, dropped+sc.dropped
			// A new incr file may start without a #TS: annotation.
			lastTS = sc.lastTS
		}
		cur, sc = f, newCutter(0)
		sc.lastTS = lastTS
		if f != nil && f.n > 0 {
			if err := sc.prefix(f); err != nil {
				return fmt.Errorf("snapshot %s: incr file %s: %w", p.Base.ID.Str(), f.name, err)
			}
		}
		return nil
	}
	for _, ref := range p.Tails {
		if stopped {
			break
		}
		if cur == nil || ref.Seq != cur.seq {
			next, inPoint := bySeq[ref.Seq]
			switch {
			case cur != nil && ref.Seq < cur.seq:
				return nil, fmt.Errorf("%s: tail objects do not continue the stream: %s (seq %d) after seq %d", p.Chain.Describe(), ref.Name, ref.Seq, cur.seq)
			case !inPoint && (ref.Offset != 0 || cur != nil && ref.Seq != cur.seq+1 || cur == nil && ref.Seq != pt.Incrs[len(pt.Incrs)-1].Seq+1):
				prev := pt.Incrs[len(pt.Incrs)-1].Seq
				if cur != nil {
					prev = cur.seq
				}
				return nil, fmt.Errorf("%s: tail objects do not continue the stream: %s starts at byte %d of seq %d after seq %d; an incr file or its start is missing", p.Chain.Describe(), ref.Name, ref.Offset, ref.Seq, prev)
			}
			if !inPoint {
				next = nil
			}
			if err := switchTo(next, true); err != nil {
				return nil, err
			}
		}
		t, err := Load(ctx, r, ref)
		if err != nil {
			return nil, err
		}
		if cur == nil {
			if cur, err = open(t.File, t.Seq, 0); err != nil {
				return nil, err
			}
			bySeq[t.Seq] = cur
		}
		if ref.Offset != cur.n {
			return nil, fmt.Errorf("%s: tail object %s starts at byte %d of %s, but the bytes before end at %d", p.Chain.Describe(), ref.Name, ref.Offset, cur.name, cur.n)
		}
		if t.File != cur.name {
			return nil, fmt.Errorf("tails/%s: %w: of file %s, but seq %d is %s", ref.Name, repo.ErrCorrupt, t.File, t.Seq, cur.name)
		}
		if t.PrevEnd > 0 && t.Offset == 0 {
			if pf := bySeq[t.Seq-1]; pf != nil && pf.n != t.PrevEnd {
				return nil, fmt.Errorf("%s: incr file %s ends at byte %d, but follow stored %d of it: tail objects of it are missing", p.Chain.Describe(), pf.name, pf.n, t.PrevEnd)
			}
		}
		done, err := sc.feed(ctx, r, t, cur, p)
		if err != nil {
			return nil, fmt.Errorf("tails/%s: %w", ref.Name, err)
		}
		if done {
			stopped = true
		} else {
			res.At = ref.Time()
		}
	}
	if cur == nil {
		// No tail object: the point as it was taken, cut like any end.
		if err := switchTo(files[len(files)-1], true); err != nil {
			return nil, err
		}
	}
	if stopped && sc.lastIn > 0 {
		res.At = time.UnixMilli(sc.lastIn)
	}
	if !p.Cutoff.IsZero() && !res.At.Before(p.Cutoff) {
		// Objects of the tick past the second, read for their #TS:
		// annotations: the state is as of the second's end.
		res.At = p.Cutoff.Add(-time.Millisecond)
	}
	if err := sc.finish(cur, false); err != nil {
		return nil, err
	}
	res.Dropped, res.Bytes = dropped+sc.dropped, written+sc.written
	for _, f := range files {
		if err := f.f.Sync(); err != nil {
			return nil, err
		}
		if err := f.f.Close(); err != nil {
			f.f = nil
			return nil, err
		}
		f.f = nil
		man.Incrs = append(man.Incrs, source.AOFFile{Name: f.name, Seq: f.seq, Type: 'i'})
		res.Files++
	}
	manName := pt.FileName + ".manifest"
	if err := snapshot.WriteFileSync(dir, manName, man.Encode()); err != nil {
		return nil, err
	}
	res.Manifest = manName
	return res, snapshot.SyncDir(dir)
}

// cutter writes a plan's tail bytes to an incr file, scanning them, and
// knows where the file may be cut: after the last command outside a
// transaction.
type cutter struct {
	sc      *source.AOFScanner
	carry   []byte // bytes of an item that spans two pieces
	safe    int64  // offset after the last item outside a transaction
	inMulti bool
	pending int64 // commands since the open MULTI
	dropped int64
	lastIn  int64 // time of the last mark included
	lastTS  int64 // the last #TS: annotation's second, -1 for none yet
	written int64
	// windowTime is the tick of the first mark past the cutoff, whose
	// items #TS: annotations may still put in the second; stopped: an
	// item past the second was met.
	windowTime int64
	stopped    bool
}

func newCutter(off int64) *cutter {
	return &cutter{sc: source.NewAOFScanner(off), safe: off, lastTS: -1}
}

var errStop = errors.New("stop")

// prefix scans the bytes f already holds (a point's), so that the cutter
// knows where it may cut and whether a transaction is open at their end.
func (c *cutter) prefix(f *incrFile) error {
	buf := make([]byte, 1<<20)
	var off int64
	for off < f.n {
		n, err := f.f.ReadAt(buf[:min(int64(len(buf)), f.n-off)], off)
		if n == 0 && err != nil {
			return err
		}
		if err := c.write(buf[:n], nil, math.MaxInt64, math.MaxInt64, math.MaxInt64); err != nil {
			return err
		}
		off += int64(n)
	}
	if len(c.carry) > 0 {
		return fmt.Errorf("%w: ends inside a command", repo.ErrCorrupt)
	}
	c.written = 0
	return nil
}

// feed writes the part of t the plan includes to f and reports whether
// the restore stops in it.
func (c *cutter) feed(ctx context.Context, r *repo.Repository, t *Tail, f *incrFile, p *Plan) (bool, error) {
	// Which bytes: every mark before the cutoff (up to upTo); then, with
	// #TS: annotations, the items of the first mark past it (up to
	// window), and of the marks of the same tick after it (the pieces of
	// one read, here or in the objects after), before the first
	// annotation later than the second.
	upTo, window := t.End, t.End
	stop := false
	if !p.Cutoff.IsZero() {
		cut := p.Cutoff.UnixMilli()
		upTo, window = t.Offset, t.Offset
		for i, tm := range t.Times {
			switch {
			case tm < cut && c.windowTime == 0:
				upTo, window = t.Ends[i], t.Ends[i]
				c.lastIn = tm
				continue
			case t.Timestamps && (c.windowTime == 0 || tm == c.windowTime):
				c.windowTime = tm
				window = t.Ends[i]
				continue
			}
			stop = true
			break
		}
	}
	off := t.Offset
	err := t.Bytes(ctx, r, func(b []byte) error {
		if off >= window {
			return errStop
		}
		err := c.write(b, f, upTo, window, p.Limit)
		off += int64(len(b))
		return err
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	if err != nil {
		return false, err
	}
	if c.stopped {
		return true, nil
	}
	if !stop && len(c.carry) > 0 {
		return false, fmt.Errorf("%w: the object ends inside a command (%d bytes of it)", repo.ErrCorrupt, len(c.carry))
	}
	return stop, nil
}

// write scans piece, the stream's next bytes, and writes the whole items
// that belong to the restore: those ending at or before upTo, and after
// it those ending at or before window that come before the first #TS:
// annotation later than limit (once an annotation at or before limit was
// seen: an item before any has no known second).
func (c *cutter) write(piece []byte, f *incrFile, upTo, window, limit int64) error {
	buf := piece
	if len(c.carry) > 0 {
		buf = append(c.carry, piece...)
	}
	base := c.sc.Offset()
	stopAt := int64(-1)
	_, err := c.sc.Scan(buf, func(it source.AOFItem) error {
		if it.End > upTo && (it.End > window || it.TS > limit || it.TS < 0 && (c.lastTS < 0 || c.lastTS > limit)) {
			stopAt = it.Off
			return errStop
		}
		if it.TS >= 0 {
			c.lastTS = it.TS
		}
		switch {
		case it.Cmd == "MULTI":
			c.inMulti, c.pending = true, 1
		case it.Cmd == "EXEC" || it.Cmd == "DISCARD":
			c.inMulti, c.pending = false, 0
			c.safe = it.End
		case c.inMulti:
			if it.Args > 0 {
				c.pending++
			}
		default:
			c.safe = it.End
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return fmt.Errorf("%w: %v", repo.ErrCorrupt, err)
	}
	end := c.sc.Offset()
	if stopAt >= 0 {
		end = stopAt
	}
	// Write the whole items taken; keep the rest for the next piece.
	if n := end - base; n > 0 && f != nil {
		if _, err := f.f.WriteAt(buf[:n], f.n); err != nil {
			return err
		}
		f.n += n
		c.written += n
	}
	if stopAt >= 0 {
		c.carry = nil
		c.stopped = true
		return errStop
	}
	c.carry = append(c.carry[:0:0], buf[end-base:]...)
	return nil
}

// finish cuts f at the last command outside a transaction. An incr file
// followed by another (complete) must end there already.
func (c *cutter) finish(f *incrFile, complete bool) error {
	if f == nil {
		return nil
	}
	if complete && len(c.carry) > 0 {
		return fmt.Errorf("%w: incr file %s ends inside a command", repo.ErrCorrupt, f.name)
	}
	if c.inMulti {
		c.dropped += c.pending
	}
	if c.safe < f.n {
		if err := f.f.Truncate(c.safe); err != nil {
			return err
		}
		// safe is never before the cutter's start: what is cut off, it wrote.
		c.written -= f.n - c.safe
		f.n = c.safe
	}
	return nil
}

// PlanSnapshot plans the restore of the redis snapshot sn as it was taken,
// with no tail bytes.
func PlanSnapshot(chains []*Chain, sn *snapshot.Snapshot) (*Plan, error) {
	for _, c := range chains {
		if c.ID == sn.Redis.Chain {
			return &Plan{Chain: c, Base: sn, Cutoff: sn.Time.Add(time.Nanosecond), Limit: math.MinInt64}, nil
		}
	}
	return nil, fmt.Errorf("snapshot %s: its chain %s is not in the repository", sn.ID.Str(), sn.Redis.Chain)
}
