package snapshot

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/snapbackup/snap/repo"
)

// Subset selects packs for check's data verification: a fraction of them
// at random, or part N of M (by pack id, so M runs with N = 1..M cover
// every pack once).
type Subset struct {
	Fraction float64 // 0 < Fraction <= 1
	N, M     int     // 1 <= N <= M
}

// ParseSubset parses "10%", "2.5%" or "N/M".
func ParseSubset(s string) (Subset, error) {
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f <= 0 || f > 100 {
			return Subset{}, fmt.Errorf("invalid subset %q: want a percentage in (0, 100], like 10%%", s)
		}
		return Subset{Fraction: f / 100}, nil
	}
	a, b, ok := strings.Cut(s, "/")
	n, err1 := strconv.Atoi(a)
	m, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || m < 1 || n > m {
		return Subset{}, fmt.Errorf("invalid subset %q: want a percentage like 10%% or N/M like 2/5 (1 <= N <= M)", s)
	}
	return Subset{N: n, M: m}, nil
}

func (s Subset) String() string {
	if s.M > 0 {
		return fmt.Sprintf("%d/%d", s.N, s.M)
	}
	return strconv.FormatFloat(s.Fraction*100, 'f', -1, 64) + "%"
}

// CheckOptions configure one check.
type CheckOptions struct {
	// ReadData downloads packs and verifies every blob; Subset (if not
	// nil) limits it to some packs.
	ReadData bool
	Subset   *Subset
	// UnreferencedMargin: a pack no index names that is older than this is
	// reported as prune's to remove; younger ones may be a running
	// backup's.
	UnreferencedMargin time.Duration
	NoLock             bool // check without a shared lock (a prune may then confuse it)
	RetryLock          time.Duration
	Now                func() time.Time
	Rand               *rand.Rand // picks the Fraction subset; nil: random
	Log                *slog.Logger
	MaxProblems        int // problems listed in full; zero: 1000
	// Extra checks the objects other than snapshots (the tail objects of
	// redis chains), given every snapshot that loaded and whether a blob
	// is indexed in a stored pack, and returns what it found wrong.
	Extra func(ctx context.Context, snaps []*Snapshot, have func(repo.ID) bool) ([]Problem, error)
}

// Problem is one thing check found. Errors make the repository fail the
// check; notes do not.
type Problem struct {
	Kind     string `json:"kind"` // snapshot, tree, blob, index, pack, data
	Snapshot string `json:"snapshot,omitempty"`
	File     string `json:"file,omitempty"`
	Blob     string `json:"blob,omitempty"`
	Pack     string `json:"pack,omitempty"`
	Index    string `json:"index,omitempty"`
	Message  string `json:"message"`
}

func (p Problem) String() string {
	var b strings.Builder
	for _, f := range []struct{ k, v string }{{"snapshot", p.Snapshot}, {"file", p.File}, {"pack", p.Pack}, {"blob", p.Blob}} {
		if f.v != "" {
			fmt.Fprintf(&b, "%s %s: ", f.k, f.v)
		}
	}
	if p.Index != "" && p.Pack == "" {
		fmt.Fprintf(&b, "index %s: ", p.Index)
	}
	b.WriteString(p.Message)
	if p.Index != "" && p.Pack != "" {
		fmt.Fprintf(&b, " (index %s)", p.Index)
	}
	return b.String()
}

// CheckResult is what check found.
type CheckResult struct {
	Snapshots       int       `json:"snapshots"`
	IndexFiles      int       `json:"index_files"`
	SupersededFiles int       `json:"superseded_index_files"`
	Packs           int       `json:"packs"` // named by the index
	Blobs           int       `json:"blobs"`
	UnindexedPacks  int       `json:"unindexed_packs"`
	UnindexedBytes  int64     `json:"unindexed_bytes"`
	UnindexedOld    int       `json:"unindexed_packs_older_than_margin"`
	PacksRead       int       `json:"packs_read"`
	BytesRead       int64     `json:"bytes_read"`
	ErrorCount      int       `json:"error_count"`
	Errors          []Problem `json:"errors"` // the first MaxProblems
	Notes           []Problem `json:"notes"`
	ReadData        bool      `json:"read_data"`
	ReadDataSubset  string    `json:"read_data_subset,omitempty"`
	DroppedProblems int       `json:"errors_not_listed,omitempty"`
	ElapsedSeconds  float64   `json:"elapsed_seconds"`
}

