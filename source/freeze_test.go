package source

import (
	"encoding/binary"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// briefReply is the example reply from the brief.
var briefReply = []any{
	"/000056.sst",
	"/CURRENT",
	"/MANIFEST-000046:514",
	"/OPTIONS-000048",
	"/000051.log:63805250",
}

// strs builds a reply of strings.
func strs(s ...string) []any {
	out := make([]any, len(s))
	for i, v := range s {
		out[i] = v
	}
	return out
}

// withBase returns the minimal valid reply (manifest and current) plus more.
func withBase(more ...string) []any {
	return strs(append([]string{"/CURRENT", "/MANIFEST-000046:514"}, more...)...)
}

func TestParseFreezeReplyValid(t *testing.T) {
	tests := []struct {
		name  string
		reply any
		want  []File
	}{
		{
			name:  "brief example",
			reply: briefReply,
			want: []File{
				{Name: "000056.sst", Role: RoleTable, Length: -1},
				{Name: "CURRENT", Role: RoleCurrent, Length: 16, Content: []byte("MANIFEST-000046\n")},
				{Name: "MANIFEST-000046", Role: RoleManifest, Length: 514},
				{Name: "OPTIONS-000048", Role: RoleOptions, Length: -1},
				{Name: "000051.log", Role: RoleWAL, Length: 63805250},
			},
		},
		{
			name:  "string slice, lengths on table and options, zero-length WAL",
			reply: []string{"/MANIFEST-000001:0", "/CURRENT", "/000007.sst:1234", "/OPTIONS-000005:99", "/000008.log:0"},
			want: []File{
				{Name: "MANIFEST-000001", Role: RoleManifest, Length: 0},
				{Name: "CURRENT", Role: RoleCurrent, Length: 16, Content: []byte("MANIFEST-000001\n")},
				{Name: "000007.sst", Role: RoleTable, Length: 1234},
				{Name: "OPTIONS-000005", Role: RoleOptions, Length: 99},
				{Name: "000008.log", Role: RoleWAL, Length: 0},
			},
		},
		{
			name:  "split at the last colon, other files, max int64",
			reply: withBase("/odd:name:7", "/IDENTITY", "/000009.log:9223372036854775807", "/000010.log:007"),
			want: []File{
				{Name: "CURRENT", Role: RoleCurrent, Length: 16, Content: []byte("MANIFEST-000046\n")},
				{Name: "MANIFEST-000046", Role: RoleManifest, Length: 514},
				{Name: "odd:name", Role: RoleOther, Length: 7},
				{Name: "IDENTITY", Role: RoleOther, Length: -1},
				{Name: "000009.log", Role: RoleWAL, Length: 9223372036854775807},
				{Name: "000010.log", Role: RoleWAL, Length: 7},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFreezeReply(tt.reply)
			if err != nil {
				t.Fatalf("ParseFreezeReply: %v", err)
			}
			if !reflect.DeepEqual(got.Files, tt.want) {
				t.Errorf("files:\n got %+v\nwant %+v", got.Files, tt.want)
			}
		})
	}
}

// badReplies are replies ParseFreezeReply must reject; each error must
// contain every string in want (entry index and entry, and the reason).
var badReplies = []struct {
	name  string
	reply any
	want  []string
}{
	{"nil", nil, []string{"nil"}},
	{"error", errors.New("ERR boom"), []string{"is an error", "ERR boom"}},
	{"int", int64(3), []string{"int64"}},
	{"string", "OK", []string{`the string "OK"`}},
	{"map", map[any]any{"a": "b"}, []string{"map"}},
	{"empty array", []any{}, []string{"empty array"}},
	{"empty string slice", []string{}, []string{"empty array"}},
	{"non-string element", []any{"/CURRENT", int64(5)}, []string{"entry 2 is a int64"}},
	{"nested array", []any{"/CURRENT", []any{"/x"}}, []string{"entry 2 is a []interface {}"}},
	{"nil element", []any{"/CURRENT", nil}, []string{"entry 2 is a <nil>"}},
	{"no slash", withBase("000056.sst"), []string{`entry 3 "000056.sst"`, "does not start with '/'"}},
	{"two slashes", withBase("//000056.sst"), []string{`entry 3 "//000056.sst"`, "more than one '/'"}},
	{"slash only", withBase("/"), []string{`entry 3 "/"`, "empty file name"}},
	{"subdirectory", withBase("/archive/000051.log:5"), []string{`entry 3 "/archive/000051.log:5"`, "'/'"}},
	{"traversal", withBase("/../etc/passwd"), []string{`entry 3`, "'/'"}},
	{"dot", withBase("/."), []string{`entry 3 "/."`, "not a file name"}},
	{"dotdot", withBase("/.."), []string{`entry 3 "/.."`, "not a file name"}},
	{"dotdot with length", withBase("/..:5"), []string{`entry 3 "/..:5"`, "not a file name"}},
	{"empty name with length", withBase("/:5"), []string{`entry 3 "/:5"`, "empty file name"}},
	{"NUL", withBase("/0001\x00.sst"), []string{`entry 3 "/0001\x00.sst"`, "NUL"}},
	{"newline", withBase("/0001\n.sst"), []string{`entry 3 "/0001\n.sst"`, "control character"}},
	{"tab", withBase("/0001\t.sst"), []string{"entry 3", "control character"}},
	{"DEL", withBase("/0001\x7f.sst"), []string{"entry 3", "control character"}},
	{"C1 control", withBase("/0001\u0085.sst"), []string{"entry 3", "control character"}},
	{"invalid UTF-8", withBase("/0001\xff.sst"), []string{"entry 3", "UTF-8"}},
	{"empty length", withBase("/000051.log:"), []string{`entry 3 "/000051.log:"`, "empty byte length"}},
	{"negative length", withBase("/000051.log:-1"), []string{`entry 3 "/000051.log:-1"`, "not a non-negative decimal"}},
	{"plus sign", withBase("/000051.log:+5"), []string{"entry 3", "not a non-negative decimal"}},
	{"space in length", withBase("/000051.log: 5"), []string{"entry 3", "not a non-negative decimal"}},
	{"trailing space", withBase("/000051.log:5 "), []string{"entry 3", "not a non-negative decimal"}},
	{"hex length", withBase("/000051.log:0x10"), []string{"entry 3", "not a non-negative decimal"}},
	{"letters after colon", withBase("/odd:name"), []string{`entry 3 "/odd:name"`, "not a non-negative decimal"}},
	{"overflow", withBase("/000051.log:9223372036854775808"), []string{"entry 3", "does not fit in 64 bits"}},
	{"WAL without length", withBase("/000051.log"), []string{`entry 3 "/000051.log"`, "WAL without a byte length"}},
	{"manifest without length", strs("/000056.sst", "/CURRENT", "/MANIFEST-000046"), []string{`entry 3 "/MANIFEST-000046": manifest without a byte length`}},
	{"CURRENT with length", strs("/MANIFEST-000046:514", "/CURRENT:16"), []string{`entry 2 "/CURRENT:16"`, "CURRENT with a byte length"}},
	{"duplicate table", withBase("/000056.sst", "/000056.sst:10"), []string{`entry 4 "/000056.sst:10"`, "listed twice", `entry 3 "/000056.sst"`}},
	{"duplicate CURRENT", withBase("/CURRENT"), []string{`entry 3 "/CURRENT"`, "listed twice", "entry 1"}},
	{"two manifests", withBase("/MANIFEST-000050:10"), []string{`entries 2 "/MANIFEST-000046:514" and 3 "/MANIFEST-000050:10"`, "two MANIFEST"}},
	{"no manifest", strs("/CURRENT", "/000056.sst"), []string{"no MANIFEST"}},
	{"no CURRENT", strs("/MANIFEST-000046:514", "/000056.sst"), []string{"no CURRENT"}},
	{"only tables", strs("/000056.sst"), []string{"no MANIFEST"}},
}

func TestParseFreezeReplyInvalid(t *testing.T) {
	for _, tt := range badReplies {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFreezeReply(tt.reply)
			if err == nil {
				t.Fatalf("ParseFreezeReply(%#v) = %+v, want an error", tt.reply, got)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if got.Files != nil {
				t.Errorf("files %+v returned with the error", got.Files)
			}
		})
	}
}

