#!/usr/bin/env bash
# fleet.sh is the fleet row of `make bench` (and `make bench-fleet` on its
# own): what a node's backup and restore cost in a repository shared by a
# fleet, against the same commands on an empty repository (issue 18).
#
#   1. Build, once, a fleet repository with scripts/synthrepo (FLEET_HOSTS
#      hosts, FLEET_BLOBS blobs in all, FLEET_SNAPSHOTS snapshots a host, a
#      tenth of each host's chunks from a pool whose every blob
#      FLEET_OVERLAP hosts reference), an empty repository written by
#      synthrepo too (so both have the same config and key cost), and a Pebble
#      database of DB_SIZE (internal/testpebble); both cached in BENCH_DIR
#      and rebuilt when the code that writes them changes.
#   2. Per run, RUNS times, on a fresh copy of the fleet repository and on a
#      fresh empty one, in a rotating order, each command timed by the
#      clock in nanoseconds, its peak RSS taken from /usr/bin/time -v
#      (with FLEET_CACHE=cold after evicting the data, the
#      repository and snap from the page cache with bench/evict):
#        first backup of a checkpoint of the database by a new host;
#        its incremental after 1% more keys (new tables);
#        restore --latest --host of that host into an empty directory.
#   3. Once, on a fresh copy of the fleet repository: check, prune
#      --keep-last 1 (forgetting half the fleet's snapshots, repacking), and
#      check again: wall time and peak RSS.
#   4. Print a Markdown table of medians with the fleet/empty ratios beside
#      the issue's targets (wall <= 1.5x, peak RSS <= 1.25x), and write it
#      to bench/results/<date>-fleet-<hosts>.md.
#
# Nothing here asserts on timings: the numbers are reported, not judged.
#
# Environment: FLEET_HOSTS (1000), FLEET_BLOBS (2000000), FLEET_SNAPSHOTS
# (2), FLEET_OVERLAP (4), DB_SIZE (50MiB), RUNS (3), FLEET_CACHE (warm or cold; default warm:
# the fleet's cost is the index, which a node reads from the bucket, not
# the page cache), BENCH_DIR (/var/tmp/snap-bench), RESULTS_DIR
# (bench/results), TAG.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

FLEET_HOSTS=${FLEET_HOSTS:-1000}
FLEET_BLOBS=${FLEET_BLOBS:-2000000}
FLEET_SNAPSHOTS=${FLEET_SNAPSHOTS:-2}
FLEET_OVERLAP=${FLEET_OVERLAP:-4}
DB_SIZE=${DB_SIZE:-50MiB}
RUNS=${RUNS:-3}
CACHE=${FLEET_CACHE:-warm}
BENCH_DIR=${BENCH_DIR:-/var/tmp/snap-bench}
RESULTS_DIR=${RESULTS_DIR:-$root/bench/results}
TAG=${TAG:-}

log() { printf '[bench-fleet %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}
case $DB_SIZE in
*GiB) bytes=$((${DB_SIZE%GiB} << 30)) ;;
*MiB) bytes=$((${DB_SIZE%MiB} << 20)) ;;
*) die "DB_SIZE=$DB_SIZE: want NMiB or NGiB" ;;
esac
case $CACHE in cold | warm) ;; *) die "FLEET_CACHE must be cold or warm" ;; esac
if ! command -v /usr/bin/time >/dev/null 2>&1; then
	sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	log "installing time"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends time >/dev/null ||
		{ "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends time >/dev/null; } ||
		die "apt-get install time"
fi

export CGO_ENABLED=1
mkdir -p "$BENCH_DIR/bin" "$RESULTS_DIR"
go build -tags disable_grpc_modules -o bin/snap ./cmd/snap
go build -o "$BENCH_DIR/bin/testpebble" ./internal/testpebble
go build -o "$BENCH_DIR/bin/synthrepo" ./scripts/synthrepo
go build -o "$BENCH_DIR/bin/evict" ./bench/evict
snap=$root/bin/snap
pebble=$BENCH_DIR/bin/testpebble
export SNAP_PASSWORD=bench SNAP_LOG_LEVEL=warn

# The cached fleet is rebuilt when what writes it changed.
version=$(git log -1 --format=%h -- scripts/synthrepo repo snapshot 2>/dev/null || echo unknown)
fleet=$BENCH_DIR/fleet-$FLEET_HOSTS-$FLEET_BLOBS-$FLEET_SNAPSHOTS-$FLEET_OVERLAP
if [ "$(cat "$fleet/.done" 2>/dev/null)" != "$version" ]; then
	log "building a fleet repository: $FLEET_HOSTS hosts, $FLEET_BLOBS blobs, $FLEET_SNAPSHOTS snapshots a host, pool blobs in $FLEET_OVERLAP hosts"
	rm -rf "$fleet"
	"$BENCH_DIR/bin/synthrepo" -repo "$fleet" -hosts "$FLEET_HOSTS" -blobs "$FLEET_BLOBS" -snapshots "$FLEET_SNAPSHOTS" -overlap "$FLEET_OVERLAP" >/dev/null
	echo "$version" >"$fleet/.done"
fi
empty=$BENCH_DIR/fleet-empty
if [ "$(cat "$empty/.done" 2>/dev/null)" != "$version" ]; then
	rm -rf "$empty"
	"$BENCH_DIR/bin/synthrepo" -repo "$empty" -blobs 0 -snapshots 1 >/dev/null
	echo "$version" >"$empty/.done"
fi
keys=$((bytes / 110))
more=$((keys / 100))
dbcache=$BENCH_DIR/pebble-$DB_SIZE
if [ ! -e "$dbcache/.done" ]; then
	log "building a Pebble database of about $DB_SIZE ($keys keys)"
	rm -rf "$dbcache"
	"$pebble" put "$dbcache" k 0 "$keys"
	touch "$dbcache/.done"
fi

work=$(mktemp -d "$BENCH_DIR/fleet-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
ckpt=$work/ckpt

drop_caches() {
	[ "$CACHE" = cold ] || return 0
	"$BENCH_DIR/bin/evict" -q "$work" "$snap"
}

# measure STEP KIND RUN CMD...: one timed command; appends "step kind run
# seconds rss_kib" to $work/runs.tsv.
measure() {
	local step=$1 kind=$2 run=$3
	shift 3
	drop_caches
	# Wall time from the clock in nanoseconds: time -v gives hundredths,
	# too coarse for an incremental of some 30 ms.
	local t0 t1
	t0=$(date +%s%N)
	/usr/bin/time -v -o "$work/time" "$@" >"$work/out" 2>"$work/err" || {
		cat "$work/err" "$work/out" >&2
		die "$kind $step failed"
	}
	t1=$(date +%s%N)
	local secs rss
	secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.4f", (b - a) / 1e9}')
	rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/time")
	printf '%s\t%s\t%s\t%s\t%s\n' "$step" "$kind" "$run" "$secs" "$rss" >>"$work/runs.tsv"
}

fresh_repo() { # KIND DIR
	rm -rf "$2"
	case $1 in
	empty) cp -a "$empty" "$2" && rm -f "$2/.done" ;;
	fleet) cp -a "$fleet" "$2" && rm -f "$2/.done" ;;
	esac
}

