// Package chain keeps Redis AOF chains: the base snapshots of a
// redis-server and the tail objects that hold every byte appended to its
// incr files after them, with the times they were read; it follows a live
// server, compacts the tail objects as they age, and restores the AOF as
// of any second (docs/design.md, "Redis chains").
package chain

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/source"
)

const (
	tailVersion = 1
	// MaxInline bounds the bytes a tail object holds inline; larger ones
	// hold data blobs.
	MaxInline = 4 << 20
	// maxHeader bounds a tail object's header (an hour of one-second marks
	// is about 150 KB of JSON).
	maxHeader = 8 << 20
	// maxPlain bounds a tail object's plaintext, decompressed.
	maxPlain = MaxInline + maxHeader + 64
	// maxLevel is the coarsest compaction level.
	maxLevel = 6 // len(windows)
)

// Tail is one tail object: bytes [Offset, End) of the incr file of
// sequence number Seq, and the marks of the ticks that read them.
type Tail struct {
	Version    int    `json:"version"`
	Chain      string `json:"chain"`
	Host       string `json:"host"`
	File       string `json:"file"`
	Seq        int64  `json:"seq"`
	Offset     int64  `json:"offset"`
	End        int64  `json:"end"`
	Level      int    `json:"level"`
	Timestamps bool   `json:"timestamps,omitempty"`
	// PrevEnd, on an object from byte 0, is how many bytes of the incr
	// file before follow stored (zero: not known), so a restore tells a
	// missing end of that file.
	PrevEnd int64 `json:"prev_end,omitempty"`
	// Marks: the bytes up to Ends[i] were in the file at Times[i] (unix
	// milliseconds); those after the mark before were appended after
	// Sinces[i]. Gaps lists the marks whose window follow did not watch.
	Ends   []int64   `json:"ends"`
	Times  []int64   `json:"times"`
	Sinces []int64   `json:"sinces"`
	Gaps   []int     `json:"gaps,omitempty"`
	Chunks []repo.ID `json:"chunks,omitempty"`
	Sizes  []uint32  `json:"sizes,omitempty"`

	Data []byte `json:"-"` // the inline bytes
}

// Ref is a tail object as its name describes it: what a listing gives.
type Ref struct {
	Name   string
	Size   int64
	Chain  string
	Seq    int64
	Offset int64
	End    int64
	T0, T1 int64 // first and last mark's time, unix milliseconds
	Gap    bool
}

// Time is the ref's last mark's time.
func (r Ref) Time() time.Time { return time.UnixMilli(r.T1) }

// First is the ref's first mark's time.
func (r Ref) First() time.Time { return time.UnixMilli(r.T0) }

// contains reports whether every mark of b is one of a's.
func (a Ref) contains(b Ref) bool {
	return a.Chain == b.Chain && a.Seq == b.Seq && a.Offset <= b.Offset && b.End <= a.End && a.T0 <= b.T0 && b.T1 <= a.T1
}

// prefix is the name of t without the hash.
func (t *Tail) prefix() string {
	flag := "n"
	if len(t.Gaps) > 0 {
		flag = "g"
	}
	return fmt.Sprintf("%s-%d-%d-%d-%d-%d-%s", t.Chain, t.Seq, t.Offset, t.End, t.Times[0], t.Times[len(t.Times)-1], flag)
}

// ParseName parses a tail object's name; ok is false for a name that is
// not one.
func ParseName(name string, size int64) (Ref, bool) {
	prefix, _, ok := repo.SplitNamed(name)
	if !ok {
		return Ref{}, false
	}
	f := strings.Split(prefix, "-")
	if len(f) != 7 || !source.ValidChainID(f[0]) || (f[6] != "g" && f[6] != "n") {
		return Ref{}, false
	}
	var n [5]int64
	for i := range n {
		v, err := strconv.ParseInt(f[i+1], 10, 64)
		if err != nil || v < 0 || strconv.FormatInt(v, 10) != f[i+1] {
			return Ref{}, false
		}
		n[i] = v
	}
	r := Ref{Name: name, Size: size, Chain: f[0], Seq: n[0], Offset: n[1], End: n[2], T0: n[3], T1: n[4], Gap: f[6] == "g"}
	if r.Seq < 1 || r.End < r.Offset || r.T1 < r.T0 {
		return Ref{}, false
	}
	return r, true
}

