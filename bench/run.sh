#!/usr/bin/env bash
# run.sh is `make bench` (and `make bench-quick`, which sets SIZE=200MiB):
# snap against restic and borg on the same RocksDB data set, in one run,
# interleaved, with the machine's physical limits beside the table.
#
#   1. Install what is missing (restic, borgbackup, rocksdb-tools,
#      redis-tools, time, librocksdb-dev) and build bin/snap, bin/rocksdb-server and the
#      helpers in bench/.
#   2. Build the data set once and cache it: JSON-like records
#      (bench/gen) loaded through the RocksDB test server as pipelined
#      MSETs, snappy-compressed SSTs from RocksDB's own
#      flushes and compactions.
#   3. Copy it to a work directory, start the server on it (compactions
#      off, so only the benchmark's writes change files), write a live WAL.
#   4. Measure the physical limits (bench/limits).
#   5. Per step, RUNS times, the tools in a rotating order, each command
#      timed by /usr/bin/time -v after dropping the page cache (when root
#      may):
#        first backup into an empty repository;
#        incremental backup after INCREMENT_PCT % new data (new SSTs from a
#          FLUSH, and a new live WAL);
#        restore of the latest snapshot into an empty directory;
#        the same restore followed by sync (each tool at snap's durability);
#        retention down to one snapshot plus garbage collection.
#   6. snap's compression levels on the same data (and restic on exactly
#      the files snap stores, for the repository sizes), and a perf profile of
#      snap's first backup.
#   7. Write the table as Markdown (stdout and bench/results/<date>-<size>.md),
#      JSON (.json) and every single run (.tsv) beside it.
#
# Fairness: all three read the same bytes. The server stays up and idle
# (no clock writes, no compactions) while the tools run, so the files do not
# change under them; the script checks that. snap asks the server to FREEZE
# as in production; restic and borg back up the data directory (without
# RocksDB's LOG* and LOCK, which snap does not store either). Every tool
# gets a fresh repository per run, encrypted: snap (XChaCha20-Poly1305, zstd
# fastest by default), restic (repository version 2, --compression auto),
# borg (BORG_ENCRYPTION, default repokey, zstd,3).
#
# Nothing here asserts on timings: the numbers are reported, not judged.
#
# Environment:
#   SIZE            data set size (default 2GiB; 200MiB for bench-quick)
#   RUNS            runs per step, the median is reported (default 3)
#   BENCH_DIR       cache and work space (default /var/tmp/snap-bench)
#   CACHE           cold (drop the page cache before each command, default)
#                   or warm
#   TOOLS           default "snap restic borg"
#   INCREMENT_PCT   new data before the incremental backup (default 2)
#   WAL_PCT         live WAL size at the first backup (default 1)
#   SWEEP           1: also snap's compression levels (default 1)
#   PROFILE         1: perf profile of snap's first backup (default 1)
#   VERIFY          1: compare restored files to the originals, run 1 (default 1)
#   BORG_ENCRYPTION default repokey
#   NICE            run every measured command under `nice -n NICE` (e.g.
#                   -10, needs root) so other work on a shared machine
#                   disturbs the tools less; the same for every tool
#   TAG             appended to the result file names (<date>-<size>-TAG)
#   KEEP            1: keep the work directory
#   RESULTS_DIR     default bench/results
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

# --- settings -----------------------------------------------------------------

SIZE=${SIZE:-2GiB}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/snap-bench}
CACHE=${CACHE:-cold}
TOOLS=${TOOLS:-snap restic borg}
INCREMENT_PCT=${INCREMENT_PCT:-2}
WAL_PCT=${WAL_PCT:-1}
SWEEP=${SWEEP:-1}
PROFILE=${PROFILE:-1}
VERIFY=${VERIFY:-1}
BORG_ENCRYPTION=${BORG_ENCRYPTION:-repokey}
RESULTS_DIR=${RESULTS_DIR:-$root/bench/results}
NICE=${NICE:-}
TAG=${TAG:-}
# Bump when bench/gen's output changes, so the cached data set is rebuilt.
GEN_VERSION=1

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}

