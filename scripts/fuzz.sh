#!/usr/bin/env bash
# fuzz.sh runs every Fuzz* target in the module for a short time each
# (default 10s; `make fuzz FUZZTIME=1m` for longer). Inputs that fail are
# written to the package's testdata/fuzz/, which belongs in git.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${1:-10s}
go=${GO:-go}

found=0
while IFS=: read -r file decl; do
	name=${decl#func }
	name=${name%%(*}
	dir=$(dirname "$file")
	found=$((found + 1))
	echo "==> $name in $dir for $fuzztime"
	"$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$dir"
done < <(grep -r --include='*_test.go' -o -E '^func Fuzz[A-Za-z0-9_]*\(' . | sort -u)
echo "fuzz: $found targets ran"
