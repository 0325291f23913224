//go:build unix

package main_test

import (
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snapbackup/snap/repo"
	"github.com/snapbackup/snap/repo/local"
)

// TestInitCompression: snap init makes auto repositories unless told
// otherwise; a backup of one stores random data as it is and text
// compressed; an older setting stays what init wrote; an unknown one is
// refused with the known ones listed.
func TestInitCompression(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 19))
	src := t.TempDir()
	random := make([]byte, 300<<10)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	var text []byte
	for len(text) < 300<<10 {
		text = append(text, "level-0 compaction of table 000123.sst finished\n"[rng.IntN(10):]...)
	}
	for name, b := range map[string][]byte{"random": random, "text": text} {
		if err := os.WriteFile(filepath.Join(src, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "auto"},
		{[]string{"--compression", "auto"}, "auto"},
		{[]string{"--compression", "fastest"}, "fastest"},
	} {
		e := newEnv(t)
		e.ok(nil, append([]string{"init", "--kdf-memory", "9", "--kdf-time", "2"}, tc.args...)...)
		e.ok(nil, "backup", "--source", "dir", "--path", src, "--lock-file", "")
		ctx := context.Background()
		be, err := local.Open(e.repo)
		if err != nil {
			t.Fatal(err)
		}
		r, err := repo.Open(ctx, be, "correct horse", repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Config().Compression; got != tc.want {
			t.Errorf("init %v: config compression %q, want %q", tc.args, got, tc.want)
		}
		if err := r.LoadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		for _, b := range []struct {
			name  string
			plain []byte
			want  repo.Compression
		}{{"random", random, repo.CompressionNone}, {"text", text, repo.CompressionZstd}} {
			loc, ok := r.Index().Lookup(r.BlobID(b.plain))
			if !ok || loc.Compression != b.want {
				t.Errorf("init %v: %s stored (%v) with compression %d, want %d", tc.args, b.name, ok, loc.Compression, b.want)
			}
		}
		r.Close()
		if res := e.run("backup", "--source", "dir", "--path", src, "--lock-file", "", "--compression", "lz4"); res.code == 0 ||
			!strings.Contains(res.stderr, "want auto, off, fastest, default or better") {
			t.Errorf("backup --compression lz4: exit %d, %q; want the known settings listed", res.code, res.stderr)
		}
	}
	e := newEnv(t)
	if res := e.run("init", "--kdf-memory", "9", "--kdf-time", "2", "--compression", "lz4"); res.code == 0 ||
		!strings.Contains(res.stderr, "want auto, off, fastest, default or better") {
		t.Errorf("init --compression lz4: exit %d, %q; want the known settings listed", res.code, res.stderr)
	}
	if _, err := os.Stat(filepath.Join(e.repo, "config")); err == nil {
		t.Error("a refused init left a config")
	}
}
