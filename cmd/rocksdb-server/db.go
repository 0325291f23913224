//go:build rocksdb

package main

/*
#cgo CXXFLAGS: -std=c++17 -O2
#cgo LDFLAGS: -lrocksdb
#include <stdlib.h>
#include "shim.h"
*/
import "C"

import (
	"errors"
	"strings"
	"unsafe"
)

// db is a RocksDB database opened through the C++ shim. Its methods are safe
// for concurrent use, except close, which must run after every other call.
type db struct {
	h    *C.snapdb
	sync bool
}

// cerr turns a shim error string into a Go error and frees it.
func cerr(p *C.char) error {
	if p == nil {
		return nil
	}
	defer C.free(unsafe.Pointer(p))
	return errors.New(C.GoString(p))
}

func openDB(path string, createIfMissing bool, writeBufferSize, l0Trigger int, sync bool) (*db, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	create := C.int(0)
	if createIfMissing {
		create = 1
	}
	var h *C.snapdb
	if err := cerr(C.snapdb_open(cpath, create, C.size_t(writeBufferSize), C.int(l0Trigger), &h)); err != nil {
		return nil, err
	}
	return &db{h: h, sync: sync}, nil
}

func (d *db) close() error {
	return cerr(C.snapdb_close(d.h))
}

// op is one operation of a write batch; a nil value means delete.
type op struct {
	key   string
	value *string
}

// write applies ops atomically. Keys and values travel to C in one buffer
// (cgo forbids passing Go memory that holds Go pointers).
func (d *db) write(ops []op) error {
	if len(ops) == 0 {
		return nil
	}
	kinds := make([]C.uchar, len(ops))
	lens := make([]C.size_t, 2*len(ops))
	var buf strings.Builder
	for i, o := range ops {
		kinds[i] = 'D'
		lens[2*i] = C.size_t(len(o.key))
		buf.WriteString(o.key)
		if o.value != nil {
			kinds[i] = 'P'
			lens[2*i+1] = C.size_t(len(*o.value))
			buf.WriteString(*o.value)
		}
	}
	b := []byte(buf.String())
	if len(b) == 0 {
		b = []byte{0} // a valid pointer even when every key and value is empty
	}
	s := C.int(0)
	if d.sync {
		s = 1
	}
	return cerr(C.snapdb_write(d.h, s, C.int(len(ops)), &kinds[0], &lens[0],
		(*C.char)(unsafe.Pointer(&b[0]))))
}

func (d *db) get(key string) (value string, found bool, err error) {
	k := []byte(key + "\x00") // never empty, so &k[0] is valid
	var (
		f    C.int
		v    *C.char
		vlen C.size_t
	)
	if err := cerr(C.snapdb_get(d.h, (*C.char)(unsafe.Pointer(&k[0])), C.size_t(len(key)), &f, &v, &vlen)); err != nil {
		return "", false, err
	}
	if f == 0 {
		return "", false, nil
	}
	defer C.free(unsafe.Pointer(v))
	return C.GoStringN(v, C.int(vlen)), true, nil
}

// count counts the keys in [start, end).
func (d *db) count(start, end string) (uint64, error) {
	s := []byte(start + "\x00")
	e := []byte(end + "\x00")
	var n C.uint64_t
	err := cerr(C.snapdb_count(d.h, (*C.char)(unsafe.Pointer(&s[0])), C.size_t(len(start)),
		(*C.char)(unsafe.Pointer(&e[0])), C.size_t(len(end)), &n))
	return uint64(n), err
}

func (d *db) intProperty(name string) (uint64, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var v C.uint64_t
	err := cerr(C.snapdb_int_property(d.h, cname, &v))
	return uint64(v), err
}

func (d *db) flush() error   { return cerr(C.snapdb_flush(d.h)) }
func (d *db) compact() error { return cerr(C.snapdb_compact(d.h)) }

// freeze disables file deletions and returns the live files in the FREEZE
// reply format. On error deletions stay enabled.
func (d *db) freeze() ([]string, error) {
	var (
		out    *C.char
		outlen C.size_t
	)
	if err := cerr(C.snapdb_freeze(d.h, &out, &outlen)); err != nil {
		return nil, err
	}
	defer C.free(unsafe.Pointer(out))
	s := C.GoStringN(out, C.int(outlen))
	if s == "" {
		// Cannot happen (CURRENT is always live); never reply an empty list.
		return nil, errors.Join(errors.New("freeze: rocksdb listed no live files"), d.thaw())
	}
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n"), nil
}

func (d *db) thaw() error { return cerr(C.snapdb_thaw(d.h)) }
