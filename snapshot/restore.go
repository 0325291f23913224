package snapshot

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/snapbackup/snap/internal/fdlimit"
	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/source"
)

// ErrTargetHasDatabase is returned when the restore target already holds a
// database: its CURRENT exists (freeze kind), or it is not empty (dir kind).
var ErrTargetHasDatabase = source.ErrTargetHasDatabase

// markerName is written into the target before any restored file and removed
// after the last one (CURRENT, for the freeze kind): while it exists, the files it names are an unfinished
// restore's, which the next restore may replace.
const markerName = ".snap-restore"

type marker struct {
	Snapshot repo.ID  `json:"snapshot"`
	Files    []string `json:"files"`
}

// RestoreOptions tune one restore.
type RestoreOptions struct {
	Target string
	// Cores sizes the restore's stages (restoreChunks): it decodes on
	// Cores goroutines, reads r.Connections() packs at once, and writes
	// twice Cores chunks at once. Zero: GOMAXPROCS.
	Cores int
	// OpenFiles is how many of the restored files are kept open at once
	// (fileCache). Zero: sized from the process's descriptor limit
	// (fdlimit.Window), at most fdlimit.Max.
	OpenFiles int
	Progress  *Progress
	Log       *slog.Logger
}

// Restore writes the files of sn into o.Target, by the rules of the
// snapshot's source kind (source.Kind). It refuses when the target holds a
// database or a file it would overwrite. Every chunk is verified, every
// file made durable (fsynced, or all at once: syncBatch), and the kind's
// last file (CURRENT) is written last by rename, or every file under a
// temporary name renamed once durable, so an interrupted restore never
// leaves a directory that looks like a database.
//
// It takes no lock: it reads only immutable, complete objects, so neither
// a prune nor a lock left by a dead process can hold it up when a
// database is needed back. A prune may remove a pack it still needs; the
// prune has then written an index naming the blob's new pack, so Restore
// loads the index again, once, and goes on (reloadOnce). Only a
// blob that is gone for good, because its snapshot was forgotten, fails
// it. r's index must be loaded.
func Restore(ctx context.Context, r BlobReader, sn *Snapshot, o RestoreOptions) (err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	if o.Cores <= 0 {
		o.Cores = runtime.GOMAXPROCS(0)
	}
	if o.OpenFiles <= 0 {
		// Enough for every writer and a few more, so that writers seldom
		// wait for a descriptor.
		o.OpenFiles = fdlimit.Window(2*o.Cores + 4)
	}
	ix := &reloadOnce{r: r, sn: sn, log: o.Log}
	var tree *Tree
	if err := ix.retry(ctx, func() (err error) {
		tree, err = LoadTree(ctx, r, sn.Tree)
		return err
	}); err != nil {
		return fmt.Errorf("snapshot %s: %w", sn.ID.Str(), err)
	}
	kind, err := source.KindOf(sn.Source.Kind)
	if err != nil {
		return fmt.Errorf("snapshot %s: %w", sn.ID.Str(), err)
	}
	dir := o.Target
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create target %s: %w", dir, err)
	}
	leftover, err := checkTarget(dir, tree, kind)
	if err != nil {
		return err
	}

	// Find every chunk, and check it against the tree, before touching
	// the target.
	byPack, err := locateChunks(ctx, ix, sn, tree.Files)
	if err != nil {
		return err
	}
	var total int64
	for _, f := range tree.Files {
		total += f.Length
	}
	o.Progress.FilesTotal.Store(int64(len(tree.Files)))
	o.Progress.BytesTotal.Store(total)

	// What an interrupted restore of a directory left goes first: its
	// links and directories are not replaced in place.
	if kind.TempNames() {
		for name := range leftover {
			if name != markerName {
				if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
					return fmt.Errorf("remove what an interrupted restore left: %w", err)
				}
			}
		}
	}
	names := make([]string, 0, len(tree.Files))
	for _, f := range tree.Files {
		names = append(names, f.Name)
	}
	mk, _ := json.Marshal(marker{Snapshot: sn.ID, Files: names})
	if err := WriteFileSync(dir, markerName, mk); err != nil {
		return err
	}

	files := map[string]*restoreFile{}
	// Opened before the first file is created: its syncfs reports the
	// errors of writebacks from then on.
	batch, err := openSyncBatch(dir)
	if err != nil {
		return fmt.Errorf("open target %s: %w", dir, err)
	}
	if batch != nil {
		defer batch.close()
	}
	cache := newFileCache(o.OpenFiles)
	cache.batch = batch
	defer func() {
		cache.closeAll()
		if err != nil {
			// Best effort: an interrupted process leaves the marker and the
			// next restore replaces these files.
			for _, name := range topLevel(names) {
				os.RemoveAll(filepath.Join(dir, name))
			}
			os.Remove(filepath.Join(dir, markerName))
			err = fmt.Errorf("%w (the partly written files were removed)", err)
		}
	}()
	if err := makeDirs(dir, tree.Files); err != nil {
		return err
	}
	targets := map[repo.ID][]blobTarget{}
	var pointer *File
	var order []*restoreFile // in the tree's order
	for i := range tree.Files {
		f := &tree.Files[i]
		if f.Type != TypeFile {
			continue
		}
		if f.Name == kind.Last() {
			pointer = f
			continue
		}
		path := filepath.Join(dir, filepath.FromSlash(f.Name))
		if kind.TempNames() {
			path = tempName(path)
		}
		rf := cache.add(path, f.Length)
		files[f.Name] = rf
		order = append(order, rf)
		var off int64
		for k, id := range f.Chunks {
			targets[id] = append(targets[id], blobTarget{file: rf, offset: off})
			off += int64(f.Sizes[k])
		}
	}

	packs := sortedPacks(byPack)
	gone, err := createAndRestore(ctx, cache, firstUse(packs, byPack, targets, order), func(ctx context.Context) ([]repo.BlobEntry, error) {
		return restoreChunks(ctx, r, packs, byPack, targets, o)
	})
	if err != nil {
		return err
	}
	if len(gone) > 0 {
		// A prune removed packs under the restore: the index it wrote
		// first names the blobs' new packs.
		o.Log.Info("packs were removed while restoring (a prune ran); loading the index again", "blobs", len(gone))
		if err := ix.reload(ctx); err != nil {
			return err
		}
		again, err := locateBlobs(ix.r, sn, tree.Files, gone)
		if err != nil {
			return err
		}
		if gone, err = restoreChunks(ctx, r, sortedPacks(again), again, targets, o); err != nil {
			return err
		}
		if len(gone) > 0 {
			return fmt.Errorf("snapshot %s: %d blobs were removed from the repository while it was being restored, also from the packs the index names now; is a prune removing this snapshot?", sn.ID.Str(), len(gone))
		}
	}

	for _, f := range tree.Files {
		rf := files[f.Name]
		if rf == nil {
			continue
		}
		if !rf.synced.Load() { // empty files; the rest were finished when done
			if err := rf.acquire(); err != nil {
				return err
			}
			err := rf.finish()
			rf.release()
			if err != nil {
				return err
			}
		}
		fi, err := os.Stat(rf.name)
		if err != nil {
			return err
		}
		if fi.Size() != f.Length {
			return fmt.Errorf("restored %s has %d bytes, the snapshot says %d", f.Name, fi.Size(), f.Length)
		}
		o.Progress.FilesDone.Add(1)
	}
	if batch != nil {
		if err := batch.sync(); err != nil {
			return err
		}
	}
	o.Log.Debug("files written", "files", len(files), "open_at_once", o.OpenFiles, "reopened", cache.reopens, "syncfs", batch != nil)
	if err := cache.closeAll(); err != nil {
		return err
	}
	if err := finishEntries(dir, tree.Files, files, kind.TempNames()); err != nil {
		return err
	}
	for _, f := range tree.Files {
		if f.Type != TypeFile {
			o.Progress.FilesDone.Add(1)
		}
	}
	if err := SyncDir(dir); err != nil {
		return err
	}
	if pointer != nil {
		var content []byte
		if err := ix.retry(ctx, func() (err error) {
			content = content[:0]
			for _, id := range pointer.Chunks {
				if content, err = r.LoadBlob(ctx, id, content); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return fmt.Errorf("snapshot %s: load %s: %w", sn.ID.Str(), pointer.Name, err)
		}
		if err := WriteFileSync(dir, pointer.Name, content); err != nil {
			return err
		}
		o.Progress.BytesDone.Add(int64(len(content)))
		o.Progress.FilesDone.Add(1)
	}
	if err := os.Remove(filepath.Join(dir, markerName)); err != nil {
		return fmt.Errorf("remove restore marker: %w", err)
	}
	return SyncDir(dir)
}

// createAndRestore creates the files, in order, while restore writes
// their chunks (fileCache.precreate); a writer that overtakes the creator
// creates its file itself. Whichever fails first stops the other, and its
// error is the one returned.
func createAndRestore(ctx context.Context, cache *fileCache, order []*restoreFile, restore func(context.Context) ([]repo.BlobEntry, error)) ([]repo.BlobEntry, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	created := make(chan error, 1)
	go func() {
		for _, f := range order {
			if ctx.Err() != nil {
				break
			}
			if err := cache.precreate(f); err != nil {
				err = fmt.Errorf("create %s: %w", f.name, err)
				cancel(err)
				created <- err
				return
			}
		}
		created <- nil
	}()
	gone, err := restore(ctx)
	if err != nil {
		cancel(err)
	}
	if cerr := <-created; cerr != nil {
		return nil, cerr
	}
	return gone, err
}

// firstUse returns the files in the order the packs' chunks reach them
// (restoreChunks reads packs in order, each from its first chunk), then
// those no chunk reaches, from rest: the order to create them in.
func firstUse(packs []repo.ID, byPack map[repo.ID][]repo.BlobEntry, targets map[repo.ID][]blobTarget, rest []*restoreFile) []*restoreFile {
	seen := make(map[*restoreFile]bool, len(rest))
	order := make([]*restoreFile, 0, len(rest))
	for _, p := range packs {
		entries := slices.SortedFunc(slices.Values(byPack[p]), func(a, b repo.BlobEntry) int { return cmp.Compare(a.Offset, b.Offset) })
		for _, e := range entries {
			for _, t := range targets[e.ID] {
				if !seen[t.file] {
					seen[t.file] = true
					order = append(order, t.file)
				}
			}
		}
	}
	for _, f := range rest {
		if !seen[f] {
			order = append(order, f)
		}
	}
	return order
}

// reloadOnce loads a restore's index again when a prune removed a pack
// under it, at most once per restore.
type reloadOnce struct {
	r    BlobReader
	sn   *Snapshot
	log  *slog.Logger
	done bool
}

func (x *reloadOnce) reload(ctx context.Context) error {
	if x.done {
		return nil
	}
	x.done = true
	// LoadMissing: refreshed, and in a scoped repository the other
	// hosts' index files too (a chunk only another host's file names).
	if err := x.r.LoadMissing(ctx); err != nil {
		return fmt.Errorf("snapshot %s: load the index again: %w", x.sn.ID.Str(), err)
	}
	return nil
}

// retry runs fn, and once more after loading the index again if fn failed
// on a blob or pack that is gone.
func (x *reloadOnce) retry(ctx context.Context, fn func() error) error {
	err := fn()
	if err == nil || x.done || !(errors.Is(err, repo.ErrNotFound) || errors.Is(err, repo.ErrNotIndexed)) {
		return err
	}
	x.log.Info("a blob's pack is gone (a prune ran); loading the index again", "err", err)
	if rerr := x.reload(ctx); rerr != nil {
		return errors.Join(err, rerr)
	}
	return fn()
}

// locateChunks groups the chunks of files by the pack that holds them and
// checks each against the index: a chunk the tree gives another length
// than the index does means the two disagree, and nothing is restored. A
// chunk the index does not know makes it load the index again (a prune
// may have moved it), once.
func locateChunks(ctx context.Context, ix *reloadOnce, sn *Snapshot, files []File) (byPack map[repo.ID][]repo.BlobEntry, err error) {
	err = ix.retry(ctx, func() (err error) {
		byPack, err = locateBlobs(ix.r, sn, files, nil)
		return err
	})
	return byPack, err
}

// locateBlobs groups by pack the chunks of files, or only those in want
// if it is not nil, checking each chunk's length in the index against the
// tree's.
func locateBlobs(r BlobReader, sn *Snapshot, files []File, want []repo.BlobEntry) (map[repo.ID][]repo.BlobEntry, error) {
	var only map[repo.ID]bool
	if want != nil {
		only = make(map[repo.ID]bool, len(want))
		for _, e := range want {
			only[e.ID] = true
		}
	}
	idx := r
	byPack := map[repo.ID][]repo.BlobEntry{}
	for _, f := range files {
		for k, id := range f.Chunks {
			if only != nil && !only[id] {
				continue
			}
			loc, ok := idx.Lookup(id)
			if !ok {
				return nil, fmt.Errorf("snapshot %s file %s: chunk %s: %w (if a prune forgot this snapshot meanwhile, restore another; else run snap check)", sn.ID.Str(), f.Name, id.Str(), repo.ErrNotIndexed)
			}
			if loc.Type != repo.DataBlob || loc.RawLength != f.Sizes[k] {
				return nil, fmt.Errorf("snapshot %s file %s: chunk %d (%s) is a %d-byte %s blob in the index, but the tree says a %d-byte data chunk: the tree and the index disagree, nothing was restored (run snap check)",
					sn.ID.Str(), f.Name, k, id.Str(), loc.RawLength, loc.Type, f.Sizes[k])
			}
			if only != nil {
				delete(only, id) // a chunk that occurs twice is fetched once
			}
			byPack[loc.Pack] = append(byPack[loc.Pack], loc.BlobEntry)
		}
	}
	return byPack, nil
}

func sortedPacks(byPack map[repo.ID][]repo.BlobEntry) []repo.ID {
	packs := make([]repo.ID, 0, len(byPack))
	for p := range byPack {
		packs = append(packs, p)
	}
	slices.SortFunc(packs, func(a, b repo.ID) int { return bytes.Compare(a[:], b[:]) })
	return packs
}

// checkTarget asks the snapshot's kind whether the target may be written:
// not when it holds a database, or anything the restore would overwrite,
// except what an interrupted restore left (named by its marker). It
// returns those leftovers: the marker and the top-level names it lists.
func checkTarget(dir string, tree *Tree, kind source.Kind) (map[string]bool, error) {
	leftover := map[string]bool{}
	if data, err := os.ReadFile(filepath.Join(dir, markerName)); err == nil {
		var m marker
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("restore marker %s is unreadable (%v): remove it and the files of the unfinished restore by hand", filepath.Join(dir, markerName), err)
		}
		leftover[markerName] = true
		for _, n := range topLevel(m.Files) {
			leftover[n] = true
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	names := make([]string, 0, len(tree.Files))
	for _, f := range tree.Files {
		names = append(names, f.Name)
	}
	if err := kind.CheckTarget(dir, names, func(n string) bool { return leftover[n] }); err != nil {
		return nil, err
	}
	return leftover, nil
}

// topLevel returns the distinct first components of slash-separated
// names, which hold everything a restore writes.
func topLevel(names []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range names {
		top, _, _ := strings.Cut(n, "/")
		if top != "" && top != "." && top != ".." && !strings.ContainsRune(top, filepath.Separator) && !seen[top] {
			seen[top] = true
			out = append(out, top)
		}
	}
	return out
}

// dedupEntries drops repeated blobs: a chunk that occurs twice in a
// snapshot is fetched once and written to each place.
func dedupEntries(in []repo.BlobEntry) []repo.BlobEntry {
	seen := make(map[repo.ID]bool, len(in))
	out := in[:0:0]
	for _, e := range in {
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	return out
}

// WriteFileSync writes name in dir atomically: temp file, fsync, rename,
// fsync the directory.
func WriteFileSync(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, so the names made in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}
