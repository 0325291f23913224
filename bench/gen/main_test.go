package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func TestRandomValuesDoNotCompress(t *testing.T) {
	var a, b bytes.Buffer
	for _, w := range []*bytes.Buffer{&a, &b} {
		if err := run([]string{"-values", "random", "-bytes", "1000000", "-seed", "7"}, w); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("the same flags gave different output")
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	z := enc.EncodeAll(a.Bytes(), nil)
	if ratio := float64(len(z)) / float64(a.Len()); ratio < 0.97 {
		t.Errorf("zstd ratio %.3f on random values, want about 1", ratio)
	}
	var j bytes.Buffer
	if err := run([]string{"-bytes", "1000000"}, &j); err != nil {
		t.Fatal(err)
	}
	if ratio := float64(len(enc.EncodeAll(j.Bytes(), nil))) / float64(j.Len()); ratio > 0.8 {
		t.Errorf("zstd ratio %.3f on JSON records, want them compressible", ratio)
	}
}

func TestBadValues(t *testing.T) {
	for _, args := range [][]string{{"-values", "zeros"}, {"-values", "random", "-format", "ldb"}} {
		if err := run(args, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "-values") {
			t.Errorf("%v: err = %v, want one about -values", args, err)
		}
	}
}
