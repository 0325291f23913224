package chain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/snapshot"
	"github.com/snapbackup/snap/source"
)

// FollowOptions configure Follow.
type FollowOptions struct {
	Host      string
	Interval  time.Duration // between ticks; zero: 1 s
	ChunkSize int           // bytes read and stored at once, at most MaxInline; zero: 4 MiB
	Pause     time.Duration // between two reads of ChunkSize
	// IdleMark is how long the file may not grow before follow stores a
	// mark with no bytes, so the chain's end stays current; zero: 1 min.
	IdleMark time.Duration
	// CompactEvery is how often follow compacts its chain; zero: 1 min.
	CompactEvery time.Duration
	// Drain bounds how long follow ships what is pending once ctx is
	// done; zero: 5 min.
	Drain time.Duration
	// Backup is how base snapshots are taken (Host, Program, limits).
	Backup snapshot.BackupOptions
	Log    *slog.Logger
	Now    func() time.Time
	// Shipped, when set, is called after each tail object is stored.
	Shipped func(Shipped)
	// Started, when set, is called once the chain is there (continued, or
	// its first base stored): from then on every byte is shipped.
	Started func()
}

// Shipped describes one stored tail object.
type Shipped struct {
	Ref   Ref
	Since time.Time // the earliest its bytes can have been written
	Saved time.Time
}

// tick is what the ticker saw: the manifest and the incr files' sizes.
type tick struct {
	at    time.Time
	until time.Time // the last tick that saw the same sizes (merged into this one)
	man   *source.AOFManifest
	sizes map[int64]int64 // incr seq -> size
	err   error
	last  bool
}

// Follow follows the redis-server src, whose dir is dataDir here, into
// r's chain for o.Host until ctx is done; then it ships what is pending
// and returns nil. r's index must be loaded.
func Follow(ctx context.Context, r *repo.Repository, src *source.RedisAOF, dataDir string, o FollowOptions) error {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.ChunkSize <= 0 || o.ChunkSize > MaxInline {
		o.ChunkSize = MaxInline
	}
	if o.IdleMark <= 0 {
		o.IdleMark = time.Minute
	}
	if o.CompactEvery <= 0 {
		o.CompactEvery = time.Minute
	}
	if o.Drain <= 0 {
		o.Drain = 5 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Backup.Host == "" {
		o.Backup.Host = o.Host
	}
	if o.Backup.Log == nil {
		o.Backup.Log = o.Log
	}
	// A base snapshot is no race: one reader and one worker keep follow's
	// memory small beside the server.
	if o.Backup.Workers == 0 {
		o.Backup.Workers = 1
	}
	if o.Backup.Readers == 0 {
		o.Backup.Readers = 1
	}
	cfg, err := src.Config(ctx)
	if err != nil {
		return err
	}
	f := &follower{r: r, src: src, dataDir: dataDir, cfg: cfg, o: o, log: o.Log}
	f.aofDir = cfg.AOFDir(dataDir)
	if !cfg.AutoGCOff {
		if err := src.SetAutoGCOff(ctx, true); err != nil {
			return fmt.Errorf("follow needs Redis to keep the AOF's history files until they are stored: %w", err)
		}
		f.restoreGC = true
	}
	clean := false
	defer func() {
		if clean {
			f.restoreSetting()
		} else if f.restoreGC {
			f.log.Warn("aof-disable-auto-gc stays yes, so that the next snap follow continues the chain without a gap; CONFIG SET aof-disable-auto-gc no if it will not run again")
		}
	}()

	// The ticker starts before the chain: marks taken while a first base
	// snapshot is stored keep their times.
	f.queue = newTickQueue()
	tickCtx, stopTicks := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); f.ticker(tickCtx, ctx.Done()) }()
	go func() { defer wg.Done(); f.guardGC(tickCtx) }()
	defer func() { stopTicks(); wg.Wait() }()

	work, cancelWork := drainContext(ctx, o.Drain)
	defer cancelWork()
	if err := f.start(work); err != nil {
		return err
	}
	f.removeHistory()
	if o.Started != nil {
		o.Started()
	}
	lastCompact := o.Now()
	for {
		t, ok := f.queue.pop(work)
		if !ok {
			return work.Err()
		}
		if err := f.process(work, t); err != nil {
			return err
		}
		// Store after every tick while follow keeps up; behind, gather the
		// ticks queued meanwhile into fuller objects.
		if t.last || f.queue.empty() {
			if err := f.flush(work); err != nil {
				return err
			}
		}
		if t.last {
			f.idle(work, t.at, true)
			f.log.Info("follow stopped; everything up to its last tick is stored", "chain", f.chain, "seq", f.seq, "offset", f.off)
			clean = true
			return nil
		}
		if now := o.Now(); now.Sub(lastCompact) >= o.CompactEvery {
			lastCompact = now
			f.compact(work)
		}
	}
}

