package source

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// This file reads what Redis 7 keeps in its appenddirname: the incr files'
// command streams (AOFScanner) and the multi-part manifest that names the
// files (ParseAOFManifest). The rules follow Redis 7.0's aof.c
// (loadSingleAppendOnlyFile, aofLoadManifestFromFile, getAofManifestAsString)
// and are stricter where Redis would read garbage as something else.

// Limits of an AOF stream.
const (
	aofMaxArgs   = 1 << 20
	aofMaxBulk   = 512 << 20 // proto-max-bulk-len's default
	aofMaxDigits = 19        // every 19-digit number fits in a uint64
	// aofMaxAnnotation is the longest annotation, its "\r\n" included:
	// Redis reads one with fgets into char[AOF_ANNOTATION_LINE_MAX_LEN],
	// 1024 bytes, so it skips at most 1023 and would read the rest of a
	// longer line as the next item.
	aofMaxAnnotation = 1023
	aofNameCache     = 512 // distinct command names a scanner interns
)

// AOFItem is one complete item of an AOF stream. Args, not Cmd, tells an
// annotation from a command: a command may be named "".
type AOFItem struct {
	Off, End int64  // stream offsets: the item is bytes [Off, End)
	Cmd      string // upper-cased command name (first argument); "" for an annotation
	Args     int    // number of arguments including the command name; 0 for an annotation
	TS       int64  // seconds of a "#TS:" annotation; -1 for every other item
}

// AOFError is malformed bytes in an AOF stream.
type AOFError struct {
	Off int64 // stream offset of the bad byte or of the item it is in
	Msg string
}

func (e *AOFError) Error() string {
	return fmt.Sprintf("AOF stream at offset %d: %s", e.Off, e.Msg)
}

// AOFScanner parses an AOF stream incrementally; state carries across Scan
// calls. Use NewAOFScanner; the zero value is not ready.
//
// An item is a command, a RESP array of bulk strings ("*<argc>\r\n", then
// argc times "$<len>\r\n<len bytes>\r\n"), or an annotation, a line from
// '#' to "\r\n" that Redis skips when it loads the file; "#TS:<seconds>" is
// the one with a meaning (aof-timestamp-enabled).
type AOFScanner struct {
	off, safe int64
	lastTS    int64
	cmds      int64
	pending   int64
	inMulti   bool
	err       *AOFError

	// part is how far the command at off was parsed by earlier calls, so a
	// large one fed in small pieces is not parsed again from its start
	// (which is why the next call must pass the bytes left unconsumed).
	part aofPart

	names map[string]string // interned command names
	upper [32]byte
}

type aofPart struct {
	argc int    // 0: the "*<argc>" header is not parsed yet
	argi int    // arguments complete
	pos  int    // where argument argi's "$<len>" starts, from the item start
	cmd  string // the name, once argument 0 is complete
}

// NewAOFScanner returns a scanner for a stream whose next byte is at offset off.
// A transaction is never open at the start: an incr file starts outside MULTI.
func NewAOFScanner(off int64) *AOFScanner {
	return &AOFScanner{off: off, safe: off, lastTS: -1, names: make(map[string]string)}
}

// Offset is the stream offset just after the last complete item.
func (s *AOFScanner) Offset() int64 { return s.off }

// InMulti says whether a MULTI was scanned with no EXEC or DISCARD after it.
func (s *AOFScanner) InMulti() bool { return s.inMulti }

// SafeOffset is the offset just after the last complete item that is not
// inside MULTI..EXEC, where a restore may cut the stream: Offset() outside a
// transaction, the open MULTI's Off inside one. Redis's loader too drops an
// unfinished transaction at the end of the AOF.
func (s *AOFScanner) SafeOffset() int64 { return s.safe }

// LastTS is the seconds of the last #TS annotation scanned, -1 if none.
func (s *AOFScanner) LastTS() int64 { return s.lastTS }

// Commands is how many complete commands were scanned (annotations not counted).
func (s *AOFScanner) Commands() int64 { return s.cmds }