# parse_size "2GiB" prints bytes. Accepts B, KiB, MiB, GiB (and K, M, G as
# binary units), fractions allowed.
parse_size() {
	awk -v s="$1" 'BEGIN {
		if (match(s, /^[0-9]+(\.[0-9]+)?/) == 0) exit 1
		n = substr(s, 1, RLENGTH); u = tolower(substr(s, RLENGTH + 1))
		if (u == "" || u == "b") m = 1
		else if (u == "k" || u == "kib" || u == "kb") m = 1024
		else if (u == "m" || u == "mib" || u == "mb") m = 1024 ^ 2
		else if (u == "g" || u == "gib" || u == "gb") m = 1024 ^ 3
		else exit 1
		printf "%.0f\n", n * m # mawk'"'"'s %d stops at 2^31-1
	}'
}
size_bytes=$(parse_size "$SIZE") || die "SIZE=$SIZE: want a size like 200MiB or 2GiB"
[ "$size_bytes" -ge $((16 << 20)) ] || die "SIZE=$SIZE is below 16MiB"
case $RUNS in '' | *[!0-9]* | 0) die "RUNS must be a positive number" ;; esac
case $CACHE in cold | warm) ;; *) die "CACHE must be cold or warm" ;; esac
nice_cmd=()
if [ -n "$NICE" ]; then
	case $NICE in -[0-9] | -1[0-9] | [0-9] | 1[0-9]) nice_cmd=(nice -n "$NICE") ;; *) die "NICE must be a niceness from -19 to 19" ;; esac
fi
size_label=$(printf '%s' "$SIZE" | tr -d ' ')

# --- dependencies and builds ----------------------------------------------------

