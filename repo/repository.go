package repo

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/snapbackup/snap/chunker"
	"github.com/snapbackup/snap/internal/directio"
)

// FormatVersion is the repository format this code writes by default and
// the newest it reads (docs/design.md, "Compatibility"). A repository with
// a higher version is refused. Version 2 names snapshots and index files
// by host; version 1 (InitOptions.FormatVersion) is the flat layout older
// snaps read.
const FormatVersion = 2

// Config is the repository's configuration, stored encrypted as "config".
type Config struct {
	Version    int    `json:"version"`
	ID         string `json:"id"`
	ChunkerMin int    `json:"chunker_min"`
	ChunkerAvg int    `json:"chunker_avg"`
	ChunkerMax int    `json:"chunker_max"`
	PackSize   int    `json:"pack_size"`
	// Compression is the default for new blobs: "auto" (chosen per blob,
	// seal.go), "off", "fastest", "default" or "better". Readers need only
	// the per-blob flag.
	Compression string `json:"compression"`
}

const (
	DefaultPackSize = 16 << 20
	minPackSize     = 1 << 20
	maxPackSize     = 512 << 20
)

// CompressionLevels maps Config.Compression's fixed levels to zstd levels;
// "auto" and "off" are the other known settings.
var CompressionLevels = map[string]zstd.EncoderLevel{
	"fastest": zstd.SpeedFastest,
	"default": zstd.SpeedDefault,
	"better":  zstd.SpeedBetterCompression,
}

func (c *Config) validate() error {
	if c.Version > FormatVersion {
		return fmt.Errorf("repository format version %d is newer than this snap supports (%d); upgrade snap", c.Version, FormatVersion)
	}
	if c.Version < 1 {
		return fmt.Errorf("%w: config has format version %d", ErrCorrupt, c.Version)
	}
	if _, err := c.chunkerParams([32]byte{}); err != nil {
		return fmt.Errorf("%w: config: %v", ErrCorrupt, err)
	}
	return nil
}

// validateDefaults checks the writer defaults when a repository is created.
// Readers do not need them, so Open tolerates values it does not know (a
// newer snap may add a compression level) and newRepository falls back.
func (c *Config) validateDefaults() error {
	if c.PackSize < minPackSize || c.PackSize > maxPackSize {
		return fmt.Errorf("pack size %d outside [%d, %d]", c.PackSize, minPackSize, maxPackSize)
	}
	if !knownCompression(c.Compression) {
		return fmt.Errorf("unknown compression %q (want auto, off, fastest, default or better)", c.Compression)
	}
	return nil
}

func knownCompression(c string) bool {
	_, ok := CompressionLevels[c]
	return ok || c == "off" || c == "auto"
}

func (c *Config) chunkerParams(seed [32]byte) (chunker.Params, error) {
	p := chunker.Params{Min: c.ChunkerMin, Avg: c.ChunkerAvg, Max: c.ChunkerMax, Seed: seed}
	return p, p.Validate()
}

// InitOptions are the choices made once when a repository is created.
type InitOptions struct {
	ChunkerMin, ChunkerAvg, ChunkerMax int // zero: defaults
	PackSize                           int // zero: DefaultPackSize
	Compression                        string
	KDF                                KDFParams // zero: DefaultKDF
	// GeneratedKey: the password is a generated key (NewGeneratedKey),
	// and the first key file is a generated key's, which opens without a
	// KDF; KDF is then unused.
	GeneratedKey bool
	// FormatVersion is 1 or 2; zero: FormatVersion. Version 1 is the
	// flat layout, for a repository that older snaps share.
	FormatVersion int
}

// Options tune an open repository; they do not change the format.
type Options struct {
	Log         *slog.Logger
	Connections int    // parallel uploads and downloads; zero: 4
	Compression string // overrides the config's default for new blobs when set
	// LowMemory compresses and decompresses on one goroutine with zstd's
	// smaller buffers: for a process that runs beside a server for months
	// (snap follow) and whose memory matters more than its throughput.
	LowMemory bool
}

