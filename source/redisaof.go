package source

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/redis/go-redis/v9"
)

// AOFPoint is what a redis snapshot records of the AOF it holds (the
// snapshot's "redis" field, docs/design.md "Redis chains").
type AOFPoint struct {
	Chain      string    `json:"chain"`     // 32 hex digits
	DirName    string    `json:"dir_name"`  // appenddirname
	FileName   string    `json:"file_name"` // appendfilename
	Base       *AOFBase  `json:"base,omitempty"`
	Incrs      []AOFIncr `json:"incrs"`
	Timestamps bool      `json:"timestamps,omitempty"` // aof-timestamp-enabled
}

// AOFBase is the base file of a point.
type AOFBase struct {
	Name string `json:"name"`
	Seq  int64  `json:"seq"`
}

// AOFIncr is an incr file of a point and how many of its bytes the point
// holds.
type AOFIncr struct {
	Name   string `json:"name"`
	Seq    int64  `json:"seq"`
	Length int64  `json:"length"`
}

// Validate checks what a chain relies on: a chain id, plain file names,
// increasing incr sequence numbers and lengths that are not negative.
func (p *AOFPoint) Validate() error {
	if !ValidChainID(p.Chain) {
		return fmt.Errorf("redis point: chain id %q is not 32 hex digits", p.Chain)
	}
	if err := ValidName(p.DirName); err != nil {
		return fmt.Errorf("redis point: dir_name: %w", err)
	}
	if err := ValidName(p.FileName); err != nil {
		return fmt.Errorf("redis point: file_name: %w", err)
	}
	names := map[string]bool{}
	if p.Base != nil {
		if err := ValidName(p.Base.Name); err != nil {
			return fmt.Errorf("redis point: base: %w", err)
		}
		if p.Base.Seq < 1 {
			return fmt.Errorf("redis point: base seq %d", p.Base.Seq)
		}
		names[p.Base.Name] = true
	}
	if len(p.Incrs) == 0 {
		return errors.New("redis point: no incr file")
	}
	for i, in := range p.Incrs {
		if err := ValidName(in.Name); err != nil {
			return fmt.Errorf("redis point: incr %d: %w", i, err)
		}
		if names[in.Name] {
			return fmt.Errorf("redis point: %q named twice", in.Name)
		}
		names[in.Name] = true
		if in.Seq < 1 || i > 0 && in.Seq <= p.Incrs[i-1].Seq {
			return fmt.Errorf("redis point: incr %q: seq %d does not follow the one before", in.Name, in.Seq)
		}
		if in.Length < 0 {
			return fmt.Errorf("redis point: incr %q: length %d", in.Name, in.Length)
		}
	}
	return nil
}

// Position is where the chain's tail objects continue the point: the last
// incr file and its length.
func (p *AOFPoint) Position() (seq, off int64) {
	last := p.Incrs[len(p.Incrs)-1]
	return last.Seq, last.Length
}

// Incr returns the point's incr file of sequence number seq.
func (p *AOFPoint) Incr(seq int64) (AOFIncr, bool) {
	for _, in := range p.Incrs {
		if in.Seq == seq {
			return in, true
		}
	}
	return AOFIncr{}, false
}

// NewChainID returns a fresh random chain id.
func NewChainID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b[:])
}

// ValidChainID reports whether s is 32 lower-case hex digits.
func ValidChainID(s string) bool {
	if len(s) != 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHexDigit(s[i]) {
			return false
		}
	}
	return true
}

