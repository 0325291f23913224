package repo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
)

// Named objects are unpacked objects whose name is <prefix>-<hash>: the
// hash of the stored bytes, as for snapshots, after a prefix the writer
// chooses, so that a listing says what each holds without a read (a
// follower's tails: which log, which stretch of it). The hash makes them
// as verifiable and as create-only as the others.

// maxNamedPrefix bounds the prefix of a named object, so that with '-'
// and the hash its name stays well below the 255 bytes file systems allow.
const maxNamedPrefix = 160

// checkNamedPrefix accepts a named object's prefix: 1 to maxNamedPrefix
// bytes of 0-9, a-z, '-' and '.', starting with a digit or letter (no
// hidden or temp file, no option-like name) and without "..".
func checkNamedPrefix(p string) error {
	switch {
	case p == "":
		return errors.New("empty prefix")
	case len(p) > maxNamedPrefix:
		return fmt.Errorf("prefix of %d bytes: over %d", len(p), maxNamedPrefix)
	case p[0] == '-' || p[0] == '.':
		return fmt.Errorf("prefix %q: starts with %q", p, p[0])
	case strings.Contains(p, ".."):
		return fmt.Errorf("prefix %q: contains \"..\"", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || c == '-' || c == '.') {
			return fmt.Errorf("prefix %q: %q is not one of 0-9, a-z, '-', '.'", p, c)
		}
	}
	return nil
}

// SplitNamed splits a named object's name, <prefix>-<hash>, into its
// prefix and the hash of its stored bytes; ok is false for a name not of
// that form.
func SplitNamed(name string) (prefix string, id ID, ok bool) {
	i := strings.LastIndexByte(name, '-')
	if i < 0 {
		return "", ID{}, false
	}
	id, err := ParseID(name[i+1:])
	if err != nil || checkNamedPrefix(name[:i]) != nil || id.String() != name[i+1:] {
		return "", ID{}, false // not lower-case hex, or a bad prefix
	}
	return name[:i], id, true
}

// namedHandle is the handle of t/name, if name is a named object's.
func namedHandle(t FileType, name string) (Handle, ID, error) {
	h := Handle{Type: t, Name: name}
	_, id, ok := SplitNamed(name)
	if !ok {
		return h, ID{}, fmt.Errorf("%s: not a name of the form <prefix>-<hash>", h)
	}
	return h, id, nil
}

// SaveNamed encrypts plain and stores it as an object of type t named
// prefix + "-" + the hash of its stored bytes, returning the name. The
// caller's prefix says what the object holds, so a listing tells which
// objects to read without reading them (tails: the log and range). It
// refuses an invalid prefix (checkNamedPrefix) and a plain too large for
// maxObjectSize(t). Saving is idempotent, as SaveUnpacked's.
func (r *Repository) SaveNamed(ctx context.Context, t FileType, prefix string, plain []byte) (string, error) {
	if err := checkNamedPrefix(prefix); err != nil {
		return "", fmt.Errorf("save %s: %w", t, err)
	}
	if n, bound := int64(len(plain))+Overhead, maxObjectSize(t); n > bound {
		return "", fmt.Errorf("save %s of %d bytes: over the %d bytes %s may have", t, n, bound, objectNoun(t))
	}
	sealed := r.keys.Seal(nil, plain)
	h := Handle{Type: t, Name: prefix + "-" + Hash(sealed).String()}
	if err := r.be.Save(ctx, h, sealed); err != nil && !errors.Is(err, ErrExists) {
		return "", fmt.Errorf("save %s: %w", h, err)
	}
	return h.Name, nil
}

// LoadNamed loads, verifies (the hash after the last '-' must match the
// stored bytes, else ErrCorrupt) and decrypts the object t/name. size is
// what a listing said (-1: not known), as for loadUnpacked.
func (r *Repository) LoadNamed(ctx context.Context, t FileType, name string, size int64) ([]byte, error) {
	h, id, err := namedHandle(t, name)
	if err != nil {
		return nil, fmt.Errorf("load %w", err)
	}
	return r.loadHashed(ctx, h, id, size)
}

// ListNamed calls fn with the name and size of every object of type t
// named <prefix>-<hash> with a valid prefix. Other names (stray files)
// are skipped with a warning, as List skips them.
func (r *Repository) ListNamed(ctx context.Context, t FileType, fn func(name string, size int64) error) error {
	return r.be.List(ctx, t, func(fi FileInfo) error {
		if _, _, ok := SplitNamed(fi.Name); !ok {
			r.log.Warn("ignoring stray object", "type", t, "name", fi.Name)
			return nil
		}
		return fn(fi.Name, fi.Size)
	})
}