// Repository is an open, unlocked repository.
type Repository struct {
	be    Backend
	keys  *Keys
	mk    MasterKey // for snap key add (keyadmin.go)
	key   openedKey // the key file that opened it
	cfg   Config
	idx   *Index
	log   *slog.Logger
	conns int

	enc      *encoders
	dec      *zstd.Decoder
	chunkerP chunker.Params

	saver    *Saver    // the default session: SaveBlob, Known, Flush, Stats
	sealBufs sync.Pool // of *[]byte, sealBlob's buffers, for every session

	indexMu    sync.Mutex  // held by LoadIndex, RefreshIndex and widenIndex
	indexSeen  map[ID]bool // index files LoadIndex read; see RefreshIndex
	superseded map[ID]bool // index files those name in Supersedes
	widened    bool        // widenIndex loaded the files outside the scope
	scopeHost  string      // ScopeTo
	scopeTag   string      // its HostTag
	// A scoped load parks the shared files (parkShared): read and
	// verified, their supersedes taken into account, their blobs added
	// only when first needed (unpark). missBytes counts what the saver
	// found new meanwhile.
	parkShared bool
	parked     []parkedIndex
	parkedN    atomic.Int64 // len(parked), read without indexMu
	parkedSize int64
	missBytes  atomic.Int64
}

// Init creates a repository in be, which must be empty, with one key file
// for password. Key first, config last: a repository is initialized once its
// config exists.
func Init(ctx context.Context, be Backend, password string, o InitOptions, ro Options) (*Repository, error) {
	if password == "" {
		return nil, errors.New("empty password: set SNAP_PASSWORD or --password-file")
	}
	if _, err := be.Stat(ctx, Handle{Type: ConfigFile}); err == nil {
		return nil, fmt.Errorf("a repository already exists at %s", be.Location())
	} else if !errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("stat config in %s: %w", be.Location(), err)
	}
	version := orDefault(o.FormatVersion, FormatVersion)
	if version < 1 || version > FormatVersion {
		return nil, fmt.Errorf("format version %d: this snap writes 1 or %d", version, FormatVersion)
	}
	cfg := Config{
		Version:     version,
		ChunkerMin:  orDefault(o.ChunkerMin, chunker.DefaultMin),
		ChunkerAvg:  orDefault(o.ChunkerAvg, chunker.DefaultAvg),
		ChunkerMax:  orDefault(o.ChunkerMax, chunker.DefaultMax),
		PackSize:    orDefault(o.PackSize, DefaultPackSize),
		Compression: o.Compression,
	}
	if cfg.Compression == "" {
		cfg.Compression = "auto"
	}
	var rid [16]byte
	if _, err := rand.Read(rid[:]); err != nil {
		return nil, err
	}
	cfg.ID = fmt.Sprintf("%x", rid)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := cfg.validateDefaults(); err != nil {
		return nil, err
	}
	var mk MasterKey
	if _, err := rand.Read(mk[:]); err != nil {
		return nil, err
	}
	kdf := o.KDF
	if kdf == (KDFParams{}) {
		kdf = DefaultKDF
	}
	var kf []byte
	var err error
	if o.GeneratedKey {
		kdf = KDFParams{}
		kf, err = newGeneratedKeyFile(mk, password, time.Now())
	} else {
		kf, err = newKeyFile(mk, password, kdf, time.Now())
	}
	if err != nil {
		return nil, err
	}
	kh := Handle{Type: KeyFile, Name: Hash(kf).String()}
	if err := be.Save(ctx, kh, kf); err != nil {
		return nil, fmt.Errorf("save %s: %w", kh, err)
	}
	keys, err := deriveKeys(mk)
	if err != nil {
		return nil, err
	}
	plain, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	if err := be.Save(ctx, Handle{Type: ConfigFile}, keys.Seal(nil, plain)); err != nil {
		if errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("a repository already exists at %s", be.Location())
		}
		return nil, fmt.Errorf("save config: %w", err)
	}
	r, err := newRepository(be, keys, cfg, ro)
	if err != nil {
		return nil, err
	}
	r.mk, r.key = mk, openedKey{name: kh.Name, kdf: kdf}
	return r, nil
}

