package limit_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/backendtest"
	"github.com/snapbackup/snap/repo/limit"
	"github.com/snapbackup/snap/repo/mem"
)

func TestConformance(t *testing.T) {
	for _, tc := range []struct {
		name     string
		up, down *limit.Limiter
	}{
		{"unlimited", nil, nil},
		// Fast enough for the suite's few MiB, slow enough that most
		// calls wait.
		{"limited", limit.NewLimiter(256 << 20), limit.NewLimiter(256 << 20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T) repo.Backend {
				return limit.New(mem.New(), tc.up, tc.down)
			})
		})
	}
}

func TestNilLimiter(t *testing.T) {
	if l := limit.NewLimiter(0); l != nil {
		t.Errorf("NewLimiter(0) = %v, want nil", l)
	}
	var l *limit.Limiter
	if err := l.WaitN(t.Context(), 1<<40); err != nil {
		t.Errorf("nil WaitN: %v", err)
	}
	if l.Rate() != 0 {
		t.Errorf("nil Rate = %d", l.Rate())
	}
	r := strings.NewReader("x")
	if limit.NewReader(t.Context(), r, nil) != io.Reader(r) {
		t.Error("NewReader with no limit wraps the reader")
	}
}

// The tests below check lower bounds only: a correct limiter can never be
// faster than its rate, however fast or slow the machine.

func TestWaitNLargerThanBucket(t *testing.T) {
	l := limit.NewLimiter(1 << 20) // bucket: 100 KiB
	start := time.Now()
	if err := l.WaitN(t.Context(), 300<<10); err != nil {
		t.Fatal(err)
	}
	// 300 KiB, of which the first 100 KiB are in the full bucket.
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("300 KiB at 1 MiB/s passed in %s", d)
	}
}

func TestWaitNCancelled(t *testing.T) {
	l := limit.NewLimiter(4 << 10)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	if err := l.WaitN(ctx, 1<<20); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: got %v", err)
	}
}

func TestReader(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 25<<10) // 400 KiB
	l := limit.NewLimiter(1 << 20)
	start := time.Now()
	got, err := io.ReadAll(limit.NewReader(t.Context(), bytes.NewReader(data), l))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through the limit: %v, %d bytes", err, len(got))
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("400 KiB at 1 MiB/s read in %s", d)
	}
}

func TestReaderAt(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 25<<10) // 400 KiB
	l := limit.NewLimiter(1 << 20)
	ra := limit.NewReaderAt(t.Context(), bytes.NewReader(data), l)
	start := time.Now()
	got := make([]byte, len(data)-1000)
	if n, err := ra.ReadAt(got, 1000); err != nil || n != len(got) || !bytes.Equal(got, data[1000:]) {
		t.Fatalf("ReadAt through the limit: %d bytes, %v", n, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Errorf("399 KiB at 1 MiB/s read in %s", d)
	}
	// Past the end: the bytes there are and io.EOF, like the inner one.
	buf := make([]byte, 200<<10)
	n, err := ra.ReadAt(buf, int64(len(data))-100)
	if n != 100 || err != io.EOF || !bytes.Equal(buf[:n], data[len(data)-100:]) {
		t.Errorf("ReadAt across the end: %d bytes, %v", n, err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := limit.NewReaderAt(ctx, bytes.NewReader(data), limit.NewLimiter(4<<10)).ReadAt(buf, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadAt with a cancelled context: %v", err)
	}
}

func TestBackendPaces(t *testing.T) {
	up, down := limit.NewLimiter(2<<20), limit.NewLimiter(2<<20)
	be := limit.New(mem.New(), up, down)
	data := bytes.Repeat([]byte("x"), 1<<20)
	h := repo.Handle{Type: repo.PackFile, Name: "ab"}
	start := time.Now()
	if err := be.Save(t.Context(), h, data); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("saved 1 MiB at 2 MiB/s in %s", d)
	}
	start = time.Now()
	var got []byte
	err := be.Load(t.Context(), h, 0, 0, func(rd io.Reader) error {
		var err error
		got, err = io.ReadAll(rd)
		return err
	})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("load: %v, %d bytes", err, len(got))
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("loaded 1 MiB at 2 MiB/s in %s", d)
	}

	// SaveFrom waits for the rate as Save does, and stores the bytes.
	h3 := repo.Handle{Type: repo.PackFile, Name: "ef"}
	start = time.Now()
	if err := be.SaveFrom(t.Context(), h3, bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("saved 1 MiB from a reader at 2 MiB/s in %s", d)
	}
	if st, err := be.Stat(t.Context(), h3); err != nil || st.Size != int64(len(data)) {
		t.Errorf("after SaveFrom: %+v, %v", st, err)
	}

	// A Save cancelled while it waits for the rate stores nothing.
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(20*time.Millisecond, cancel)
	h2 := repo.Handle{Type: repo.PackFile, Name: "cd"}
	if err := be.Save(ctx, h2, bytes.Repeat([]byte("y"), 8<<20)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled save: %v", err)
	}
	if _, err := be.Stat(t.Context(), h2); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("stat after a cancelled save: %v", err)
	}
}
