//go:build !rocksdb

// Command rocksdb-server needs RocksDB; this stub keeps `go build ./...`
// working on machines without it.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "rocksdb-server: built without -tags rocksdb; install librocksdb-dev and build with -tags rocksdb")
	os.Exit(2)
}