func TestParseFreezeReplyLongEntryIsCut(t *testing.T) {
	long := "/" + strings.Repeat("x", 10000) + ".log"
	_, err := ParseFreezeReply(withBase(long))
	if err == nil {
		t.Fatal("want an error")
	}
	if len(err.Error()) > 500 {
		t.Errorf("error is %d bytes long, want the entry cut short", len(err.Error()))
	}
}

// encodeEntries encodes a reply for the fuzzer: each entry as a uvarint
// length and its bytes.
func encodeEntries(entries []string) []byte {
	var b []byte
	for _, e := range entries {
		b = binary.AppendUvarint(b, uint64(len(e)))
		b = append(b, e...)
	}
	return b
}

// decodeEntries is the inverse of encodeEntries; a bad length takes the rest.
func decodeEntries(b []byte) []any {
	out := []any{}
	for len(b) > 0 {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			out = append(out, string(b))
			break
		}
		out = append(out, string(b[k:k+int(n)]))
		b = b[k+int(n):]
	}
	return out
}

func FuzzParseFreezeReply(f *testing.F) {
	f.Add(encodeEntries([]string{"/000056.sst", "/CURRENT", "/MANIFEST-000046:514", "/OPTIONS-000048", "/000051.log:63805250"}))
	for _, tt := range badReplies {
		if a, ok := tt.reply.([]any); ok {
			var entries []string
			for _, e := range a {
				if s, ok := e.(string); ok {
					entries = append(entries, s)
				}
			}
			f.Add(encodeEntries(entries))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Larger inputs reach no new code (long entries are cut at 120 bytes
		// in errors) but make the minimizer stall for many seconds.
		if len(data) > 4096 {
			return
		}
		reply := decodeEntries(data)
		l, err := ParseFreezeReply(reply)
		if err != nil {
			if l.Files != nil {
				t.Fatalf("files returned with error %v", err)
			}
			return
		}
		if len(l.Files) != len(reply) {
			t.Fatalf("%d files from %d entries", len(l.Files), len(reply))
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("parsed listing does not validate: %v", err)
		}
		names := map[string]bool{}
		var manifests, currents []File
		for i, f := range l.Files {
			// Independent restatement of the name rules.
			if f.Name == "" || f.Name == "." || f.Name == ".." || strings.ContainsAny(f.Name, "/\x00") || !utf8.ValidString(f.Name) ||
				strings.IndexFunc(f.Name, unicode.IsControl) >= 0 {
				t.Fatalf("file %d: name %q is not plain", i, f.Name)
			}
			if names[f.Name] {
				t.Fatalf("file %d: duplicate name %q", i, f.Name)
			}
			names[f.Name] = true
			if f.Role != Classify(f.Name) {
				t.Fatalf("file %d %q: role %q, Classify says %q", i, f.Name, f.Role, Classify(f.Name))
			}
			if f.Length < -1 {
				t.Fatalf("file %d %q: length %d", i, f.Name, f.Length)
			}
			if f.Role.AppendOnly() && f.Length < 0 {
				t.Fatalf("file %d %q: append-only without length", i, f.Name)
			}
			switch f.Role {
			case RoleManifest:
				manifests = append(manifests, f)
			case RoleCurrent:
				currents = append(currents, f)
			default:
				if f.Content != nil {
					t.Fatalf("file %d %q: unexpected content", i, f.Name)
				}
				// Round trip: the entry formats back to one that parses the same.
				entry := "/" + f.Name
				if f.Length >= 0 {
					entry += ":" + strconv.FormatInt(f.Length, 10)
				}
				if g, err := parseEntry(entry); err != nil || !reflect.DeepEqual(g, f) {
					t.Fatalf("file %d: %+v formats as %q, which parses as %+v, %v", i, f, entry, g, err)
				}
			}
		}
		if len(manifests) != 1 || len(currents) != 1 {
			t.Fatalf("%d manifests, %d currents", len(manifests), len(currents))
		}
		if want := manifests[0].Name + "\n"; string(currents[0].Content) != want || currents[0].Length != int64(len(want)) {
			t.Fatalf("CURRENT %+v does not name manifest %q", currents[0], manifests[0].Name)
		}
	})
}
