#!/usr/bin/env bash
# demo.sh runs snap's main job end to end on the embedded default (a local
# repository directory) against the project's RocksDB test server:
#
#   start the server, write data (several SSTs and a WAL), snap init,
#   snap backup, write more, snap backup again (incremental), snap ls,
#   show that restore refuses a live database, stop the server, wipe its
#   data directory, snap restore --latest, check the restored database with
#   ldb, start the server on it and read every key back; then restore the
#   first snapshot by id and check that it holds the older state.
#
# Run it with `make demo`, which installs the dependencies and builds
# bin/snap and bin/rocksdb-server first. Everything happens in a fresh
# temporary directory (DEMO_DIR to choose one that does not exist yet),
# removed after a successful run unless DEMO_KEEP=1, kept after a failure.
# The server binds 127.0.0.1 only; it is stopped on every exit, and it also
# stops by itself if this script is killed (its stdin is a pipe we hold).
#
# Environment: DEMO_PORT (default 0: the server picks a free port),
# DEMO_KEYS (keys per write phase, default 5000), DEMO_DIR, DEMO_KEEP.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
snap=$root/bin/snap
server=$root/bin/rocksdb-server
port_wanted=${DEMO_PORT:-0}
n=${DEMO_KEYS:-5000}

for b in "$snap" "$server"; do
	[ -x "$b" ] || { echo "demo: $b is missing; run 'make demo' (it builds it)" >&2; exit 1; }
done
for t in redis-cli ldb awk; do
	command -v "$t" >/dev/null || { echo "demo: $t is missing; run 'make deps'" >&2; exit 1; }
done
case $n in '' | *[!0-9]*) echo "demo: DEMO_KEYS must be a number" >&2; exit 2 ;; esac
[ "$n" -ge 100 ] || { echo "demo: DEMO_KEYS must be at least 100" >&2; exit 2; }

step=0
header() {
	step=$((step + 1))
	printf '\n==> %d. %s\n' "$step" "$*"
}
fail() {
	echo "demo: FAILED: $*" >&2
	exit 1
}

# --- the test server ------------------------------------------------------

server_pid=
port=
server_runs=0
work=
hold_fd=

