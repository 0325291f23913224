package repo

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// ErrWrongPassword is returned by Open when no key file opens with the
// password given.
var ErrWrongPassword = errors.New("wrong password: no key in keys/ opens with it")

// KDFParams are the Argon2id parameters of one key file.
// A generated key's file has none: omitempty leaves them out of it, and
// validate never lets them be zero in an Argon2id one.
type KDFParams struct {
	Time      uint32 `json:"time,omitempty"`
	MemoryKiB uint32 `json:"memory_kib,omitempty"`
	Threads   uint8  `json:"threads,omitempty"`
}

// DefaultKDF costs about a seventh of a second on two current cores and
// 32 MiB: cheap once per command, expensive for a guesser. The memory is
// restic's (scrypt N=2^15, r=8): every command pays it once, and a backup
// agent beside a database should stay small; eight passes keep the work
// per guess where 64 MiB and three passes had it. snap init --kdf-memory
// and --kdf-time choose more.
var DefaultKDF = KDFParams{Time: 8, MemoryKiB: 32 << 10, Threads: 2}

// The two kinds of key file: kdfArgon2id wraps the master key with a key
// stretched from a password; kdfGenerated with one derived, by BLAKE3
// alone, from a generated key (NewGeneratedKey): 256 random bits, which
// nobody can guess however cheap each guess, so stretching would cost
// every command its time and buy nothing.
const (
	kdfArgon2id  = "argon2id"
	kdfGenerated = "blake3"
	// ctxKeyWrap derives a generated key file's wrapping key from the
	// generated key and the file's salt. Changing it changes the format.
	ctxKeyWrap = "snap repository v1 2026-12 generated key wrapping key"
	// generatedPrefix starts every generated key's text; the rest is its
	// 32 bytes in unpadded base64url.
	generatedPrefix = "snapkey1:"
)

// NewGeneratedKey returns a new generated key, as the text that opens the
// repository in place of a password (SNAP_PASSWORD, --password-file):
// "snapkey1:" and 32 random bytes in unpadded base64url. Init with
// InitOptions.GeneratedKey, AddGeneratedKey or ChangePassword store a key file
// for it that opens without a KDF.
func NewGeneratedKey() (string, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", err
	}
	return generatedPrefix + base64.RawURLEncoding.EncodeToString(k[:]), nil
}

// parseGeneratedKey returns the 32 bytes of a generated key's text; ok is
// false for anything else, a password.
func parseGeneratedKey(s string) (k [32]byte, ok bool) {
	rest, found := strings.CutPrefix(s, generatedPrefix)
	if !found || len(rest) != base64.RawURLEncoding.EncodedLen(len(k)) {
		return k, false
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(rest)
	if err != nil || len(b) != len(k) {
		return k, false
	}
	copy(k[:], b)
	return k, true
}

// IsGeneratedKey reports whether s has the form of a generated key.
func IsGeneratedKey(s string) bool {
	_, ok := parseGeneratedKey(s)
	return ok
}

// generatedWrappingKey derives a generated key file's wrapping key.
func generatedWrappingKey(k [32]byte, salt []byte) []byte {
	out := make([]byte, chacha20poly1305.KeySize)
	blake3.DeriveKey(ctxKeyWrap, append(k[:], salt...), out)
	return out
}

// keyFile is the stored form of keys/<id>: the master key wrapped by a key
// derived from one password. It is the only plaintext JSON in a repository.
type keyFile struct {
	Version  int       `json:"version"`
	Created  time.Time `json:"created"`
	Hostname string    `json:"hostname,omitempty"`
	// User is who made the key (snap key add), for snap key list. Key
	// files written before it was added have none.
	User string `json:"user,omitempty"`
	KDF  string `json:"kdf"`
	KDFParams
	Salt []byte `json:"salt"`
	Data []byte `json:"data"` // XChaCha20-Poly1305(wrapping key, masterKeyJSON)
}

type masterKeyJSON struct {
	Master []byte `json:"master"`
}

const keyFileVersion = 1

// Bounds on the Argon2id parameters, for the key files snap writes and
// the ones it reads. Key files are stored unencrypted on storage snap does
// not trust, and Open runs the KDF of every one it tries, so the bounds
// are what a crafted key file can make a command spend: at most 1 GiB (a
// backup agent runs beside the database it protects, often in a container
// with a memory limit) and 8 GiB-passes of work, 32 times the default's
// (about 5 s on two cores: Argon2id runs 1.4 to 1.9 GiB-passes a second
// there). snap init --kdf-memory and --kdf-time keep within them.
const (
	MaxKDFTime      = 100
	MaxKDFMemoryKiB = 1 << 20 // 1 GiB
	MaxKDFWork      = 8 << 20 // time × memory in KiB: 1 GiB eight times
	// maxKDFThreads: snap writes 2; lanes beyond the cores buy nothing.
	maxKDFThreads = 16
)

func (p KDFParams) validate() error {
	if p.Time < 1 || p.Time > MaxKDFTime || p.MemoryKiB < 8 || p.MemoryKiB > MaxKDFMemoryKiB ||
		uint64(p.Time)*uint64(p.MemoryKiB) > MaxKDFWork || p.Threads < 1 || p.Threads > maxKDFThreads {
		return fmt.Errorf("argon2id parameters time %d, memory %d KiB, threads %d out of range "+
			"(time 1 to %d, memory 8 KiB to %d MiB, time × memory at most %d MiB, threads 1 to %d)",
			p.Time, p.MemoryKiB, p.Threads, MaxKDFTime, MaxKDFMemoryKiB>>10, MaxKDFWork>>10, maxKDFThreads)
	}
	return nil
}

// argon2Runs counts wrappingKey's runs, for the tests that show which
// key files a command stretched a password for.
var argon2Runs atomic.Int64

// wrappingKey derives the key that wraps the master key from password.
func wrappingKey(password string, salt []byte, p KDFParams) []byte {
	argon2Runs.Add(1)
	if p.MemoryKiB >= 1<<10 {
		prefault(int(p.MemoryKiB)<<10, int(p.Threads))
	}
	// Argon2id's memory is garbage once it returns: hand it back before
	// the command's real work allocates, so that it does not add to the
	// peak. Only here: a command opened with a generated key has no such
	// garbage, and a forced collection would only cost it time.
	defer debug.FreeOSMemory()
	return argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, chacha20poly1305.KeySize)
}

