#!/usr/bin/env bash
# run.sh is `make bench`: snap against restic, borg, RocksDB's BackupEngine
# (`ldb backup`/`ldb restore`) and `tar | zstd -1 -T0` (the machine's
# compression limit) on one shape of database, in one run, interleaved, with
# a cold and/or a warm page cache, and the machine's physical limits beside
# the table.
#
# Shapes (SHAPE=):
#   large           few ~64 MiB snappy SSTs: JSON-like records (bench/gen)
#                   through the RocksDB test server, its 64 MiB write buffer
#                   and leveled compaction (the data set of earlier runs)
#   many-plain      thousands of small uncompressed SSTs, all in level 0:
#                   the same records through `ldb load --compression_type=no
#                   --write_buffer_size=MANY_WRITE_BUFFER --auto_compaction=false`
#                   (the test server has no compression option, so ldb
#                   builds these two; the server then serves them)
#   many-snappy     the same with --compression_type=snappy
#   many            many-plain, then many-snappy
#   incompressible  random values (bench/gen -values random) through the
#                   server: SSTs RocksDB stores uncompressed
#   dir             a checkpoint directory of a real Pebble database
#                   (internal/testpebble), `snap backup --source dir`
#   all             large, many-plain, many-snappy, incompressible, dir in
#                   turn, then one summary across them (CACHE=both by default)
#
#   1. Install what is missing (restic, borgbackup, rocksdb-tools,
#      redis-tools, time, zstd, librocksdb-dev) and build bin/snap,
#      bin/rocksdb-server and the helpers in bench/.
#   2. Build the shape's data set once and cache it in BENCH_DIR.
#   3. Copy it to a work directory, start the server on it (compactions
#      off, so only the benchmark's writes change files), write a live WAL;
#      for dir, take a Pebble checkpoint.
#   4. Measure the physical limits (bench/limits: read, hash, compress,
#      encrypt, write).
#   5. Per step, RUNS times, each cache mode, the tools in a rotating order,
#      each command timed by /usr/bin/time -v:
#        first backup into an empty repository;
#        incremental backup after INCREMENT_PCT % new data (RocksDB: records
#          flushed into new SSTs and a new live WAL; dir: more keys and a
#          new checkpoint at the same path); ldb backs up into its existing
#          backup directory, which skips the SSTs it has;
#        restore of the latest snapshot into an empty directory (the one
#          before moved aside until the end of step 3b: see retired);
#        the same restore followed by sync (every tool at snap's durability);
#        a backup after a full compaction (COMPACT: every table rewritten),
#          into the same repositories (not for dir);
#        retention down to one snapshot plus garbage collection (snap,
#          restic, borg).
#      Cold: before each command the page cache of the whole work directory
#      (data, repositories, tool caches) and of the tools' binaries is
#      emptied: bench/evict (sync, then fadvise DONTNEED; no root needed)
#      or, with EVICT=drop, /proc/sys/vm/drop_caches (root). Warm: the
#      command's inputs (data, repository, tool cache) are read once first.
#   6. snap's compression levels on the same data (and restic on exactly
#      the files snap stores), and a perf profile of snap's first backup.
#   7. Write the report as Markdown (stdout and
#      bench/results/<date>-<shape>-<size>[-TAG].md), JSON and every single
#      run (.tsv) beside it; SHAPE=all also <date>-all-<size>[-TAG].md.
#
# Fairness: every tool reads the same bytes. The server stays up and idle
# while the tools run, so the files do not change under them; the script
# checks that. snap FREEZEs the server as in production; restic, borg and
# tar read the data directory (without RocksDB's LOG* and LOCK, which snap
# does not store either). BackupEngine needs the database open in its own
# process and the server holds its lock, so `ldb backup` runs on a copy of
# the directory taken while the server is idle (untimed); its open replays
# the live WAL into a new SST first, as any RocksDB open does. Every tool
# gets a fresh repository per run and cache mode: snap (XChaCha20-Poly1305,
# zstd fastest by default), restic (repository version 2, --compression
# auto), borg (BORG_ENCRYPTION, default repokey, zstd,3), ldb (a plain
# checksummed copy, no compression, no encryption, --num_threads = nproc,
# snap's thread count), tar | zstd -1 -T0 (one stream, no encryption).
#
# Nothing here asserts on timings: the numbers are reported, not judged.
#
# Environment:
#   SHAPE           see above (default large)
#   SIZE            data set size (default 2GiB; 200MiB for bench-quick)
#   RUNS            runs per step, the median is reported (default 3)
#   CACHE           cold, warm or both (default cold; both for SHAPE=all
#                   and SHAPE=many)
#   EVICT           how cold is made: fadvise (bench/evict, default) or
#                   drop (/proc/sys/vm/drop_caches, needs root; also
#                   evicts everything else on the machine)
#   TOOLS           default "snap restic borg ldb tar-zstd"
#   INCREMENT_PCT   new data before the incremental backup (default 1)
#   COMPACT_STEP    1: after the restores, a full compaction (the server's
#                   COMPACT) and one more backup of every tool (default 1;
#                   not for dir)
#   WAL_PCT         live WAL size at the first backup (default 1)
#   MANY_WRITE_BUFFER  write buffer of the many shapes (default SIZE/2000,
#                   at least 32 KiB: about 2,000 SSTs at any size)
#   SWEEP           1: also snap's compression levels (default 1)
#   PROFILE         1: perf profile of snap's first backup (default 1)
#   VERIFY          1: compare restored files to the originals, run 1 (default 1)
#   BORG_ENCRYPTION default repokey
#   SNAP_KEY        how snap's repositories are opened: generated (default:
#                   `snap init --generate-key`, 256 random bits that open
#                   without a KDF, what snap recommends for unattended
#                   backups) or password (SNAP_PASSWORD, stretched by
#                   Argon2id on every command, as restic's scrypt and
#                   borg's PBKDF2 stretch theirs: neither has a mode without)
#   NICE            run every measured command under `nice -n NICE`
#   TAG             appended to the result file names
#   KEEP            1: keep the work directory
#   BENCH_DIR       cache and work space (default /var/tmp/snap-bench)
#   RESULTS_DIR     default bench/results
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD

