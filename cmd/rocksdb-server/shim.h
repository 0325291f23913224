//go:build rocksdb

// A small C interface over the RocksDB C++ API for the Go server.
// Every function that can fail returns NULL on success or a malloc'd error
// message that the caller frees.
#ifndef SNAP_ROCKSDB_SHIM_H
#define SNAP_ROCKSDB_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct snapdb snapdb;

char* snapdb_open(const char* path, int create_if_missing,
                  size_t write_buffer_size, int l0_compaction_trigger,
                  snapdb** out);
char* snapdb_close(snapdb* db);

// snapdb_write applies n operations atomically as one WriteBatch. ops[i] is
// 'P' (put) or 'D' (delete); lens holds two lengths per operation (key,
// value; value length 0 for a delete) and buf the keys and values back to
// back, in order.
char* snapdb_write(snapdb* db, int sync, int n, const unsigned char* ops,
                   const size_t* lens, const char* buf);

// snapdb_get sets *found and, when found, *val (malloc'd, caller frees) and
// *vlen.
char* snapdb_get(snapdb* db, const char* key, size_t klen, int* found,
                 char** val, size_t* vlen);

// snapdb_count counts keys in [start, end).
char* snapdb_count(snapdb* db, const char* start, size_t slen,
                   const char* end, size_t elen, uint64_t* count);

char* snapdb_int_property(snapdb* db, const char* name, uint64_t* value);
char* snapdb_flush(snapdb* db);
char* snapdb_compact(snapdb* db);

// snapdb_freeze disables file deletions and lists the live files, one name
// per line, as DisableFileDeletions + GetLiveFiles(flush=false) +
// GetSortedWalFiles: "/000056.sst", "/CURRENT", "/MANIFEST-000046:514",
// "/OPTIONS-000048", "/000051.log:63805250". *out is malloc'd. On error
// file deletions are enabled again (the freeze did not happen).
char* snapdb_freeze(snapdb* db, char** out, size_t* outlen);

// snapdb_thaw undoes one snapdb_freeze (EnableFileDeletions(force=false)).
char* snapdb_thaw(snapdb* db);

#ifdef __cplusplus
}
#endif

#endif