install_missing() {
	local want=() cmd pkg
	for pair in restic:restic borg:borgbackup ldb:rocksdb-tools redis-cli:redis-tools /usr/bin/time:time; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
	done
	dpkg-query -W -f='${Status}' librocksdb-dev 2>/dev/null | grep -q 'install ok installed' || want+=(librocksdb-dev)
	[ ${#want[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null || die "missing ${want[*]} and no apt-get; install them"
	local sudo=()
	[ "$(id -u)" -eq 0 ] || sudo=(sudo)
	log "installing ${want[*]}"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null ||
		{ "${sudo[@]}" apt-get update -q >/dev/null && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${want[@]}" >/dev/null; } ||
		die "apt-get install ${want[*]}"
}

install_missing
export CGO_ENABLED=1
version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
log "building bin/snap ($version), bin/rocksdb-server and the bench helpers"
mkdir -p "$BENCH_DIR/bin"
go build -tags disable_grpc_modules -ldflags "-X main.version=$version" -o bin/snap ./cmd/snap
go build -tags rocksdb -o bin/rocksdb-server ./cmd/rocksdb-server
for t in gen limits report; do
	go build -o "$BENCH_DIR/bin/$t" "./bench/$t"
done
snap=$root/bin/snap
server=$root/bin/rocksdb-server
gen=$BENCH_DIR/bin/gen

have_prune=0
if "$snap" prune --help >/dev/null 2>&1; then
	have_prune=1
fi

# --- the test server --------------------------------------------------------------

server_pid=
port=
hold_fd=
work=

start_server() { # start_server DIR [flags...]
	local dir=$1
	shift
	local slog=$work/server.log
	[ -p "$work/server.stdin" ] || mkfifo "$work/server.stdin"
	[ -n "$hold_fd" ] || exec {hold_fd}<>"$work/server.stdin"
	: >"$slog"
	"$server" --port 0 --rocksdb_db_path "$dir" --time_tick 0 --exit_on_stdin_eof \
		--write_buffer_size $((64 << 20)) "$@" <"$work/server.stdin" 2>>"$slog" {hold_fd}>&- &
	server_pid=$!
	local addr=
	for _ in $(seq 300); do
		addr=$(sed -n 's/^listening on //p' "$slog")
		[ -n "$addr" ] && break
		kill -0 "$server_pid" 2>/dev/null || { cat "$slog" >&2; die "the server did not start"; }
		sleep 0.1
	done
	[ -n "$addr" ] || die "the server did not start within 30s (see $slog)"
	port=${addr##*:}
}

stop_server() {
	[ -n "$server_pid" ] || return 0
	local pid=$server_pid
	server_pid=
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 600); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

rcli() { redis-cli -h 127.0.0.1 -p "$port" "$@"; }

# load BYTES: write about BYTES of new records through the server.
next_id=0
load() {
	local stats=$work/gen.stats
	"$gen" -bytes "$1" -first "$next_id" -seed "$GEN_VERSION" -stats "$stats" -addr "127.0.0.1:$port" ||
		die "loading records through the server"
	next_id=$(sed -n 's/.*next=\([0-9]*\).*/\1/p' "$stats")
}

# listing prints the server's live files as "name length" (FREEZE, THAW).
listing() {
	local dir=$1 line name len
	printf 'FREEZE\nTHAW\n' | rcli | while read -r line; do
		[ "$line" = OK ] && continue
		name=${line#/}
		case $name in
		*:*) len=${name##*:} name=${name%:*} ;;
		*) len=$(stat -c %s "$dir/$name") ;;
		esac
		printf '%s %s\n' "$name" "$len"
	done
}

# fingerprint: names, sizes and mtimes of the files the tools read.
fingerprint() {
	find "$1" -maxdepth 1 -type f ! -name 'LOG*' ! -name LOCK -printf '%f %s %T@\n' | sort | md5sum | cut -c1-32
}

# wait_quiet DIR: until no file changes for a few seconds (compactions done).
wait_quiet() {
	local a b same=0
	a=$(fingerprint "$1")
	for _ in $(seq 300); do
		sleep 2
		b=$(fingerprint "$1")
		if [ "$a" = "$b" ]; then
			same=$((same + 1))
			[ $same -ge 2 ] && return 0
		else
			same=0
		fi
		a=$b
	done
	die "the files in $1 kept changing for 10 minutes"
}

cleanup() {
	local rc=$?
	stop_server
	[ -n "$hold_fd" ] && exec {hold_fd}>&-
	if [ -n "$work" ] && [ -d "$work" ]; then
		if [ "$rc" -ne 0 ]; then
			log "failed (exit $rc); the work directory is kept: $work"
		elif [ "${KEEP:-0}" = 1 ]; then
			log "work directory kept: $work"
		else
			rm -rf "$work"
		fi
	fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the data set -------------------------------------------------------------------

wal_bytes=$((size_bytes * WAL_PCT / 100))
cache=$BENCH_DIR/data-$size_bytes-v$GEN_VERSION
work=$BENCH_DIR/work
rm -rf "$work"
mkdir -p "$work"

build_dataset() {
	local tmp=$cache.tmp target=$((size_bytes - wal_bytes)) live=0 raw=0 ratio_ppm=0 chunk
	rm -rf "$tmp"
	mkdir -p "$tmp"
	log "building the $SIZE data set in $cache (once; cached)"
	start_server "$tmp/db" --rocksdb_create_if_missing_one_off
	while [ "$live" -lt "$target" ]; do
		if [ "$ratio_ppm" -eq 0 ]; then
			chunk=$((target / 4))
		else
			chunk=$(((target - live) * 1000000 / ratio_ppm))
		fi
		[ "$chunk" -gt $((768 << 20)) ] && chunk=$((768 << 20))
		[ "$chunk" -lt $((4 << 20)) ] && chunk=$((4 << 20))
		load "$chunk"
		raw=$((raw + chunk))
		rcli FLUSH >/dev/null
		live=$(listing "$tmp/db" | awk '$1 ~ /\.sst$/ { s += $2 } END { printf "%.0f", s }')
		ratio_ppm=$((live * 1000000 / raw))
		log "  $((raw >> 20)) MiB of records loaded, $((live >> 20)) MiB of SSTs"
	done
	wait_quiet "$tmp/db"
	stop_server
	echo "next_id=$next_id" >"$tmp/meta"
	echo "raw_bytes=$raw" >>"$tmp/meta"
	mv "$tmp" "$cache"
}

[ -f "$cache/meta" ] || build_dataset
# shellcheck disable=SC1091
. "$cache/meta"
data=$work/data
log "copying the data set to $data"
cp -a "$cache/db" "$data"
# No compactions: only the benchmark's writes change files.
start_server "$data" --level0_file_num_compaction_trigger 1000
wait_quiet "$data"
log "writing a live WAL of about $((wal_bytes >> 20)) MiB"
load "$wal_bytes"
listing "$data" >"$work/listing-1"
data_bytes_1=$(awk '{ s += $2 } END { printf "%.0f", s }' "$work/listing-1")
fp_1=$(fingerprint "$data")

# --- measuring ------------------------------------------------------------------------

cache_mode=$CACHE
drop_caches() {
	[ "$cache_mode" = cold ] || return 0
	sync
	if ! { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then
		log "cannot drop the page cache (not root?): measuring with a warm cache"
		cache_mode=warm
	fi
}
warm_up() { # with a warm cache, read the data once so every tool finds it cached
	[ "$cache_mode" = warm ] && cat "$data"/* >/dev/null 2>&1
	return 0
}
drop_caches

export SNAP_PASSWORD=bench-password RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export BORG_BASE_DIR=$work/borg-home BORG_DISPLAY_PASSPHRASE=no BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
unset SNAP_REPO SNAP_SERVER SNAP_DATA RESTIC_REPOSITORY BORG_REPO
tsv=$work/measurements.tsv
printf 'step\ttool\trun\twall_s\tuser_s\tsys_s\tmax_rss_kib\trepo_bytes\tdata_bytes\tload1\n' >"$tsv"

# measure STEP TOOL RUN REPO DATA_BYTES CMD...: time one command.
measure() {
	local step=$1 tool=$2 run=$3 repo=$4 bytes=$5
	shift 5
	local tf=$work/time.out out=$work/logs/$step-$tool-$run.log t0 t1 rc=0 load1
	mkdir -p "$work/logs"
	drop_caches
	warm_up
	load1=$(cut -d' ' -f1 /proc/loadavg)
	t0=$(date +%s.%N)
	"${nice_cmd[@]}" /usr/bin/time -v -o "$tf" "$@" >"$out" 2>&1 || rc=$?
	t1=$(date +%s.%N)
	if [ "$rc" -ne 0 ]; then
		tail -20 "$out" >&2
		die "$step with $tool (run $run) exited $rc: $*"
	fi
	local user sys rss size=0
	user=$(sed -n 's/^\tUser time (seconds): //p' "$tf")
	sys=$(sed -n 's/^\tSystem time (seconds): //p' "$tf")
	rss=$(sed -n 's/^\tMaximum resident set size (kbytes): //p' "$tf")
	[ -n "$repo" ] && size=$(du -sb "$repo" | cut -f1)
	local wall
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$step" "$tool" "$run" "$wall" "$user" "$sys" "$rss" "$size" "$bytes" "$load1" >>"$tsv"
	log "  $step $tool run $run: ${wall}s, cpu $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')s, rss $((rss >> 10)) MiB, repo $((size >> 20)) MiB"
}

na() { # na STEP TOOL RUN REASON: a step a tool cannot do yet
	printf '%s\t%s\t%s\tn/a\t\t\t\t\t\t%s\n' "$1" "$2" "$3" "$4" >>"$tsv"
}

repo_of() { echo "$work/repos/$1-$2"; }

# order RUN: the tools rotated by the run number, so no tool always goes first.
order() {
	local -a t
	read -r -a t <<<"$TOOLS"
	local n=${#t[@]} i out=()
	for ((i = 0; i < n; i++)); do
		out+=("${t[$(((i + $1 - 1) % n))]}")
	done
	echo "${out[@]}"
}

init_repo() { # init_repo TOOL DIR [snap init flags]
	local tool=$1 dir=$2
	shift 2
	rm -rf "$dir"
	mkdir -p "$(dirname "$dir")"
	case $tool in
	snap) "$snap" init --repo "$dir" "$@" >/dev/null ;;
	restic) restic init --repo "$dir" --repository-version 2 >/dev/null ;;
	borg) borg init --encryption "$BORG_ENCRYPTION" "$dir" >/dev/null 2>&1 ;;
	esac
}

backup_cmd() { # backup_cmd TOOL RUN STEP: set cmd to the backup command
	local tool=$1 run=$2 step=$3 repo
	repo=$(repo_of "$tool" "$run")
	case $tool in
	snap) cmd=("$snap" backup --repo "$repo" --server "127.0.0.1:$port" --data "$data" --host bench --json) ;;
	restic) cmd=(restic --repo "$repo" --cache-dir "$work/restic-cache-$run" backup --compression auto --host bench --exclude 'LOG*' --exclude LOCK "$data") ;;
	borg) cmd=(borg create --compression zstd,3 --exclude 'sh:**/LOG*' --exclude 'sh:**/LOCK' "$repo::$step" "$data") ;;
	esac
}

restore_dir=$work/restore
# restored_data TOOL: where TOOL put the data directory under $restore_dir.
restored_data() {
	case $1 in
	snap) echo "$restore_dir/data" ;;
	restic) echo "$restore_dir$data" ;;
	borg) echo "$restore_dir/${data#/}" ;;
	esac
}

verify_restore() { # verify_restore TOOL LISTING
	local dir name len
	dir=$(restored_data "$1")
	while read -r name len; do
		cmp -n "$len" "$data/$name" "$dir/$name" >/dev/null 2>&1 ||
			die "$1 restored $name differently (or not at all) in $dir"
	done <"$2"
	log "  $1: every restored byte matches"
}

read -r -a tools <<<"$TOOLS"
uptime_before=$(uptime)
log "load before: $uptime_before"

log "measuring the physical limits"
limits_flags=()
[ "$cache_mode" = cold ] && limits_flags+=(-cold -scratch "$work")
"${nice_cmd[@]}" "$BENCH_DIR/bin/limits" -dir "$data" -json "$work/limits.json" "${limits_flags[@]}" >"$work/limits.md"
cat "$work/limits.md" >&2

log "step 1: first backup of $((data_bytes_1 >> 20)) MiB"
for run in $(seq "$RUNS"); do
	for tool in $(order "$run"); do
		repo=$(repo_of "$tool" "$run")
		init_repo "$tool" "$repo"
		backup_cmd "$tool" "$run" b1
		measure backup-1 "$tool" "$run" "$repo" "$data_bytes_1" "${cmd[@]}"
	done
done
[ "$(fingerprint "$data")" = "$fp_1" ] || die "the data directory changed during the first backups"

log "step 2: writing ${INCREMENT_PCT}% new data (new SSTs, new live WAL)"
inc=$((size_bytes * INCREMENT_PCT / 100))
load $((inc * 3 / 4))
rcli FLUSH >/dev/null
load $((inc / 4))
listing "$data" >"$work/listing-2"
data_bytes_2=$(awk '{ s += $2 } END { printf "%.0f", s }' "$work/listing-2")
new_bytes=$(awk 'NR == FNR { old[$1] = $2; next } !($1 in old) { s += $2 } ($1 in old) && $2 > old[$1] { s += $2 - old[$1] } END { printf "%.0f", s }' "$work/listing-1" "$work/listing-2")
fp_2=$(fingerprint "$data")
log "incremental: $((data_bytes_2 >> 20)) MiB in total, $((new_bytes >> 20)) MiB in new or grown files"
for run in $(seq "$RUNS"); do
	for tool in $(order "$run"); do
		backup_cmd "$tool" "$run" b2
		measure backup-2 "$tool" "$run" "$(repo_of "$tool" "$run")" "$data_bytes_2" "${cmd[@]}"
	done
done
[ "$(fingerprint "$data")" = "$fp_2" ] || die "the data directory changed during the incremental backups"

# restore_cmd TOOL RUN: set cmd to the restore of the latest snapshot
# into $restore_dir.
restore_cmd() {
	local repo
	repo=$(repo_of "$1" "$2")
	case $1 in
	snap) cmd=("$snap" restore --repo "$repo" --latest --target "$restore_dir/data") ;;
	restic) cmd=(restic --repo "$repo" --cache-dir "$work/restic-cache-$2" restore latest --target "$restore_dir") ;;
	borg) cmd=(sh -c 'cd "$1" && exec borg extract "$2"' sh "$restore_dir" "$repo::b2") ;;
	esac
}