log() { printf '[bench %s %s] %s\n' "${SHAPE:-}" "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}

# --- settings -----------------------------------------------------------------

SHAPE=${SHAPE:-large}
SIZE=${SIZE:-2GiB}
RUNS=${RUNS:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/snap-bench}
TOOLS=${TOOLS:-snap restic borg ldb tar-zstd}
INCREMENT_PCT=${INCREMENT_PCT:-1}
COMPACT_STEP=${COMPACT_STEP:-1}
WAL_PCT=${WAL_PCT:-1}
SWEEP=${SWEEP:-1}
PROFILE=${PROFILE:-1}
VERIFY=${VERIFY:-1}
EVICT=${EVICT:-fadvise}
BORG_ENCRYPTION=${BORG_ENCRYPTION:-repokey}
SNAP_KEY=${SNAP_KEY:-generated}
case $SNAP_KEY in generated | password) ;; *) echo "SNAP_KEY=$SNAP_KEY: want generated or password" >&2; exit 2 ;; esac
RESULTS_DIR=${RESULTS_DIR:-$root/bench/results}
NICE=${NICE:-}
TAG=${TAG:-}
RESULT_DATE=${RESULT_DATE:-$(date +%Y-%m-%d)}
export RESULT_DATE
# Bump when bench/gen's output changes, so the cached data sets are rebuilt.
GEN_VERSION=1

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
case $EVICT in fadvise | drop) ;; *) die "EVICT must be fadvise or drop" ;; esac
size_label=$(printf '%s' "$SIZE" | tr -d ' ')

shapes=
case $SHAPE in
all) shapes="large many-plain many-snappy incompressible dir" ;;
many) shapes="many-plain many-snappy" ;;
large | many-plain | many-snappy | incompressible | dir) ;;
*) die "SHAPE=$SHAPE: want large, many, many-plain, many-snappy, incompressible, dir or all" ;;
esac

# Several shapes: run this script once per shape, then one summary.
if [ -n "$shapes" ]; then
	CACHE=${CACHE:-both}
	failed=()
	jsons=()
	for s in $shapes; do
		if SHAPE=$s CACHE=$CACHE "$root/bench/run.sh"; then
			jsons+=("$RESULTS_DIR/$RESULT_DATE-$s-$size_label${TAG:+-$TAG}.json")
		else
			failed+=("$s")
		fi
	done
	if [ ${#jsons[@]} -gt 0 ]; then
		stem=$RESULTS_DIR/$RESULT_DATE-$SHAPE-$size_label${TAG:+-$TAG}
		"$BENCH_DIR/bin/report" -combine -md "$stem.md" "${jsons[@]}"
		log "summary: $stem.md"
	fi
	[ ${#failed[@]} -eq 0 ] || die "shapes that failed: ${failed[*]}"
	exit 0
fi

CACHE=${CACHE:-cold}
case $CACHE in
cold | warm) caches=$CACHE ;;
both) caches="cold warm" ;;
*) die "CACHE must be cold, warm or both" ;;
esac
nice_cmd=()
if [ -n "$NICE" ]; then
	case $NICE in -[0-9] | -1[0-9] | [0-9] | 1[0-9]) nice_cmd=(nice -n "$NICE") ;; *) die "NICE must be a niceness from -19 to 19" ;; esac
fi
threads=$(nproc)

# --- dependencies and builds ----------------------------------------------------

