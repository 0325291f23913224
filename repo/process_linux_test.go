package repo

import "testing"

func TestParseStatStart(t *testing.T) {
	line := "4711 (a (weird) name) S 1 4711 4711 0 -1 4194560 123 0 0 0 5 6 0 0 20 0 1 0 987654 1234567 89 18446744073709551615"
	got, err := parseStatStart(line)
	if err != nil || got != 987654 {
		t.Fatalf("parseStatStart = %d, %v; want 987654", got, err)
	}
	for _, bad := range []string{"", "4711 (x) S 1 2", "no paren"} {
		if _, err := parseStatStart(bad); err == nil {
			t.Errorf("parseStatStart(%q) accepted", bad)
		}
	}
}