// PendingCommands is how many commands were scanned since the open MULTI,
// MULTI included; 0 outside a transaction.
func (s *AOFScanner) PendingCommands() int64 { return s.pending }

// Scan parses the complete items at the start of p, which holds the stream's bytes from
// s.Offset() on, calls fn for each in order (fn may be nil; an error from fn stops Scan
// and is returned), and returns how many bytes of p it consumed: the rest of p is the
// start of an item not yet complete (the caller keeps it and calls again with it and more
// bytes). Malformed input returns an *AOFError (its Off is the stream offset of the bad
// byte or the item start; message says what was expected), and the scanner is then stuck
// (further calls return the same error).
//
// When fn is called the scanner already counts the item (Offset() is its
// End); if fn fails, the count returned includes that item.
func (s *AOFScanner) Scan(p []byte, fn func(AOFItem) error) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := 0
	for n < len(p) {
		q := p[n:]
		it := AOFItem{Off: s.off, TS: -1}
		var size int
		var err *AOFError
		switch q[0] {
		case '*':
			size, it.Cmd, it.Args, err = s.command(q)
		case '#':
			size, it.TS, err = s.annotation(q)
		default:
			err = s.errorf(0, "expected '*' or '#' starting an item, found %s", aofQuoteByte(q[0]))
		}
		if err == nil && size > 0 {
			it.End = s.off + int64(size)
			err = s.apply(&it)
		}
		if err != nil {
			s.err = err
			return n, err
		}
		if size == 0 {
			break // the item is not complete yet
		}
		n += size
		if fn != nil {
			if err := fn(it); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// AOFBoundary returns the largest n <= len(p) such that p[:n] is whole items of a stream
// starting outside any item (a "command boundary"), scanning with a fresh scanner at offset
// off; err is the scanner's error for malformed bytes.
func AOFBoundary(p []byte, off int64) (n int, err error) {
	return NewAOFScanner(off).Scan(p, nil)
}

// errorf returns an AOFError at i bytes after the item start.
func (s *AOFScanner) errorf(i int, format string, args ...any) *AOFError {
	return &AOFError{Off: s.off + int64(i), Msg: fmt.Sprintf(format, args...)}
}

// apply moves the scanner past the complete item it.
func (s *AOFScanner) apply(it *AOFItem) *AOFError {
	if it.Args > 0 {
		switch it.Cmd {
		case "MULTI":
			if s.inMulti {
				return s.errorf(0, "MULTI inside MULTI")
			}
			s.inMulti = true
		case "EXEC", "DISCARD":
			if !s.inMulti {
				return s.errorf(0, "%s outside MULTI", it.Cmd)
			}
			s.inMulti = false
			s.pending = 0
			s.safe = it.End
		default:
			if !s.inMulti {
				s.safe = it.End
			}
		}
		if s.inMulti {
			s.pending++
		}
		s.cmds++
	} else {
		if it.TS >= 0 {
			s.lastTS = it.TS
		}
		if !s.inMulti {
			s.safe = it.End
		}
	}
	s.off = it.End
	return nil
}

// command parses the command at the start of q (q[0] == '*'). It returns
// size 0 when q ends before the command does.
func (s *AOFScanner) command(q []byte) (size int, cmd string, argc int, err *AOFError) {
	pt := s.part
	if pt.argc == 0 {
		v, next, bad := aofNum(q, 1)
		switch {
		case bad > 0:
			return 0, "", 0, s.numError(q, 1, bad, -1)
		case next == 0:
			return 0, "", 0, nil
		case v == 0:
			return 0, "", 0, s.errorf(0, "argument count 0")
		case v > aofMaxArgs:
			return 0, "", 0, s.errorf(0, "argument count %d over the limit %d", v, aofMaxArgs)
		}
		pt.argc, pt.pos = int(v), next
	}
	for pt.argi < pt.argc {
		if pt.pos >= len(q) {
			s.part = pt
			return 0, "", 0, nil
		}
		if q[pt.pos] != '$' {
			return 0, "", 0, s.errorf(pt.pos, "expected '$' starting argument %d of %d, found %s", pt.argi+1, pt.argc, aofQuoteByte(q[pt.pos]))
		}
		v, next, bad := aofNum(q, pt.pos+1)
		if bad > 0 {
			return 0, "", 0, s.numError(q, pt.pos+1, bad, pt.argi)
		}
		if next == 0 {
			s.part = pt
			return 0, "", 0, nil
		}
		if v > aofMaxBulk {
			return 0, "", 0, s.errorf(pt.pos, "argument %d is %d bytes, over the limit %d", pt.argi+1, v, aofMaxBulk)
		}
		n := int(v)
		if len(q)-next < n+2 {
			if len(q)-next == n+1 && q[next+n] != '\r' {
				return 0, "", 0, s.errorf(next+n, "expected \\r\\n after the %d bytes of argument %d, found %s", n, pt.argi+1, aofQuoteByte(q[next+n]))
			}
			s.part = pt
			return 0, "", 0, nil
		}
		end := next + n
		if q[end] != '\r' {
			return 0, "", 0, s.errorf(end, "expected \\r\\n after the %d bytes of argument %d, found %s", n, pt.argi+1, aofQuoteByte(q[end]))
		}
		if q[end+1] != '\n' {
			return 0, "", 0, s.errorf(end+1, "expected \\n after the %d bytes of argument %d and \\r, found %s", n, pt.argi+1, aofQuoteByte(q[end+1]))
		}
		if pt.argi == 0 {
			pt.cmd = s.name(q[next:end])
		}
		pt.argi++
		pt.pos = end + 2
	}
	s.part = aofPart{}
	return pt.pos, pt.cmd, pt.argc, nil
}

// aofNum parses the decimal number at q[i:] and the "\r\n" after it. It
// returns the value and the index after the "\r\n"; next == 0 when q ends
// first; bad > 0 is the index of a byte that cannot be where it is.
func aofNum(q []byte, i int) (v uint64, next, bad int) {
	for j := i; j < len(q); j++ {
		c := q[j]
		if '0' <= c && c <= '9' {
			if j-i == aofMaxDigits {
				return 0, 0, j
			}
			v = v*10 + uint64(c-'0')
			continue
		}
		if c != '\r' || j == i {
			return 0, 0, j
		}
		if j+1 == len(q) {
			return 0, 0, 0
		}
		if q[j+1] != '\n' {
			return 0, 0, j + 1
		}
		return v, j + 2, 0
	}
	return 0, 0, 0
}

// numError describes the bad byte aofNum found in the number starting at
// q[i]: the argument count when arg < 0, else argument arg's length.
func (s *AOFScanner) numError(q []byte, i, bad, arg int) *AOFError {
	what := "argument count"
	if arg >= 0 {
		what = fmt.Sprintf("length of argument %d", arg+1)
	}
	c := q[bad]
	switch {
	case '0' <= c && c <= '9':
		return s.errorf(bad, "%s: more than %d digits", what, aofMaxDigits)
	case bad > i && q[bad-1] == '\r':
		return s.errorf(bad, "%s: expected \\n after \\r, found %s", what, aofQuoteByte(c))
	case bad == i:
		return s.errorf(bad, "%s: expected a digit, found %s", what, aofQuoteByte(c))
	default:
		return s.errorf(bad, "%s: expected a digit or \\r\\n, found %s", what, aofQuoteByte(c))
	}
}

// name returns b upper-cased (ASCII, as Redis's strcasecmp compares), as a
// string interned in s: a stream has few distinct names.
func (s *AOFScanner) name(b []byte) string {
	if len(b) > len(s.upper) {
		return string(aofUpper(make([]byte, len(b)), b))
	}
	u := aofUpper(s.upper[:len(b)], b)
	if n, ok := s.names[string(u)]; ok {
		return n
	}
	n := string(u)
	if s.names == nil {
		s.names = make(map[string]string)
	}
	if len(s.names) < aofNameCache {
		s.names[n] = n
	}
	return n
}

func aofUpper(dst, src []byte) []byte {
	for i, c := range src {
		if 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		}
		dst[i] = c
	}
	return dst
}

// annotation parses the annotation at the start of q (q[0] == '#'). It
// returns size 0 when q ends before the annotation does.
func (s *AOFScanner) annotation(q []byte) (size int, ts int64, err *AOFError) {
	lim := q
	if len(lim) > aofMaxAnnotation {
		lim = lim[:aofMaxAnnotation]
	}
	nl := bytes.IndexByte(lim, '\n')
	if nl < 0 {
		if len(q) >= aofMaxAnnotation {
			return 0, -1, s.errorf(0, "annotation longer than %d bytes", aofMaxAnnotation)
		}
		return 0, -1, nil
	}
	if q[nl-1] != '\r' {
		return 0, -1, s.errorf(nl, "expected \\r\\n ending the annotation, found \\n alone")
	}
	return nl + 1, aofTS(q[:nl-1]), nil
}

// aofTS returns the seconds of a "#TS:<seconds>" line (without its "\r\n"),
// -1 for any other line.
func aofTS(line []byte) int64 {
	if len(line) <= 4 || string(line[:4]) != "#TS:" {
		return -1
	}
	v, ok := aofDecimal(line[4:])
	if !ok {
		return -1
	}
	return v
}

// aofDecimal parses b, 1 to 19 ASCII digits, into a value <= math.MaxInt64.
func aofDecimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > aofMaxDigits {
		return 0, false
	}
	var v uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if v > math.MaxInt64 {
		return 0, false
	}
	return int64(v), true
}