install_missing() {
	local want=() cmd pkg
	for pair in restic:restic borg:borgbackup ldb:rocksdb-tools redis-cli:redis-tools /usr/bin/time:time zstd:zstd; do
		cmd=${pair%%:*} pkg=${pair#*:}
		command -v "$cmd" >/dev/null 2>&1 || want+=("$pkg")
	done
	dpkg-query -W -f='${Status}' librocksdb-dev 2>/dev/null | grep -q 'install ok installed' || want+=(librocksdb-dev)
	[ ${#want[@]} -eq 0 ] && return 0
	command -v apt-get >/dev/null || die "missing ${want[*]} and no apt-get; install them"
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || die "missing ${want[*]}: not root and no sudo; install them"
		sudo=(sudo)
	fi
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
for t in gen limits report evict; do
	go build -o "$BENCH_DIR/bin/$t" "./bench/$t"
done
go build -o "$BENCH_DIR/bin/testpebble" ./internal/testpebble
snap=$root/bin/snap
server=$root/bin/rocksdb-server
gen=$BENCH_DIR/bin/gen
evict=$BENCH_DIR/bin/evict
pebble=$BENCH_DIR/bin/testpebble

have_prune=0
if "$snap" prune --help >/dev/null 2>&1; then
	have_prune=1
fi

# --- the shape --------------------------------------------------------------------

wal_bytes=$((size_bytes * WAL_PCT / 100))
values=json
l0_trigger=1000 # no compactions while measuring
write_buffer=$((64 << 20))
case $SHAPE in
large)
	cache=$BENCH_DIR/data-$size_bytes-v$GEN_VERSION # the name earlier runs cached it under
	shape_desc="few large snappy SSTs (RocksDB defaults, 64 MiB write buffer, leveled compaction)"
	;;
incompressible)
	cache=$BENCH_DIR/data-incompressible-$size_bytes-v$GEN_VERSION
	values=random
	shape_desc="random values (512-1535 bytes): SSTs RocksDB leaves uncompressed, 64 MiB write buffer"
	;;
many-plain | many-snappy)
	write_buffer=${MANY_WRITE_BUFFER:-$((size_bytes / 2000))}
	[ "$write_buffer" -ge $((32 << 10)) ] || write_buffer=$((32 << 10))
	many_compression=no
	[ "$SHAPE" = many-snappy ] && many_compression=snappy
	l0_trigger=1000000 # every table stays in level 0
	cache=$BENCH_DIR/data-$SHAPE-$size_bytes-wb$write_buffer-v$GEN_VERSION
	shape_desc="many small SSTs in level 0 ($many_compression compression, write buffer $((write_buffer >> 10)) KiB, no compactions; built by ldb load)"
	;;
dir)
	cache=$BENCH_DIR/pebble-$size_bytes-v1
	shape_desc="a Pebble v2 checkpoint directory (snap backup --source dir)"
	;;
esac

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
		--write_buffer_size "$write_buffer" "$@" <"$work/server.stdin" 2>>"$slog" {hold_fd}>&- &
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
	"$gen" -bytes "$1" -first "$next_id" -seed "$GEN_VERSION" -values "$values" -stats "$stats" -addr "127.0.0.1:$port" ||
		die "loading records through the server"
	next_id=$(sed -n 's/.*next=\([0-9]*\).*/\1/p' "$stats")
}

# listing prints the live files as "name length": the server's (FREEZE,
# THAW), or for dir every file of the checkpoint.
listing() {
	local dir=$1 line name len
	if [ "$SHAPE" = dir ]; then
		find "$dir" -type f -printf '%P %s\n' | sort
		return
	fi
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

work=$BENCH_DIR/work-$SHAPE
rm -rf "$work"
mkdir -p "$work"

sst_bytes() { find "$1" -maxdepth 1 -name '*.sst' -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }'; }

# next_chunk LIVE RAW TARGET: how many bytes of records to write next, from
# the ratio of table bytes to record bytes so far.
next_chunk() {
	local live=$1 raw=$2 target=$3 chunk
	if [ "$raw" -eq 0 ] || [ "$live" -eq 0 ]; then
		chunk=$((target / 4))
	else
		chunk=$(((target - live) * raw / live))
	fi
	[ "$chunk" -gt $((768 << 20)) ] && chunk=$((768 << 20))
	[ "$chunk" -lt $((4 << 20)) ] && chunk=$((4 << 20))
	echo "$chunk"
}

build_server_dataset() { # records through the server, FLUSHed, compacted as RocksDB does
	local tmp=$1 target=$((size_bytes - wal_bytes)) live=0 raw=0 chunk
	start_server "$tmp/db" --rocksdb_create_if_missing_one_off
	while [ "$live" -lt "$target" ]; do
		chunk=$(next_chunk "$live" "$raw" "$target")
		load "$chunk"
		raw=$((raw + chunk))
		rcli FLUSH >/dev/null
		live=$(listing "$tmp/db" | awk '$1 ~ /\.sst$/ { s += $2 } END { printf "%.0f", s }')
		log "  $((raw >> 20)) MiB of records loaded, $((live >> 20)) MiB of SSTs"
	done
	wait_quiet "$tmp/db"
	stop_server
}

build_ldb_dataset() { # records through ldb load: small tables, all in level 0
	local tmp=$1 target=$((size_bytes - wal_bytes)) live=0 raw=0 chunk stats=$work/gen.stats
	mkdir -p "$tmp/db"
	while [ "$live" -lt "$target" ]; do
		chunk=$(next_chunk "$live" "$raw" "$target")
		"$gen" -format ldb -bytes "$chunk" -first "$next_id" -seed "$GEN_VERSION" -stats "$stats" |
			ldb load --db="$tmp/db" --create_if_missing --disable_wal --auto_compaction=false \
				--compression_type="$many_compression" --write_buffer_size="$write_buffer" >"$work/ldb-load.log" 2>&1 ||
			{ cat "$work/ldb-load.log" >&2; die "ldb load"; }
		next_id=$(sed -n 's/.*next=\([0-9]*\).*/\1/p' "$stats")
		raw=$((raw + chunk))
		live=$(sst_bytes "$tmp/db")
		log "  $((raw >> 20)) MiB of records loaded, $((live >> 20)) MiB in $(find "$tmp/db" -name '*.sst' | wc -l) SSTs"
	done
}

build_pebble_dataset() { # a Pebble database; about 110 bytes a key in its tables
	local tmp=$1 keys=$((size_bytes / 110)) from step=2000000
	for ((from = 0; from < keys; from += step)); do
		"$pebble" put "$tmp/db" k "$from" $((keys - from < step ? keys - from : step))
	done
	next_id=$keys
}

build_dataset() {
	local tmp=$cache.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp"
	log "building the $SIZE $SHAPE data set in $cache (once; cached)"
	case $SHAPE in
	large | incompressible) build_server_dataset "$tmp" ;;
	many-plain | many-snappy) build_ldb_dataset "$tmp" ;;
	dir) build_pebble_dataset "$tmp" ;;
	esac
	echo "next_id=$next_id" >"$tmp/meta"
	mv "$tmp" "$cache"
}