log "step 3: restore of the latest snapshot"
for run in $(seq "$RUNS"); do
	for tool in $(order "$run"); do
		rm -rf "$restore_dir"
		mkdir -p "$restore_dir"
		restore_cmd "$tool" "$run"
		measure restore "$tool" "$run" "" "$data_bytes_2" "${cmd[@]}"
		[ "$VERIFY" = 1 ] && [ "$run" = 1 ] && verify_restore "$tool" "$work/listing-2"
	done
done
# The same restore followed by sync -f of the target's file system, which
# returns once every restored byte is on the disk. snap fsyncs each file
# before it writes CURRENT, so its restore has ended there already; restic
# and borg leave the data in the page cache when they exit (2 GiB dirty,
# none written back, in /proc/meminfo after restic's). This step compares
# the tools at the same durability; step 3 is each tool as it runs.
log "step 3b: the same restore, then sync (every restored byte on disk)"
for run in $(seq "$RUNS"); do
	for tool in $(order "$run"); do
		rm -rf "$restore_dir"
		mkdir -p "$restore_dir"
		restore_cmd "$tool" "$run"
		measure restore-sync "$tool" "$run" "" "$data_bytes_2" sh -c '"$@" && sync -f "$0"' "$restore_dir" "${cmd[@]}"
	done
