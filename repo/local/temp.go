package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/snapbackup/snap/repo"
)

// RemoveTemp removes the ".tmp-" files a killed writer left where backups,
// prunes and followers write (packs, index files, snapshots, tails), when
// they were last written before cutoff. Lock and key files are left alone:
// they are written without holding a lock (a lock's own file, while another
// process may hold the exclusive one), so their temp files may be live at
// any time. A follower's tail is small and its temp file lives for one
// Save, far shorter than any margin.
func (b *Backend) RemoveTemp(ctx context.Context, cutoff time.Time) (int, int64, error) {
	dirs := []string{
		filepath.Join(b.dir, string(repo.PackFile)),
		filepath.Join(b.dir, string(repo.IndexFile)),
		filepath.Join(b.dir, string(repo.SnapshotFile)),
		filepath.Join(b.dir, string(repo.TailFile)),
		filepath.Join(b.dir, string(repo.ClusterFile)),
	}
	for i := range 256 {
		dirs = append(dirs, filepath.Join(b.dir, string(repo.PackFile), fmt.Sprintf("%02x", i)))
	}
	var n int
	var size int64
	for _, dir := range dirs {
		if err := ctx.Err(); err != nil {
			return n, size, err
		}
		entries, err := os.ReadDir(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return n, size, fmt.Errorf("remove temp files in %s: %w", b.dir, err)
		}
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), tempPrefix) || !e.Type().IsRegular() {
				continue
			}
			fi, err := e.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue // its writer finished with it
			}
			if err != nil {
				return n, size, fmt.Errorf("remove temp files in %s: %w", b.dir, err)
			}
			if !fi.ModTime().Before(cutoff) {
				continue
			}
			err = os.Remove(filepath.Join(dir, e.Name()))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return n, size, fmt.Errorf("remove temp files in %s: %w", b.dir, err)
			}
			n++
			size += fi.Size()
		}
	}
	return n, size, nil
}