[ -f "$cache/meta" ] || build_dataset
# shellcheck disable=SC1091
. "$cache/meta"
data=$work/data
if [ "$SHAPE" = dir ]; then
	db=$work/db
	log "copying the Pebble database to $db and taking a checkpoint at $data"
	cp -a "$cache/db" "$db"
	"$pebble" checkpoint "$db" "$data"
	snap_src=(--source dir --path "$data")
	excludes=() # snap's dir source stores every file of the directory
else
	log "copying the data set to $data"
	cp -a "$cache/db" "$data"
	# No compactions: only the benchmark's writes change files.
	start_server "$data" --level0_file_num_compaction_trigger "$l0_trigger"
	wait_quiet "$data"
	log "writing a live WAL of about $((wal_bytes >> 20)) MiB"
	load "$wal_bytes"
	snap_src=(--server "127.0.0.1:$port" --data "$data")
	excludes=('LOG*' LOCK)
fi
listing "$data" >"$work/listing-1"
data_bytes_1=$(awk '{ s += $2 } END { printf "%.0f", s }' "$work/listing-1")
fp_1=$(fingerprint "$data")

restic_excl=() borg_excl=() tar_excl=()
for x in "${excludes[@]}"; do
	restic_excl+=(--exclude "$x")
	borg_excl+=(--exclude "sh:**/$x")
	tar_excl+=("--exclude=$x")
done

# --- measuring ------------------------------------------------------------------------

# The binaries whose pages a cold command also loses (borg's Python is not
# counted: it is many files outside our reach).
bins=("$snap")
for b in restic ldb zstd tar borg; do
	p=$(command -v "$b" 2>/dev/null) && bins+=("$(readlink -f "$p")")
done
librocksdb=$(ldd "$(command -v ldb)" 2>/dev/null | awk '/librocksdb/ { print $3 }')
[ -n "$librocksdb" ] && bins+=("$(readlink -f "$librocksdb")")

resident_max=0
resident_files=
# prepare MODE TREE...: empty the page cache (cold) or read the command's
# inputs once (warm) right before a command. In both modes the command
# starts with no other command's writes still on their way to the disk
# (cold: evict syncs; warm: sync here): the tools run one after the other,
# and the one after a tool that left 200 MiB dirty (tar | zstd writes its
# whole stream every time) paid for their writeback in its own fsyncs and
# direct writes, which the tools that neither sync nor write directly do
# not wait for.
prepare() {
	local mode=$1
	shift
	case $mode in
	cold)
		if [ "$EVICT" = drop ]; then
			sync
			{ echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null || die "EVICT=drop needs root (EVICT=fadvise does not)"
		else
			local out res
			out=$("$evict" -check -v "$work" "${bins[@]}") || die "bench/evict"
			res=$(printf '%s\n' "$out" | sed -n 's/.*; \([0-9]*\) bytes still resident.*/\1/p')
			if [ "${res:-0}" -gt "$resident_max" ]; then
				resident_max=$res
				# What stayed, largest first: "name bytes, ..."
				resident_files=$(printf '%s\n' "$out" | awk '$1 == "resident" { print $2, $3 }' | sort -rn | head -5 |
					awk '{ n = split($2, p, "/"); printf "%s%s %d KiB", (NR > 1 ? ", " : ""), p[n], $1 / 1024 }')
			fi
		fi
		;;
	warm)
		local t
		sync
		for t in "$@"; do
			[ -e "$t" ] && find "$t" -type f -exec cat {} + >/dev/null 2>&1
		done
		;;
	esac
	return 0
}

export SNAP_PASSWORD=bench-password RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export BORG_BASE_DIR=$work/borg-home BORG_DISPLAY_PASSPHRASE=no BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
unset SNAP_REPO SNAP_SERVER SNAP_DATA RESTIC_REPOSITORY BORG_REPO
tsv=$work/measurements.tsv
printf 'step\ttool\trun\tcache\twall_s\tuser_s\tsys_s\tmax_rss_kib\trepo_bytes\tdata_bytes\tload1\tsteal_s\tnote\n' >"$tsv"
clk_tck=$(getconf CLK_TCK)

# steal_ticks: the time, summed over the CPUs, that the hypervisor ran
# something else while this machine's CPUs had work (/proc/stat, USER_HZ).
# On a shared virtual machine it is what keeps a busy program from
# showing 100% of each core.
steal_ticks() { awk '$1 == "cpu" { print $9; exit }' /proc/stat; }