// drainContext is a context that lives on for d once parent is done, so
// that follow can ship what is pending.
func drainContext(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	go func() {
		select {
		case <-parent.Done():
		case <-ctx.Done():
			return
		}
		select {
		case <-time.After(d):
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

type follower struct {
	r         *repo.Repository
	src       *source.RedisAOF
	dataDir   string
	aofDir    string
	cfg       source.AOFConfig
	o         FollowOptions
	log       *slog.Logger
	restoreGC bool
	queue     *tickQueue

	chain   string
	seq     int64  // position: the incr file shipped into
	name    string // its name
	off     int64  // bytes of it stored
	scan    *source.AOFScanner
	baseSeq int64 // the chain's newest base's base seq
	since   int64 // ms: when follow last saw the file end at off
	posAt   int64 // ms: when the position was taken
	lastObj int64 // ms: when the last object was stored
	prevEnd int64 // bytes stored of the incr file before, for the first object of this one
	lastBuf []byte
	pending *Tail // marks not yet stored, of the incr file shipped into
	// rebaseAfter: a base snapshot that failed (a prune holds the lock,
	// say) is tried again no sooner than this.
	rebaseAfter time.Time
}

func (f *follower) restoreSetting() {
	if !f.restoreGC {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.src.Ping(ctx); err != nil {
		// A server that stopped reads its config file when it starts.
		f.log.Info("redis-server is gone; aof-disable-auto-gc is its config file's again when it starts")
		return
	}
	if err := f.src.SetAutoGCOff(ctx, false); err != nil {
		f.log.Warn("could not set aof-disable-auto-gc back to no; Redis keeps its AOF history files until it is", "err", err)
	}
}

// guardGC sets aof-disable-auto-gc yes again when the server lost it (a
// restart reads its config file again).
func (f *follower) guardGC(ctx context.Context) {
	t := time.NewTicker(f.o.Interval)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cfg, err := f.src.Config(ctx)
		if err != nil {
			if !warned && ctx.Err() == nil {
				f.log.Warn("redis-server does not answer; follow goes on reading its files", "err", err)
				warned = true
			}
			continue
		}
		if warned {
			f.log.Info("redis-server answers again")
			warned = false
		}
		if !cfg.AutoGCOff {
			if err := f.src.SetAutoGCOff(ctx, true); err == nil {
				f.log.Warn("redis-server had aof-disable-auto-gc no again (restarted?); set it to yes")
				f.restoreGC = true
			}
		}
	}
}

// ticker records a tick every interval, and a last one once stop is
// closed.
func (f *follower) ticker(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(f.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-stop:
			tk := f.observe()
			tk.last = true
			f.queue.push(tk)
			return
		case <-t.C:
			f.queue.push(f.observe())
		}
	}
}

// observe reads the manifest and the sizes of the incr files it names.
func (f *follower) observe() (t tick) {
	t = tick{sizes: map[int64]int64{}}
	// The time is taken after the sizes: every byte up to them was
	// written before it.
	defer func() { t.at = f.o.Now() }()
	man, _, err := source.ReadAOFManifest(f.aofDir, f.cfg.ManifestName())
	if err != nil {
		t.err = err
		return t
	}
	t.man = man
	for _, in := range man.Incrs {
		fi, err := os.Stat(filepath.Join(f.aofDir, in.Name))
		if err != nil {
			t.err = err
			return t
		}
		t.sizes[in.Seq] = fi.Size()
	}
	return t
}

// start continues the host's newest chain when the server's files still
// continue it, or starts a new one with a base snapshot.
func (f *follower) start(ctx context.Context) error {
	// Only this host's chains can be continued.
	snaps, err := snapshot.ListHost(ctx, f.r, f.o.Host)
	if err != nil {
		return err
	}
	chains, err := LoadChains(ctx, f.r, snaps)
	if err != nil {
		return err
	}
	srcMeta := snapshot.Source{Kind: source.KindRedis, Address: f.src.Info().Address, DataDir: f.src.Info().DataDir}
	if c := Newest(chains, f.o.Host, srcMeta); c != nil {
		why, err := f.resume(ctx, c)
		if err != nil {
			return err
		}
		if why == "" {
			return nil
		}
		f.log.Warn("starting a new chain: the server's AOF does not continue the last one", "chain", c.ID, "why", why)
	}
	return f.newChain(ctx)
}

// resume takes c's position if the files continue it; else it says why.
func (f *follower) resume(ctx context.Context, c *Chain) (string, error) {
	seq, off := c.Position()
	man, _, err := source.ReadAOFManifest(f.aofDir, f.cfg.ManifestName())
	if err != nil {
		return "", err
	}
	name, ok := fileOf(man, seq)
	if !ok {
		return fmt.Sprintf("incr file %d of the chain is gone (a rewrite while follow did not run?)", seq), nil
	}
	fi, err := os.Stat(filepath.Join(f.aofDir, name))
	if err != nil {
		return fmt.Sprintf("incr file %s: %v", name, err), nil
	}
	if fi.Size() < off {
		return fmt.Sprintf("incr file %s is %d bytes, shorter than the %d the chain holds", name, fi.Size(), off), nil
	}
	// The bytes before the position must be the chain's.
	if n := len(c.Tails); n > 0 && c.Tails[n-1].Seq == seq && c.Tails[n-1].End == off && off > 0 {
		last := c.Tails[n-1]
		t, err := Load(ctx, f.r, last)
		if err != nil {
			return "", err
		}
		var tailBytes []byte
		if err := t.Bytes(ctx, f.r, func(b []byte) error {
			tailBytes = append(tailBytes[:0], b...)
			return nil
		}); err != nil {
			return "", err
		}
		k := min(len(tailBytes), 64)
		disk := make([]byte, k)
		fd, err := os.Open(filepath.Join(f.aofDir, name))
		if err != nil {
			return fmt.Sprintf("incr file %s: %v", name, err), nil
		}
		_, err = fd.ReadAt(disk, off-int64(k))
		fd.Close()
		if err != nil || string(disk) != string(tailBytes[len(tailBytes)-k:]) {
			return fmt.Sprintf("incr file %s does not hold the chain's bytes before offset %d", name, off), nil
		}
	}
	// The scanner must know whether the position is inside a transaction
	// (a tick may have cut one): scan the file up to it.
	sc, err := scanTo(filepath.Join(f.aofDir, name), off)
	if err != nil {
		return fmt.Sprintf("incr file %s up to the chain's position: %v", name, err), nil
	}
	base := c.Bases[len(c.Bases)-1]
	f.chain, f.seq, f.name, f.off = c.ID, seq, name, off
	f.scan = sc
	f.baseSeq = 0
	if base.Redis.Base != nil {
		f.baseSeq = base.Redis.Base.Seq
	}
	f.since = c.To().UnixMilli()
	f.posAt, f.lastObj = f.since, f.since
	f.log.Info("continuing chain", "chain", c.ID, "seq", seq, "offset", off, "since", c.To().UTC().Format(time.RFC3339))
	return "", nil
}

// scanTo returns a scanner that has scanned the first off bytes of the
// file at path, which must end there between two commands.
func scanTo(path string, off int64) (*source.AOFScanner, error) {
	sc, err := source.ScanAOFFile(path, off)
	if err != nil {
		return nil, err
	}
	if sc.Offset() != off {
		return nil, fmt.Errorf("offset %d is inside a command", off)
	}
	return sc, nil
}

// fileOf finds the name of incr file seq in man, as incr or history.
func fileOf(man *source.AOFManifest, seq int64) (string, bool) {
	for _, in := range man.Incrs {
		if in.Seq == seq {
			return in.Name, true
		}
	}
	for _, h := range man.History {
		if h.Seq == seq && isIncrName(h.Name) {
			return h.Name, true
		}
	}
	return "", false
}

// isIncrName tells an incr file from a base by Redis's names for them
// (the manifest calls both "history" once replaced).
func isIncrName(name string) bool { return strings.HasSuffix(name, ".incr.aof") }

// newChain stores a base snapshot that starts a new chain.
func (f *follower) newChain(ctx context.Context) error {
	id := source.NewChainID()
	src := source.NewRedisAOF(f.src.Info().Address, f.dataDir, source.RedisAOFOptions{Chain: id, Log: f.log})
	defer src.Close()
	sn, err := f.backup(ctx, src)
	if err != nil {
		return err
	}
	seq, off := sn.Redis.Position()
	last := sn.Redis.Incrs[len(sn.Redis.Incrs)-1]
	f.chain, f.seq, f.name, f.off = id, seq, last.Name, off
	f.scan = source.NewAOFScanner(off)
	f.baseSeq = 0
	if sn.Redis.Base != nil {
		f.baseSeq = sn.Redis.Base.Seq
	}
	f.since = sn.Time.UnixMilli()
	f.posAt, f.lastObj = f.since, f.since
	f.log.Info("started a chain", "chain", id, "snapshot", sn.ID.Str(), "seq", seq, "offset", off)
	return nil
}

// backup stores a base snapshot, trying again once if a rewrite switched
// the files while they were read.
func (f *follower) backup(ctx context.Context, src *source.RedisAOF) (*snapshot.Snapshot, error) {
	for attempt := 0; ; attempt++ {
		sn, err := snapshot.Backup(ctx, f.r, src, f.o.Backup)
		if err == nil || attempt > 0 || !errors.Is(err, source.ErrAOFSwitched) {
			return sn, err
		}
	}
}

// process ships what tick t saw.
func (f *follower) process(ctx context.Context, t tick) error {
	if t.err != nil {
		f.log.Warn("cannot read the AOF; trying again at the next tick", "err", t.err)
		return nil
	}
	at := t.at.UnixMilli()
	until := max(at, t.until.UnixMilli())
	shipped := false
	for {
		name, ok := fileOf(t.man, f.seq)
		if !ok {
			return f.gap(ctx, fmt.Sprintf("incr file %d vanished before follow stored all of it", f.seq))
		}
		f.name = name
		size, current := t.sizes[f.seq]
		if !current {
			fi, err := os.Stat(filepath.Join(f.aofDir, name))
			if err != nil {
				return f.gap(ctx, fmt.Sprintf("incr file %s: %v", name, err))
			}
			size = fi.Size()
		}
		if size < f.off {
			if at <= f.posAt {
				return nil // a tick from before the position was taken
			}
			return f.gap(ctx, fmt.Sprintf("incr file %s shrank to %d bytes, below the %d stored", name, size, f.off))
		}
		n, err := f.ship(ctx, size, at)
		if err != nil {
			return err
		}
		shipped = shipped || n > 0
		next, ok := nextIncr(t.man, f.seq)
		if !ok {
			break
		}
		// Redis appends only to the newest incr file: this one is whole.
		if err := f.flush(ctx); err != nil {
			return err
		}
		if f.off != size {
			f.log.Warn("incr file ends inside a command; the rest is not stored", "file", name, "stored", f.off, "size", size)
		}
		f.seq, f.name, f.off, f.prevEnd = next.Seq, next.Name, 0, f.off
		f.scan = source.NewAOFScanner(0)
	}
	// The file still ended where it does now at the tick's last sighting.
	f.since = max(f.since, until)
	if !shipped {
		f.idle(ctx, time.UnixMilli(until), false)
	}
	if t.man.Base != nil && t.man.Base.Seq > f.baseSeq && len(t.man.Incrs) > 0 && f.seq >= t.man.Incrs[0].Seq {
		// The old incr files' bytes are stored before the base that
		// replaces them.
		if err := f.flush(ctx); err != nil {
			return err
		}
		f.rebase(ctx, t.man.Base.Seq)
	}
	return nil
}

// nextIncr returns the incr file after seq, among the manifest's incr and
// history files.
func nextIncr(man *source.AOFManifest, seq int64) (source.AOFFile, bool) {
	var best source.AOFFile
	found := false
	consider := func(a source.AOFFile) {
		if a.Seq > seq && (!found || a.Seq < best.Seq) {
			best, found = a, true
		}
	}
	for _, in := range man.Incrs {
		consider(in)
	}
	for _, h := range man.History {
		if isIncrName(h.Name) {
			consider(h)
		}
	}
	return best, found
}

// ship adds the bytes of the current incr file from f.off to size, cut
// at the last whole command, to the pending tail object as marks of the
// tick at, in pieces of at most ChunkSize (a full object is stored); it
// returns the bytes added.
func (f *follower) ship(ctx context.Context, size int64, at int64) (int64, error) {
	if size == f.off {
		return 0, nil
	}
	fd, err := os.Open(filepath.Join(f.aofDir, f.name))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, f.gap(ctx, fmt.Sprintf("incr file %s vanished before follow stored all of it", f.name))
		}
		return 0, err
	}
	defer fd.Close()
	var stored int64
	first := true
	for f.off < size {
		room := int64(f.o.ChunkSize) - f.pendingLen()
		if room <= 0 {
			if err := f.flush(ctx); err != nil {
				return stored, err
			}
			room = int64(f.o.ChunkSize)
		}
		want := min(room, size-f.off)
		buf := f.lastBuf[:0]
		if int64(cap(buf)) < want {
			buf = make([]byte, want)
		}
		buf = buf[:want]
		if _, err := fd.ReadAt(buf, f.off); err != nil && !errors.Is(err, io.EOF) {
			return stored, err
		}
		f.lastBuf = buf
		n, err := f.scan.Scan(buf, nil)
		if err != nil {
			return stored, f.gap(ctx, fmt.Sprintf("incr file %s is not an AOF at offset %d: %v", f.name, f.off, err))
		}
		if n == 0 {
			if want < size-f.off && f.pendingLen() > 0 {
				// The piece was short for the room left: store the
				// pending object and read a whole piece.
				if err := f.flush(ctx); err != nil {
					return stored, err
				}
				continue
			}
			if want < int64(f.o.ChunkSize) {
				break // a command not yet whole: the next tick
			}
			// One command longer than a piece: read it whole.
			n, err = f.bigItem(fd, size)
			if err != nil || n == 0 {
				return stored, err
			}
			if n > MaxInline {
				return stored, fmt.Errorf("one command of %d bytes in %s is larger than a tail object holds (%d)", n, f.name, MaxInline)
			}
			buf = f.lastBuf[:n]
		}
		since := f.since
		if !first {
			since = at
		}
		f.addMark(buf[:n], at, since)
		f.off += int64(n)
		stored += int64(n)
		f.since = at
		first = false
		if f.off < size && f.o.Pause > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(f.o.Pause):
			}
		}
	}
	return stored, nil
}

