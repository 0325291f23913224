package mem_test

import (
	"bytes"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/mem"
)

func TestBackend(t *testing.T) {
	backendtest.Run(t, func(t *testing.T) repo.Backend { return mem.New() })
}

// The stored bytes must not alias the caller's slices.
func TestCopies(t *testing.T) {
	be := mem.New()
	h := repo.Handle{Type: repo.PackFile, Name: "abcd"}
	data := []byte("hello")
	if err := be.Save(t.Context(), h, data); err != nil {
		t.Fatal(err)
	}
	data[0] = 'J'
	got := backendtest.LoadAll(t, be, h)
	if !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("stored bytes changed with the caller's slice: %q", got)
	}
	got[0] = 'Y'
	if got := backendtest.LoadAll(t, be, h); !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("stored bytes changed with a loaded slice: %q", got)
	}
}
