package source

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Role says how a listed file changes over time. It decides how many bytes of
// the file belong to a snapshot and whether an earlier stored copy can be
// reused.
type Role string

const (
	RoleTable    Role = "table"    // immutable *.sst (and *.ldb, *.blob), back up whole
	RoleWAL      Role = "wal"      // *.log, append-only, exact Length
	RoleManifest Role = "manifest" // MANIFEST-*, append-only, exact Length
	RoleCurrent  Role = "current"  // CURRENT, pointer file; content synthesized from the listing
	RoleOptions  Role = "options"  // OPTIONS-*, whole
	RoleOther    Role = "other"    // anything else listed, whole
	RoleFile     Role = "file"     // a file of a directory backup (dir kind), whole
	RoleAOFBase  Role = "aof-base" // a Redis AOF base file (redis kind), whole
	RoleAOFIncr  Role = "aof-incr" // a Redis AOF incr file (redis kind), append-only, exact Length
)

// Classify returns the role of a RocksDB file from its name. Names that do
// not look like any RocksDB file are RoleOther.
func Classify(name string) Role {
	switch {
	case name == "CURRENT":
		return RoleCurrent
	case strings.HasPrefix(name, "MANIFEST-") && len(name) > len("MANIFEST-"):
		return RoleManifest
	case strings.HasPrefix(name, "OPTIONS-") && len(name) > len("OPTIONS-"):
		return RoleOptions
	// .ldb is the LevelDB-compatible table suffix and .blob an integrated
	// BlobDB file; RocksDB lists both among its live files and never changes
	// them once written.
	case strings.HasSuffix(name, ".sst"), strings.HasSuffix(name, ".ldb"), strings.HasSuffix(name, ".blob"):
		return RoleTable
	case strings.HasSuffix(name, ".log"):
		return RoleWAL
	default:
		return RoleOther
	}
}

// AppendOnly reports whether files of the role only ever grow (wal, manifest).
// Only a prefix of such a file belongs to a snapshot, so its listed length is
// exact and required.
func (r Role) AppendOnly() bool {
	return r == RoleWAL || r == RoleManifest || r == RoleAOFIncr
}

func (r Role) known() bool {
	switch r {
	case RoleTable, RoleWAL, RoleManifest, RoleCurrent, RoleOptions, RoleOther, RoleFile, RoleAOFBase, RoleAOFIncr:
		return true
	}
	return false
}

// File is one entry of a frozen listing.
type File struct {
	// Name is a plain file name relative to the data directory: no '/',
	// not "." or "..", no NUL or other control character, not empty.
	Name string
	Role Role
	// Length is the exact number of bytes that belong to the snapshot, or -1
	// for "the whole file as found" (immutable files listed without a length).
	// For a file with Content it is len(Content).
	Length int64
	// Content is non-nil for pointer files whose bytes are synthesized from
	// the listing (CURRENT = "MANIFEST-000046\n"); the file on disk is then
	// not read.
	Content []byte

	// What a directory walk (dir kind) records of every entry: its type,
	// permissions and mtime, a symlink's text or the earlier name a hard
	// link shares its inode with, and the regular file's stat identity as
	// walked, against which the file is checked once read.
	Type    EntryType
	Mode    fs.FileMode // permission bits, setuid, setgid and sticky
	MtimeNs int64
	Target  string
	Walked  *Identity
}

// EntryType is what kind of directory entry a listed name is.
type EntryType string

const (
	EntryFile     EntryType = ""         // a regular file: its bytes are read
	EntryDir      EntryType = "dir"      // a directory, listed before what it holds
	EntrySymlink  EntryType = "symlink"  // a symbolic link, never followed
	EntryHardlink EntryType = "hardlink" // another name of an earlier listed regular file
)

// Listing is what a source's freeze yields.
type Listing struct {
	Files []File
}

