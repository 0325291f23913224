package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/snapbackup/snap/repo"
)

const (
	hintCredentials = "check the credentials: GOOGLE_APPLICATION_CREDENTIALS or " +
		"`gcloud auth application-default login`, or STORAGE_EMULATOR_HOST for an emulator"
	hintPermission = "the account needs roles/storage.objectUser on the bucket " +
		"(or objectCreator and objectViewer, plus storage.objects.delete for prune); " + hintCredentials
	hintBucket = "check the bucket name in --repo gs://BUCKET/PREFIX and that the bucket exists"
)

// Error is a failed call to GCS. It names the object and says whether the
// call is worth retrying; the retry decorator asks through Transient.
type Error struct {
	Op     string // save, load, read, stat, list, remove
	Object string // gs://bucket/name
	Hint   string // what the user can do, or ""
	Err    error

	transient bool
}

func (e *Error) Error() string {
	s := e.Op + " " + e.Object + ": " + e.Err.Error()
	if e.Hint != "" {
		s += " (" + e.Hint + ")"
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Transient reports whether the call may succeed if made again: 408, 429,
// 5xx, timeouts, reset or refused connections, a body cut short.
func (e *Error) Transient() bool { return e.transient }

// url names an object for messages.
func (b *Backend) url(name string) string { return Scheme + b.name + "/" + name }

// wrap translates an error of the storage library: this is the one place
// that knows its sentinels and HTTP statuses.
func (b *Backend) wrap(op, name string, err error) error {
	e := &Error{Op: op, Object: b.url(name), Err: err}
	switch {
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// The caller's context, or a timeout above us: the retry
		// decorator knows which.
	case errors.Is(err, storage.ErrObjectNotExist):
		e.Err = repo.ErrNotFound
	case errors.Is(err, storage.ErrBucketNotExist) || isStatus(err, http.StatusNotFound):
		e.Err = fmt.Errorf("bucket %q not found: %w", b.name, err)
		e.Hint = hintBucket
	case isStatus(err, http.StatusPreconditionFailed):
		e.Err = repo.ErrExists
	case isStatus(err, http.StatusUnauthorized) || isStatus(err, http.StatusForbidden):
		e.Hint = hintPermission
	case isStatus(err, http.StatusBadRequest) && mentionsChecksum(err):
		// The server got other bytes than were sent: a torn or garbled
		// upload, which the next attempt sends again from memory.
		e.transient = true
	case isStatus(err, http.StatusBadRequest):
		e.Hint = hintBucket
	default:
		e.transient = storage.ShouldRetry(err) || errors.Is(err, io.ErrUnexpectedEOF)
	}
	// The library finds credentials and fetches tokens lazily, on the
	// first request.
	if msg := err.Error(); e.Hint == "" && (strings.Contains(msg, "credentials") || strings.Contains(msg, "fetch token")) {
		e.Hint = hintCredentials
	}
	return e
}

// isStatus reports whether err is an HTTP error with the given status.
func isStatus(err error, code int) bool {
	var ge *googleapi.Error
	return errors.As(err, &ge) && ge.Code == code
}

func mentionsChecksum(err error) bool {
	msg := strings.ToLower(err.Error())
	return strings.Contains(msg, "crc32c") || strings.Contains(msg, "md5")
}