func orDefault(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

// ErrNoRepository is returned when the location holds no repository: no
// config object. Backends that can tell without a read (repo/local's
// Open) return it too.
var ErrNoRepository = errors.New("no snap repository")

// Open opens the repository in be with password. It does not load the
// index; call LoadIndex before saving or loading blobs.
func Open(ctx context.Context, be Backend, password string, ro Options) (*Repository, error) {
	if password == "" {
		return nil, errors.New("empty password: set SNAP_PASSWORD or --password-file")
	}
	sealed, err := loadAll(ctx, be, Handle{Type: ConfigFile})
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w at %s (run snap init)", ErrNoRepository, be.Location())
	}
	if err != nil {
		return nil, fmt.Errorf("load config: %w", err)
	}
	mk, opened, err := loadMasterKey(ctx, be, password)
	if err != nil {
		return nil, err
	}
	keys, err := deriveKeys(mk)
	if err != nil {
		return nil, err
	}
	plain, err := keys.Open(nil, sealed)
	if err != nil {
		return nil, fmt.Errorf("config in %s: %w", be.Location(), err)
	}
	cfg, err := DecodeConfig(plain)
	if err != nil {
		return nil, fmt.Errorf("config in %s: %w", be.Location(), err)
	}
	r, err := newRepository(be, keys, cfg, ro)
	if err != nil {
		return nil, err
	}
	r.mk, r.key = mk, opened
	return r, nil
}

// DecodeConfig parses and validates a config's plaintext.
func DecodeConfig(plain []byte) (Config, error) {
	var cfg Config
	if err := json.Unmarshal(plain, &cfg); err != nil {
		return cfg, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return cfg, cfg.validate()
}

func newRepository(be Backend, keys *Keys, cfg Config, o Options) (*Repository, error) {
	r := &Repository{be: be, keys: keys, cfg: cfg, idx: NewIndex(), log: o.Log, conns: o.Connections}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.conns <= 0 {
		r.conns = 4
	}
	var err error
	if r.chunkerP, err = cfg.chunkerParams(keys.GearSeed()); err != nil {
		return nil, err
	}
	comp := cfg.Compression
	if !knownCompression(comp) {
		r.log.Warn("repository default compression unknown to this snap; using auto", "compression", comp)
		comp = "auto"
	}
	if o.Compression != "" {
		comp = o.Compression
	}
	if r.cfg.PackSize < minPackSize || r.cfg.PackSize > maxPackSize {
		r.log.Warn("repository pack size out of range; clamping", "pack_size", r.cfg.PackSize)
		r.cfg.PackSize = min(max(r.cfg.PackSize, minPackSize), maxPackSize)
	}
	if !knownCompression(comp) {
		return nil, fmt.Errorf("unknown compression %q (want auto, off, fastest, default or better)", comp)
	}
	if r.enc, err = newEncoders(comp, o.LowMemory); err != nil {
		return nil, err
	}
	decoders := runtime.GOMAXPROCS(0)
	if o.LowMemory {
		decoders = 1
	}
	r.dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(decoders),
		zstd.WithDecoderMaxMemory(uint64(maxBlobSize)+1), zstd.WithDecoderLowmem(o.LowMemory))
	if err != nil {
		return nil, err
	}
	r.saver = r.NewSaver(SaverOptions{})
	return r, nil
}

// maxBlobSize bounds a blob's plaintext: the largest chunk the chunker may
// make, and the largest tree we write.
const maxBlobSize = 64 << 20

// maxSealedBlob bounds a blob as stored: a writer compresses a blob only
// when that makes it shorter, so none is longer sealed than its plaintext
// stored as it is.
const maxSealedBlob = maxBlobSize + Overhead

// checkBlobSize refuses an entry whose lengths exceed the blob limit,
// before any buffer is sized by them.
func checkBlobSize(e BlobEntry) error {
	if e.Length > maxSealedBlob || e.RawLength > maxBlobSize {
		return fmt.Errorf("%w: sealed length %d, raw length %d: over the %d-byte blob limit", ErrCorrupt, e.Length, e.RawLength, maxBlobSize)
	}
	return nil
}

// Close releases resources. It does not flush: unsaved packs are dropped
// (uploads already under way finish first).
func (r *Repository) Close() error {
	r.saver.abort()
	r.enc.close()
	r.dec.Close()
	return nil
}

func (r *Repository) Backend() Backend              { return r.be }
func (r *Repository) Config() Config                { return r.cfg }
func (r *Repository) Index() *Index                 { return r.idx }
func (r *Repository) ChunkerParams() chunker.Params { return r.chunkerP }
func (r *Repository) Connections() int              { return r.conns }