func aofQuoteByte(c byte) string { return strconv.Quote(string([]byte{c})) }

// Limits of a manifest.
const (
	aofManifestMax = 1 << 20
	// aofManifestLine is the longest manifest line without its '\n': Redis
	// reads lines with fgets into char[MANIFEST_MAX_LINE+1], 1025 bytes.
	aofManifestLine = 1023
	aofNameMax      = 255 // NAME_MAX: no longer name can be a file
)

// AOFFile is a file the manifest names.
type AOFFile struct {
	Name string
	Seq  int64
	Type byte // 'b', 'h' or 'i'
}

// AOFManifest is Redis 7's multi-part AOF manifest
// (<appendfilename>.manifest in appenddirname): the base file, then the incr
// files, make up the data set; history files are left from before the last
// rewrite, waiting to be deleted.
type AOFManifest struct {
	Base    *AOFFile  // nil if none
	Incrs   []AOFFile // in manifest order (the order Redis loads them)
	History []AOFFile
}

// ParseAOFManifest parses a manifest as Redis's aofLoadManifestFromFile
// does: one "file <name> seq <n> type <t>" line a file, keys in any order
// and of any case, unknown keys ignored, values split like redis-cli
// arguments (sdssplitargs: "double" and 'single' quotes), '#' lines
// skipped. It is stricter than Redis where Redis would load something else
// than the line says: seq is plain digits, type one letter, a name a plain
// file name (no '/', '\\' or NUL, not "." or "..", at most 255 bytes). An
// empty manifest (no base, no incr) is valid.
func ParseAOFManifest(data []byte) (*AOFManifest, error) {
	if len(data) > aofManifestMax {
		return nil, fmt.Errorf("AOF manifest: larger than %d bytes", aofManifestMax)
	}
	m := &AOFManifest{}
	var maxIncr int64
	written := 0 // bytes Encode will write
	for num := 1; len(data) > 0; num++ {
		line, rest, found := bytes.Cut(data, []byte{'\n'})
		data = rest
		if len(line) > aofManifestLine {
			return nil, fmt.Errorf("AOF manifest: line %d: longer than %d bytes", num, aofManifestLine)
		}
		if len(line) > 0 && line[0] == '#' {
			continue
		}
		if !found {
			return nil, fmt.Errorf("AOF manifest: line %d: no newline at its end", num)
		}
		f, n, err := parseAOFLine(line)
		if err != nil {
			return nil, fmt.Errorf("AOF manifest: line %d: %w", num, err)
		}
		if written += n; written > aofManifestMax {
			// Quoting names made it longer than it was: Encode could not
			// write it back.
			return nil, fmt.Errorf("AOF manifest: line %d: over %d bytes once written", num, aofManifestMax)
		}
		switch f.Type {
		case 'b':
			if m.Base != nil {
				return nil, fmt.Errorf("AOF manifest: line %d: a second base file %q", num, f.Name)
			}
			m.Base = &f
		case 'h':
			m.History = append(m.History, f)
		case 'i':
			if f.Seq <= maxIncr {
				return nil, fmt.Errorf("AOF manifest: line %d: incr seq %d after incr seq %d", num, f.Seq, maxIncr)
			}
			maxIncr = f.Seq
			m.Incrs = append(m.Incrs, f)
		}
	}
	return m, nil
}

