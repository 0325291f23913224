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

// RemoveTemp removes the ".tmp-" files a killed writer left in the
// repository's directories, when they were last written before cutoff.
func (b *Backend) RemoveTemp(ctx context.Context, cutoff time.Time) (int, int64, error) {
	dirs := []string{b.dir}
	for _, t := range repo.AllFileTypes {
		if t == repo.ConfigFile {
			continue
		}
		dirs = append(dirs, filepath.Join(b.dir, string(t)))
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
