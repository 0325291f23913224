package source

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseFreezeReply validates a FREEZE reply strictly and returns the listing.
// reply is what go-redis returns for the command: an []interface{} of
// strings ([]string is accepted too).
//
// Each entry is "/NAME" or "/NAME:LENGTH" (split at the last ':'). WAL and
// MANIFEST entries need a length, CURRENT must not have one, other files may.
// The listing needs exactly one MANIFEST and one CURRENT; CURRENT's content
// is synthesized as "MANIFEST-xxxxxx\n", naming the listed manifest, because
// the CURRENT on disk may already name a newer one.
//
// Errors name the offending entry by its 1-based index, as redis-cli shows it.
func ParseFreezeReply(reply any) (Listing, error) {
	entries, err := replyEntries(reply)
	if err != nil {
		return Listing{}, err
	}
	files := make([]File, 0, len(entries))
	seen := make(map[string]int, len(entries))
	manifest, current := -1, -1
	for i, raw := range entries {
		s, ok := raw.(string)
		if !ok {
			return Listing{}, fmt.Errorf("freeze reply entry %d is a %T, want a string like \"/000056.sst\"", i+1, raw)
		}
		f, err := parseEntry(s)
		if err != nil {
			return Listing{}, fmt.Errorf("freeze reply entry %d %s: %w", i+1, quote(s), err)
		}
		if j, dup := seen[f.Name]; dup {
			return Listing{}, fmt.Errorf("freeze reply entry %d %s: %s listed twice (first as entry %d %s)",
				i+1, quote(s), f.Name, j+1, quote(entries[j].(string)))
		}
		seen[f.Name] = i
		switch f.Role {
		case RoleManifest:
			if manifest >= 0 {
				return Listing{}, fmt.Errorf("freeze reply entries %d %s and %d %s: two MANIFEST files; a restore needs exactly one",
					manifest+1, quote(entries[manifest].(string)), i+1, quote(s))
			}
			manifest = i
		case RoleCurrent:
			current = i // a second CURRENT is a duplicate name, caught above
		}
		files = append(files, f)
	}
	if manifest < 0 {
		return Listing{}, fmt.Errorf("freeze reply lists no MANIFEST file; a restore needs exactly one (%d entries)", len(entries))
	}
	if current < 0 {
		return Listing{}, fmt.Errorf("freeze reply lists no CURRENT file; a restore needs it (%d entries)", len(entries))
	}
	content := []byte(currentContent(files[manifest].Name))
	files[current].Content = content
	files[current].Length = int64(len(content))

	l := Listing{Files: files}
	if err := l.Validate(); err != nil {
		// Unreachable if the checks above are complete; kept so the two
		// rule sets cannot drift apart silently.
		return Listing{}, fmt.Errorf("freeze reply: %w", err)
	}
	return l, nil
}

// replyEntries checks the reply's shape: a non-empty array.
func replyEntries(reply any) ([]any, error) {
	switch v := reply.(type) {
	case []any:
		if len(v) == 0 {
			return nil, fmt.Errorf("freeze reply is an empty array; the server listed no files")
		}
		return v, nil
	case []string:
		out := make([]any, len(v))
		for i, s := range v {
			out[i] = s
		}
		return replyEntries(out)
	case nil:
		return nil, fmt.Errorf("freeze reply is nil, want an array of file names")
	case error:
		return nil, fmt.Errorf("freeze reply is an error, want an array of file names: %w", v)
	case string:
		return nil, fmt.Errorf("freeze reply is the string %s, want an array of file names", quote(v))
	default:
		return nil, fmt.Errorf("freeze reply is a %T (%v), want an array of file names", v, v)
	}
}

// parseEntry parses one "/NAME[:LENGTH]" entry.
func parseEntry(s string) (File, error) {
	body, ok := strings.CutPrefix(s, "/")
	if !ok {
		return File{}, fmt.Errorf("entry does not start with '/'")
	}
	if strings.HasPrefix(body, "/") {
		return File{}, fmt.Errorf("entry starts with more than one '/'")
	}
	name, length := body, int64(-1)
	if i := strings.LastIndexByte(body, ':'); i >= 0 {
		n, err := parseLength(body[i+1:])
		if err != nil {
			return File{}, err
		}
		name, length = body[:i], n
	}
	if err := ValidName(name); err != nil {
		return File{}, err
	}
	f := File{Name: name, Role: Classify(name), Length: length}
	switch {
	case f.Role == RoleCurrent && length >= 0:
		return File{}, fmt.Errorf("CURRENT with a byte length; its content is synthesized from the listed MANIFEST")
	case f.Role.AppendOnly() && length < 0:
		what := "manifest"
		if f.Role == RoleWAL {
			what = "WAL"
		}
		return File{}, fmt.Errorf("%s without a byte length; only an exact prefix of it belongs to a snapshot", what)
	}
	return f, nil
}

// parseLength parses the decimal after ':': digits only, no sign, no spaces.
func parseLength(s string) (int64, error) {
	if s == "" {
		return 0, fmt.Errorf("empty byte length after ':'")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("byte length %s is not a non-negative decimal number", quote(s))
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("byte length %s does not fit in 64 bits", quote(s))
	}
	return n, nil
}