// pendingLen is how many bytes the pending tail object holds.
func (f *follower) pendingLen() int64 {
	if f.pending == nil {
		return 0
	}
	return int64(len(f.pending.Data))
}

// addMark appends data, the bytes from f.off, to the pending tail object
// (made if there is none) as a mark of the tick at. While follow keeps up
// that object is stored after each tick; catching up, one object holds
// the marks of many ticks, so an outage costs as many objects as bytes
// need, not one per tick.
func (f *follower) addMark(data []byte, at, since int64) {
	t := f.pending
	if t == nil {
		t = &Tail{Chain: f.chain, Host: f.o.Host, File: f.name, Seq: f.seq, Offset: f.off, End: f.off, Timestamps: f.cfg.Timestamps}
		if f.off == 0 {
			t.PrevEnd = f.prevEnd
		}
		f.pending = t
	}
	t.Data = append(t.Data, data...)
	t.End += int64(len(data))
	if at-since > 2*f.o.Interval.Milliseconds()+1000 && !f.cfg.Timestamps {
		t.Gaps = append(t.Gaps, len(t.Ends))
	}
	t.Ends, t.Times, t.Sinces = append(t.Ends, t.End), append(t.Times, at), append(t.Sinces, since)
}

// flush stores the pending tail object, if any.
func (f *follower) flush(ctx context.Context) error {
	t := f.pending
	if t == nil {
		return nil
	}
	if err := f.save(ctx, t, t.Sinces[0]); err != nil {
		return err
	}
	f.pending = nil
	f.lastObj = t.Times[len(t.Times)-1]
	return nil
}