// BlobID is the keyed id of plaintext.
func (r *Repository) BlobID(plain []byte) ID { return r.keys.BlobID(plain) }

// Stored sizes of the objects that are read whole (docs/design.md gives
// each with its format), so that a damaged object, or a stranger's file
// under a repository prefix, cannot make a reader allocate without limit.
// Writers keep to them too, so nothing snap stores is refused by a reader.
const (
	// maxSmallObject bounds the config, key files and lock objects: a few
	// hundred bytes of JSON each.
	maxSmallObject = 64 << 10
	// maxSnapshotObject bounds a snapshot: about a kilobyte of JSON; the
	// file list is in its tree blob.
	maxSnapshotObject = 4 << 20
	// maxTailObject bounds a tail object: what a follower copies of a
	// log in one tick, or a compactor's merge of such tails. Larger
	// stretches of log go into packs.
	maxTailObject = 16 << 20
	// maxIndexObject bounds an index file: at 44 to 49 bytes an entry,
	// some 23 million blobs (23 TiB at the default 1 MiB chunk), far more
	// than the in-memory index (60 bytes a blob) of a host snap runs on
	// holds. maxIndexPacks and maxBlobsPerPack would allow 2^44 entries.
	maxIndexObject = 1 << 30
	// statAbove is the bound above which an object whose size no listing
	// gave is stat'ed before it is read, so an oversized one is refused
	// before any of it is read or allocated. Below it, reading up to the
	// bound costs less than the extra request.
	statAbove = 16 << 20
)

// maxObjectSize is the bound on an object of type t read whole. Packs are
// never read whole (ReadBlobs, ReadPackHeader, CheckPack read ranges or
// stream).
func maxObjectSize(t FileType) int64 {
	switch t {
	case ConfigFile, KeyFile, LockFile:
		return maxSmallObject
	case SnapshotFile:
		return maxSnapshotObject
	case TailFile:
		return maxTailObject
	case ClusterFile:
		return maxSmallObject
	case IndexFile:
		return maxIndexObject
	}
	return 0
}

// loadAll reads a whole object, of at most maxObjectSize(h.Type) bytes.
func loadAll(ctx context.Context, be Backend, h Handle) ([]byte, error) {
	return loadSized(ctx, be, h, -1)
}

// loadSized is loadAll of an object that a listing says is size bytes
// long (-1: not known). The size is checked against the bound before
// anything is read, and the read stops with an error once more bytes
// arrive than either allows, so neither a lying listing nor a lying
// stream makes it allocate more.
func loadSized(ctx context.Context, be Backend, h Handle, size int64) ([]byte, error) {
	bound := maxObjectSize(h.Type)
	if size < 0 && bound > statAbove {
		fi, err := be.Stat(ctx, h)
		if err != nil {
			return nil, err
		}
		size = fi.Size
	}
	if size > bound {
		return nil, fmt.Errorf("%w: %d bytes, over the %d bytes %s may have: not written by snap, or damaged", ErrCorrupt, size, bound, objectNoun(h.Type))
	}
	var data []byte
	err := be.Load(ctx, h, 0, 0, func(rd io.Reader) error {
		var err error
		data, err = readBounded(rd, h.Type, size, bound)
		return err
	})
	return data, err
}

// readBounded reads rd to its end: at most bound bytes, and at most size
// bytes where size is not negative (then in one allocation). More is an
// error wrapping ErrCorrupt.
func readBounded(rd io.Reader, t FileType, size, bound int64) ([]byte, error) {
	limit := bound
	var buf bytes.Buffer
	if size >= 0 {
		limit = min(size, bound)
		// Room for one byte too many without growing: ReadFrom reads
		// into free space of at least MinRead.
		buf.Grow(int(limit) + bytes.MinRead)
	}
	n, err := buf.ReadFrom(io.LimitReader(rd, limit+1))
	if err != nil {
		return nil, err
	}
	if n > limit {
		if limit < bound {
			return nil, fmt.Errorf("%w: holds more than the %d bytes its listing says", ErrCorrupt, size)
		}
		return nil, fmt.Errorf("%w: more than the %d bytes %s may have: not written by snap, or damaged", ErrCorrupt, bound, objectNoun(t))
	}
	return buf.Bytes(), nil
}

