package snapshot

import (
	"bytes"
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

	"github.com/snapbackup/snap/repo"
)

// ErrTargetHasDatabase is returned when the restore target already holds a
// database (its CURRENT exists).
var ErrTargetHasDatabase = errors.New("target already holds a database")

// markerName is written into the target before any restored file and removed
// after CURRENT: while it exists, the files it names are an unfinished
// restore's, which the next restore may replace.
const markerName = ".snap-restore"

// pointerName is the file written last: without it the directory does not
// look like a database.
const pointerName = "CURRENT"

type marker struct {
	Snapshot repo.ID  `json:"snapshot"`
	Files    []string `json:"files"`
}

// RestoreOptions tune one restore.
type RestoreOptions struct {
	Target string
	// Cores sizes the restore's stages (restoreChunks): it decodes on
	// Cores goroutines, reads r.Connections() packs at once but at least
	// Cores, and writes twice Cores chunks at once. Zero: GOMAXPROCS.
	Cores    int
	Progress *Progress
	Log      *slog.Logger
	// NoLock skips the shared lock, for read-only access to a repository
	// (a concurrent prune may then make the restore fail, never succeed
	// with wrong data: every blob is verified).
	NoLock bool
}

// Restore writes the files of sn into o.Target. It refuses when the target
// holds a database or a file it would overwrite. Every chunk is verified,
// every file fsynced, and CURRENT is written last by rename, so an
// interrupted restore never leaves a directory that looks like a database.
func Restore(ctx context.Context, r *repo.Repository, sn *Snapshot, o RestoreOptions) (err error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Progress == nil {
		o.Progress = &Progress{}
	}
	if o.Cores <= 0 {
		o.Cores = runtime.GOMAXPROCS(0)
	}
	if !o.NoLock {
		// A shared lock keeps prune from removing packs mid-restore.
		lk, err := r.Lock(ctx, repo.LockOptions{Command: "restore", Log: o.Log})
		if err != nil {
			return err
		}
		defer lk.Unlock(ctx)
		if err := r.RefreshIndex(ctx); err != nil {
			return err
		}
	}
	tree, err := LoadTree(ctx, r, sn.Tree)
	if err != nil {
		return err
	}
	dir := o.Target
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create target %s: %w", dir, err)
	}
	if err := checkTarget(dir, tree); err != nil {
		return err
	}

	// Find every chunk before touching the target.
	byPack := map[repo.ID][]repo.BlobEntry{}
	var total int64
	for _, f := range tree.Files {
		total += f.Length
		for _, id := range f.Chunks {
			loc, ok := r.Index().Lookup(id)
			if !ok {
				return fmt.Errorf("file %s: chunk %s is not in the repository index (run snap check)", f.Name, id.Str())
			}
			byPack[loc.Pack] = append(byPack[loc.Pack], loc.BlobEntry)
		}
	}
	o.Progress.FilesTotal.Store(int64(len(tree.Files)))
	o.Progress.BytesTotal.Store(total)

	names := make([]string, 0, len(tree.Files))
	for _, f := range tree.Files {
		names = append(names, f.Name)
	}
	mk, _ := json.Marshal(marker{Snapshot: sn.ID, Files: names})
	if err := writeFileSync(dir, markerName, mk); err != nil {
		return err
	}

	files := map[string]*restoreFile{}
	defer func() {
		for _, f := range files {
			f.fh.Close()
		}
		if err != nil {
			// Best effort: an interrupted process leaves the marker and the
			// next restore replaces these files.
			for _, name := range names {
				os.Remove(filepath.Join(dir, name))
			}
			os.Remove(filepath.Join(dir, markerName))
			err = fmt.Errorf("%w (the partly written files were removed)", err)
		}
	}()
	targets := map[repo.ID][]blobTarget{}
	var pointer *File
	for i := range tree.Files {
		f := &tree.Files[i]
		if f.Name == pointerName {
			pointer = f
			continue
		}
		rf, err := createRestoreFile(filepath.Join(dir, f.Name), f.Length)
		if err != nil {
			return fmt.Errorf("create %s: %w", f.Name, err)
		}
		files[f.Name] = rf
		var off int64
		for k, id := range f.Chunks {
			targets[id] = append(targets[id], blobTarget{file: rf, offset: off})
			off += int64(f.Sizes[k])
		}
	}

	packs := make([]repo.ID, 0, len(byPack))
	for p := range byPack {
		packs = append(packs, p)
	}
	slices.SortFunc(packs, func(a, b repo.ID) int { return bytes.Compare(a[:], b[:]) })
	if err := restoreChunks(ctx, r, packs, byPack, targets, o); err != nil {
		return err
	}

	for _, f := range tree.Files {
		rf := files[f.Name]
		if rf == nil {
			continue
		}
		if !rf.synced.Load() { // empty files; the rest were synced when done
			if err := rf.finish(); err != nil {
				return err
			}
		}
		fi, err := rf.fh.Stat()
		if err != nil {
			return err
		}
		if fi.Size() != f.Length {
			return fmt.Errorf("restored %s has %d bytes, the snapshot says %d", f.Name, fi.Size(), f.Length)
		}
		o.Progress.FilesDone.Add(1)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if pointer != nil {
		var content []byte
		for _, id := range pointer.Chunks {
			if content, err = r.LoadBlob(ctx, id, content); err != nil {
				return fmt.Errorf("load %s: %w", pointer.Name, err)
			}
		}
		if err := writeFileSync(dir, pointer.Name, content); err != nil {
			return err
		}
		o.Progress.BytesDone.Add(int64(len(content)))
		o.Progress.FilesDone.Add(1)
	}
	if err := os.Remove(filepath.Join(dir, markerName)); err != nil {
		return fmt.Errorf("remove restore marker: %w", err)
	}
	return syncDir(dir)
}

// checkTarget refuses a target that holds a database or a file the restore
// would overwrite, except files an interrupted restore left (named by its
// marker).
func checkTarget(dir string, tree *Tree) error {
	if _, err := os.Lstat(filepath.Join(dir, pointerName)); err == nil {
		return fmt.Errorf("%w: %s exists", ErrTargetHasDatabase, filepath.Join(dir, pointerName))
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	leftover := map[string]bool{}
	if data, err := os.ReadFile(filepath.Join(dir, markerName)); err == nil {
		var m marker
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("restore marker %s is unreadable (%v): remove it and the files of the unfinished restore by hand", filepath.Join(dir, markerName), err)
		}
		for _, n := range m.Files {
			leftover[n] = true
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, f := range tree.Files {
		p := filepath.Join(dir, f.Name)
		if _, err := os.Lstat(p); err == nil && !leftover[f.Name] {
			return fmt.Errorf("target %s already has %s; restore does not overwrite files (use an empty directory)", dir, f.Name)
		} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
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

// writeFileSync writes name in dir atomically: temp file, fsync, rename,
// fsync the directory.
func writeFileSync(dir, name string, data []byte) error {
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
	return syncDir(dir)
}

func syncDir(dir string) error {
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