: >"$work/runs.tsv"
for ((run = 1; run <= RUNS; run++)); do
	log "run $run of $RUNS"
	order=(empty fleet)
	((run % 2 == 0)) && order=(fleet empty)
	for kind in "${order[@]}"; do
		repo=$work/repo-$kind
		fresh_repo "$kind" "$repo"
		db=$work/db
		rm -rf "$db" "$ckpt"
		cp -a "$dbcache" "$db"
		rm -f "$db/.done"
		"$pebble" checkpoint "$db" "$ckpt"
		host=bench-node-$run
		measure first "$kind" "$run" env SNAP_REPO="$repo" "$snap" backup --source dir --path "$ckpt" --host "$host" --json
		"$pebble" put "$db" k "$keys" "$more"
		rm -rf "$ckpt"
		"$pebble" checkpoint "$db" "$ckpt"
		measure incremental "$kind" "$run" env SNAP_REPO="$repo" "$snap" backup --source dir --path "$ckpt" --host "$host" --json
		rm -rf "$work/target"
		measure restore "$kind" "$run" env SNAP_REPO="$repo" "$snap" restore --latest --host "$host" --target "$work/target"
	done
done

log "check and prune on the fleet repository"
repo=$work/repo-gc
fresh_repo fleet "$repo"
measure check fleet 1 env SNAP_REPO="$repo" "$snap" check
measure prune fleet 1 env SNAP_REPO="$repo" "$snap" prune --keep-last 1 --unreferenced-margin 0s
measure check-after fleet 1 env SNAP_REPO="$repo" "$snap" check

# median per step and kind
med() { # STEP KIND COLUMN(4: seconds, 5: rss)
	awk -F'\t' -v s="$1" -v k="$2" -v c="$3" '$1 == s && $2 == k {print $c}' "$work/runs.tsv" | sort -n |
		awk '{a[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
spread() { # STEP KIND COLUMN: min-max
	awk -F'\t' -v s="$1" -v k="$2" -v c="$3" '$1 == s && $2 == k {print $c}' "$work/runs.tsv" | sort -n |
		awk 'NR == 1 {lo = $1} {hi = $1} END {print lo "-" hi}'
}
out=$RESULTS_DIR/$(date +%Y-%m-%d)-fleet-$FLEET_HOSTS${TAG:+-$TAG}.md
{
	echo "### Fleet: $FLEET_HOSTS hosts, $FLEET_BLOBS blobs, $FLEET_SNAPSHOTS snapshots a host, pool blobs in $FLEET_OVERLAP hosts; a $DB_SIZE Pebble checkpoint ($(git rev-parse --short HEAD), $(nproc) cores, CACHE=$CACHE, medians of $RUNS)"
	echo
	echo "| step | empty repo: wall s | peak RSS MiB | fleet repo: wall s (runs) | peak RSS MiB | wall fleet/empty (target <= 1.5) | RSS fleet/empty (target <= 1.25) |"
	echo "|---|---|---|---|---|---|---|"
	for step in first incremental restore; do
		ew=$(med $step empty 4) er=$(med $step empty 5) fw=$(med $step fleet 4) fr=$(med $step fleet 5)
		awk -v s="$step" -v ew="$ew" -v er="$er" -v fw="$fw" -v fr="$fr" -v sp="$(spread $step fleet 4)" 'BEGIN {
			printf "| %s | %.3f | %.0f | %.3f (%s) | %.0f | %.2f | %.2f |\n", s, ew, er / 1024, fw, sp, fr / 1024, (ew > 0 ? fw / ew : 0), (er > 0 ? fr / er : 0)
		}'
	done
	echo
	echo "| on the fleet repository | wall s | peak RSS MiB (target < 1024) |"
	echo "|---|---|---|"
	for step in check prune check-after; do
		awk -v s="$step" -v w="$(med $step fleet 4)" -v r="$(med $step fleet 5)" 'BEGIN {printf "| %s | %.2f | %.0f |\n", s, w, r / 1024}'
	done
} | tee "$out"
log "wrote $out"