// objectNoun names an object of type t in messages.
func objectNoun(t FileType) string {
	switch t {
	case ConfigFile:
		return "the config"
	case KeyFile:
		return "a key file"
	case IndexFile:
		return "an index file"
	case SnapshotFile:
		return "a snapshot"
	case TailFile:
		return "a tail object"
	case ClusterFile:
		return "a cluster object"
	case LockFile:
		return "a lock object"
	case PackFile:
		return "a pack"
	}
	return fmt.Sprintf("a %s object", t)
}

// SaveUnpacked encrypts plain and stores it as an object of type t named by
// the hash of its stored bytes. Saving is idempotent.
func (r *Repository) SaveUnpacked(ctx context.Context, t FileType, plain []byte) (ID, error) {
	if n, bound := int64(len(plain))+Overhead, maxObjectSize(t); n > bound {
		// Stored, it could never be read back.
		return ID{}, fmt.Errorf("save %s of %d bytes: over the %d bytes %s may have", t, n, bound, objectNoun(t))
	}
	sealed := r.keys.Seal(nil, plain)
	id := Hash(sealed)
	h := Handle{Type: t, Name: id.String()}
	if err := r.be.Save(ctx, h, sealed); err != nil && !errors.Is(err, ErrExists) {
		return id, fmt.Errorf("save %s: %w", h, err)
	}
	return id, nil
}

// LoadUnpacked loads, verifies and decrypts the object t/id.
func (r *Repository) LoadUnpacked(ctx context.Context, t FileType, id ID) ([]byte, error) {
	return r.loadUnpacked(ctx, t, id, -1)
}

// loadUnpacked is LoadUnpacked of an object a listing says is size bytes
// long (-1: not known).
func (r *Repository) loadUnpacked(ctx context.Context, t FileType, id ID, size int64) ([]byte, error) {
	return r.loadHashed(ctx, Handle{Type: t, Name: id.String()}, id, size)
}

// loadHashed loads, verifies and decrypts h, whose name ends in id, the
// hash of its stored bytes; size is as for loadSized.
func (r *Repository) loadHashed(ctx context.Context, h Handle, id ID, size int64) ([]byte, error) {
	sealed, err := loadSized(ctx, r.be, h, size)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	if Hash(sealed) != id {
		return nil, fmt.Errorf("%s: %w: content does not match its name", h, ErrCorrupt)
	}
	// In place: an index file's plaintext is as large as the file, and a
	// load holds one per connection.
	plain, err := r.keys.OpenInPlace(sealed)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	return plain, nil
}

// List calls fn with the id of every object of type t. Names that are not
// ids (stray files) are skipped with a warning.
func (r *Repository) List(ctx context.Context, t FileType, fn func(ID, int64) error) error {
	return r.be.List(ctx, t, func(fi FileInfo) error {
		id, err := ParseID(fi.Name)
		if err != nil {
			r.log.Warn("ignoring stray object", "type", t, "name", fi.Name)
			return nil
		}
		return fn(id, fi.Size)
	})
}

// LoadIndex reads the index files into memory: every one, or in a
// scoped version 2 repository (ScopeTo) the shared ones and the scope's.
// Index files superseded by another it read are skipped (prune writes the
// replacement before removing them).
func (r *Repository) LoadIndex(ctx context.Context) error {
	r.indexMu.Lock()
	defer r.indexMu.Unlock()
	return r.loadIndexLocked(ctx)
}

func (r *Repository) loadIndexLocked(ctx context.Context) error {
	// A prune removes index files only after writing the index that
	// supersedes them, so a file that vanished between listing and loading
	// means a newer listing has its replacement.
	for attempt := 1; ; attempt++ {
		files, err := r.listIndexScope(ctx)
		if err != nil {
			return err
		}
		r.resetIndex()
		r.parkShared = r.scoped()
		r.missBytes.Store(0)
		_, superseded, err := r.loadStreamed(ctx, files, nil, false)
		if errors.Is(err, ErrNotFound) && attempt < maxIndexListings {
			r.log.Debug("an index file was removed while loading (a prune); listing again")
			continue
		}
		if err != nil {
			r.resetIndex()
			return err
		}
		r.indexSeen = nil
		r.markSeen(files)
		r.superseded = superseded
		r.widened = false
		return nil
	}
}