// prefault leaves n bytes of memory that the process has written free in
// the Go heap, for the allocation that follows: Argon2id's. Its first pass
// reads each block before it writes it (x/crypto XORs into memory it
// takes to be zero), and reading a page the process never touched maps
// the kernel's shared zero page, so the write after faults a second time,
// copies the page and flushes the TLB of every core the process runs on.
// For 32 MiB that is 8192 faults with a flush each: the KDF took 157-180
// ms on two cores; after writing the pages first (about 10 ms, a thread
// per Argon2 lane), 90-100 ms. Each command pays the KDF once.
func prefault(n, threads int) {
	b := make([]byte, n)
	per := (n/threads + os.Getpagesize() - 1) &^ (os.Getpagesize() - 1)
	var wg sync.WaitGroup
	for off := 0; off < n; off += per {
		wg.Go(func() {
			for i := off; i < min(off+per, n); i += os.Getpagesize() {
				b[i] = 1
			}
		})
	}
	wg.Wait()
	runtime.KeepAlive(b)
	b = nil
	runtime.GC() // free it for Argon2id's allocation
}

// newKeyFile wraps mk with password, stretched by Argon2id with p.
func newKeyFile(mk MasterKey, password string, p KDFParams, now time.Time) ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	return sealKeyFile(mk, kdfArgon2id, p, now, func(salt []byte) []byte { return wrappingKey(password, salt, p) })
}

// newGeneratedKeyFile wraps mk with a generated key's text (NewGeneratedKey).
func newGeneratedKeyFile(mk MasterKey, generated string, now time.Time) ([]byte, error) {
	k, ok := parseGeneratedKey(generated)
	if !ok {
		return nil, errors.New("not a generated key (snap makes them: snap init --generate-key, snap key add --generate-key)")
	}
	return sealKeyFile(mk, kdfGenerated, KDFParams{}, now, func(salt []byte) []byte { return generatedWrappingKey(k, salt) })
}

// sealKeyFile makes a key file of kind kdf: a new salt, and mk sealed with
// the wrapping key wrap derives from it.
func sealKeyFile(mk MasterKey, kdf string, p KDFParams, now time.Time, wrap func(salt []byte) []byte) ([]byte, error) {
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(wrap(salt))
	if err != nil {
		return nil, err
	}
	inner, err := json.Marshal(masterKeyJSON{Master: mk[:]})
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	kf := keyFile{
		Version: keyFileVersion, Created: now.UTC(), Hostname: host, User: currentUser(),
		KDF: kdf, KDFParams: p, Salt: salt,
		Data: sealWith(aead, nil, inner),
	}
	return json.MarshalIndent(kf, "", "  ")
}

// DecodeKeyFile parses a stored key file without opening it.
func decodeKeyFile(data []byte) (*keyFile, error) {
	var kf keyFile
	if err := json.Unmarshal(data, &kf); err != nil {
		return nil, fmt.Errorf("%w: key file is not valid JSON: %v", ErrCorrupt, err)
	}
	if kf.Version < 1 {
		return nil, fmt.Errorf("%w: key file version %d", ErrCorrupt, kf.Version)
	}
	if kf.Version != keyFileVersion {
		return nil, fmt.Errorf("key file version %d is not supported by this snap (it reads version %d); upgrade snap", kf.Version, keyFileVersion)
	}
	switch kf.KDF {
	case kdfArgon2id:
		if err := kf.KDFParams.validate(); err != nil {
			return nil, fmt.Errorf("%w: %v: not written by snap, or damaged", ErrCorrupt, err)
		}
	case kdfGenerated:
		if kf.KDFParams != (KDFParams{}) {
			return nil, fmt.Errorf("%w: a generated key's file with Argon2id parameters", ErrCorrupt)
		}
	default:
		return nil, fmt.Errorf("key file uses unknown kdf %q (a newer snap may read it)", kf.KDF)
	}
	if len(kf.Salt) < 16 {
		return nil, fmt.Errorf("%w: key file salt is %d bytes", ErrCorrupt, len(kf.Salt))
	}
	return &kf, nil
}