func isHexDigit(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// ErrAOFSwitched is wrapped by the error of a backup during which a rewrite
// switched the AOF's files; the backup is tried again once.
var ErrAOFSwitched = errors.New("an AOF rewrite switched files while they were read")

// AOFConfig is what a redis-server says of its AOF.
type AOFConfig struct {
	Dir        string // dir
	DirName    string // appenddirname
	FileName   string // appendfilename
	Timestamps bool   // aof-timestamp-enabled
	AutoGCOff  bool   // aof-disable-auto-gc
}

// AOFDir is the directory that holds the AOF files.
func (c AOFConfig) AOFDir(dataDir string) string { return filepath.Join(dataDir, c.DirName) }

// ManifestName is the manifest's file name.
func (c AOFConfig) ManifestName() string { return c.FileName + ".manifest" }

// RedisAOF is the source of the redis kind: a redis-server 7 with
// appendonly yes, whose dir is readable here as DataDir.
type RedisAOF struct {
	addr    string
	dataDir string
	o       RedisAOFOptions
	client  *redis.Client
}

// RedisAOFOptions configure a RedisAOF.
type RedisAOFOptions struct {
	// Chain is the chain the point joins; empty: a new chain.
	Chain string
	// BaseOnly lists the base file whole and the first incr file at length 0:
	// the base snapshot follow stores after a rewrite, whose incr bytes
	// are in tail objects. The manifest's base must be of sequence number
	// WantBase, else Freeze fails with ErrAOFSwitched.
	BaseOnly bool
	WantBase int64
	Log      *slog.Logger
}

var _ Source = (*RedisAOF)(nil)

// NewRedisAOF returns the source for the redis-server at addr whose dir is
// dataDir. Close it when done.
func NewRedisAOF(addr, dataDir string, o RedisAOFOptions) *RedisAOF {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := redis.NewClient(&redis.Options{
		Addr:         addr,
		DialTimeout:  redisDialTimeout,
		ReadTimeout:  redisCommandTimeout,
		WriteTimeout: redisCommandTimeout,
		PoolSize:     2,
		MaxRetries:   1,
		// CLIENT SETINFO is Redis 7.2; Debian's 7.0 answers it with an
		// error that go-redis logs.
		DisableIdentity:       true,
		ContextTimeoutEnabled: true,
	})
	return &RedisAOF{addr: addr, dataDir: dataDir, o: o, client: c}
}

// Close closes the connections to the server.
func (r *RedisAOF) Close() error { return r.client.Close() }

// Info describes the source.
func (r *RedisAOF) Info() Info {
	return Info{Kind: KindRedis, Address: r.addr, DataDir: r.dataDir}
}

// Config asks the server for its AOF settings. A server without
// appendonly yes is an error that says how to change it.
func (r *RedisAOF) Config(ctx context.Context) (AOFConfig, error) {
	m, err := r.client.ConfigGet(ctx, "*").Result()
	if err != nil {
		if ctx.Err() == nil && isConnError(err) {
			return AOFConfig{}, fmt.Errorf("connect to redis-server at %s: %w (is it running? set its address with --server or SNAP_SERVER)", r.addr, err)
		}
		return AOFConfig{}, fmt.Errorf("redis-server at %s: CONFIG GET: %w", r.addr, err)
	}
	if _, ok := m["appenddirname"]; !ok {
		return AOFConfig{}, fmt.Errorf("redis-server at %s has no appenddirname setting: the redis source needs Redis 7 or newer (multi-part AOF)", r.addr)
	}
	if m["appendonly"] != "yes" {
		return AOFConfig{}, fmt.Errorf("redis-server at %s has appendonly %s: set appendonly yes in its config (or CONFIG SET appendonly yes, then CONFIG REWRITE); the redis source backs up the append-only file", r.addr, m["appendonly"])
	}
	c := AOFConfig{
		Dir: m["dir"], DirName: m["appenddirname"], FileName: m["appendfilename"],
		Timestamps: m["aof-timestamp-enabled"] == "yes", AutoGCOff: m["aof-disable-auto-gc"] == "yes",
	}
	if err := ValidName(c.DirName); err != nil {
		return AOFConfig{}, fmt.Errorf("redis-server at %s: appenddirname: %w", r.addr, err)
	}
	if err := ValidName(c.FileName); err != nil {
		return AOFConfig{}, fmt.Errorf("redis-server at %s: appendfilename: %w", r.addr, err)
	}
	return c, nil
}

// SetAutoGCOff sets aof-disable-auto-gc.
func (r *RedisAOF) SetAutoGCOff(ctx context.Context, off bool) error {
	v := "no"
	if off {
		v = "yes"
	}
	if err := r.client.ConfigSet(ctx, "aof-disable-auto-gc", v).Err(); err != nil {
		return fmt.Errorf("redis-server at %s: CONFIG SET aof-disable-auto-gc %s: %w", r.addr, v, err)
	}
	return nil
}

// Ping checks the server answers.
func (r *RedisAOF) Ping(ctx context.Context) error { return r.client.Ping(ctx).Err() }

func isConnError(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || strings.Contains(err.Error(), "connection refused")
}

// maxManifest bounds the manifest read (ParseAOFManifest refuses more).
const maxManifest = 1 << 20

// ReadAOFManifest reads and parses the manifest in aofDir; it returns the
// bytes read too, so a caller can tell whether it changed.
func ReadAOFManifest(aofDir, name string) (*AOFManifest, []byte, error) {
	p := filepath.Join(aofDir, name)
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("no AOF manifest %s: is --data Redis's dir, and is appendonly on? (%w)", p, err)
		}
		return nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxManifest+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read %s: %w", p, err)
	}
	m, err := ParseAOFManifest(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", p, err)
	}
	return m, data, nil
}

// ScanAOFFile scans the first size bytes of the incr file at path and
// returns the scanner, which then knows where commands and transactions
// end; an error for bytes that are not an AOF or a file shorter than
// size. Bytes of a command not whole by size are left unscanned.
func ScanAOFFile(path string, size int64) (*AOFScanner, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := NewAOFScanner(0)
	buf := make([]byte, 0, 1<<20)
	var read int64
	for read < size {
		n := int(min(int64(cap(buf)-len(buf)), size-read))
		if n == 0 {
			// One item is larger than the buffer: grow it.
			nb := make([]byte, len(buf), 2*cap(buf))
			copy(nb, buf)
			buf = nb
			continue
		}
		m, err := io.ReadFull(f, buf[len(buf):len(buf)+n])
		read += int64(m)
		buf = buf[:len(buf)+m]
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
				return nil, &ShortFileError{Name: filepath.Base(path), Dir: filepath.Dir(path), Want: size, Found: read}
			}
			return nil, err
		}
		used, err := sc.Scan(buf, nil)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		buf = buf[:copy(buf, buf[used:])]
	}
	return sc, nil
}

