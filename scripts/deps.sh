#!/usr/bin/env bash
# deps.sh installs the Debian packages snap's test server, tests and demo
# need on a Debian machine that has only Go: RocksDB headers and library (the
# test server links them through cgo), RocksDB's tools (ldb checks restored
# databases), a real Redis 7 (redis-server: the Redis source's tests run it,
# through internal/testredis; Debian 12 ships 7.0), Redis's tools
# (redis-cli, with which the demo writes through the server;
# redis-check-aof, which checks restored AOFs), and gcc, g++ and make where
# they are missing.
# Idempotent: when everything is present it only checks and returns.
set -euo pipefail

packages=(librocksdb-dev rocksdb-tools redis-server redis-tools)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing+=("$p")
	fi
done

# cgo (the -race tests and the test server) needs a C and C++ compiler;
# the set-up commands need make.
for tool in gcc g++ make; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		missing+=("$tool")
	fi
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "deps: ${packages[*]} already installed"
	exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing ${missing[*]} and no apt-get here; install them with your package manager" >&2
	exit 1
fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if ! command -v sudo >/dev/null 2>&1; then
		echo "deps: missing ${missing[*]}; run as root or install sudo" >&2
		exit 1
	fi
	sudo=(sudo)
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