// generated reports whether kf is a generated key's file.
func (kf *keyFile) generated() bool { return kf.KDF == kdfGenerated }

// open unwraps the master key; ErrWrongPassword if the password does not
// fit. A generated key's file opens only with a generated key's text, and
// at no cost; any other text it refuses without a try.
func (kf *keyFile) open(password string) (MasterKey, error) {
	var mk MasterKey
	var wrap []byte
	if kf.generated() {
		k, ok := parseGeneratedKey(password)
		if !ok {
			return mk, ErrWrongPassword
		}
		wrap = generatedWrappingKey(k, kf.Salt)
	} else {
		wrap = wrappingKey(password, kf.Salt, kf.KDFParams)
	}
	aead, err := chacha20poly1305.NewX(wrap)
	if err != nil {
		return mk, err
	}
	inner, err := openWith(aead, nil, kf.Data)
	if err != nil {
		return mk, ErrWrongPassword
	}
	var m masterKeyJSON
	if err := json.Unmarshal(inner, &m); err != nil || len(m.Master) != len(mk) {
		return mk, fmt.Errorf("%w: key file holds no valid master key", ErrCorrupt)
	}
	copy(mk[:], m.Master)
	return mk, nil
}

// openedKey is the key file that opened a repository: its name and the
// Argon2id cost it chose, which the keys snap key add makes keep (zero
// for a generated key's file: they get DefaultKDF).
type openedKey struct {
	name string
	kdf  KDFParams
}

// loadMasterKey tries every key file with password and says which one
// opened. A generated key's text tries the generated keys' files first,
// which cost nothing, and the Argon2id ones (a password of that form)
// only if none of those opens; a password never runs a generated one.
func loadMasterKey(ctx context.Context, be Backend, password string) (MasterKey, openedKey, error) {
	var names []string
	var sizes []int64
	err := be.List(ctx, KeyFile, func(fi FileInfo) error {
		names = append(names, fi.Name)
		sizes = append(sizes, fi.Size)
		return nil
	})
	if err != nil {
		return MasterKey{}, openedKey{}, fmt.Errorf("list keys: %w", err)
	}
	if len(names) == 0 {
		return MasterKey{}, openedKey{}, fmt.Errorf("no key files in %s/keys: not a snap repository, or it is damaged", be.Location())
	}
	generated := IsGeneratedKey(password)
	var errs []error
	tried := 0
	try := func(name string, kf *keyFile) (MasterKey, bool) {
		tried++
		mk, err := kf.open(password)
		if err == nil {
			return mk, true
		}
		if !errors.Is(err, ErrWrongPassword) {
			errs = append(errs, fmt.Errorf("%s: %w", Handle{Type: KeyFile, Name: name}, err))
		}
		return mk, false
	}
	type later struct {
		name string
		kf   *keyFile
	}
	var stretched []later
	nGenerated := 0
	for i, name := range names {
		h := Handle{Type: KeyFile, Name: name}
		data, err := loadSized(ctx, be, h, sizes[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("load %s: %w", h, err))
			continue
		}
		kf, err := decodeKeyFile(data)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", h, err))
			continue
		}
		if kf.generated() {
			nGenerated++
		}
		if generated && !kf.generated() {
			stretched = append(stretched, later{name, kf})
			continue
		}
		if mk, ok := try(name, kf); ok {
			return mk, openedKey{name: name, kdf: kf.KDFParams}, nil
		}
	}
	for _, l := range stretched {
		if mk, ok := try(l.name, l.kf); ok {
			return mk, openedKey{name: l.name, kdf: l.kf.KDFParams}, nil
		}
	}
	if tried == 0 && len(errs) == len(names) {
		// No key file could even be tried: say why, not "wrong password".
		return MasterKey{}, openedKey{}, errors.Join(errs...)
	}
	if len(errs) > 0 {
		return MasterKey{}, openedKey{}, errors.Join(append([]error{ErrWrongPassword}, errs...)...)
	}
	if !generated && nGenerated == len(names) {
		return MasterKey{}, openedKey{}, fmt.Errorf("%w: its keys are all generated keys, and what was given is not one "+
			"(a generated key is the text snap init --generate-key or snap key add --generate-key wrote, %s...)", ErrWrongPassword, generatedPrefix)
	}
	return MasterKey{}, openedKey{}, ErrWrongPassword
}