// ref is t's Ref, as its name would give.
func (t *Tail) ref() Ref {
	return Ref{Chain: t.Chain, Seq: t.Seq, Offset: t.Offset, End: t.End, T0: t.Times[0], T1: t.Times[len(t.Times)-1], Gap: len(t.Gaps) > 0}
}

// Validate checks a tail object's invariants.
func (t *Tail) Validate() error {
	switch {
	case t.Version != tailVersion:
		if t.Version > tailVersion {
			return fmt.Errorf("tail object format version %d is newer than this snap reads (%d); upgrade snap", t.Version, tailVersion)
		}
		return fmt.Errorf("tail object has version %d", t.Version)
	case !source.ValidChainID(t.Chain):
		return fmt.Errorf("tail object: chain %q is not 32 hex digits", t.Chain)
	case t.Seq < 1:
		return fmt.Errorf("tail object: seq %d", t.Seq)
	case t.Offset < 0 || t.End < t.Offset:
		return fmt.Errorf("tail object: bytes [%d, %d)", t.Offset, t.End)
	case t.PrevEnd < 0 || t.PrevEnd > 0 && t.Offset != 0:
		return fmt.Errorf("tail object: prev_end %d at offset %d", t.PrevEnd, t.Offset)
	case t.Level < 0 || t.Level > maxLevel:
		return fmt.Errorf("tail object: level %d", t.Level)
	case len(t.Ends) == 0 || len(t.Ends) != len(t.Times) || len(t.Ends) != len(t.Sinces):
		return fmt.Errorf("tail object: %d ends, %d times, %d sinces", len(t.Ends), len(t.Times), len(t.Sinces))
	}
	if err := source.ValidName(t.File); err != nil {
		return fmt.Errorf("tail object: file: %w", err)
	}
	prevEnd, prevTime := t.Offset, int64(0)
	for i := range t.Ends {
		if t.Ends[i] < prevEnd || t.Times[i] < prevTime || t.Sinces[i] > t.Times[i] || t.Sinces[i] < 0 {
			return fmt.Errorf("tail object: mark %d (end %d, time %d, since %d) does not follow the one before", i, t.Ends[i], t.Times[i], t.Sinces[i])
		}
		if i > 0 && t.Sinces[i] < t.Times[i-1] {
			return fmt.Errorf("tail object: mark %d starts before the mark before ends", i)
		}
		prevEnd, prevTime = t.Ends[i], t.Times[i]
	}
	if prevEnd != t.End {
		return fmt.Errorf("tail object: last mark ends at %d, the object at %d", prevEnd, t.End)
	}
	for i, g := range t.Gaps {
		if g < 0 || g >= len(t.Ends) || i > 0 && g <= t.Gaps[i-1] {
			return fmt.Errorf("tail object: gap index %d", g)
		}
	}
	n := t.End - t.Offset
	if len(t.Chunks) != len(t.Sizes) {
		return fmt.Errorf("tail object: %d chunks, %d sizes", len(t.Chunks), len(t.Sizes))
	}
	if len(t.Chunks) == 0 {
		if int64(len(t.Data)) != n || n > MaxInline {
			return fmt.Errorf("tail object: %d inline bytes for [%d, %d)", len(t.Data), t.Offset, t.End)
		}
		return nil
	}
	if len(t.Data) != 0 {
		return errors.New("tail object: both inline bytes and chunks")
	}
	var sum int64
	for _, s := range t.Sizes {
		if s == 0 {
			return errors.New("tail object: a chunk of size 0")
		}
		sum += int64(s)
	}
	if sum != n {
		return fmt.Errorf("tail object: chunks hold %d bytes for [%d, %d)", sum, t.Offset, t.End)
	}
	return nil
}

var (
	encOnce sync.Once
	enc     *zstd.Encoder
	dec     *zstd.Decoder
)

func coders() (*zstd.Encoder, *zstd.Decoder) {
	encOnce.Do(func() {
		var err error
		// A small window: follow encodes one object a second beside a
		// busy server, and its memory matters more than a few percent.
		enc, err = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(1<<20), zstd.WithLowerEncoderMem(true))
		if err != nil {
			panic(err)
		}
		dec, err = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxPlain), zstd.WithDecoderMaxWindow(maxPlain))
		if err != nil {
			panic(err)
		}
	})
	return enc, dec
}