// AOFWholeLength returns the length of the longest prefix of the first
// size bytes of the incr file at path that is whole commands outside any
// MULTI ... EXEC, so that a point never ends inside a transaction.
func AOFWholeLength(path string, size int64) (int64, error) {
	sc, err := ScanAOFFile(path, size)
	if err != nil {
		return 0, err
	}
	return sc.SafeOffset(), nil
}

// Freeze lists the AOF as of now: the base file whole and each incr file
// up to its last whole command. It sets aof-disable-auto-gc yes until
// Release, so no listed file is deleted while it is read; a server that
// refuses that is checked instead (Frozen.Check): the manifest must be
// unchanged once the files were read.
func (r *RedisAOF) Freeze(ctx context.Context) (*Frozen, error) {
	if fi, err := os.Stat(r.dataDir); err != nil {
		return nil, fmt.Errorf("Redis's dir (set it with --data or SNAP_DATA): %w", err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("Redis's dir %s is not a directory", r.dataDir)
	}
	cfg, err := r.Config(ctx)
	if err != nil {
		return nil, err
	}
	if cfg.Dir != "" && filepath.Clean(cfg.Dir) != filepath.Clean(r.dataDir) {
		r.o.Log.Warn("the server's dir is not --data; reading --data", "server_dir", cfg.Dir, "data", r.dataDir)
	}
	gcSet := false
	if !cfg.AutoGCOff {
		if err := r.SetAutoGCOff(ctx, true); err != nil {
			r.o.Log.Warn("cannot hold the AOF's history files; checking the manifest after reading instead", "err", err)
		} else {
			gcSet = true
		}
	}
	release := func(ctx context.Context) error {
		if gcSet {
			return r.SetAutoGCOff(ctx, false)
		}
		return nil
	}
	fr, err := r.list(cfg)
	if err != nil {
		return nil, errors.Join(err, release(ctx))
	}
	fz := NewFrozen(fr.listing, cfg.AOFDir(r.dataDir), release)
	fz.AOF = fr.point
	if !gcSet {
		aofDir, manifest := cfg.AOFDir(r.dataDir), fr.manifest
		fz.Check = func(context.Context) error {
			_, now, err := ReadAOFManifest(aofDir, cfg.ManifestName())
			if err != nil {
				return err
			}
			if !bytes.Equal(now, manifest) {
				return fmt.Errorf("%s: %w", aofDir, ErrAOFSwitched)
			}
			return nil
		}
	}
	return fz, nil
}

type aofListing struct {
	listing  Listing
	point    *AOFPoint
	manifest []byte
}

// list reads the manifest and stats the files it names.
func (r *RedisAOF) list(cfg AOFConfig) (*aofListing, error) {
	aofDir := cfg.AOFDir(r.dataDir)
	m, data, err := ReadAOFManifest(aofDir, cfg.ManifestName())
	if err != nil {
		return nil, err
	}
	if len(m.Incrs) == 0 {
		return nil, fmt.Errorf("AOF manifest in %s names no incr file: not an AOF Redis appends to", aofDir)
	}
	chain := r.o.Chain
	if chain == "" {
		chain = NewChainID()
	}
	if r.o.BaseOnly && (m.Base == nil || m.Base.Seq != r.o.WantBase) {
		return nil, fmt.Errorf("%s: base %d expected: %w", aofDir, r.o.WantBase, ErrAOFSwitched)
	}
	pt := &AOFPoint{Chain: chain, DirName: cfg.DirName, FileName: cfg.FileName, Timestamps: cfg.Timestamps}
	var l Listing
	if m.Base != nil {
		fi, err := os.Stat(filepath.Join(aofDir, m.Base.Name))
		if err != nil {
			return nil, fmt.Errorf("AOF base file the manifest names: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("AOF base file %s is not a regular file", m.Base.Name)
		}
		pt.Base = &AOFBase{Name: m.Base.Name, Seq: m.Base.Seq}
		l.Files = append(l.Files, File{Name: m.Base.Name, Role: RoleAOFBase, Length: -1})
	}
	incrs := m.Incrs
	if r.o.BaseOnly {
		// The base is the state at the start of the first incr file after
		// it; a later one is a rewrite that started since, and its bytes,
		// like the first's, come from tail objects.
		incrs = incrs[:1]
	}
	for _, in := range incrs {
		p := filepath.Join(aofDir, in.Name)
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("AOF incr file the manifest names: %w", err)
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("AOF incr file %s is not a regular file", in.Name)
		}
		var n int64
		if !r.o.BaseOnly {
			if n, err = AOFWholeLength(p, fi.Size()); err != nil {
				return nil, err
			}
		}
		pt.Incrs = append(pt.Incrs, AOFIncr{Name: in.Name, Seq: in.Seq, Length: n})
		l.Files = append(l.Files, File{Name: in.Name, Role: RoleAOFIncr, Length: n})
	}
	if err := pt.Validate(); err != nil {
		return nil, err
	}
	return &aofListing{listing: l, point: pt, manifest: data}, nil
}