// bigItem reads the one item at f.off that is larger than a piece.
func (f *follower) bigItem(fd *os.File, size int64) (int, error) {
	want := int64(f.o.ChunkSize)
	for {
		want = min(2*want, size-f.off)
		buf := make([]byte, want)
		if _, err := fd.ReadAt(buf, f.off); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		n, err := f.scan.Scan(buf, nil)
		if err != nil {
			return 0, err
		}
		if n > 0 {
			f.lastBuf = buf
			return n, nil
		}
		if want == size-f.off {
			return 0, nil // not yet whole
		}
	}
}

// save stores t, retrying until it is stored or ctx is done: a tail
// object is never skipped.
func (f *follower) save(ctx context.Context, t *Tail, since int64) error {
	backoff := 200 * time.Millisecond
	warned := false
	for {
		ref, err := Save(ctx, f.r, t)
		if err == nil {
			if warned {
				f.log.Info("the repository takes tail objects again")
			}
			now := f.o.Now()
			f.log.Debug("shipped", "seq", t.Seq, "offset", t.Offset, "end", t.End, "lag_ms", now.UnixMilli()-since)
			if f.o.Shipped != nil {
				f.o.Shipped(Shipped{Ref: ref, Since: time.UnixMilli(since), Saved: now})
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("tail object not stored before follow had to stop: %w", err)
		}
		if !warned {
			f.log.Warn("cannot store a tail object; retrying, nothing is skipped", "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// idle stores a mark with no bytes when the file has not grown for
// IdleMark, or always when last.
func (f *follower) idle(ctx context.Context, at time.Time, last bool) {
	if f.pending != nil {
		return // marks wait to be stored: the chain's end moves with them
	}
	ms := at.UnixMilli()
	if ms <= f.lastObj || !last && ms-f.lastObj < f.o.IdleMark.Milliseconds() {
		return
	}
	t := &Tail{Chain: f.chain, Host: f.o.Host, File: f.name, Seq: f.seq, Offset: f.off, End: f.off,
		Timestamps: f.cfg.Timestamps, Ends: []int64{f.off}, Times: []int64{ms}, Sinces: []int64{min(f.since, ms)}}
	if err := f.save(ctx, t, ms); err != nil {
		f.log.Warn("mark not stored", "err", err)
		return
	}
	f.lastObj = ms
}

// gap reports bytes follow cannot store and starts a new chain.
func (f *follower) gap(ctx context.Context, why string) error {
	if err := f.flush(ctx); err != nil {
		return err
	}
	f.log.Warn("gap in the chain: starting a new chain with a fresh base snapshot", "chain", f.chain, "why", why)
	return f.newChain(ctx)
}

// rebase stores the base a rewrite made as a base snapshot of the chain,
// once every older incr file is stored, and then deletes the history
// files that are stored.
func (f *follower) rebase(ctx context.Context, baseSeq int64) {
	if f.o.Now().Before(f.rebaseAfter) {
		return
	}
	src := source.NewRedisAOF(f.src.Info().Address, f.dataDir, source.RedisAOFOptions{Chain: f.chain, BaseOnly: true, WantBase: baseSeq, Log: f.log})
	defer src.Close()
	sn, err := snapshot.Backup(ctx, f.r, src, f.o.Backup)
	if err != nil {
		if !errors.Is(err, source.ErrAOFSwitched) {
			f.rebaseAfter = f.o.Now().Add(30 * time.Second)
			f.log.Warn("base snapshot after a rewrite not stored; trying again in 30s (the tail objects go on meanwhile)", "err", err)
		}
		return
	}
	f.baseSeq = baseSeq
	f.log.Info("stored the base of a rewrite", "chain", f.chain, "snapshot", sn.ID.Str(), "base", baseSeq)
	f.removeHistory()
}

// removeHistory deletes the history files follow no longer needs: incr
// files before the one it ships into, and bases before the chain's newest.
func (f *follower) removeHistory() {
	man, _, err := source.ReadAOFManifest(f.aofDir, f.cfg.ManifestName())
	if err != nil {
		return
	}
	for _, h := range man.History {
		if isIncrName(h.Name) && h.Seq >= f.seq || !isIncrName(h.Name) && h.Seq >= f.baseSeq {
			continue
		}
		if err := os.Remove(filepath.Join(f.aofDir, h.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			f.log.Warn("cannot remove an AOF history file", "file", h.Name, "err", err)
		}
	}
}

// compact merges the chain's aged tail objects, under a shared lock.
func (f *follower) compact(ctx context.Context) {
	lk, err := f.r.Lock(ctx, repo.LockOptions{Command: "follow", Log: f.log})
	if err != nil {
		f.log.Warn("compaction skipped", "err", err)
		return
	}
	defer lk.Unlock(ctx)
	refs, err := List(ctx, f.r)
	if err != nil {
		f.log.Warn("compaction skipped", "err", err)
		return
	}
	var mine []Ref
	for _, r := range refs {
		if r.Chain == f.chain {
			mine = append(mine, r)
		}
	}
	c := Chains(nil, mine)
	if len(c) == 0 {
		return
	}
	c[0].Host = f.o.Host
	if _, err := Compact(ctx, f.r, c[0], CompactOptions{Now: f.o.Now(), Grace: 2*f.o.Interval + 5*time.Second, Log: f.log}); err != nil {
		f.log.Warn("compaction failed; trying again later", "err", err)
	}
}

// tickQueue is an unbounded FIFO of ticks: the ticker never waits for the
// shipper.
type tickQueue struct {
	mu    sync.Mutex
	ticks []tick
	ready chan struct{}
}

func newTickQueue() *tickQueue { return &tickQueue{ready: make(chan struct{}, 1)} }

func (q *tickQueue) push(t tick) {
	q.mu.Lock()
	// Consecutive ticks that saw the same sizes tell nothing new but the
	// later time: keep one, so a long outage costs little memory.
	if n := len(q.ticks); n > 0 && !t.last && sameTick(q.ticks[n-1], t) {
		q.ticks[n-1].until = t.at
	} else {
		q.ticks = append(q.ticks, t)
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func sameTick(a, b tick) bool {
	if a.err != nil || b.err != nil || a.man == nil || b.man == nil || len(a.sizes) != len(b.sizes) {
		return false
	}
	if (a.man.Base == nil) != (b.man.Base == nil) || a.man.Base != nil && a.man.Base.Seq != b.man.Base.Seq {
		return false
	}
	for k, v := range a.sizes {
		if b.sizes[k] != v {
			return false
		}
	}
	return true
}

// empty reports whether no tick waits.
func (q *tickQueue) empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ticks) == 0
}

func (q *tickQueue) pop(ctx context.Context) (tick, bool) {
	for {
		q.mu.Lock()
		if len(q.ticks) > 0 {
			t := q.ticks[0]
			q.ticks = q.ticks[1:]
			q.mu.Unlock()
			return t, true
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return tick{}, false
		case <-q.ready:
		}
	}
}