// SaveIndex writes one index file describing packs, named for the
// repository's scope (SaveIndexAs with owner "").
func (r *Repository) SaveIndex(ctx context.Context, d *IndexData) (ID, error) {
	return r.SaveIndexAs(ctx, "", d)
}

// LoadBlob loads, decrypts, decompresses and verifies one blob, appending
// its plaintext to dst.
func (r *Repository) LoadBlob(ctx context.Context, id ID, dst []byte) ([]byte, error) {
	loc, ok := r.Lookup(id)
	if !ok && r.scoped() {
		// Another host's: load the index files outside the scope, once.
		if err := r.widenIndex(ctx); err != nil {
			return nil, fmt.Errorf("blob %s: %w", id, err)
		}
		loc, ok = r.idx.Lookup(id)
	}
	if !ok {
		return nil, fmt.Errorf("blob %s: %w", id, ErrNotIndexed)
	}
	var out []byte
	err := r.LoadBlobs(ctx, loc.Pack, []BlobEntry{loc.BlobEntry}, func(_ BlobEntry, plain []byte) error {
		out = append(dst, plain...)
		return nil
	})
	return out, err
}

// maxIndexListings bounds how often LoadIndex lists again when index files
// vanish under it; the last attempt reports the missing file.
const maxIndexListings = 5

// maxRangeGap is how far apart two wanted blobs of one pack may be and
// still be fetched in one request.
const maxRangeGap = 1 << 20

// maxRangeLen bounds one ranged read (unless a single blob is larger).
const maxRangeLen = 8 << 20

// LoadBlobs fetches the given blobs of one pack, in as few ranged reads as
// their positions allow, and calls fn with each verified plaintext in
// offset order (a blob listed twice, twice). The plaintext is only valid
// during the call.
//
// A range is streamed blob by blob, not read whole first, so a reader holds
// one sealed blob and its plaintext whatever the range's length.
func (r *Repository) LoadBlobs(ctx context.Context, pack ID, entries []BlobEntry, fn func(BlobEntry, []byte) error) error {
	entries = sortedByOffset(entries)
	bufs := getBlobBufs()
	defer putBlobBufs(bufs)
	next := 0 // the entry fn sees next
	return r.ReadBlobs(ctx, pack, entries,
		func(e BlobEntry) ([]byte, error) { return bufs.sealedFor(int64(e.Length)), nil },
		func(e BlobEntry, sealed []byte) error {
			plain, err := r.OpenBlob(pack, e, sealed, bufs.plainFor(e, int64(len(sealed))))
			if err != nil {
				return err
			}
			for ; next < len(entries) && entries[next] == e; next++ {
				if err := fn(e, plain); err != nil {
					return err
				}
			}
			return nil
		})
}

