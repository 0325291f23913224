#!/usr/bin/env bash
# dir.sh is the dir row of `make bench` (and `make bench-dir` on its own):
# snap --source dir against restic on the same checkpoint directory of a
# real Pebble v2 database (internal/testpebble), in one run, interleaved.
#
#   1. Build a Pebble database of DIR_SIZE (cached in BENCH_DIR) and take a
#      checkpoint of it (Pebble hard-links its tables into the directory).
#   2. Per run, RUNS times, tools in a rotating order, each into a fresh
#      repository, each command timed by /usr/bin/time -v after dropping
#      the page cache (CACHE=cold, when root may):
#        first backup of the checkpoint;
#        second backup of a new checkpoint at the same path after
#          INCREMENT_PCT % more keys (the same tables hard-linked again, and
#          the new ones).
#   3. Print a Markdown table of medians, with what each read from the
#      disk (cold cache; restic, unlike snap, reads a file again when its
#      ctime changed, and a checkpoint's hard link changes it).
#
# Nothing here asserts on timings.
#
# Environment: DIR_SIZE (default 500MiB), RUNS (3), BENCH_DIR
# (/var/tmp/snap-bench), CACHE (cold or warm), INCREMENT_PCT (2),
# RESULTS_DIR (bench/results), TAG.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

DIR_SIZE=${DIR_SIZE:-500MiB}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/snap-bench}
CACHE=${CACHE:-cold}
INCREMENT_PCT=${INCREMENT_PCT:-2}
RESULTS_DIR=${RESULTS_DIR:-$root/bench/results}
TAG=${TAG:-}

log() { printf '[bench-dir %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}
case $DIR_SIZE in
*GiB) bytes=$((${DIR_SIZE%GiB} << 30)) ;;
*MiB) bytes=$((${DIR_SIZE%MiB} << 20)) ;;
*) die "DIR_SIZE=$DIR_SIZE: want NMiB or NGiB" ;;
esac
case $CACHE in cold | warm) ;; *) die "CACHE must be cold or warm" ;; esac

for pair in restic:restic /usr/bin/time:time; do
	command -v "${pair%%:*}" >/dev/null 2>&1 && continue
	sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	log "installing ${pair#*:}"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pair#*:}" >/dev/null ||
		{ "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pair#*:}" >/dev/null; } ||
		die "apt-get install ${pair#*:}"
done

export CGO_ENABLED=1
mkdir -p "$BENCH_DIR/bin"
go build -tags disable_grpc_modules -o bin/snap ./cmd/snap
go build -o "$BENCH_DIR/bin/testpebble" ./internal/testpebble
pebble=$BENCH_DIR/bin/testpebble
snap=$root/bin/snap

# A key and its value are about 110 bytes, and the values (hex digits)
# barely compress: about 110 bytes a key in Pebble's tables.
keys=$((bytes / 110))
more=$((keys * INCREMENT_PCT / 100))
cache=$BENCH_DIR/pebble-$DIR_SIZE
if [ ! -e "$cache/.done" ]; then
	log "building a Pebble database of about $DIR_SIZE ($keys keys)"
	rm -rf "$cache"
	step=2000000
	for ((from = 0; from < keys; from += step)); do
		"$pebble" put "$cache" k "$from" $((keys - from < step ? keys - from : step))
	done
	touch "$cache/.done"
fi
work=$(mktemp -d "$BENCH_DIR/dir-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
ckpt=$work/ckpt

drop_caches() {
	[ "$CACHE" = cold ] || return 0
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}

# measure STEP TOOL RUN CMD...: one timed command; appends "step tool run
# seconds rss_kib" to $work/runs.tsv.
measure() {
	local step=$1 tool=$2 run=$3
	shift 3
	drop_caches
	/usr/bin/time -v -o "$work/time" "$@" >"$work/out" 2>"$work/err" || {
		cat "$work/err" >&2
		die "$tool $step failed"
	}
	local secs rss
	secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; print s}' "$work/time")
	rss=$(awk -F': ' '/Maximum resident/ {print $2}' "$work/time")
	# What it read from the disk (512-byte blocks; 0 with a warm cache).
	reads=$(awk -F': ' '/File system inputs/ {print $2 * 512}' "$work/time")
	printf '%s\t%s\t%s\t%s\t%s\n' "$step" "$tool" "$run" "$secs" "$rss" >>"$work/runs.tsv"
	printf '%s\t%s\t%s\tread\t%s\n' "$step" "$tool" "$run" "$reads" >>"$work/reads.tsv"
}