# start_server DIR [extra flags...] starts the server on DIR and sets port.
start_server() {
	local dir=$1
	shift
	server_runs=$((server_runs + 1))
	local log=$work/server-$server_runs.log
	: >"$log"
	"$server" --bind 127.0.0.1 --port "$port_wanted" --rocksdb_db_path "$dir" \
		--version_timestamp_ms 9999999999999 --exit_on_stdin_eof "$@" \
		<"$work/server.stdin" 2>"$log" {hold_fd}>&- &
	server_pid=$!
	local addr=
	for _ in $(seq 200); do
		addr=$(sed -n 's/^listening on //p' "$log")
		[ -n "$addr" ] && break
		if ! kill -0 "$server_pid" 2>/dev/null; then
			wait "$server_pid" || true
			server_pid=
			cat "$log" >&2
			fail "the server did not start (log above, in $log)"
		fi
		sleep 0.1
	done
	[ -n "$addr" ] || fail "the server did not report its address within 20s (see $log)"
	port=${addr##*:}
	[ "$(rcli PING)" = PONG ] || fail "the server on 127.0.0.1:$port does not answer PING"
	echo "rocksdb-server (pid $server_pid) serves $dir on 127.0.0.1:$port"
}

# halt_server sends SIGTERM, waits up to 20s, then SIGKILL. It returns the
# server's exit status.
halt_server() {
	local pid=$server_pid rc=0
	server_pid=
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" || rc=$?
	return "$rc"
}

stop_server() {
	local pid=$server_pid
	halt_server || fail "the server (pid $pid) did not exit cleanly; see $work/server-$server_runs.log"
	echo "rocksdb-server (pid $pid) stopped"
}

cleanup() {
	local rc=$?
	if [ -n "$server_pid" ]; then
		halt_server 2>/dev/null || true
	fi
	if [ -n "$hold_fd" ]; then
		exec {hold_fd}>&-
	fi
	[ -n "$work" ] || return 0
	if [ "$rc" -ne 0 ]; then
		echo "demo: failed (exit $rc); files and server logs are kept in $work" >&2
	elif [ -n "${DEMO_KEEP:-}" ]; then
		echo "files kept in $work"
	else
		rm -rf "$work"
	fi
}

rcli() {
	redis-cli -h 127.0.0.1 -p "$port" "$@"
}

# send FILE sends one command per line and checks every reply.
send() {
	local file=$1 out want got
	out=$(rcli <"$file")
	want=$(wc -l <"$file")
	got=$(printf '%s\n' "$out" | grep -c -E '^(OK|[0-9]+)$' || true)
	[ "$got" -eq "$want" ] || {
		printf '%s\n' "$out" | grep -v -E '^(OK|[0-9]+)$' | head -5 >&2
		fail "$file: $got of $want commands succeeded"
	}
}

# verify EXPECTED reads every key of EXPECTED (key TAB value, an empty value
# for a deleted key) through the server and compares the values.
verify() {
	local expected=$1 name
	name=$(basename "$expected" .tsv)
	awk -F'\t' '{print "GET " $1}' "$expected" >"$work/$name.get"
	rcli <"$work/$name.get" >"$work/$name.got"
	cut -f2 "$expected" >"$work/$name.want"
	if ! cmp -s "$work/$name.want" "$work/$name.got"; then
		diff "$work/$name.want" "$work/$name.got" | head -10 >&2 || true
		fail "values read back differ from $expected"
	fi
	local total deleted
	total=$(wc -l <"$expected")
	deleted=$(awk -F'\t' '$2 == ""' "$expected" | wc -l)
	echo "all $total keys read back as expected ($((total - deleted)) with their last value, $deleted deleted ones absent)"
}

# check_db DIR runs RocksDB's own consistency check on a database directory.
check_db() {
	local out
	out=$(ldb --db="$1" checkconsistency 2>&1) || fail "ldb checkconsistency $1: $out"
	echo "ldb --db=$1 checkconsistency: $out"
}

# --- the data ---------------------------------------------------------------

# gen.awk writes the commands of each phase and the state expected after
# phase C (the first backup) and after phase D (the second). Values are
# 256 pseudo-random hex digits, reproducible from the seed.
write_data_files() {
	awk -v n="$n" -v dir="$work" '
	function val(k, ph,   s, i) {
		s = k ":" ph ":"
		for (i = 0; i < 32; i++) s = s sprintf("%08x", int(rand() * 4294967296))
		return s
	}
	function set(f, i, ph,   k) {
		k = sprintf("demo:%07d", i)
		v[k] = val(k, ph)
		if (!(k in order)) { order[k] = ++nk; keys[nk] = k }
		print "SET " k " " v[k] > f
	}
	function del(f, i,   k) {
		k = sprintf("demo:%07d", i)
		v[k] = ""
		print "DEL " k > f
	}
	function dump(f,   i) {
		for (i = 1; i <= nk; i++) print keys[i] "\t" v[keys[i]] > f
		close(f)
	}
	BEGIN {
		srand(20261121)
		a = dir "/phase-a.cmd"; b = dir "/phase-b.cmd"; c = dir "/phase-c.cmd"; d = dir "/phase-d.cmd"
		for (i = 1; i <= n; i++) set(a, i, "a")                      # first SST
		for (i = n + 1; i <= 2 * n; i++) set(b, i, "b")              # second SST
		for (i = 1; i <= n / 10; i++) set(b, i, "b")                 #  overwrites
		for (i = 2 * n + 1; i <= 2 * n + n / 2; i++) set(c, i, "c")  # WAL only
		for (i = n / 10 + 1; i <= n / 5; i++) del(c, i)              #  deletes
		dump(dir "/expected-1.tsv")
		for (i = 2 * n + n / 2 + 1; i <= 3 * n; i++) set(d, i, "d")  # after backup 1
		for (i = 2 * n + 1; i <= 2 * n + n / 10; i++) set(d, i, "d")
		dump(dir "/expected-2.tsv")
	}'
}

# --- the demo -----------------------------------------------------------------

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "${DEMO_DIR:-}" ]; then
	[ ! -e "$DEMO_DIR" ] || { echo "demo: DEMO_DIR $DEMO_DIR exists; name a new directory" >&2; exit 2; }
	mkdir -p "$DEMO_DIR"
	work=$(cd "$DEMO_DIR" && pwd)