// ReadBlobs reads the sealed bytes of the given blobs of one pack, in as
// few ranged reads as their positions allow, into buffers of the
// caller's, and hands each to fn in offset order, once per blob however
// often it is listed. into(e) returns a buffer of at least e.Length
// bytes; from fn on the buffer is the caller's again, to open with
// OpenBlob, here or in another goroutine. So a restore reads packs in
// goroutines that wait on the storage and decodes in others that keep the
// cores busy. Where the backend reads with direct I/O (PlacedReader) and
// the buffer starts at a directio.Align boundary with a capacity of
// PlacedLen(e.Offset%directio.Align+e.Length), the blob is read straight
// into it, at that remainder, without a copy. An error from into or fn
// ends the read and is returned as it is.
func (r *Repository) ReadBlobs(ctx context.Context, pack ID, entries []BlobEntry, into func(BlobEntry) ([]byte, error), fn func(BlobEntry, []byte) error) error {
	entries = sortedByOffset(entries)
	h := Handle{Type: PackFile, Name: pack.String()}
	for _, e := range entries {
		if err := checkBlobSize(e); err != nil {
			return fmt.Errorf("pack %s blob %s: %w", pack, e.ID, err)
		}
	}
	for start := 0; start < len(entries); {
		end := start + 1
		for end < len(entries) &&
			int64(entries[end].Offset) <= int64(entries[end-1].Offset)+int64(entries[end-1].Length)+maxRangeGap &&
			int64(entries[end].Offset)+int64(entries[end].Length)-int64(entries[start].Offset) <= maxRangeLen {
			end++
		}
		group := entries[start:end]
		first, last := group[0], group[len(group)-1]
		rangeStart := int64(first.Offset)
		rangeLen := int64(last.Offset) + int64(last.Length) - rangeStart
		// done counts the entries dealt with. A backend may call the
		// reading function again after a broken read; it then starts at
		// the range's start again and skips them, so fn sees each blob
		// once. held is the buffer into gave for entry heldFor, whose
		// read broke: the next try reads into it again.
		done, heldFor := 0, -1
		var held []byte
		var blobErr, fnErr error
		err := r.be.Load(ctx, h, rangeStart, rangeLen, func(rd io.Reader) error {
			pos := rangeStart // pack offset of rd's next byte
			pr, placed := rd.(PlacedReader)
			for i, e := range group {
				if i < done {
					continue
				}
				off, n := int64(e.Offset), int64(e.Length)
				if off < pos {
					// Only the same blob listed twice can start before the
					// previous one ended (pack headers tile their blobs).
					if i == 0 || group[i-1] != e {
						blobErr = fmt.Errorf("pack %s blob %s: %w: overlaps the blob before it", pack, e.ID, ErrCorrupt)
						return blobErr
					}
					done = i + 1
					continue
				}
				if heldFor != i {
					b, err := into(e)
					if err != nil {
						fnErr = err
						return fnErr
					}
					held, heldFor = b, i
				}
				var sealed []byte
				pad := int(off & (directio.Align - 1))
				if placed && directio.Aligned(held) && cap(held) >= PlacedLen(pad+int(n)) {
					if _, err := pr.ReadPlaced(held[:cap(held)], off-pos, int(n)); err != nil {
						return err
					}
					sealed = held[pad : pad+int(n)]
				} else {
					if _, err := io.CopyN(io.Discard, rd, off-pos); err != nil {
						return eofIsShort(err)
					}
					if _, err := io.ReadFull(rd, held[:n]); err != nil {
						return err
					}
					sealed = held[:n]
				}
				pos = off + n
				held, heldFor = nil, -1
				if fnErr = fn(e, sealed); fnErr != nil {
					return fnErr
				}
				done = i + 1
			}
			return nil
		})
		switch {
		case err == nil:
		case fnErr != nil && errors.Is(err, fnErr):
			return fnErr // the caller's own
		case blobErr != nil && errors.Is(err, blobErr):
			return blobErr
		case errors.Is(err, io.ErrUnexpectedEOF):
			return fmt.Errorf("load %s: %w: %w", h, ErrCorrupt, err)
		default:
			return fmt.Errorf("load %s: %w", h, err)
		}
		start = end
	}
	return nil
}

// blobBufs are a blob reader's two buffers: the sealed blob as read, in
// which compressed blobs are also decrypted, and the plaintext.
// They are pooled: a restore reads hundreds of packs, and fresh
// megabyte buffers cost a page fault per page and their zeroing.
type blobBufs struct {
	sealed []byte
	plain  []byte
}

var blobBufPool = sync.Pool{New: func() any { return new(blobBufs) }}

func getBlobBufs() *blobBufs { return blobBufPool.Get().(*blobBufs) }

func putBlobBufs(b *blobBufs) {
	if cap(b.sealed) > maxPooledBuf {
		b.sealed = nil // an outsized blob's; let it go
	}
	if cap(b.plain) > maxPooledBuf {
		b.plain = nil
	}
	blobBufPool.Put(b)
}

// maxPooledBuf bounds the buffers kept for reuse: four times the default
// chunker's average blob, which nearly all blobs are below; a larger one
// gets a buffer of its own.
const maxPooledBuf = 4 << 20

// sealedFor returns a buffer of n bytes for a sealed blob.
func (b *blobBufs) sealedFor(n int64) []byte {
	if int64(cap(b.sealed)) < n {
		b.sealed = make([]byte, n)
	}
	return b.sealed[:n]
}

// plainFor returns an empty slice with room for e's plaintext. sealedLen
// bounds the plaintext of a stored blob whose index entry lies about its
// raw length.
func (b *blobBufs) plainFor(e BlobEntry, sealedLen int64) []byte {
	need := int(min(max(int64(e.RawLength), sealedLen), maxBlobSize))
	if cap(b.plain) < need {
		b.plain = make([]byte, need)
	}
	return b.plain[:0]
}