// parseAOFLine parses one manifest line, without its '\n'; n is the length
// of the line Encode writes for it.
func parseAOFLine(line []byte) (f AOFFile, n int, err error) {
	if bytes.IndexByte(line, 0) >= 0 {
		return f, 0, errors.New("NUL byte") // Redis would read the line as ending there
	}
	line = bytes.Trim(line, " \t\r\n")
	if len(line) == 0 {
		return f, 0, errors.New("blank line")
	}
	args, err := sdsSplitArgs(line)
	if err != nil {
		return f, 0, err
	}
	if len(args) < 6 || len(args)%2 != 0 {
		return f, 0, fmt.Errorf("%d words, want key value pairs: file <name> seq <n> type <t>", len(args))
	}
	var haveName, haveSeq bool
	for i := 0; i < len(args); i += 2 {
		k, v := args[i], args[i+1]
		switch {
		case aofEqualFold(k, "file"):
			if err := aofName(v); err != nil {
				return f, 0, err
			}
			f.Name, haveName = v, true
		case aofEqualFold(k, "seq"):
			seq, ok := aofDecimal([]byte(v))
			if !ok || seq < 1 {
				return f, 0, fmt.Errorf("seq %q is not a decimal number from 1 to %d", v, int64(math.MaxInt64))
			}
			f.Seq, haveSeq = seq, true
		case aofEqualFold(k, "type"):
			if v != "b" && v != "h" && v != "i" {
				return f, 0, fmt.Errorf("type %q is not b, h or i", v)
			}
			f.Type = v[0]
		}
	}
	switch {
	case !haveName:
		return f, 0, errors.New("no file")
	case !haveSeq:
		return f, 0, errors.New("no seq")
	case f.Type == 0:
		return f, 0, errors.New("no type")
	}
	if n = len(appendAOFLine(nil, f)); n > aofManifestLine+1 {
		// Quoting made it longer than Redis reads: Encode could not write it back.
		return f, 0, fmt.Errorf("file name %q makes a line of %d bytes once written", f.Name, n)
	}
	return f, n, nil
}