done
rm -rf "$restore_dir"

log "step 4: retention to the last snapshot and garbage collection"
for run in $(seq "$RUNS"); do
	for tool in $(order "$run"); do
		repo=$(repo_of "$tool" "$run")
		case $tool in
		snap)
			if [ "$have_prune" = 1 ]; then
				measure prune "$tool" "$run" "$repo" "$data_bytes_2" "$snap" prune --repo "$repo" --keep-last 1
			else
				na prune snap "$run" "snap prune not built yet"
			fi
			;;
		restic) measure prune "$tool" "$run" "$repo" "$data_bytes_2" restic --repo "$repo" --cache-dir "$work/restic-cache-$run" forget --keep-last 1 --prune ;;
		borg) measure prune "$tool" "$run" "$repo" "$data_bytes_2" sh -c 'borg prune --keep-last 1 "$1" && borg compact "$1"' sh "$repo" ;;
		esac
	done
done

if [ "$SWEEP" = 1 ] && [[ " $TOOLS " == *" snap "* ]]; then
	log "snap's compression levels, first backup of the same data (once each)"
	for level in off fastest default default-2m better; do
		repo=$work/repos/sweep-$level
		case $level in
		# The higher-ratio setting: fewer, larger chunks give zstd fewer
		# frames to start (docs/performance.md).
		default-2m) init_repo snap "$repo" --compression default --chunk-avg 2048 ;;
		*) init_repo snap "$repo" --compression "$level" ;;
		esac
		measure "level-$level" snap 1 "$repo" "$data_bytes_2" "$snap" backup --repo "$repo" --server "127.0.0.1:$port" --data "$data" --host bench --json
		rm -rf "$repo"
	done
	if [[ " $TOOLS " == *" restic "* ]]; then
		# restic on the very same files, named one by one from snap's
		# FREEZE listing, so the repository sizes compare like for like.
		repo=$work/repos/sweep-restic
		init_repo restic "$repo"
		mapfile -t names < <(cut -d' ' -f1 "$work/listing-2")
		measure level-restic restic 1 "$repo" "$data_bytes_2" bash -c 'cd "$1" && exec restic --repo "$2" --cache-dir "$3" backup --compression auto --host bench -q "${@:4}"' bash "$data" "$repo" "$work/restic-cache-sweep" "${names[@]}"
		rm -rf "$repo"
	fi
