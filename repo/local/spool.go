package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/snapbackup/snap/internal/directio"
	"github.com/snapbackup/snap/repo"
)

// Spool starts an object whose name comes at Commit. Its bytes go to a temp
// file in the type's directory, with direct I/O where the file system
// allows it: a backup writes gigabytes of packs that nobody reads soon, and
// through the page cache they would cost a kernel copy per byte and evict
// the pages the live database serves from.
func (b *Backend) Spool(ctx context.Context, t repo.FileType) (repo.Spool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := (repo.Handle{Type: t, Name: "00"}).Validate(); err != nil || t == repo.ConfigFile {
		return nil, fmt.Errorf("spool in %s: invalid file type %q", b.dir, t)
	}
	// The type's top directory: for packs, data/ itself, which List does
	// not read (packs live in data/xx/), and on the same file system as
	// the final name, so Commit can link.
	f, name, err := b.createTemp(t, filepath.Join(b.dir, string(t)))
	if err != nil {
		return nil, fmt.Errorf("spool in %s: %w", b.dir, err)
	}
	return &spool{b: b, t: t, f: f, name: name}, nil
}

type spool struct {
	b    *Backend
	t    repo.FileType
	f    *directio.File
	name string
	done bool
}

func (s *spool) Write(p []byte) error {
	if err := s.f.WriteFull(p); err != nil {
		return fmt.Errorf("spool %s: %w", s.name, err)
	}
	return nil
}

func (s *spool) Commit(ctx context.Context, h repo.Handle) error {
	if err := s.commit(ctx, h); err != nil {
		return fmt.Errorf("save %s in %s: %w", h, s.b.dir, err)
	}
	return nil
}

func (s *spool) commit(ctx context.Context, h repo.Handle) error {
	if s.done {
		return errors.New("spool already finished")
	}
	defer s.Abort()
	if h.Type != s.t {
		return fmt.Errorf("a %s spool cannot store %s", s.t, h)
	}
	final, err := s.b.path(h)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err = s.f.Sync()
	if cerr := s.f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	// As in Save: link fails if the name exists, so nothing is overwritten.
	err = os.Link(s.name, final)
	if errors.Is(err, fs.ErrExist) {
		return repo.ErrExists
	}
	if err != nil {
		return err
	}
	return syncDir(filepath.Dir(final))
}

// Abort closes and removes the temp file. After Commit linked it, the temp
// name is only a second name for the object. A crash before the removal
// leaves a ".tmp-" file nothing lists.
func (s *spool) Abort() {
	if s.done {
		return
	}
	s.done = true
	s.f.Close()
	os.Remove(s.name)
}