// aofName checks that a manifest's file name is a plain file name: it is
// joined to the AOF directory.
func aofName(name string) error {
	switch {
	case name == "":
		return errors.New("empty file name")
	case name == "." || name == "..":
		return fmt.Errorf("file name %q", name)
	case len(name) > aofNameMax:
		return fmt.Errorf("file name of %d bytes, over %d", len(name), aofNameMax)
	}
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '/', '\\': // Redis's pathIsBaseName refuses both
			return fmt.Errorf("file name %q is a path", name)
		case 0:
			return fmt.Errorf("file name %q has a NUL byte", name)
		}
	}
	return nil
}

// sdsSplitArgs splits a line into words as Redis's sdssplitargs does.
func sdsSplitArgs(line []byte) ([]string, error) {
	var args []string
	var cur []byte
	i := 0
	for {
		for i < len(line) && sdsIsSpace(line[i]) {
			i++
		}
		if i == len(line) {
			return args, nil
		}
		cur = cur[:0]
		inq, insq := false, false
		for done := false; !done; i++ {
			if i == len(line) {
				if inq || insq {
					return nil, errors.New("unbalanced quotes")
				}
				break
			}
			c := line[i]
			switch {
			case inq:
				switch {
				case c == '\\' && i+3 < len(line) && line[i+1] == 'x' && sdsIsHex(line[i+2]) && sdsIsHex(line[i+3]):
					cur = append(cur, sdsUnhex(line[i+2])<<4|sdsUnhex(line[i+3]))
					i += 3
				case c == '\\' && i+1 < len(line):
					i++
					switch c = line[i]; c {
					case 'n':
						c = '\n'
					case 'r':
						c = '\r'
					case 't':
						c = '\t'
					case 'b':
						c = '\b'
					case 'a':
						c = '\a'
					}
					cur = append(cur, c)
				case c == '"':
					if i+1 < len(line) && !sdsIsSpace(line[i+1]) {
						return nil, errors.New("closing quote not followed by a space")
					}
					done = true
				default:
					cur = append(cur, c)
				}
			case insq:
				switch {
				case c == '\\' && i+1 < len(line) && line[i+1] == '\'':
					i++
					cur = append(cur, '\'')
				case c == '\'':
					if i+1 < len(line) && !sdsIsSpace(line[i+1]) {
						return nil, errors.New("closing quote not followed by a space")
					}
					done = true
				default:
					cur = append(cur, c)
				}
			default:
				switch c {
				case ' ', '\n', '\r', '\t':
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					cur = append(cur, c)
				}
			}
		}
		args = append(args, string(cur))
	}
}