// Validate checks the rules every listing obeys, whatever its source: a
// non-empty list of plain, distinct names with known roles; exact lengths for
// append-only files; synthesized content that matches its length; and, if the
// listing holds a RocksDB MANIFEST or CURRENT, exactly one of each with
// CURRENT naming the MANIFEST, since a restore is impossible otherwise.
func (l Listing) Validate() error {
	if len(l.Files) == 0 {
		return errors.New("listing has no files")
	}
	seen := make(map[string]int, len(l.Files))
	manifest, current := -1, -1
	for i, f := range l.Files {
		if err := f.check(); err != nil {
			return fmt.Errorf("listing file %d %s: %w", i+1, quote(f.Name), err)
		}
		if j, dup := seen[f.Name]; dup {
			return fmt.Errorf("listing file %d %s: listed twice (first as file %d)", i+1, quote(f.Name), j+1)
		}
		seen[f.Name] = i
		switch f.Role {
		case RoleManifest:
			if manifest >= 0 {
				return fmt.Errorf("listing files %d %s and %d %s: two MANIFEST files; a restore needs exactly one",
					manifest+1, quote(l.Files[manifest].Name), i+1, quote(f.Name))
			}
			manifest = i
		case RoleCurrent:
			if current >= 0 {
				return fmt.Errorf("listing files %d %s and %d %s: two CURRENT files; a restore needs exactly one",
					current+1, quote(l.Files[current].Name), i+1, quote(f.Name))
			}
			current = i
		}
	}
	switch {
	case manifest < 0 && current < 0:
		return nil
	case manifest < 0:
		return fmt.Errorf("listing has CURRENT but no MANIFEST; a restore needs both")
	case current < 0:
		return fmt.Errorf("listing has %s but no CURRENT; a restore needs both", l.Files[manifest].Name)
	}
	if want := currentContent(l.Files[manifest].Name); string(l.Files[current].Content) != want {
		return fmt.Errorf("listing file %d %s: content %q does not name the listed manifest (want %q)",
			current+1, quote(l.Files[current].Name), l.Files[current].Content, want)
	}
	return nil
}

// check validates one file on its own.
func (f File) check() error {
	if err := ValidName(f.Name); err != nil {
		return err
	}
	if !f.Role.known() {
		return fmt.Errorf("unknown role %q", f.Role)
	}
	if f.Length < -1 {
		return fmt.Errorf("invalid length %d", f.Length)
	}
	if f.Role.AppendOnly() && f.Length < 0 {
		return fmt.Errorf("%s file without a byte length; only an exact prefix of it belongs to a snapshot", f.Role)
	}
	if f.Role == RoleCurrent && f.Content == nil {
		return errors.New("CURRENT without synthesized content")
	}
	if f.Content != nil && f.Length != int64(len(f.Content)) {
		return fmt.Errorf("length %d differs from its %d bytes of synthesized content", f.Length, len(f.Content))
	}
	return nil
}

// currentContent is what RocksDB's BackupEngine writes as CURRENT for a
// snapshot whose manifest is named manifest.
func currentContent(manifest string) string {
	return manifest + "\n"
}

// ValidName reports why name is not a plain file name, or nil. Listed names
// come from the network and tree names from storage, and both end up as
// paths on restore, so anything that could leave the directory or confuse a
// terminal or a JSON reader is refused.
func ValidName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case name == "." || name == "..":
		return fmt.Errorf("%q is not a file name", name)
	case strings.ContainsRune(name, '/'):
		return errors.New("file name contains '/'")
	case strings.ContainsRune(name, '\\'):
		return errors.New("file name contains '\\'")
	case strings.IndexByte(name, 0) >= 0:
		return errors.New("file name contains a NUL byte")
	case !utf8.ValidString(name):
		return errors.New("file name is not valid UTF-8")
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("file name contains control character %U", r)
		}
	}
	return nil
}

// ValidPath reports why name is not a relative path of plain names joined
// by '/' (a directory backup's file names), or nil: no empty, "." or ".."
// component, no leading or trailing '/', and every component a ValidName.
func ValidPath(name string) error {
	if name == "" {
		return errors.New("empty file name")
	}
	for rest := name; ; {
		part, after, more := strings.Cut(rest, "/")
		if err := ValidName(part); err != nil {
			return fmt.Errorf("name %s: %w", quote(name), err)
		}
		if !more {
			return nil
		}
		rest = after
	}
}

// quote quotes s for an error message, cut short so a huge bogus entry does
// not flood the terminal.
func quote(s string) string {
	const limit = 120
	if len(s) > limit {
		return fmt.Sprintf("%q...", s[:limit])
	}
	return fmt.Sprintf("%q", s)
}