else
	work=$(mktemp -d "${TMPDIR:-/tmp}/snap-demo.XXXXXX")
fi

# The server's stdin is a FIFO that only this script holds open for
# writing; with --exit_on_stdin_eof the server shuts down when we are gone,
# however we die.
mkfifo "$work/server.stdin"
exec {hold_fd}<>"$work/server.stdin"

header "Work directory $work"
data=$work/data
export SNAP_REPO=$work/repo
export SNAP_PASSWORD=demo-password
echo "SNAP_REPO=$SNAP_REPO SNAP_PASSWORD=$SNAP_PASSWORD"
write_data_files

header "Start the RocksDB test server on an empty data directory"
start_server "$data" --rocksdb_create_if_missing_one_off
export SNAP_SERVER=127.0.0.1:$port SNAP_DATA=$data

header "Write $((2 * n)) keys in two batches, FLUSH after each (two SSTs), then $((n / 2)) more and $((n / 10)) deletes (kept in the WAL)"
send "$work/phase-a.cmd"
rcli FLUSH >/dev/null
send "$work/phase-b.cmd"
rcli FLUSH >/dev/null
send "$work/phase-c.cmd"
ls -l "$data" | grep -E '\.(sst|log)$|MANIFEST|CURRENT'

header "snap init"
"$snap" init

header "snap backup (first: reads everything)"
"$snap" backup

header "Write $((n / 2)) more keys and overwrite $((n / 10)), then snap backup again (incremental)"
send "$work/phase-d.cmd"
"$snap" backup

header "snap ls"
"$snap" ls
ls_json=$("$snap" ls --json)
first_id=$(printf '%s' "$ls_json" | grep -o '"id":"[0-9a-f]*"' | head -1 | cut -d'"' -f4)
last_id=$(printf '%s' "$ls_json" | grep -o '"id":"[0-9a-f]*"' | tail -1 | cut -d'"' -f4)
bytes=$(printf '%s' "$ls_json" | grep -o '"bytes":[0-9]*' | tail -1 | cut -d: -f2)
bytes_read=$(printf '%s' "$ls_json" | grep -o '"bytes_read":[0-9]*' | tail -1 | cut -d: -f2)
[ -n "$first_id" ] && [ "$first_id" != "$last_id" ] || fail "snap ls --json does not list two snapshots"
[ -n "$bytes" ] && [ -n "$bytes_read" ] || fail "snap ls --json has no summary"
echo "second backup read $bytes_read of $bytes bytes"
[ "$((bytes_read * 2))" -lt "$bytes" ] || fail "the second backup read $bytes_read of $bytes bytes; it should be incremental"
"$snap" ls "${last_id:0:8}"

header "snap restore refuses the live database"
if out=$("$snap" restore --latest --target "$data" 2>&1); then
	fail "restore into the live data directory succeeded: $out"
fi
case $out in *"already holds a database"*) ;; *) fail "restore failed for another reason: $out" ;; esac
echo "snap restore --latest --target $data: $out"
"$snap" restore --latest --target "$data" --skip-existing
echo "(--skip-existing exits 0 without touching it, for start-up scripts)"

header "Stop the server and wipe its data directory"
stop_server
rm -rf "$data"
echo "removed $data"

header "snap restore --latest"
"$snap" restore --latest --target "$data"
check_db "$data"

header "Start the server on the restored directory and read every key back"
start_server "$data"
verify "$work/expected-2.tsv"
up=$(rcli SHCARD time 3600)
echo "SHCARD time 3600: $up (seconds the server ran in the last hour, restored history included)"
[ "$up" -ge 1 ] 2>/dev/null || fail "SHCARD time 3600 answered '$up'"
stop_server

header "snap restore ${first_id:0:8} (the first snapshot) into a second directory"
"$snap" restore --target "$work/data-first" "$first_id"
check_db "$work/data-first"
start_server "$work/data-first"
verify "$work/expected-1.tsv"
stop_server

printf '\ndemo OK\n'
