#!/bin/sh
# Measures peak memory (RSS) of snap check and snap prune on a synthetic
# repository with BLOBS tiny blobs (default one million). Needs GNU time
# (/usr/bin/time -v).
#
#   scripts/measure-gc.sh [BLOBS]
set -eu
BLOBS=${1:-1000000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export SNAP_PASSWORD=synthetic SNAP_REPO="$WORK/repo" SNAP_LOG_LEVEL=warn
cd "$ROOT"
go build -tags disable_grpc_modules -o "$WORK/snap" ./cmd/snap
go build -o "$WORK/synthrepo" ./scripts/synthrepo
"$WORK/synthrepo" -repo "$WORK/repo" -blobs "$BLOBS" -snapshots 20
echo "repository: $(du -sh "$WORK/repo" | cut -f1)"
measure() {
	/usr/bin/time -v "$WORK/snap" "$@" >"$WORK/out" 2>"$WORK/time" || { cat "$WORK/out" "$WORK/time"; exit 1; }
	rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/time")
	wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$WORK/time")
	printf '%-40s peak RSS %6d MiB  wall %s\n' "snap $*" $((rss / 1024)) "$wall"
}
measure check
measure check --read-data
measure prune --keep-last 10 --unreferenced-margin 0s
tail -n 4 "$WORK/out"
measure check --read-data