fi

profile_txt=$work/profile.txt
profile_dso=$work/profile-dso.txt
: >"$profile_txt"
: >"$profile_dso"
if [ "$PROFILE" = 1 ] && [[ " $TOOLS " == *" snap "* ]] && command -v perf >/dev/null; then
	log "profiling snap's first backup with perf"
	repo=$work/repos/profile
	init_repo snap "$repo"
	drop_caches
	warm_up
	if "${nice_cmd[@]}" perf record -F 999 -g -o "$work/perf.data" -- "$snap" backup --repo "$repo" --server "127.0.0.1:$port" --data "$data" --host bench --json >"$work/logs/profile.log" 2>&1; then
		perf report -i "$work/perf.data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.5 2>/dev/null |
			grep -E '^ +[0-9]' >"$profile_txt" || true
		perf report -i "$work/perf.data" --stdio --no-children --sort dso -g none 2>/dev/null |
			grep -E '^ +[0-9]' >"$profile_dso" || true
	else
		log "perf record failed (see $work/logs/profile.log); no profile"
	fi
	rm -rf "$repo"
fi
uptime_after=$(uptime)
log "load after: $uptime_after"

# --- the report -------------------------------------------------------------------------

first_tool_version() { "$@" 2>/dev/null | head -1; }
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
disk_dev=$(df --output=source "$BENCH_DIR" | tail -1)
disk_fs=$(df --output=fstype "$BENCH_DIR" | tail -1)
rot=$(cat "/sys/block/$(basename "$disk_dev" | sed 's/[0-9]*$//')/queue/rotational" 2>/dev/null || echo '?')
case $rot in 0) disk_kind="non-rotational" ;; 1) disk_kind="the kernel reports it rotational" ;; *) disk_kind="kind unknown" ;; esac
sst_count=$(grep -c '\.sst ' "$work/listing-1" || true)
wal_len=$(awk '$1 ~ /\.log$/ { s += $2 } END { printf "%.0f", s }' "$work/listing-1")
meta=$work/meta.env
{
	echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo "size_label=$size_label"
	echo "size_bytes=$size_bytes"
	echo "runs=$RUNS"
	echo "cache=$cache_mode"
	echo "command=SIZE=$SIZE RUNS=$RUNS CACHE=$CACHE${NICE:+ NICE=$NICE} bench/run.sh"
	echo "nproc=$(nproc)"
	echo "cpu=$cpu_model"
	echo "memory=$mem"
	echo "disk=$disk_dev ($disk_fs, $disk_kind)"
	echo "kernel=$(uname -r)"
	echo "snap=$version"
	echo "restic=$(first_tool_version restic version)"
	echo "borg=$(first_tool_version borg --version)"
	echo "borg_encryption=$BORG_ENCRYPTION"
	echo "go=$(go env GOVERSION)"
	echo "rocksdb=$(dpkg-query -W -f='${Version}' librocksdb-dev 2>/dev/null || echo '?')"
	echo "load_before=$uptime_before"
	echo "load_after=$uptime_after"
	echo "data_files=$(wc -l <"$work/listing-1")"
	echo "data_ssts=$sst_count"
	echo "data_bytes_1=$data_bytes_1"
	echo "wal_bytes_1=$wal_len"
	echo "data_bytes_2=$data_bytes_2"
	echo "new_bytes=$new_bytes"
	echo "increment_pct=$INCREMENT_PCT"
	echo "have_prune=$have_prune"
	# What snap read in its incremental backups (its --json summary).
	echo "snap_incremental_bytes_read=$(cat "$work"/logs/backup-2-snap-*.log 2>/dev/null | sed -n 's/.*"bytes_read":\([0-9]*\).*/\1/p' | sort -n | tail -1)"
} >"$meta"

mkdir -p "$RESULTS_DIR"
stem=$RESULTS_DIR/$(date +%Y-%m-%d)-$size_label${TAG:+-$TAG}
"$BENCH_DIR/bin/report" -meta "$meta" -measurements "$tsv" -limits "$work/limits.json" \
	-profile "$profile_txt" -profile-dso "$profile_dso" -md "$stem.md" -json "$stem.json"
cp "$tsv" "$stem.tsv"
log "results: $stem.md, $stem.json, $stem.tsv"