// eofIsShort turns the io.EOF of a discard that ran out of bytes into the
// short read it is.
func eofIsShort(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func sortedByOffset(entries []BlobEntry) []BlobEntry {
	for i := 1; i < len(entries); i++ {
		if entries[i].Offset < entries[i-1].Offset {
			s := append([]BlobEntry(nil), entries...)
			sortEntries(s)
			return s
		}
	}
	return entries
}

// OpenBlob decrypts, decompresses and verifies a blob of pack, whose
// sealed bytes ReadBlobs read. The plaintext is appended to dst, in dst's
// array when it has the room: a caller can decode a blob at an address
// that suits direct I/O. sealed is overwritten: a compressed blob is
// decrypted where it lies. Errors name the pack and the blob.
func (r *Repository) OpenBlob(pack ID, e BlobEntry, sealed, dst []byte) ([]byte, error) {
	plain, err := r.openBlob(e, sealed, dst)
	if err != nil {
		return nil, fmt.Errorf("pack %s blob %s: %w", pack, e.ID, err)
	}
	return plain, nil
}

// openBlob is OpenBlob without the pack's name in its errors.
func (r *Repository) openBlob(e BlobEntry, sealed, dst []byte) ([]byte, error) {
	if err := checkBlobSize(e); err != nil {
		return nil, err
	}
	var raw []byte
	if e.Compression == CompressionZstd {
		// The plaintext starts exactly where the ciphertext does, the one
		// overlap the AEAD interface allows.
		if len(sealed) < nonceSize {
			return nil, fmt.Errorf("%w: %d bytes is shorter than nonce and tag", ErrCorrupt, len(sealed))
		}
		p, err := r.keys.Open(sealed[nonceSize:nonceSize], sealed)
		if err != nil {
			return nil, err
		}
		raw, err = r.dec.DecodeAll(p, dst)
		if err != nil {
			return nil, fmt.Errorf("%w: decompress: %v", ErrCorrupt, err)
		}
	} else {
		var err error
		if raw, err = r.keys.Open(dst, sealed); err != nil {
			return nil, err
		}
	}
	if len(raw) != int(e.RawLength) {
		return nil, fmt.Errorf("%w: %d bytes, the index says %d", ErrCorrupt, len(raw), e.RawLength)
	}
	if r.keys.BlobID(raw) != e.ID {
		return nil, fmt.Errorf("%w: content does not match its id", ErrCorrupt)
	}
	return raw, nil
}

// ReadPackHeader loads and decodes the header of a pack (used by check and
// to rebuild an index).
func (r *Repository) ReadPackHeader(ctx context.Context, pack ID, size int64) ([]BlobEntry, error) {
	h := Handle{Type: PackFile, Name: pack.String()}
	tailLen := min(size, 64<<10)
	var tail []byte
	err := r.be.Load(ctx, h, size-tailLen, tailLen, func(rd io.Reader) error {
		tail = make([]byte, tailLen)
		_, err := io.ReadFull(rd, tail)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", h, err)
	}
	hl, err := parsePackTrailer(tail, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	var sealed []byte
	if int64(hl)+packTrailerSize <= tailLen {
		sealed = tail[tailLen-packTrailerSize-int64(hl) : tailLen-packTrailerSize]
	} else {
		err := r.be.Load(ctx, h, size-packTrailerSize-int64(hl), int64(hl), func(rd io.Reader) error {
			sealed = make([]byte, hl)
			_, err := io.ReadFull(rd, sealed)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("load %s header: %w", h, err)
		}
	}
	hdr, err := r.keys.Open(nil, sealed)
	if err != nil {
		return nil, fmt.Errorf("%s header: %w", h, err)
	}
	entries, err := DecodePackHeader(hdr, size, hl)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h, err)
	}
	return entries, nil
}

// Lookup says where the in-memory index has a blob: Index().Lookup, for
// readers that need no more of the index than that, except that a miss
// first adds the parked shared index files (see unpark).
func (r *Repository) Lookup(id ID) (Location, bool) {
	loc, ok := r.idx.Lookup(id)
	if !ok {
		if added, err := r.unpark(); added {
			if err != nil {
				r.log.Error("a shared index file cannot be decoded; its blobs are left out (run snap check)", "err", err)
			}
			loc, ok = r.idx.Lookup(id)
		}
	}
	return loc, ok
}