// sdsIsSpace is C's isspace in the C locale.
func sdsIsSpace(c byte) bool {
	return c == ' ' || '\t' <= c && c <= '\r'
}

func sdsIsHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func sdsUnhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

func aofEqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Encode writes m as Redis does (getAofManifestAsString): the base first,
// then the history files, then the incr files, one line each.
func (m *AOFManifest) Encode() []byte {
	var b []byte
	if m.Base != nil {
		b = appendAOFLine(b, *m.Base)
	}
	for _, f := range m.History {
		b = appendAOFLine(b, f)
	}
	for _, f := range m.Incrs {
		b = appendAOFLine(b, f)
	}
	return b
}

// appendAOFLine appends f's manifest line to b.
func appendAOFLine(b []byte, f AOFFile) []byte {
	b = append(b, "file "...)
	b = appendAOFName(b, f.Name)
	b = append(b, " seq "...)
	b = strconv.AppendInt(b, f.Seq, 10)
	b = append(b, " type "...)
	return append(b, f.Type, '\n')
}

// appendAOFName appends name bare, or quoted as Redis's sdscatrepr does when
// it needs quotes. Redis (sdsneedsrepr) does not quote a name with a single
// quote, which it then cannot read back; this does.
func appendAOFName(b []byte, name string) []byte {
	quote := name == ""
	for i := 0; i < len(name) && !quote; i++ {
		c := name[i]
		quote = c <= ' ' || c >= 0x7f || c == '"' || c == '\'' || c == '\\'
	}
	if !quote {
		return append(b, name...)
	}
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(name); i++ {
		switch c := name[i]; c {
		case '\\', '"':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, `\n`...)
		case '\r':
			b = append(b, `\r`...)
		case '\t':
			b = append(b, `\t`...)
		case '\a':
			b = append(b, `\a`...)
		case '\b':
			b = append(b, `\b`...)
		default:
			if c < ' ' || c >= 0x7f {
				b = append(b, '\\', 'x', hex[c>>4], hex[c&15])
			} else {
				b = append(b, c)
			}
		}
	}
	return append(b, '"')
}
