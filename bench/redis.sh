#!/usr/bin/env bash
# redis.sh is the redis row of `make bench` (and `make bench-redis` on its
# own): what `snap follow --interval 1s` costs a live redis-server 7 and
# what it leaves in the repository. Every server on 127.0.0.1, on a free
# port, in a fresh directory, stopped on exit.
#
#   1. Throughput: redis-benchmark -t set -n BENCH_N -P 16 -c 8 -d 100
#      -r 1000000 against redis-server (appendonly yes, appendfsync
#      everysec, save '', default AOF settings otherwise, so it rewrites
#      its AOF during a run), without and with snap follow, in alternating
#      order, RUNS times: medians and the drop (target: at most 3 %).
#   2. Lag: follow at --interval 1s while bench/redisload writes RATE SET/s
#      (a pipeline every 10 ms) for DURATION seconds: p50, p99 and max of
#      the lag_ms of follow's debug log, one per stored tail object
#      (target: p99 at most 2 s). At about 1.4 MB/s the AOF passes Redis's
#      64 MB auto-aof-rewrite-min-size after some 45 s: DURATION=60 has a
#      rewrite (and follow's base snapshot of it) in the window, 30 none.
#   3. follow's CPU over that window, (utime + stime) / wall from
#      /proc/PID/stat, in % of one core (target: at most 5 %), and its peak
#      RSS, VmHWM of /proc/PID/status at the end (target: at most 50 MiB);
#      with the AOF's growth in bytes/s, the load.
#   4. Objects: bench/tailsim stores SIM_HOURS of one-second tail objects at
#      that growth rate (or SIM_RATE) through the chain package on a local
#      repository, compacting each minute, on a simulated clock; objects
#      by type at the end, and the most tail objects a restore to any
#      second reads.
#   5. Markdown tables in RESULTS_DIR/DATE-redis[-TAG].md, and on stdout.
#
# Nothing here asserts on timings: the targets stand next to the figures.
#
# Environment: RUNS (3), BENCH_N (2400000 SETs: 8 to 13 s a run on 2
# cores), DURATION (60 s), RATE (10000 SET/s), SIM_HOURS (simulated hours,
# a list: "1 24"), SIM_RATE (AOF bytes/s; default the rate step 2
# measured), VALUE (x: values as redis-benchmark's, all 'x'; random: less
# compressible, for redisload and tailsim), BENCH_DIR (/var/tmp/snap-bench),
# RESULTS_DIR (bench/results), TAG.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

RUNS=${RUNS:-3}
BENCH_N=${BENCH_N:-2400000}
DURATION=${DURATION:-60}
RATE=${RATE:-10000}
SIM_HOURS=${SIM_HOURS:-1 24}
SIM_RATE=${SIM_RATE:-}
VALUE=${VALUE:-x}
BENCH_DIR=${BENCH_DIR:-/var/tmp/snap-bench}
RESULTS_DIR=${RESULTS_DIR:-$root/bench/results}
TAG=${TAG:-}

log() { printf '[bench-redis %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "FAILED: $*"
	exit 1
}
case $VALUE in x | random) ;; *) die "VALUE must be x or random" ;; esac
for v in RUNS BENCH_N DURATION RATE; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=${!v}: want a positive integer"
done

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-benchmark >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
	log "installing redis-server and redis-tools (scripts/deps.sh)"
	scripts/deps.sh >&2 || die "scripts/deps.sh"
fi

mkdir -p "$BENCH_DIR/bin"
go build -tags disable_grpc_modules -o bin/snap ./cmd/snap
go build -o "$BENCH_DIR/bin/redisload" ./bench/redisload
go build -o "$BENCH_DIR/bin/tailsim" ./bench/tailsim
snap=$root/bin/snap
redisload=$BENCH_DIR/bin/redisload
tailsim=$BENCH_DIR/bin/tailsim
clk_tck=$(getconf CLK_TCK)

work=$(mktemp -d "$BENCH_DIR/redis-work.XXXXXX")
pids=()
cleanup() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT

# free_port prints a port on 127.0.0.1 nothing listens on.
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	die "no free port on 127.0.0.1"
}

# stop PID: SIGTERM, and wait for it; returns its exit status.
stop() {
	local rc=0
	kill "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || rc=$?
	return "$rc"
}

# start_redis DIR: a redis-server with an AOF in DIR; sets redis_pid and
# redis_port.
start_redis() {
	local dir=$1
	mkdir -p "$dir"
	redis_port=$(free_port)
	redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$dir" --appendonly yes --appendfsync everysec --save '' \
		--daemonize no --logfile "$dir/redis.log" &
	redis_pid=$!
	pids+=("$redis_pid")
	for _ in $(seq 100); do
		[ "$(redis-cli -h 127.0.0.1 -p "$redis_port" ping 2>/dev/null)" = PONG ] && return 0
		kill -0 "$redis_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$dir/redis.log" >&2
	die "redis-server on port $redis_port did not start"
}

