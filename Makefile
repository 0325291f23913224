# snap's build, test and demo entry points. The README's two set-up
# commands are `make demo` and `make test`; .ci/run calls `make test`.

GO       ?= go
FUZZTIME ?= 10s
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
# snap talks to GCS over its JSON API; this documented opt-out of
# cloud.google.com/go/storage drops gRPC DirectPath (xDS, Envoy's protos),
# whose package initialisation alone cost every command 8 MiB of memory.
TAGS     := disable_grpc_modules

# -race and the RocksDB test server both need cgo.
export CGO_ENABLED := 1

.PHONY: all build man server deps test vet fuzz demo clean

all: build

## build: bin/snap
build:
	$(GO) build -tags $(TAGS) -ldflags '$(LDFLAGS)' -o bin/snap ./cmd/snap

## man: bin/snap.1, the man page made from the command definitions (read it with man -l bin/snap.1)
man: build
	bin/snap man >bin/snap.1.tmp
	mv bin/snap.1.tmp bin/snap.1

## server: bin/rocksdb-server, the RocksDB test server (needs `make deps`)
server:
	$(GO) build -tags rocksdb -o bin/rocksdb-server ./cmd/rocksdb-server

## deps: install the Debian packages the server, tests and demo need
deps:
	scripts/deps.sh

## vet: go vet, also of the code behind the rocksdb build tag
vet:
	$(GO) vet -tags $(TAGS) ./...
	$(GO) vet -tags rocksdb ./cmd/rocksdb-server

## test: everything CI runs (the README's test command)
test: deps vet
	$(GO) test -tags $(TAGS) -race -timeout 25m ./...

## fuzz: run every Fuzz* target for FUZZTIME each
fuzz:
	GO=$(GO) scripts/fuzz.sh $(FUZZTIME)

## demo: back up a live test server, wipe it, restore it, check every key
demo: deps build server
	scripts/demo.sh

clean:
	rm -rf bin

## bench: every shape (SHAPE=all: large, many-plain, many-snappy, incompressible, dir), cold and warm cache, snap vs restic, borg, ldb backup/restore and tar | zstd -1 -T0 (SHAPE=, SIZE=, RUNS=, CACHE=; see docs/performance.md), then the redis and fleet rows
bench:
	SHAPE=$${SHAPE:-all} bench/run.sh
	bench/redis.sh
	bench/fleet.sh

## bench-fleet: a node's backup and restore in a 1,000-host, 2M-blob repository against an empty one, then check and prune on it (FLEET_HOSTS=, FLEET_BLOBS=, RUNS=)
bench-fleet:
	bench/fleet.sh

## bench-dir: the dir shape alone, a Pebble checkpoint through snap backup --source dir (SIZE= default 500MiB, RUNS=, CACHE=)
bench-dir:
	SHAPE=dir SIZE=$${SIZE:-500MiB} bench/run.sh

## bench-quick: every shape on a 200 MiB data set
bench-quick:
	SHAPE=$${SHAPE:-all} SIZE=200MiB bench/run.sh

## bench-smoke: every shape at 64 MiB, one run, cold and warm: proves the harness works; its figures are not results
bench-smoke:
	SHAPE=all SIZE=64MiB RUNS=1 TAG=smoke bench/run.sh

## bench-redis: snap follow beside a redis-server 7: SET throughput, lag, CPU, RSS, objects (RUNS=, DURATION=, SIM_HOURS=)
bench-redis:
	bench/redis.sh

.PHONY: bench bench-quick bench-dir bench-smoke bench-redis bench-fleet