# measure STEP TOOL RUN CACHE REPO DATA_BYTES CMD...: time one command;
# warm_trees names what a warm cache reads first.
warm_trees=()
measure() {
	local step=$1 tool=$2 run=$3 mode=$4 repo=$5 bytes=$6
	shift 6
	local tf=$work/time.out out=$work/logs/$step-$tool-$run-$mode.log t0 t1 rc=0 load1 st0 st1
	mkdir -p "$work/logs"
	prepare "$mode" "${warm_trees[@]}"
	load1=$(cut -d' ' -f1 /proc/loadavg)
	st0=$(steal_ticks)
	t0=$(date +%s.%N)
	"${nice_cmd[@]}" /usr/bin/time -v -o "$tf" "$@" >"$out" 2>&1 || rc=$?
	t1=$(date +%s.%N)
	st1=$(steal_ticks)
	if [ "$rc" -ne 0 ]; then
		tail -20 "$out" >&2
		die "$step with $tool (run $run, $mode) exited $rc: $*"
	fi
	local user sys rss size=0 wall steal
	user=$(sed -n 's/^\tUser time (seconds): //p' "$tf")
	sys=$(sed -n 's/^\tSystem time (seconds): //p' "$tf")
	rss=$(sed -n 's/^\tMaximum resident set size (kbytes): //p' "$tf")
	[ -n "$repo" ] && size=$(du -sb "$repo" | cut -f1)
	wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	steal=$(awk -v a="$st0" -v b="$st1" -v hz="$clk_tck" 'BEGIN { printf "%.2f", (b - a) / hz }')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n' "$step" "$tool" "$run" "$mode" "$wall" "$user" "$sys" "$rss" "$size" "$bytes" "$load1" "$steal" >>"$tsv"
	log "  $step $tool run $run $mode: ${wall}s, cpu $(awk -v u="$user" -v s="$sys" 'BEGIN { print u + s }')s, steal ${steal}s, rss $((rss >> 10)) MiB, repo $((size >> 20)) MiB"
}

na() { # na STEP TOOL RUN CACHE REASON: a step a tool cannot do
	printf '%s\t%s\t%s\t%s\tn/a\t\t\t\t\t\t\t\t%s\n' "$1" "$2" "$3" "$4" "$5" >>"$tsv"
}

repo_of() { echo "$work/repos/$1-$2-$3"; } # TOOL RUN CACHE

# snap_key REPO: set sk to the flags that open snap's REPO (SNAP_KEY).
snap_key() {
	sk=()
	if [ "$SNAP_KEY" = generated ]; then sk=(--password-file "$1.key"); fi
}

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
	snap)
		rm -f "$dir.key"
		if [ "$SNAP_KEY" = generated ]; then
			"$snap" init --repo "$dir" --generate-key "$dir.key" "$@" >/dev/null
		else
			"$snap" init --repo "$dir" "$@" >/dev/null
		fi
		;;
	restic) restic init --repo "$dir" --repository-version 2 >/dev/null ;;
	borg) borg init --encryption "$BORG_ENCRYPTION" "$dir" >/dev/null 2>&1 ;;
	ldb | tar-zstd) mkdir -p "$dir" ;;
	esac
}