// OK reports whether the check found no errors.
func (c *CheckResult) OK() bool { return c.ErrorCount == 0 }

// checker collects a CheckResult from concurrent workers.
type checker struct {
	*CheckResult
	mu  sync.Mutex
	max int
}

func (c *checker) fail(p Problem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ErrorCount++
	if len(c.Errors) < c.max {
		c.Errors = append(c.Errors, p)
	} else {
		c.DroppedProblems++
	}
}

func (c *checker) note(p Problem) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.Notes) < c.max {
		c.Notes = append(c.Notes, p)
	}
}

// Check proves the repository whole (docs/design.md, "Check"): every
// snapshot loads and its tree loads, every blob a tree names is in the
// index (and of the right type), every pack the index names is stored
// with exactly the size its entries imply, and index entries tile their
// packs. With ReadData it downloads packs and verifies every blob, that
// the header matches the index and that the pack hashes to its name.
//
// It returns an error only when it cannot run (no lock, no listing);
// what it finds is in the result, and OK says whether it passed.
func Check(ctx context.Context, r *repo.Repository, o CheckOptions) (*CheckResult, error) {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.MaxProblems <= 0 {
		o.MaxProblems = 1000
	}
	res := &checker{CheckResult: &CheckResult{ReadData: o.ReadData, Errors: []Problem{}, Notes: []Problem{}}, max: o.MaxProblems}
	if o.ReadData && o.Subset != nil {
		res.ReadDataSubset = o.Subset.String()
	}
	start := time.Now()
	defer func() { res.ElapsedSeconds = time.Since(start).Seconds() }()
	if !o.NoLock {
		lk, err := r.Lock(ctx, repo.LockOptions{Command: "check", Now: o.Now, RetryFor: o.RetryLock, Log: o.Log})
		if err != nil {
			return nil, err
		}
		defer lk.Unlock(ctx)
	}

	// Snapshots first, then the index: a snapshot is written after the
	// index that names its blobs, so this order never sees a snapshot
	// whose index is not yet listed.
	var snapIDs []repo.ObjectInfo
	if err := r.ListObjects(ctx, repo.SnapshotFile, func(o repo.ObjectInfo) error {
		snapIDs = append(snapIDs, o)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	snaps := make([]*Snapshot, len(snapIDs))
	{
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(r.Connections())
		for i, o := range snapIDs {
			g.Go(func() error {
				sn, err := LoadNamed(gctx, r, o.Name, o.Size)
				if err != nil {
					if gctx.Err() != nil {
						return gctx.Err()
					}
					res.fail(Problem{Kind: "snapshot", Snapshot: o.ID.String(), Message: err.Error()})
					return nil
				}
				// A version 2 name carries its host's tag, which scoped
				// readers list by: under another tag a snapshot is lost
				// to its host's backups and restores.
				if o.Owner != "" && o.Owner != r.HostTag(sn.Host) {
					res.fail(Problem{Kind: "snapshot", Snapshot: o.ID.String(),
						Message: fmt.Sprintf("stored as snapshots/%s, but the tag of its host %q is %s: its host's backups and restores do not find it (snap copy it, or forget it)", o.Name, sn.Host, r.HostTag(sn.Host))})
				}
				snaps[i] = sn
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return nil, err
		}
	}
	snaps = slices.DeleteFunc(snaps, func(s *Snapshot) bool { return s == nil })
	res.Snapshots = len(snapIDs)

	idx, err := r.LoadIndexFiles(ctx, func(f repo.StoredIndex, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		res.fail(Problem{Kind: "index", Index: f.Name, Message: err.Error()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.IndexFiles = len(idx.Files)

	stored := map[repo.ID]int64{}
	storedTime := map[repo.ID]time.Time{}
	if err := r.Backend().List(ctx, repo.PackFile, func(fi repo.FileInfo) error {
		id, err := repo.ParseID(fi.Name)
		if err != nil {
			res.note(Problem{Kind: "pack", Pack: fi.Name, Message: "stray object in data/ (not a pack name); ignored"})
			return nil
		}
		stored[id] = fi.Size
		storedTime[id] = fi.ModTime
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list packs: %w", err)
	}

	packs, packIndex := checkIndex(idx, stored, res)
	res.Packs = len(packs)
	res.Blobs = r.Index().Len()

	now := o.Now()
	var unindexed []repo.ID
	for id := range stored {
		if _, ok := packs[id]; !ok {
			unindexed = append(unindexed, id)
		}
	}
	slices.SortFunc(unindexed, compareID)
	for _, id := range unindexed {
		res.UnindexedPacks++
		res.UnindexedBytes += stored[id]
		t := storedTime[id]
		msg := "no index names this pack: a running backup's, or a crashed writer's leftover"
		if !t.IsZero() && now.Sub(t) > o.UnreferencedMargin {
			res.UnindexedOld++
			msg = fmt.Sprintf("no index names this pack and it is %v old: a crashed writer's leftover; snap prune removes it", now.Sub(t).Round(time.Minute))
		}
		res.note(Problem{Kind: "pack", Pack: id.String(), Message: msg})
	}

	missingPacks := map[repo.ID]bool{}
	for id := range packs {
		if _, ok := stored[id]; !ok {
			missingPacks[id] = true
		}
	}
	o.Log.Info("checking snapshots", "snapshots", len(snaps))
	if err := checkTrees(ctx, r, snaps, missingPacks, nil, res); err != nil {
		return nil, err
	}
	if o.Extra != nil {
		have := func(id repo.ID) bool {
			loc, ok := r.Index().Lookup(id)
			return ok && !missingPacks[loc.Pack]
		}
		probs, err := o.Extra(ctx, snaps, have)
		if err != nil {
			return nil, err
		}
		for _, p := range probs {
			res.fail(p)
		}
	}

	if o.ReadData {
		bad, err := readData(ctx, r, o, packs, packIndex, stored, res)
		if err != nil {
			return nil, err
		}
		if len(bad) > 0 {
			// Say which snapshots and files the damaged blobs belong to.
			if err := checkTrees(ctx, r, snaps, nil, bad, res); err != nil {
				return nil, err
			}
		}
	}
	return res.CheckResult, nil
}

// checkIndex checks the effective index files against each other and the
// stored packs. It returns each indexed pack's entries and which file
// names it.
func checkIndex(idx *repo.IndexSet, stored map[repo.ID]int64, res *checker) (map[repo.ID][]repo.BlobEntry, map[repo.ID]string) {
	packs := map[repo.ID][]repo.BlobEntry{}
	from := map[repo.ID]string{}
	for _, f := range idx.Files {
		if idx.Superseded[f.ID] {
			res.SupersededFiles++
			continue
		}
		for _, pb := range f.Data.Packs {
			if prev, ok := packs[pb.PackID]; ok {
				if !slices.Equal(prev, pb.Blobs) {
					res.fail(Problem{Kind: "index", Index: f.Name, Pack: pb.PackID.String(),
						Message: fmt.Sprintf("lists this pack differently from index %s", from[pb.PackID])})
				}
				continue
			}
			packs[pb.PackID] = pb.Blobs
			from[pb.PackID] = f.Name
			want, err := expectedPackSize(pb.Blobs)
			if err != nil {
				res.fail(Problem{Kind: "index", Index: f.Name, Pack: pb.PackID.String(), Message: err.Error()})
				continue
			}
			size, ok := stored[pb.PackID]
			switch {
			case !ok:
				res.fail(Problem{Kind: "pack", Index: f.Name, Pack: pb.PackID.String(),
					Message: fmt.Sprintf("named by the index (%d blobs) but missing from storage", len(pb.Blobs))})
			case size != want:
				res.fail(Problem{Kind: "pack", Index: f.Name, Pack: pb.PackID.String(),
					Message: fmt.Sprintf("stored with %d bytes, but its %d index entries make %d", size, len(pb.Blobs), want)})
			}
		}
	}
	if res.SupersededFiles > 0 {
		res.note(Problem{Kind: "index", Message: fmt.Sprintf("%d superseded index files remain from an interrupted prune; the next prune removes them", res.SupersededFiles)})
	}
	return packs, from
}

// expectedPackSize is the size a pack whose index entries are these must
// have: the entries tile the data from offset 0, and the header that
// follows holds one entry per blob (docs/design.md, "Packs").
func expectedPackSize(entries []repo.BlobEntry) (int64, error) {
	s := slices.Clone(entries)
	slices.SortFunc(s, func(a, b repo.BlobEntry) int { return int(int64(a.Offset) - int64(b.Offset)) })
	var end int64
	for _, e := range s {
		if int64(e.Offset) != end {
			return 0, fmt.Errorf("index entries do not tile the pack: blob %s at offset %d, expected %d", e.ID, e.Offset, end)
		}
		end += int64(e.Length)
	}
	return repo.PackSizeFor(end, len(s)), nil
}

// checkTrees loads every snapshot's tree and checks its blobs. With bad
// set, it instead reports each file that uses one of those blobs.
func checkTrees(ctx context.Context, r *repo.Repository, snaps []*Snapshot, missingPacks map[repo.ID]bool, bad map[repo.ID]string, res *checker) error {
	idx := r.Index()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.Connections())
	for _, sn := range snaps {
		g.Go(func() error {
			sid := sn.ID.String()
			if bad != nil {
				if why, ok := bad[sn.Tree]; ok {
					res.fail(Problem{Kind: "data", Snapshot: sid, Blob: sn.Tree.String(), Message: "the snapshot's tree blob is damaged: " + why})
					return nil
				}
			} else {
				loc, ok := idx.Lookup(sn.Tree)
				switch {
				case !ok:
					res.fail(Problem{Kind: "tree", Snapshot: sid, Blob: sn.Tree.String(), Message: "the snapshot's tree blob is not in the index"})
					return nil
				case loc.Type != repo.TreeBlob:
					res.fail(Problem{Kind: "tree", Snapshot: sid, Blob: sn.Tree.String(), Pack: loc.Pack.String(), Message: fmt.Sprintf("the snapshot's tree is a %s blob", loc.Type)})
					return nil
				case missingPacks[loc.Pack]:
					res.fail(Problem{Kind: "tree", Snapshot: sid, Blob: sn.Tree.String(), Pack: loc.Pack.String(), Message: "the snapshot's tree blob is in a missing pack"})
					return nil
				}
			}
			t, err := LoadTree(gctx, r, sn.Tree)
			if err != nil {
				if gctx.Err() != nil {
					return gctx.Err()
				}
				if bad == nil {
					res.fail(Problem{Kind: "tree", Snapshot: sid, Blob: sn.Tree.String(), Message: err.Error()})
				}
				return nil
			}
			for _, f := range t.Files {
				if bad != nil {
					for i, c := range f.Chunks {
						if why, ok := bad[c]; ok {
							res.fail(Problem{Kind: "data", Snapshot: sid, File: f.Name, Blob: c.String(),
								Message: fmt.Sprintf("chunk %d of the file is damaged: %s", i, why)})
						}
					}
					continue
				}
				checkFile(idx, sid, f, missingPacks, res)
			}
			return nil
		})
	}
	return g.Wait()
}

// checkFile reports a file's chunks that are not in the index, not data
// blobs, or in missing packs: one problem per file and kind, naming the
// first chunk, so a lost pack does not print a line per chunk.
func checkFile(idx *repo.Index, sid string, f File, missingPacks map[repo.ID]bool, res *checker) {
	type agg struct {
		n     int
		first int
		blob  repo.ID
		pack  repo.ID
	}
	var notIndexed, wrongType, inMissing agg
	add := func(a *agg, i int, c repo.ID, pack repo.ID) {
		if a.n == 0 {
			a.first, a.blob, a.pack = i, c, pack
		}
		a.n++
	}
	for i, c := range f.Chunks {
		loc, ok := idx.Lookup(c)
		switch {
		case !ok:
			add(&notIndexed, i, c, repo.ID{})
		case loc.Type != repo.DataBlob:
			add(&wrongType, i, c, loc.Pack)
		case missingPacks[loc.Pack]:
			add(&inMissing, i, c, loc.Pack)
		case int64(loc.RawLength) != int64(f.Sizes[i]):
			res.fail(Problem{Kind: "blob", Snapshot: sid, File: f.Name, Blob: c.String(), Pack: loc.Pack.String(),
				Message: fmt.Sprintf("chunk %d: the tree says %d bytes, the index %d", i, f.Sizes[i], loc.RawLength)})
		}
	}
	report := func(a agg, what string) {
		if a.n == 0 {
			return
		}
		p := Problem{Kind: "blob", Snapshot: sid, File: f.Name, Blob: a.blob.String(),
			Message: fmt.Sprintf("%d of %d chunks %s (the first is chunk %d)", a.n, len(f.Chunks), what, a.first)}
		if !a.pack.IsNull() {
			p.Pack = a.pack.String()
		}
		res.fail(p)
	}
	report(notIndexed, "are not in the index")
	report(wrongType, "are not data blobs")
	report(inMissing, "are in a pack missing from storage")
}

// readData verifies the chosen packs in full and returns the blobs that
// failed, with why.
func readData(ctx context.Context, r *repo.Repository, o CheckOptions, packs map[repo.ID][]repo.BlobEntry, from map[repo.ID]string, stored map[repo.ID]int64, res *checker) (map[repo.ID]string, error) {
	var ids []repo.ID
	for id := range packs {
		if _, ok := stored[id]; ok {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, compareID)
	if s := o.Subset; s != nil {
		if s.M > 0 {
			ids = slices.DeleteFunc(ids, func(id repo.ID) bool {
				return int(uint32(id[0])<<24|uint32(id[1])<<16|uint32(id[2])<<8|uint32(id[3]))%s.M != s.N-1
			})
		} else {
			rng := o.Rand
			if rng == nil {
				rng = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
			}
			rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
			n := int(float64(len(ids))*s.Fraction + 0.999999)
			ids = ids[:min(n, len(ids))]
			slices.SortFunc(ids, compareID)
		}
	}
	o.Log.Info("reading packs", "packs", len(ids))
	var mu sync.Mutex
	bad := map[repo.ID]string{}
	var read atomic.Int64
	var bytes atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.Connections())
	for _, id := range ids {
		g.Go(func() error {
			size := stored[id]
			entries, badBlobs, err := r.CheckPack(gctx, id, size)
			if gctx.Err() != nil {
				return gctx.Err()
			}
			read.Add(1)
			bytes.Add(size)
			pid := id.String()
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.fail(Problem{Kind: "data", Pack: pid, Message: err.Error()})
				if entries == nil {
					// The header is unreadable: every blob the index puts
					// here is lost.
					for _, e := range packs[id] {
						bad[e.ID] = fmt.Sprintf("in pack %s, which cannot be read", id.Str())
					}
					return nil
				}
			}
			for _, b := range badBlobs {
				res.fail(Problem{Kind: "data", Pack: pid, Blob: b.Entry.ID.String(), Message: b.Err.Error()})
				bad[b.Entry.ID] = fmt.Sprintf("in pack %s: %v", id.Str(), b.Err)
			}
			if entries != nil && !slices.Equal(entries, sortedByOffset(packs[id])) {
				res.fail(Problem{Kind: "data", Pack: pid, Index: from[id], Message: "the pack's header does not match its index entries"})
				for _, e := range packs[id] {
					if !slices.Contains(entries, e) {
						bad[e.ID] = fmt.Sprintf("pack %s does not hold it as the index says", id.Str())
					}
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	res.PacksRead = int(read.Load())
	res.BytesRead = bytes.Load()
	if errors.Is(ctx.Err(), context.Canceled) {
		return nil, ctx.Err()
	}
	return bad, nil
}

func sortedByOffset(entries []repo.BlobEntry) []repo.BlobEntry {
	s := slices.Clone(entries)
	slices.SortFunc(s, func(a, b repo.BlobEntry) int { return int(int64(a.Offset) - int64(b.Offset)) })
	return s
}
