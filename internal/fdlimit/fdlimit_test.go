package fdlimit

import "testing"

func TestWindow(t *testing.T) {
	for _, tc := range []struct {
		soft  uint64
		least int
		want  int
	}{
		{0, 4, Max},        // unknown limit
		{1 << 20, 4, Max},  // large limits stop at Max
		{1024, 4, Max},     // a quarter of 1024
		{256, 4, 64},       // a quarter
		{256, 100, 100},    // what the caller needs, below half
		{256, 1000, 128},   // never more than half the limit
		{64, 20, 20},       // what the caller needs, above a quarter
		{3, 0, 1},          // at least one
		{2000, 300, Max},   // at most Max even when more is needed
		{1 << 62, -5, Max}, // a silly least
	} {
		if got := window(tc.soft, tc.least); got != tc.want {
			t.Errorf("window(%d, %d) = %d, want %d", tc.soft, tc.least, got, tc.want)
		}
	}
	if n := Window(4); n < 1 || n > Max {
		t.Errorf("Window(4) = %d, outside [1, %d]", n, Max)
	}
}
