package repo

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/chacha20poly1305"
)

// ErrWrongPassword is returned by Open when no key file opens with the
// password given.
var ErrWrongPassword = errors.New("wrong password: no key in keys/ opens with it")

// KDFParams are the Argon2id parameters of one key file.
type KDFParams struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// DefaultKDF costs about a seventh of a second on two current cores and
// 32 MiB: cheap once per command, expensive for a guesser. The memory is
// restic's (scrypt N=2^15, r=8): every command pays it once, and a backup
// agent beside a database should stay small; eight passes keep the work
// per guess where 64 MiB and three passes had it. snap init --kdf-memory
// and --kdf-time choose more.
var DefaultKDF = KDFParams{Time: 8, MemoryKiB: 32 << 10, Threads: 2}

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

// wrappingKey derives the key that wraps the master key from password.
func wrappingKey(password string, salt []byte, p KDFParams) []byte {
	if p.MemoryKiB >= 1<<10 {
		prefault(int(p.MemoryKiB)<<10, int(p.Threads))
	}
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

// newKeyFile wraps mk with password.
func newKeyFile(mk MasterKey, password string, p KDFParams, now time.Time) ([]byte, error) {
	if err := p.validate(); err != nil {
		return nil, err
	}
	salt := make([]byte, 32)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	aead, err := chacha20poly1305.NewX(wrappingKey(password, salt, p))
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
		KDF: "argon2id", KDFParams: p, Salt: salt,
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
	if kf.KDF != "argon2id" {
		return nil, fmt.Errorf("key file uses unknown kdf %q", kf.KDF)
	}
	if err := kf.KDFParams.validate(); err != nil {
		return nil, fmt.Errorf("%w: %v: not written by snap, or damaged", ErrCorrupt, err)
	}
	if len(kf.Salt) < 16 {
		return nil, fmt.Errorf("%w: key file salt is %d bytes", ErrCorrupt, len(kf.Salt))
	}
	return &kf, nil
}

// open unwraps the master key; ErrWrongPassword if the password does not fit.
func (kf *keyFile) open(password string) (MasterKey, error) {
	var mk MasterKey
	aead, err := chacha20poly1305.NewX(wrappingKey(password, kf.Salt, kf.KDFParams))
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
// Argon2id cost it chose, which the keys snap key add makes keep.
type openedKey struct {
	name string
	kdf  KDFParams
}

// loadMasterKey tries every key file with password and says which one
// opened.
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
	var errs []error
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
		mk, err := kf.open(password)
		if err == nil {
			return mk, openedKey{name: name, kdf: kf.KDFParams}, nil
		}
		if !errors.Is(err, ErrWrongPassword) {
			errs = append(errs, fmt.Errorf("%s: %w", h, err))
		}
	}
	if len(errs) == len(names) {
		// No key file could even be tried: say why, not "wrong password".
		return MasterKey{}, openedKey{}, errors.Join(errs...)
	}
	if len(errs) > 0 {
		return MasterKey{}, openedKey{}, errors.Join(append([]error{ErrWrongPassword}, errs...)...)
	}
	return MasterKey{}, openedKey{}, ErrWrongPassword
}
