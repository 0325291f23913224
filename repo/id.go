package repo

import (
	"encoding/hex"
	"fmt"

	"github.com/zeebo/blake3"
)

// IDSize is the length of every identifier: a BLAKE3-256 digest.
const IDSize = 32

// ID names a blob (keyed hash of its plaintext) or a stored object (unkeyed
// hash of its stored bytes).
type ID [IDSize]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// Str is the short form shown to people.
func (id ID) Str() string { return hex.EncodeToString(id[:4]) }

func (id ID) IsNull() bool { return id == ID{} }

func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *ID) UnmarshalText(b []byte) error {
	parsed, err := ParseID(string(b))
	if err != nil {
		return err
	}
	*id = parsed
	return nil
}

// ParseID parses the 64-character hex form.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*IDSize {
		return id, fmt.Errorf("invalid id %q: want %d hex characters", s, 2*IDSize)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("invalid id %q: %w", s, err)
	}
	return id, nil
}

// Hash is the unkeyed BLAKE3-256 of data: the name of a stored object.
func Hash(data []byte) ID {
	return ID(blake3.Sum256(data))
}