# why_na TOOL STEP: why TOOL cannot do STEP on this shape (empty: it can).
why_na() {
	case $1/$2/$SHAPE in
	ldb/*/dir) echo "BackupEngine opens RocksDB databases; this is Pebble's" ;;
	ldb/prune/*) echo "ldb has no command to purge old backups" ;;
	tar-zstd/prune/*) echo "one stream, nothing to prune" ;;
	esac
}

ldb_src=$work/ldb-src
# backup_cmd TOOL RUN CACHE STEP: set cmd to the backup command and
# warm_trees to its inputs; for ldb, copy the data directory first.
backup_cmd() {
	local tool=$1 run=$2 mode=$3 step=$4 repo
	repo=$(repo_of "$tool" "$run" "$mode")
	warm_trees=("$data" "$repo")
	case $tool in
	snap)
		snap_key "$repo"
		cmd=("$snap" backup --repo "$repo" "${sk[@]}" "${snap_src[@]}" --host bench --json)
		;;
	restic)
		cmd=(restic --repo "$repo" --cache-dir "$work/restic-cache-$run-$mode" backup --compression auto --host bench "${restic_excl[@]}" "$data")
		warm_trees+=("$work/restic-cache-$run-$mode")
		;;
	borg)
		cmd=(borg create --compression zstd,3 "${borg_excl[@]}" "$repo::$step" "$data")
		warm_trees+=("$BORG_BASE_DIR")
		;;
	ldb)
		rm -rf "$ldb_src"
		cp -a "$data" "$ldb_src"
		rm -f "$ldb_src"/LOG* "$ldb_src/LOCK"
		cmd=(ldb backup --db="$ldb_src" --backup_dir="$repo" --num_threads="$threads" --stderr_log_level=4)
		warm_trees=("$ldb_src" "$repo")
		;;
	tar-zstd)
		# A whole new stream each time: the limit is not incremental.
		cmd=(bash -o pipefail -c 'tar -C "$1" -cf - "${@:3}" . | zstd -1 -T0 -q -f -o "$2"' tar-zstd "$data" "$repo/latest.tar.zst" "${tar_excl[@]}")
		warm_trees=("$data")
		;;
	esac
}

restore_dir=$work/restore
# Restores go into a fresh directory, and the one before is moved aside,
# not removed, until the end of step 3b. On ext4 without a journal (this
# project's bench machine) the inode allocator skips inodes freed in the
# last 60 s (360 s while their table block is dirty), checking every free
# inode it passes: a restore of thousands of files right after the removal
# of the previous restore's thousands spends seconds of kernel time there,
# alike for every tool, which a restore into a fresh file system or onto
# ext4 with a journal does not. When the moved-aside trees would fill half
# the free space, they are removed, then sync and a 61 s pause.
retired=$work/retired
retired_bytes=0
retire_max=
retire_restore_dir() {
	[ -d "$restore_dir" ] || return 0
	if [ -z "$retire_max" ]; then
		retire_max=$(($(df --output=avail -B1 "$work" | tail -1) / 2))
	fi
	if [ $((retired_bytes + data_bytes_2)) -gt "$retire_max" ]; then
		purge_retired
		log "  removed the earlier restores (disk), then sync and 61 s"
		sleep 61
	fi
	mkdir -p "$retired"
	mv "$restore_dir" "$retired/$(date +%s%N)"
	retired_bytes=$((retired_bytes + data_bytes_2))
}
purge_retired() {
	rm -rf "$restore_dir" "$retired"
	retired_bytes=0
	sync
}
# restored_data TOOL: where TOOL put the data directory under $restore_dir.
restored_data() {
	case $1 in
	restic) echo "$restore_dir$data" ;;
	borg) echo "$restore_dir/${data#/}" ;;
	*) echo "$restore_dir/data" ;;
	esac
}

# restore_cmd TOOL RUN CACHE: set cmd to the restore of the latest snapshot
# into $restore_dir, warm_trees to its inputs.
restore_cmd() {
	local repo
	repo=$(repo_of "$1" "$2" "$3")
	warm_trees=("$repo")
	case $1 in
	snap)
		snap_key "$repo"
		cmd=("$snap" restore --repo "$repo" "${sk[@]}" --latest --target "$restore_dir/data")
		;;
	restic)
		cmd=(restic --repo "$repo" --cache-dir "$work/restic-cache-$2-$3" restore latest --target "$restore_dir")
		warm_trees+=("$work/restic-cache-$2-$3")
		;;
	borg)
		cmd=(sh -c 'cd "$1" && exec borg extract "$2"' sh "$restore_dir" "$repo::b2")
		warm_trees+=("$BORG_BASE_DIR")
		;;
	ldb) cmd=(ldb restore --backup_dir="$repo" --db="$restore_dir/data" --num_threads="$threads" --stderr_log_level=4) ;;
	tar-zstd) cmd=(bash -o pipefail -c 'mkdir -p "$2" && zstd -dc -q "$1" | tar -C "$2" -xf -' tar-zstd "$repo/latest.tar.zst" "$restore_dir/data") ;;
	esac
}

verify_restore() { # verify_restore TOOL LISTING
	local dir name len n=0
	dir=$(restored_data "$1")
	while read -r name len; do
		# BackupEngine's open replayed the WAL into a new table and wrote a
		# new MANIFEST: of ldb's restore only the tables compare.
		[ "$1" = ldb ] && [[ $name != *.sst ]] && continue
		cmp -n "$len" "$data/$name" "$dir/$name" >/dev/null 2>&1 ||
			die "$1 restored $name differently (or not at all) in $dir"
		n=$((n + 1))
	done <"$2"
	log "  $1: every restored byte matches ($n files)"
}

read -r -a tools <<<"$TOOLS"
uptime_before=$(uptime)
log "load before: $uptime_before"

log "measuring the physical limits"
"${nice_cmd[@]}" "$BENCH_DIR/bin/limits" -dir "$data" -json "$work/limits.json" -cold -evict "$EVICT" -scratch "$work" >"$work/limits.md"
cat "$work/limits.md" >&2

# each_run FN: FN RUN CACHE TOOL for every run, cache mode and tool, tools
# in rotating order.
each_run() {
	local run mode tool
	for run in $(seq "$RUNS"); do
		for mode in $caches; do
			for tool in $(order "$run"); do
				"$1" "$run" "$mode" "$tool"
			done
		done
	done
}

first_backup() {
	local run=$1 mode=$2 tool=$3 repo why
	why=$(why_na "$tool" backup-1)
	[ -z "$why" ] || { na backup-1 "$tool" "$run" "$mode" "$why"; return; }
	repo=$(repo_of "$tool" "$run" "$mode")
	init_repo "$tool" "$repo"
	backup_cmd "$tool" "$run" "$mode" b1
	measure backup-1 "$tool" "$run" "$mode" "$repo" "$data_bytes_1" "${cmd[@]}"
}
log "step 1: first backup of $((data_bytes_1 >> 20)) MiB in $(wc -l <"$work/listing-1") files"
each_run first_backup
[ "$(fingerprint "$data")" = "$fp_1" ] || die "the data directory changed during the first backups"

inc=$((size_bytes * INCREMENT_PCT / 100))
if [ "$SHAPE" = dir ]; then
	log "step 2: ${INCREMENT_PCT}% more keys, a new checkpoint at the same path"
	more=$((next_id * INCREMENT_PCT / 100))
	"$pebble" put "$db" k "$next_id" "$more"
	rm -rf "$data"
	"$pebble" checkpoint "$db" "$data"
else
	log "step 2: writing ${INCREMENT_PCT}% new data (new SSTs, new live WAL)"
	load $((inc * 3 / 4))
	rcli FLUSH >/dev/null
	load $((inc / 4))
fi
listing "$data" >"$work/listing-2"
data_bytes_2=$(awk '{ s += $2 } END { printf "%.0f", s }' "$work/listing-2")
new_bytes=$(awk 'NR == FNR { old[$1] = $2; next } !($1 in old) { s += $2 } ($1 in old) && $2 > old[$1] { s += $2 - old[$1] } END { printf "%.0f", s }' "$work/listing-1" "$work/listing-2")
fp_2=$(fingerprint "$data")
log "incremental: $((data_bytes_2 >> 20)) MiB in total, $((new_bytes >> 20)) MiB in new or grown files"
incremental() {
	local run=$1 mode=$2 tool=$3 why
	why=$(why_na "$tool" backup-2)
	[ -z "$why" ] || { na backup-2 "$tool" "$run" "$mode" "$why"; return; }
	backup_cmd "$tool" "$run" "$mode" b2
	measure backup-2 "$tool" "$run" "$mode" "$(repo_of "$tool" "$run" "$mode")" "$data_bytes_2" "${cmd[@]}"
}
each_run incremental
[ "$(fingerprint "$data")" = "$fp_2" ] || die "the data directory changed during the incremental backups"

restore() {
	local run=$1 mode=$2 tool=$3 why
	why=$(why_na "$tool" restore)
	[ -z "$why" ] || { na restore "$tool" "$run" "$mode" "$why"; return; }
	retire_restore_dir
	mkdir -p "$restore_dir"
	restore_cmd "$tool" "$run" "$mode"
	measure restore "$tool" "$run" "$mode" "" "$data_bytes_2" "${cmd[@]}"
	if [ "$VERIFY" = 1 ] && [ "$run" = 1 ]; then verify_restore "$tool" "$work/listing-2"; fi
}
log "step 3: restore of the latest snapshot"
each_run restore

# The same restore followed by sync -f of the target's file system, which
# returns once every restored byte is on the disk. snap fsyncs each file
# before it writes CURRENT, so its restore has ended there already; the
# others (ldb restore syncs its files too) are measured the same way. This
# step compares the tools at the same durability; step 3 is each tool as
# it runs.
restore_sync() {
	local run=$1 mode=$2 tool=$3 why
	why=$(why_na "$tool" restore)
	[ -z "$why" ] || { na restore-sync "$tool" "$run" "$mode" "$why"; return; }
	retire_restore_dir
	mkdir -p "$restore_dir"
	restore_cmd "$tool" "$run" "$mode"
	measure restore-sync "$tool" "$run" "$mode" "" "$data_bytes_2" sh -c '"$@" && sync -f "$0"' "$restore_dir" "${cmd[@]}"
}
log "step 3b: the same restore, then sync (every restored byte on disk)"
each_run restore_sync
purge_retired

data_bytes_3=
new_bytes_3=
if [ "$COMPACT_STEP" = 1 ] && [ "$SHAPE" != dir ]; then
	log "step 3c: a full compaction, then a backup of every tool into its repository"
	rcli COMPACT >/dev/null
	wait_quiet "$data"
	listing "$data" >"$work/listing-3"
	data_bytes_3=$(awk '{ s += $2 } END { printf "%.0f", s }' "$work/listing-3")
	new_bytes_3=$(awk 'NR == FNR { old[$1] = $2; next } !($1 in old) { s += $2 } ($1 in old) && $2 > old[$1] { s += $2 - old[$1] } END { printf "%.0f", s }' "$work/listing-2" "$work/listing-3")
	fp_3=$(fingerprint "$data")
	log "after the compaction: $((data_bytes_3 >> 20)) MiB in $(wc -l <"$work/listing-3") files, $((new_bytes_3 >> 20)) MiB in new or grown files"
	after_compaction() {
		local run=$1 mode=$2 tool=$3 why
		why=$(why_na "$tool" backup-3)
		[ -z "$why" ] || { na backup-3 "$tool" "$run" "$mode" "$why"; return; }
		backup_cmd "$tool" "$run" "$mode" b3
		measure backup-3 "$tool" "$run" "$mode" "$(repo_of "$tool" "$run" "$mode")" "$data_bytes_3" "${cmd[@]}"
	}
	each_run after_compaction
	[ "$(fingerprint "$data")" = "$fp_3" ] || die "the data directory changed during the backups after the compaction"
fi

prune() {
	local run=$1 mode=$2 tool=$3 repo why
	why=$(why_na "$tool" prune)
	[ -z "$why" ] || { na prune "$tool" "$run" "$mode" "$why"; return; }
	repo=$(repo_of "$tool" "$run" "$mode")
	warm_trees=("$repo")
	case $tool in
	snap)
		if [ "$have_prune" = 1 ]; then
			snap_key "$repo"
			measure prune "$tool" "$run" "$mode" "$repo" "$data_bytes_2" "$snap" prune --repo "$repo" "${sk[@]}" --keep-last 1
		else
			na prune snap "$run" "$mode" "snap prune not built yet"
		fi
		;;
	restic) measure prune "$tool" "$run" "$mode" "$repo" "$data_bytes_2" restic --repo "$repo" --cache-dir "$work/restic-cache-$run-$mode" forget --keep-last 1 --prune ;;
	borg) measure prune "$tool" "$run" "$mode" "$repo" "$data_bytes_2" sh -c 'borg prune --keep-last 1 "$1" && borg compact "$1"' sh "$repo" ;;
	esac
}
log "step 4: retention to the last snapshot and garbage collection"
each_run prune

first_cache=${caches%% *}
if [ "$SWEEP" = 1 ] && [[ " $TOOLS " == *" snap "* ]]; then
	log "snap's compression levels, first backup of the same data (once each, $first_cache cache)"
	for level in off fastest default default-2m better; do
		repo=$work/repos/sweep-$level
		case $level in
		# The higher-ratio setting: fewer, larger chunks give zstd fewer
		# frames to start (docs/performance.md).
		default-2m) init_repo snap "$repo" --compression default --chunk-avg 2048 ;;
		*) init_repo snap "$repo" --compression "$level" ;;
		esac
		warm_trees=("$data")
		snap_key "$repo"
		measure "level-$level" snap 1 "$first_cache" "$repo" "$data_bytes_2" "$snap" backup --repo "$repo" "${sk[@]}" "${snap_src[@]}" --host bench --json
		rm -rf "$repo"
	done
	if [[ " $TOOLS " == *" restic "* ]]; then
		# restic on the very same files, named one by one from snap's
		# listing, so the repository sizes compare like for like.
		repo=$work/repos/sweep-restic
		init_repo restic "$repo"
		mapfile -t names < <(cut -d' ' -f1 "$work/listing-2")
		warm_trees=("$data")
		measure level-restic restic 1 "$first_cache" "$repo" "$data_bytes_2" bash -c 'cd "$1" && exec restic --repo "$2" --cache-dir "$3" backup --compression auto --host bench -q "${@:4}"' bash "$data" "$repo" "$work/restic-cache-sweep" "${names[@]}"
		rm -rf "$repo"
	fi
fi

profile_txt=$work/profile.txt
profile_dso=$work/profile-dso.txt
: >"$profile_txt"
: >"$profile_dso"
if [ "$PROFILE" = 1 ] && [[ " $TOOLS " == *" snap "* ]] && command -v perf >/dev/null; then
	log "profiling snap's first backup with perf ($first_cache cache)"
	repo=$work/repos/profile
	init_repo snap "$repo"
	prepare "$first_cache" "$data"
	snap_key "$repo"
	if "${nice_cmd[@]}" perf record -F 999 -g -o "$work/perf.data" -- "$snap" backup --repo "$repo" "${sk[@]}" "${snap_src[@]}" --host bench --json >"$work/logs/profile.log" 2>&1; then
		perf report -i "$work/perf.data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.5 2>/dev/null |
			grep -E '^ +[0-9]' >"$profile_txt" || true
		perf report -i "$work/perf.data" --stdio --no-children --sort dso -g none 2>/dev/null |
			grep -E '^ +[0-9]' >"$profile_dso" || true
	else
		log "perf record failed (see $work/logs/profile.log); no profile"
	fi
	rm -rf "$repo" "$work/perf.data"
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
	echo "shape=$SHAPE"
	echo "shape_desc=$shape_desc"
	echo "size_label=$size_label"
	echo "size_bytes=$size_bytes"
	echo "runs=$RUNS"
	echo "cache=$CACHE"
	echo "evict=$EVICT"
	echo "evict_resident_max=$resident_max"
	echo "evict_resident_files=$resident_files"
	echo "threads=$threads"
	echo "tools=$TOOLS"
	echo "command=SHAPE=$SHAPE SIZE=$SIZE RUNS=$RUNS CACHE=$CACHE EVICT=$EVICT SNAP_KEY=$SNAP_KEY${NICE:+ NICE=$NICE} bench/run.sh"
	echo "nproc=$(nproc)"
	echo "cpu=$cpu_model"
	echo "memory=$mem"
	echo "disk=$disk_dev ($disk_fs, $disk_kind)"
	echo "kernel=$(uname -r)"
	echo "snap=$version"
	echo "restic=$(first_tool_version restic version)"
	echo "borg=$(first_tool_version borg --version)"
	echo "borg_encryption=$BORG_ENCRYPTION"
	echo "snap_key=$SNAP_KEY"
	echo "zstd=$(first_tool_version zstd --version)"
	echo "go=$(go env GOVERSION)"
	echo "rocksdb=$(dpkg-query -W -f='${Version}' librocksdb-dev 2>/dev/null || echo '?')"
	echo "ldb=$(dpkg-query -W -f='${Version}' rocksdb-tools 2>/dev/null || echo '?')"
	echo "load_before=$uptime_before"
	echo "load_after=$uptime_after"
	echo "data_files=$(wc -l <"$work/listing-1")"
	echo "data_ssts=$sst_count"
	echo "data_bytes_1=$data_bytes_1"
	echo "wal_bytes_1=$wal_len"
	echo "data_bytes_2=$data_bytes_2"
	echo "new_bytes=$new_bytes"
	echo "increment_pct=$INCREMENT_PCT"
	echo "data_bytes_3=$data_bytes_3"
	echo "new_bytes_3=$new_bytes_3"
	echo "data_files_3=$([ -f "$work/listing-3" ] && wc -l <"$work/listing-3")"
	echo "have_prune=$have_prune"
	# What snap read in its incremental backups (its --json summary).
	echo "snap_incremental_bytes_read=$(cat "$work"/logs/backup-2-snap-*.log 2>/dev/null | sed -n 's/.*"bytes_read":\([0-9]*\).*/\1/p' | sort -n | tail -1)"
	echo "snap_compaction_bytes_read=$(cat "$work"/logs/backup-3-snap-*.log 2>/dev/null | sed -n 's/.*"bytes_read":\([0-9]*\).*/\1/p' | sort -n | tail -1)"
} >"$meta"

mkdir -p "$RESULTS_DIR"
stem=$RESULTS_DIR/$RESULT_DATE-$SHAPE-$size_label${TAG:+-$TAG}
"$BENCH_DIR/bin/report" -meta "$meta" -measurements "$tsv" -limits "$work/limits.json" \
	-profile "$profile_txt" -profile-dso "$profile_dso" -md "$stem.md" -json "$stem.json"
cp "$tsv" "$stem.tsv"
log "results: $stem.md, $stem.json, $stem.tsv"
