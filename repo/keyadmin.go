package repo

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strings"
	"time"
)

// Key administration: several passwords for one repository, each a key
// file wrapping the same master key (docs/design.md, "Keys and
// encryption"). Key files are written create-only like every object, and
// removed only under an exclusive lock (RemoveKey says why).

// ErrKeyRefused is returned when a key may not be removed: it is the one
// in use, or the last. Nothing was changed.
var ErrKeyRefused = errors.New("key not removed")

// KeyInfo is what a key file says in the clear.
type KeyInfo struct {
	ID      string // the key file's name: the hash of its bytes
	Created time.Time
	Host    string
	User    string // empty in key files written before snap recorded it
	// Generated: the key is a generated key (NewGeneratedKey), not a
	// password.
	Generated bool
	Current   bool  // the key that opened this Repository
	Err       error // the key file could not be read or decoded
}

// KeyID is the name of the key file that opened r.
func (r *Repository) KeyID() string { return r.key.name }

// ListKeys reads every key file, sorted by creation time. One that cannot
// be read or decoded is listed with its Err, as Open skips it.
func (r *Repository) ListKeys(ctx context.Context) ([]KeyInfo, error) {
	var names []string
	var sizes []int64
	if err := r.be.List(ctx, KeyFile, func(fi FileInfo) error {
		names = append(names, fi.Name)
		sizes = append(sizes, fi.Size)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	out := make([]KeyInfo, 0, len(names))
	for i, name := range names {
		ki := KeyInfo{ID: name, Current: name == r.key.name}
		h := Handle{Type: KeyFile, Name: name}
		data, err := loadSized(ctx, r.be, h, sizes[i])
		if errors.Is(err, ErrNotFound) {
			continue // removed since the listing
		}
		var kf *keyFile
		if err == nil {
			kf, err = decodeKeyFile(data)
		}
		if err != nil {
			ki.Err = fmt.Errorf("%s: %w", h, err)
		} else {
			ki.Created, ki.Host, ki.User, ki.Generated = kf.Created, kf.Hostname, kf.User, kf.generated()
		}
		out = append(out, ki)
	}
	slices.SortStableFunc(out, func(a, b KeyInfo) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// FindKey resolves a key id or a unique prefix of at least 4 hex digits.
func FindKey(keys []KeyInfo, prefix string) (KeyInfo, error) {
	prefix = strings.ToLower(prefix)
	if len(prefix) < 4 {
		return KeyInfo{}, fmt.Errorf("key id %q is too short: give at least 4 hex digits (snap key list shows them)", prefix)
	}
	var found []KeyInfo
	for _, k := range keys {
		if strings.HasPrefix(k.ID, prefix) {
			found = append(found, k)
		}
	}
	switch len(found) {
	case 0:
		return KeyInfo{}, fmt.Errorf("%w: no key with id %q (snap key list shows them)", ErrNotFound, prefix)
	case 1:
		return found[0], nil
	}
	return KeyInfo{}, fmt.Errorf("key id %q is ambiguous: %s and %s", prefix, found[0].ID[:12], found[1].ID[:12])
}

// checkKeyLock refuses to change keys without an exclusive lock that
// still holds.
func (r *Repository) checkKeyLock(lk *Lock, what string) error {
	if lk == nil || lk.r != r || !lk.o.Exclusive {
		return fmt.Errorf("%s: needs the repository's exclusive lock (internal error)", what)
	}
	if err := lk.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// AddKey stores a new key file that wraps r's master key with password,
// with the Argon2id cost of the key that opened r (DefaultKDF if that was
// a generated key), and checks that it opens with password before it
// returns. lk must be an exclusive lock on r (see RemoveKey); adding
// alone could do without, but passwd adds and removes under one lock,
// and one rule for every key change is simpler.
func (r *Repository) AddKey(ctx context.Context, lk *Lock, password string) (KeyInfo, error) {
	return r.addKey(ctx, lk, password, false)
}

// AddGeneratedKey is AddKey for a generated key's text (NewGeneratedKey):
// its key file opens without a KDF.
func (r *Repository) AddGeneratedKey(ctx context.Context, lk *Lock, generated string) (KeyInfo, error) {
	return r.addKey(ctx, lk, generated, true)
}

func (r *Repository) addKey(ctx context.Context, lk *Lock, password string, generated bool) (KeyInfo, error) {
	if password == "" {
		return KeyInfo{}, errors.New("add key: empty password")
	}
	if err := r.checkKeyLock(lk, "add key"); err != nil {
		return KeyInfo{}, err
	}
	var data []byte
	var err error
	if generated {
		data, err = newGeneratedKeyFile(r.mk, password, time.Now())
	} else {
		p := r.key.kdf
		if p.validate() != nil {
			p = DefaultKDF
		}
		data, err = newKeyFile(r.mk, password, p, time.Now())
	}
	if err != nil {
		return KeyInfo{}, fmt.Errorf("add key: %w", err)
	}
	kf, err := decodeKeyFile(data)
	if err == nil {
		var mk MasterKey
		if mk, err = kf.open(password); err == nil && mk != r.mk {
			err = errors.New("the new key file holds another master key")
		}
	}
	if err != nil {
		return KeyInfo{}, fmt.Errorf("add key: the new key file does not open (internal error; nothing stored): %w", err)
	}
	h := Handle{Type: KeyFile, Name: Hash(data).String()}
	if err := r.be.Save(ctx, h, data); err != nil {
		return KeyInfo{}, fmt.Errorf("save %s: %w", h, err)
	}
	return KeyInfo{ID: h.Name, Created: kf.Created, Host: kf.Hostname, User: kf.User, Generated: generated}, nil
}

// RemoveKey removes the key file id names (an id or a unique prefix). It
// refuses, with ErrKeyRefused, the repository's last key and the key that
// opened r, so that whoever runs it can still open the repository.
//
// lk must be an exclusive lock on r, and the keys are listed again under
// it. That is what keeps two removals from removing the last two keys:
// with keys A and B, one process opened with A removing B and another
// opened with B removing A would each see two keys and a key not its own.
// Exclusive locks exclude each other, so the second to lock lists the
// keys after the first removed its; it then finds its own key gone (or
// only one key left) and refuses.
func (r *Repository) RemoveKey(ctx context.Context, lk *Lock, id string) (KeyInfo, error) {
	if err := r.checkKeyLock(lk, "remove key"); err != nil {
		return KeyInfo{}, err
	}
	keys, err := r.ListKeys(ctx)
	if err != nil {
		return KeyInfo{}, err
	}
	k, err := FindKey(keys, id)
	if err != nil {
		return KeyInfo{}, err
	}
	if !slices.ContainsFunc(keys, func(k KeyInfo) bool { return k.Current }) {
		return KeyInfo{}, fmt.Errorf("%w: the key %s that opened the repository was removed meanwhile (by another snap); "+
			"nothing changed: run the command again to judge the keys that are left", ErrKeyRefused, short(r.key.name))
	}
	readable := 0
	for _, o := range keys {
		if o.Err == nil {
			readable++
		}
	}
	switch {
	case len(keys) == 1 || readable == 1 && k.Err == nil:
		return KeyInfo{}, fmt.Errorf("%w: %s is the repository's last key: without a key no password opens it, and its data is lost; "+
			"add another with snap key add first", ErrKeyRefused, short(k.ID))
	case k.Current:
		return KeyInfo{}, fmt.Errorf("%w: %s is the key in use (its password opened the repository); "+
			"to replace it use snap key passwd, or remove it with another password", ErrKeyRefused, short(k.ID))
	}
	if err := lk.Err(); err != nil {
		return KeyInfo{}, fmt.Errorf("not removing key %s: %w", short(k.ID), err)
	}
	h := Handle{Type: KeyFile, Name: k.ID}
	if err := r.be.Remove(ctx, h); err != nil && !errors.Is(err, ErrNotFound) {
		return KeyInfo{}, fmt.Errorf("remove %s: %w", h, err)
	}
	return k, nil
}

// ChangePassword replaces the key that opened r by a new one for
// password (a generated key's text if generated is set): it adds the new
// key first and removes the old one after, so that a crash in between
// leaves both, never none. From then on r's current key is the new one.
// lk must be an exclusive lock on r.
func (r *Repository) ChangePassword(ctx context.Context, lk *Lock, password string, generated bool) (added, removed KeyInfo, err error) {
	old := r.key
	added, err = r.addKey(ctx, lk, password, generated)
	if err != nil {
		return added, removed, err
	}
	kdf := old.kdf
	if generated {
		kdf = KDFParams{}
	} else if kdf.validate() != nil {
		kdf = DefaultKDF
	}
	r.key = openedKey{name: added.ID, kdf: kdf}
	removed, err = r.RemoveKey(ctx, lk, old.name)
	if err != nil {
		return added, removed, fmt.Errorf("the new key %s is stored, but the old one stays: %w", short(added.ID), err)
	}
	added.Current = true
	return added, removed, nil
}

// short is a key id as messages show it.
func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// currentUser names the user running snap, for the key files it makes:
// the account's name, else $USER; empty when neither says (a container
// running as a uid without a passwd entry).
func currentUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	return os.Getenv("USER")
}