# start_follow DATA_DIR PORT REPO LOG: snap follow at --interval 1s with
# debug logs into LOG, once it stored the chain's first base; sets
# follow_pid.
start_follow() {
	local data=$1 port=$2 repo=$3 logf=$4
	SNAP_REPO=$repo "$snap" init >/dev/null
	SNAP_REPO=$repo "$snap" --log-level debug follow --server "127.0.0.1:$port" --data "$data" --interval 1s --host bench 2>"$logf" &
	follow_pid=$!
	pids+=("$follow_pid")
	for _ in $(seq 600); do
		grep -q 'msg="started a chain"' "$logf" && return 0
		kill -0 "$follow_pid" 2>/dev/null || break
		sleep 0.1
	done
	tail -20 "$logf" >&2
	die "snap follow did not start a chain"
}

# alive LOG: fail unless snap follow still runs.
alive() {
	kill -0 "$follow_pid" 2>/dev/null && return 0
	tail -20 "$1" >&2
	die "snap follow exited before it was stopped"
}

# stop_follow LOG: SIGTERM, on which follow ships what is pending and
# exits 0.
stop_follow() {
	local rc=0
	alive "$1"
	stop "$follow_pid" || rc=$?
	if [ "$rc" -ne 0 ]; then
		tail -20 "$1" >&2
		die "snap follow exited $rc on SIGTERM"
	fi
}

# cpu_ticks PID: utime + stime of PID, in clock ticks.
cpu_ticks() {
	local stat f
	stat=$(<"/proc/$1/stat")
	read -ra f <<<"${stat##*) }" # fields from the 3rd on: utime is the 14th
	echo $((f[11] + f[12]))
}

now() { date +%s.%N; }

export SNAP_PASSWORD=bench
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 1. throughput ---------------------------------------------------------------------

: >"$work/throughput.tsv"
for ((run = 1; run <= RUNS; run++)); do
	order=(without with)
	((run % 2 == 0)) && order=(with without)
	for mode in "${order[@]}"; do
		d=$work/tp-$run-$mode
		log "throughput run $run of $RUNS, $mode follow: redis-benchmark -n $BENCH_N"
		start_redis "$d/data"
		cpu=- rewrites=-
		if [ "$mode" = with ]; then
			start_follow "$d/data" "$redis_port" "$d/repo" "$d/follow.log"
			c0=$(cpu_ticks "$follow_pid")
		fi
		t0=$(now)
		redis-benchmark -h 127.0.0.1 -p "$redis_port" -t set -n "$BENCH_N" -P 16 -c 8 -d 100 -r 1000000 --csv >"$d/bench.csv" 2>"$d/bench.err" || {
			cat "$d/bench.err" >&2
			die "redis-benchmark failed"
		}
		t1=$(now)
		if [ "$mode" = with ]; then
			alive "$d/follow.log"
			c1=$(cpu_ticks "$follow_pid")
			cpu=$(awk -v c="$((c1 - c0))" -v hz="$clk_tck" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", 100 * c / hz / (b - a)}')
			stop_follow "$d/follow.log"
			rewrites=$(grep -c 'msg="stored the base of a rewrite"' "$d/follow.log" || true)
		fi
		rps=$(awk -F'"' '$2 == "SET" {print $4}' "$d/bench.csv")
		[ -n "$rps" ] || die "no SET line in redis-benchmark's output: $(cat "$d/bench.csv")"
		secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}')
		aof_rewrites=$(grep -c 'Background AOF rewrite finished successfully' "$d/data/redis.log" || true)
		stop "$redis_pid" || true
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$run" "$rps" "$secs" "$aof_rewrites" "$cpu" "$rewrites" >>"$work/throughput.tsv"
		rm -rf "$d"
	done
done

# --- 2. and 3. lag, CPU and RSS at a fixed rate ----------------------------------------------

d=$work/lag
log "lag: $RATE SET/s for ${DURATION}s with follow --interval 1s"
start_redis "$d/data"
start_follow "$d/data" "$redis_port" "$d/repo" "$d/follow.log"
sleep 2 # a few idle ticks, as a follow that runs all the time has
from_line=$(($(wc -l <"$d/follow.log") + 1))
hwm0_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$follow_pid/status")
c0=$(cpu_ticks "$follow_pid")
t0=$(now)
"$redisload" -addr "127.0.0.1:$redis_port" -rate "$RATE" -duration "${DURATION}s" -value "$VALUE" >"$d/load.out" 2>"$d/load.err" || {
	cat "$d/load.err" >&2
	die "redisload failed"
}
t1=$(now)
alive "$d/follow.log"
c1=$(cpu_ticks "$follow_pid")
hwm_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$follow_pid/status")
rss_kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$follow_pid/status")
sleep 2 # the last second's bytes, shipped at the next ticks
stop_follow "$d/follow.log"
aof_rewrites=$(grep -c 'Background AOF rewrite finished successfully' "$d/data/redis.log" || true)
stop "$redis_pid" || true

wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')
cpu=$(awk -v c="$((c1 - c0))" -v hz="$clk_tck" -v w="$wall" 'BEGIN {printf "%.1f", 100 * c / hz / w}')
load_rate=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' "$d/load.out")
load_late=$(sed -n 's/.* late=\([0-9]*\).*/\1/p' "$d/load.out")
# Tail objects with bytes, stored from the window's start on: their lags,
# and the bytes they hold (every byte the load appended).
tail -n +"$from_line" "$d/follow.log" | awk -v lags="$d/lags" '
	/msg=shipped/ {
		for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
		if (v["end"] > v["offset"]) { print v["lag_ms"] > lags; bytes += v["end"] - v["offset"] }
	}
	END { print bytes + 0 }' >"$d/bytes"
touch "$d/lags"
aof_bytes=$(<"$d/bytes")
objects=$(wc -l <"$d/lags")
[ "$objects" -gt 0 ] || die "no tail object stored during the window (see $d/follow.log)"
read -r lag_p50 lag_p99 lag_max < <(sort -n "$d/lags" | awk '
	{ a[NR] = $1 }
	END {
		p50 = a[int((NR * 50 + 99) / 100)]; p99 = a[int((NR * 99 + 99) / 100)]
		print p50, p99, a[NR]
	}')
growth=$(awk -v b="$aof_bytes" -v w="$wall" 'BEGIN {printf "%.0f", b / w}')
follow_rewrites=$(grep -c 'msg="stored the base of a rewrite"' "$d/follow.log" || true)
follow_warnings=$(grep -c 'level=WARN' "$d/follow.log" || true)
follow_compactions=$(grep -c 'msg="compacted tail objects"' "$d/follow.log" || true)
follow_log=$(grep -E 'level=(WARN|ERROR)' "$d/follow.log" | head -5 || true)
rm -rf "$d"

# --- 4. objects after hours of following, simulated clock ------------------------------------

sim_rate=${SIM_RATE:-$growth}
for h in $SIM_HOURS; do
	log "tailsim: $h simulated hours at $sim_rate B/s (simulated clock)"
	"$tailsim" -repo "$work/sim-$h" -hours "$h" -rate "$sim_rate" -value "$VALUE" >"$work/sim-$h.out" || die "tailsim -hours $h"
	rm -rf "$work/sim-$h"
done

# --- 5. the report ---------------------------------------------------------------------

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
mkdir -p "$RESULTS_DIR"
out=$RESULTS_DIR/$(date +%Y-%m-%d)-redis${TAG:+-$TAG}.md
# sim NAME HOURS: a figure of tailsim's output.
sim() { awk -v k="$1" '$1 == k {print $2}' "$work/sim-$2.out"; }
{
	echo "## redis: snap follow --interval 1s beside a redis-server 7"
	echo
	echo "snap $(git describe --tags --always --dirty 2>/dev/null), $(redis-server --version | cut -d' ' -f1-3), $(go env GOVERSION); $(nproc) cores ($cpu_model), $mem RAM, Linux $(uname -r)"
	echo
	echo "\`RUNS=$RUNS BENCH_N=$BENCH_N DURATION=$DURATION RATE=$RATE SIM_HOURS=\"$SIM_HOURS\" VALUE=$VALUE bench/redis.sh\`; redis-server, redis-benchmark, redisload and follow share the machine; load average $load_before before, $load_after after."
	echo
	echo "### SET throughput, without and with follow (medians of $RUNS)"
	echo
	echo "\`redis-benchmark -t set -n $BENCH_N -P 16 -c 8 -d 100 -r 1000000\`; redis-server --appendonly yes --appendfsync everysec --save '' (it rewrites its AOF during a run)."
	echo
	echo "| | without follow | with follow | drop | target |"
	echo "|---|---|---|---|---|"
	awk -F'\t' '
		function median(a, n,   i, j, t) {
			for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
			return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		}
		{ r[$1, ++n[$1]] = $3; if ($1 == "with") c[++nc] = $6 }
		END {
			for (i = 1; i <= n["without"]; i++) a[i] = r["without", i]; wo = median(a, n["without"])
			for (i = 1; i <= n["with"]; i++) b[i] = r["with", i]; wi = median(b, n["with"])
			printf "| SET/s | %.0f | %.0f | %.1f %% | <= 3 %% |\n", wo, wi, 100 * (wo - wi) / wo
			printf "| SET/s, slowest to fastest run | %.0f to %.0f | %.0f to %.0f | | |\n", a[1], a[n["without"]], b[1], b[n["with"]]
			printf "| follow CPU during the run, %% of one core | | %.1f | | |\n", median(c, nc)
		}' "$work/throughput.tsv"
	echo
	echo "Every run (follow, run, SET/s, seconds, AOF rewrites, follow CPU %, base snapshots of rewrites follow stored):"
	echo
	echo '```'
	cat "$work/throughput.tsv"
	echo '```'
	echo
	echo "### Lag, CPU and memory at $RATE SET/s for ${DURATION} s"
	echo
	echo "bench/redisload: a pipeline every 10 ms, values of 100 bytes ($VALUE), random keys below 1000000."
	echo
	echo "| figure | value | target |"
	echo "|---|---|---|"
	echo "| writes achieved | $load_rate SET/s ($load_late batches a whole batch late) | $RATE SET/s |"
	echo "| AOF growth (bytes follow stored / window) | $growth B/s | the load |"
	echo "| tail objects stored | $objects | |"
	echo "| lag p50 | $lag_p50 ms | |"
	echo "| lag p99 | $lag_p99 ms | <= 2000 ms |"
	echo "| lag max | $lag_max ms | |"
	echo "| follow CPU, (utime + stime) / wall | $cpu % of one core | <= 5 % |"
	echo "| follow peak RSS (VmHWM at the end) | $(awk -v k="$hwm_kib" 'BEGIN {printf "%.1f", k / 1024}') MiB | <= 50 MiB |"
	echo "| follow peak RSS before the load (start: key derivation, first base) | $(awk -v k="$hwm0_kib" 'BEGIN {printf "%.1f", k / 1024}') MiB | |"
	echo "| follow RSS at the end (VmRSS) | $(awk -v k="$rss_kib" 'BEGIN {printf "%.1f", k / 1024}') MiB | |"
	echo "| AOF rewrites in the window (redis / base snapshots follow stored) | $aof_rewrites / $follow_rewrites | |"
	echo "| follow compactions / warnings logged | $follow_compactions / $follow_warnings | |"
	echo
	echo "lag_ms is when a tail object was stored minus the start of the window its bytes were written in: an upper bound on the lag of each write in it."
	if [ -n "$follow_log" ]; then
		echo
		echo "follow's first warnings:"
		echo
		echo '```'
		echo "$follow_log"
		echo '```'
	fi
	echo
	echo "### Repository objects after following (simulated clock)"
	echo
	echo "bench/tailsim: one tail object a simulated second of $sim_rate B/s of SET commands through chain.Save, chain.Compact every simulated minute (grace 7 s), on a simulated clock: no server, no real follow. The end is just before a compaction, the most objects of the cycle."
	echo
	printf '| simulated clock |'
	for h in $SIM_HOURS; do printf ' %s h |' "$h"; done
	echo
	printf '|---|'
	for _ in $SIM_HOURS; do printf -- '---|'; done
	echo
	row() {
		local label=$1 key=$2 scale=${3:-} h v
		printf '| %s |' "$label"
		for h in $SIM_HOURS; do
			v=$(sim "$key" "$h")
			[ -n "$scale" ] && v=$(awk -v v="$v" -v s="$scale" 'BEGIN {printf "%.1f", v / s}')
			printf ' %s |' "$v"
		done
		echo
	}
	row "AOF bytes simulated, GB" aof_bytes 1e9
	row "tails/" objects_tails
	row "data/** (packs)" objects_data
	row "index/" objects_index
	row "snapshots/" objects_snapshots
	row "all files (with config, keys/, locks/)" objects_total
	row "tails/ MB" bytes_tails 1e6
	row "data/ MB" bytes_data 1e6
	row "index/ MB" bytes_index 1e6
	row "most tail objects a restore to one second reads" restore_max_tails
	row "... for a restore to (from the start)" restore_max_at
	row "packs those tail objects name" restore_max_packs
	row "median tail objects a restore reads" restore_median_tails
	row "seconds planned (chain.PlanAt)" restores_planned
	row "wall seconds of the simulation" wall_seconds
	echo
	echo "docs/design.md (\"Compaction\"): an hour of following leaves at most 35 tail objects per chain and incr file right after a compaction (95 just before one), a day at most 44 (104) for its last day and one per older day."
} | tee "$out"
log "wrote $out"
