package main

import (
	"io"
	"slices"
	"testing"
)

func TestFlagsFirst(t *testing.T) {
	app := newApp(io.Discard, io.Discard)
	cases := []struct{ in, want []string }{
		{[]string{"snap", "restore", "abcd", "--target", "/x"}, []string{"snap", "restore", "--target", "/x", "abcd"}},
		{[]string{"snap", "--repo", "r", "restore", "abcd", "--latest"}, []string{"snap", "--repo", "r", "restore", "--latest", "abcd"}},
		{[]string{"snap", "ls", "abcd", "--json"}, []string{"snap", "ls", "--json", "abcd"}},
		{[]string{"snap", "restore", "--target=/x", "abcd"}, []string{"snap", "restore", "--target=/x", "abcd"}},
		{[]string{"snap", "restore", "abcd", "--", "--target"}, []string{"snap", "restore", "abcd", "--", "--target"}},
		{[]string{"snap", "--json"}, []string{"snap", "--json"}},
		{[]string{"snap", "nosuch", "x", "--y"}, []string{"snap", "nosuch", "x", "--y"}},
		// a subcommand's own flags after its arguments
		{[]string{"snap", "key", "remove", "abcd", "--retry-lock", "1m"}, []string{"snap", "key", "remove", "--retry-lock", "1m", "abcd"}},
		{[]string{"snap", "--json", "key", "--repo", "r", "add", "--new-password-file", "f"}, []string{"snap", "--json", "key", "--repo", "r", "add", "--new-password-file", "f"}},
		{[]string{"snap", "key", "list", "--json"}, []string{"snap", "key", "list", "--json"}},
		{[]string{"snap", "key", "nosuch", "--json"}, []string{"snap", "key", "--json", "nosuch"}},
	}
	for _, tc := range cases {
		if got := flagsFirst(app, tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("flagsFirst(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
