package repo

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"

	"github.com/zeebo/blake3"
	"golang.org/x/crypto/chacha20poly1305"
)

// Overhead is what encryption adds to every stored object: a 24-byte nonce
// and a 16-byte Poly1305 tag.
const Overhead = chacha20poly1305.NonceSizeX + chacha20poly1305.Overhead

// ErrCorrupt marks data that failed authentication or verification. Callers
// check it with errors.Is; the wrapping error names the object.
var ErrCorrupt = errors.New("data is corrupt")

// MasterKey is the repository's secret. Everything else is derived from it
// (docs/design.md, "Keys").
type MasterKey [32]byte

// Domain-separation contexts for blake3.DeriveKey. Changing one changes the
// format.
const (
	ctxEncryption = "snap repository v1 2026-11 encryption key"
	ctxChunkID    = "snap repository v1 2026-11 chunk id key"
	ctxChunker    = "snap repository v1 2026-11 chunker gear seed"
	ctxHostTag    = "snap repository v2 2026-12 host tag key"
)

// Keys holds the derived keys of an open repository.
type Keys struct {
	aead    cipher.AEAD
	idKey   [32]byte
	gearKey [32]byte
	hostKey [32]byte
	hashers sync.Pool // of keyed *blake3.Hasher
}

func deriveKeys(mk MasterKey) (*Keys, error) {
	var enc [32]byte
	blake3.DeriveKey(ctxEncryption, mk[:], enc[:])
	aead, err := chacha20poly1305.NewX(enc[:])
	if err != nil {
		return nil, err
	}
	k := &Keys{aead: aead}
	blake3.DeriveKey(ctxChunkID, mk[:], k.idKey[:])
	blake3.DeriveKey(ctxChunker, mk[:], k.gearKey[:])
	blake3.DeriveKey(ctxHostTag, mk[:], k.hostKey[:])
	return k, nil
}

// Seal appends nonce || ciphertext || tag of plain to dst.
func (k *Keys) Seal(dst, plain []byte) []byte {
	return sealWith(k.aead, dst, plain)
}

// nonceSize is the length of the nonce a sealed object starts with.
const nonceSize = chacha20poly1305.NonceSizeX

// sealInPlace seals b[nonceSize:] where it lies: b is room for the nonce
// followed by the plaintext, and the result is the sealed form, in b's
// array when its capacity holds the tag.
func (k *Keys) sealInPlace(b []byte) []byte {
	// Seal's output starts exactly where the plaintext does, the one
	// overlap the AEAD interface allows.
	return k.sealTo(b[:nonceSize], b[nonceSize:])
}

// sealTo seals plain into b, room for the nonce (len(b) == nonceSize)
// whose capacity holds the sealed form: the cipher reads plain where it
// lies, so a blob stored uncompressed is not first copied into b. plain
// may start right after the nonce in b's array (sealInPlace).
func (k *Keys) sealTo(b, plain []byte) []byte {
	nonce := b[:nonceSize]
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // rand.Read never fails on supported platforms
	}
	return k.aead.Seal(nonce, nonce, plain, nil)
}

// Open decrypts nonce || ciphertext || tag, appending the plaintext to dst.
func (k *Keys) Open(dst, sealed []byte) ([]byte, error) {
	return openWith(k.aead, dst, sealed)
}

// OpenInPlace is Open with the plaintext written over sealed, which it
// then holds.
func (k *Keys) OpenInPlace(sealed []byte) ([]byte, error) {
	ns := k.aead.NonceSize()
	if len(sealed) < ns {
		return openWith(k.aead, nil, sealed) // its error
	}
	return openWith(k.aead, sealed[ns:ns], sealed)
}

func sealWith(aead cipher.AEAD, dst, plain []byte) []byte {
	n := len(dst)
	need := n + aead.NonceSize() + len(plain) + aead.Overhead()
	if cap(dst) < need {
		grown := make([]byte, n, need)
		copy(grown, dst)
		dst = grown
	}
	nonce := dst[n : n+aead.NonceSize()]
	if _, err := rand.Read(nonce); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // rand.Read never fails on supported platforms
	}
	return aead.Seal(dst[:n+aead.NonceSize()], nonce, plain, nil)
}

func openWith(aead cipher.AEAD, dst, sealed []byte) ([]byte, error) {
	if len(sealed) < aead.NonceSize()+aead.Overhead() {
		return nil, fmt.Errorf("%w: %d bytes is shorter than nonce and tag", ErrCorrupt, len(sealed))
	}
	ns := aead.NonceSize()
	out, err := aead.Open(dst, sealed[:ns], sealed[ns:], nil)
	if err != nil {
		return nil, fmt.Errorf("%w: authentication failed", ErrCorrupt)
	}
	return out, nil
}

// BlobID is the keyed BLAKE3-256 of a blob's plaintext. The key makes ids
// reveal nothing about content to someone without the master key.
func (k *Keys) BlobID(plain []byte) ID {
	h, _ := k.hashers.Get().(*blake3.Hasher)
	if h == nil {
		var err error
		if h, err = blake3.NewKeyed(k.idKey[:]); err != nil {
			panic(err) // only for a key that is not 32 bytes
		}
	}
	var id ID
	h.Reset()
	h.Write(plain)
	h.Sum(id[:0])
	k.hashers.Put(h)
	return id
}

// GearSeed is the per-repository chunker seed.
func (k *Keys) GearSeed() [32]byte { return k.gearKey }

// HostTagLen is the length of a host tag: 16 lower-case hex digits.
const HostTagLen = 16

// HostTag is the tag of a host's objects in a version 2 repository: the
// first 8 bytes of the keyed BLAKE3 of its name, in hex. Keyed, so names in
// a listing do not reveal host names to someone without the master key.
func (k *Keys) HostTag(host string) string {
	h, err := blake3.NewKeyed(k.hostKey[:])
	if err != nil {
		panic(err) // only for a key that is not 32 bytes
	}
	h.Write([]byte(host))
	var sum [32]byte
	h.Sum(sum[:0])
	return fmt.Sprintf("%x", sum[:HostTagLen/2])
}