// Encode returns t's stored plaintext.
func (t *Tail) Encode() ([]byte, error) {
	t.Version = tailVersion
	if err := t.Validate(); err != nil {
		return nil, err
	}
	h, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	if len(h) > maxHeader {
		// Decode would refuse it: never store what cannot be read.
		return nil, fmt.Errorf("tail object of %d marks: header of %d bytes, over the %d a reader takes", len(t.Ends), len(h), maxHeader)
	}
	b := binary.AppendUvarint(make([]byte, 0, len(h)+len(t.Data)+10), uint64(len(h)))
	b = append(append(b, h...), t.Data...)
	e, _ := coders()
	return e.EncodeAll(b, nil), nil
}

// Decode parses and validates a tail object's stored plaintext.
func Decode(plain []byte) (*Tail, error) {
	_, d := coders()
	b, err := d.DecodeAll(plain, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: tail object: %v", repo.ErrCorrupt, err)
	}
	hl, n := binary.Uvarint(b)
	if n <= 0 || hl > maxHeader || hl > uint64(len(b)-n) {
		return nil, fmt.Errorf("%w: tail object: bad header length", repo.ErrCorrupt)
	}
	var t Tail
	dj := json.NewDecoder(bytes.NewReader(b[n : n+int(hl)]))
	dj.DisallowUnknownFields()
	if err := dj.Decode(&t); err != nil {
		return nil, fmt.Errorf("%w: tail object header: %v", repo.ErrCorrupt, err)
	}
	if _, err := dj.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: tail object header: bytes after its JSON", repo.ErrCorrupt)
	}
	if rest := b[n+int(hl):]; len(rest) > 0 {
		t.Data = rest
	}
	if err := t.Validate(); err != nil {
		if t.Version > tailVersion {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", repo.ErrCorrupt, err)
	}
	return &t, nil
}

// Save stores t, returning its ref.
func Save(ctx context.Context, r *repo.Repository, t *Tail) (Ref, error) {
	plain, err := t.Encode()
	if err != nil {
		return Ref{}, err
	}
	name, err := r.SaveNamed(ctx, repo.TailFile, t.prefix(), plain)
	if err != nil {
		return Ref{}, err
	}
	ref := t.ref()
	ref.Name = name
	return ref, nil
}

// Load reads the tail object ref names and checks that its header is
// what the name says.
func Load(ctx context.Context, r *repo.Repository, ref Ref) (*Tail, error) {
	plain, err := r.LoadNamed(ctx, repo.TailFile, ref.Name, ref.Size)
	if err != nil {
		return nil, err
	}
	t, err := Decode(plain)
	if err != nil {
		return nil, fmt.Errorf("tails/%s: %w", ref.Name, err)
	}
	got := t.ref()
	got.Name, got.Size = ref.Name, ref.Size
	if got != ref {
		return nil, fmt.Errorf("tails/%s: %w: its header (chain %s, seq %d, bytes [%d, %d)) is not what its name says", ref.Name, repo.ErrCorrupt, t.Chain, t.Seq, t.Offset, t.End)
	}
	return t, nil
}

// List lists every tail object of the repository.
func List(ctx context.Context, r *repo.Repository) ([]Ref, error) {
	var refs []Ref
	err := r.ListNamed(ctx, repo.TailFile, func(name string, size int64) error {
		ref, ok := ParseName(name, size)
		if !ok {
			return nil
		}
		refs = append(refs, ref)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tail objects: %w", err)
	}
	return refs, nil
}

// Bytes calls fn with t's bytes in order: the inline bytes, or each chunk.
func (t *Tail) Bytes(ctx context.Context, r *repo.Repository, fn func([]byte) error) error {
	if len(t.Chunks) == 0 {
		if len(t.Data) == 0 {
			return nil
		}
		return fn(t.Data)
	}
	var buf []byte
	for i, id := range t.Chunks {
		b, err := r.LoadBlob(ctx, id, buf[:0])
		if err != nil {
			return fmt.Errorf("tail object of chain %s, seq %d: chunk %s: %w", t.Chain, t.Seq, id.Str(), err)
		}
		if len(b) != int(t.Sizes[i]) {
			return fmt.Errorf("tail object of chain %s, seq %d: %w: chunk %s has %d bytes, the object says %d", t.Chain, t.Seq, repo.ErrCorrupt, id.Str(), len(b), t.Sizes[i])
		}
		if err := fn(b); err != nil {
			return err
		}
		buf = b
	}
	return nil
}