checkpoint() {
	rm -rf "$ckpt"
	"$pebble" checkpoint "$db" "$ckpt"
}

export SNAP_PASSWORD=bench RESTIC_PASSWORD=bench
: >"$work/runs.tsv"
: >"$work/reads.tsv"
tools=(snap restic)
for ((run = 1; run <= RUNS; run++)); do
	log "run $run of $RUNS"
	db=$work/db-$run
	cp -a "$cache" "$db"
	rm -f "$db/.done"
	order=("${tools[@]}")
	((run % 2 == 0)) && order=(restic snap)
	for tool in "${order[@]}"; do
		repo=$work/repo-$tool-$run
		case $tool in
		snap) SNAP_REPO=$repo "$snap" init >/dev/null ;;
		restic) restic init --repo "$repo" --repository-version 2 >/dev/null ;;
		esac
	done
	checkpoint
	for step in first second; do
		if [ $step = second ]; then
			"$pebble" put "$db" k "$keys" "$more" # new keys, new tables
			checkpoint
		fi
		for tool in "${order[@]}"; do
			repo=$work/repo-$tool-$run
			case $tool in
			snap) measure $step snap $run env SNAP_REPO="$repo" "$snap" backup --source dir --path "$ckpt" --host bench --json ;;
			restic) measure $step restic $run restic --repo "$repo" --cache-dir "$work/restic-cache-$run" backup --compression auto --host bench --json "$ckpt" ;;
			esac
		done
	done
	rm -rf "$db" "$work"/repo-*-"$run" "$work/restic-cache-$run"
done

ckpt_bytes=$(du -sb --apparent-size "$cache" | cut -f1)
mkdir -p "$RESULTS_DIR"
out=$RESULTS_DIR/$(date +%Y-%m-%d)-dir-$DIR_SIZE${TAG:+-$TAG}.md
{
	echo "## dir: a Pebble checkpoint of $(awk -v b="$ckpt_bytes" 'BEGIN {printf "%.0f MB", b / 1e6}'), $CACHE cache, medians of $RUNS"
	echo
	echo "snap $(git describe --tags --always --dirty 2>/dev/null), $(restic version | head -1 | cut -d' ' -f1-2); $(nproc) cores"
	echo
	echo "| step | snap s | restic s | snap/restic | snap RSS MiB | restic RSS MiB | snap disk read MB | restic disk read MB |"
	echo "|---|---|---|---|---|---|---|---|"
	for step in first second; do
		awk -F'\t' -v step=$step '
			function median(a, n,   i, j, t) {
				for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
				return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
			}
			FILENAME ~ /runs/ && $1 == step { s[$2, ++ns[$2]] = $4; m[$2, ++nm[$2]] = $5 }
			FILENAME ~ /reads/ && $1 == step { r[$2, ++nr[$2]] = $5 }
			END {
				for (t in ns) ;
				split("snap restic", tools, " ")
				for (k = 1; k <= 2; k++) {
					tl = tools[k]
					for (i = 1; i <= ns[tl]; i++) { a[i] = s[tl, i] }; sec[tl] = median(a, ns[tl])
					for (i = 1; i <= nm[tl]; i++) { a[i] = m[tl, i] }; rss[tl] = median(a, nm[tl]) / 1024
					for (i = 1; i <= nr[tl]; i++) { a[i] = r[tl, i] }; rd[tl] = median(a, nr[tl]) / 1e6
				}
				printf "| %s | %.2f | %.2f | %.2f (%.2fx) | %.0f | %.0f | %.1f | %.1f |\n", step, sec["snap"], sec["restic"],
					sec["snap"] / sec["restic"], sec["restic"] / sec["snap"], rss["snap"], rss["restic"], rd["snap"], rd["restic"]
			}' "$work/runs.tsv" "$work/reads.tsv"
	done
	echo
	echo "Every run (step, tool, run, seconds, peak RSS KiB):"
	echo
	echo '```'
	cat "$work/runs.tsv"
	echo '```'
} | tee "$out"
log "wrote $out"