// RemoveNamed removes the object t/name; an absent one is an error
// wrapping ErrNotFound.
func (r *Repository) RemoveNamed(ctx context.Context, t FileType, name string) error {
	h, _, err := namedHandle(t, name)
	if err != nil {
		return fmt.Errorf("remove %w", err)
	}
	if err := r.be.Remove(ctx, h); err != nil {
		return fmt.Errorf("remove %s: %w", h, err)
	}
	return nil
}

// Objects named by what they are (cluster members, group requests, node
// status) have a name the writer chooses and no hash in it: a reader must
// find them by name alone, as a node polling for its cluster's request
// does. They are as create-only as every other object. Their sealed
// plaintext starts with the name and a NUL, so an object copied or moved
// under another name does not open: the name is as authentic as the
// content.

// checkObjectName accepts the name of an object named by what it is: 1 to
// 200 bytes of 0-9, a-z, '-', '.', '_' and '+', starting with a digit or
// letter, without "..".
func checkObjectName(n string) error {
	switch {
	case n == "":
		return errors.New("empty name")
	case len(n) > 200:
		return fmt.Errorf("name of %d bytes: over 200", len(n))
	case !('0' <= n[0] && n[0] <= '9' || 'a' <= n[0] && n[0] <= 'z'):
		return fmt.Errorf("name %q: starts with %q", n, n[0])
	case strings.Contains(n, ".."):
		return fmt.Errorf("name %q: contains \"..\"", n)
	}
	for i := 0; i < len(n); i++ {
		if c := n[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || c == '-' || c == '.' || c == '_' || c == '+') {
			return fmt.Errorf("name %q: %q is not one of 0-9, a-z, '-', '.', '_', '+'", n, c)
		}
	}
	return nil
}

func asHandle(t FileType, name string) (Handle, error) {
	if t != ClusterFile {
		return Handle{}, fmt.Errorf("%s objects are not named by what they are", t)
	}
	if err := checkObjectName(name); err != nil {
		return Handle{}, fmt.Errorf("%s: %w", t, err)
	}
	return Handle{Type: t, Name: name}, nil
}

// SaveAs encrypts plain and stores it as t/name (t is ClusterFile). Like
// every Save it never overwrites: an existing name is an error wrapping
// ErrExists, and the stored object is left as it was.
func (r *Repository) SaveAs(ctx context.Context, t FileType, name string, plain []byte) error {
	h, err := asHandle(t, name)
	if err != nil {
		return fmt.Errorf("save %w", err)
	}
	if n, bound := int64(len(name)+1+len(plain))+Overhead, maxObjectSize(t); n > bound {
		return fmt.Errorf("save %s of %d bytes: over the %d bytes %s may have", h, n, bound, objectNoun(t))
	}
	msg := make([]byte, 0, len(name)+1+len(plain))
	msg = append(append(append(msg, name...), 0), plain...)
	if err := r.be.Save(ctx, h, r.keys.Seal(nil, msg)); err != nil {
		return fmt.Errorf("save %s: %w", h, err)
	}
	return nil
}

// LoadAs loads and decrypts t/name, saved by SaveAs. An absent object is
// an error wrapping ErrNotFound; one that does not open with this
// repository's key, or was saved under another name, wraps ErrCorrupt.
// size is what a listing said (-1: not known).
func (r *Repository) LoadAs(ctx context.Context, t FileType, name string, size int64) ([]byte, error) {
	h, err := asHandle(t, name)
	if err != nil {
		return nil, fmt.Errorf("load %w", err)
	}
	sealed, err := loadSized(ctx, r.be, h, size)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	plain, err := r.keys.Open(nil, sealed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	got, rest, ok := bytes.Cut(plain, []byte{0})
	if !ok || string(got) != name {
		return nil, fmt.Errorf("%s: %w: saved under another name", h, ErrCorrupt)
	}
	return rest, nil
}

// ListAs calls fn with every object of type t (ClusterFile) whose name is
// valid; others are skipped with a warning.
func (r *Repository) ListAs(ctx context.Context, t FileType, fn func(FileInfo) error) error {
	if t != ClusterFile {
		return fmt.Errorf("%s objects are not named by what they are", t)
	}
	return r.be.List(ctx, t, func(fi FileInfo) error {
		if checkObjectName(fi.Name) != nil {
			r.log.Warn("ignoring stray object", "type", t, "name", fi.Name)
			return nil
		}
		return fn(fi)
	})
}

// RemoveAs removes t/name; an absent object is an error wrapping
// ErrNotFound.
func (r *Repository) RemoveAs(ctx context.Context, t FileType, name string) error {
	h, err := asHandle(t, name)
	if err != nil {
		return fmt.Errorf("remove %w", err)
	}
	if err := r.be.Remove(ctx, h); err != nil {
		return fmt.Errorf("remove %s: %w", h, err)
	}
	return nil
}
