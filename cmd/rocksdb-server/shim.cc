//go:build rocksdb

#include "shim.h"

#include <algorithm>

#include <rocksdb/db.h>
#include <rocksdb/iterator.h>
#include <rocksdb/options.h>
#include <rocksdb/transaction_log.h>
#include <rocksdb/write_batch.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

struct snapdb {
  rocksdb::DB* db;
};

namespace {

char* dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p == nullptr) {
    std::abort();  // no memory to report that there is no memory
  }
  std::memcpy(p, s.data(), s.size());
  p[s.size()] = '\0';
  return p;
}

char* err(const rocksdb::Status& s) { return s.ok() ? nullptr : dup(s.ToString()); }

// guard turns a C++ exception (std::bad_alloc, mostly) into an error string:
// exceptions must not cross into Go.
template <typename F>
char* guard(F f) {
  try {
    return f();
  } catch (const std::exception& e) {
    return dup(std::string("c++ exception: ") + e.what());
  } catch (...) {
    return dup("c++ exception");
  }
}

std::string base_name(const std::string& p) {
  size_t i = p.find_last_of('/');
  return i == std::string::npos ? p : p.substr(i + 1);
}

}  // namespace

extern "C" {

char* snapdb_open(const char* path, int create_if_missing,
                  size_t write_buffer_size, int l0_compaction_trigger,
                  snapdb** out) {
  return guard([&]() -> char* {
    rocksdb::Options opts;
    opts.create_if_missing = create_if_missing != 0;
    opts.write_buffer_size = write_buffer_size;
    opts.level0_file_num_compaction_trigger = l0_compaction_trigger;
    opts.level0_slowdown_writes_trigger =
        std::max(opts.level0_slowdown_writes_trigger, l0_compaction_trigger + 1);
    opts.level0_stop_writes_trigger =
        std::max(opts.level0_stop_writes_trigger, l0_compaction_trigger + 2);
    // The FREEZE contract treats WALs as append-only: never recycle them.
    opts.recycle_log_file_num = 0;
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(opts, path, &db);
    if (!s.ok()) {
      return err(s);
    }
    *out = new snapdb{db};
    return nullptr;
  });
}

char* snapdb_close(snapdb* h) {
  return guard([&]() -> char* {
    rocksdb::Status s = h->db->Close();
    delete h->db;
    delete h;
    return err(s);
  });
}

char* snapdb_write(snapdb* h, int sync, int n, const unsigned char* ops,
                   const size_t* lens, const char* buf) {
  return guard([&]() -> char* {
    rocksdb::WriteBatch b;
    size_t off = 0;
    for (int i = 0; i < n; i++) {
      rocksdb::Slice k(buf + off, lens[2 * i]);
      off += lens[2 * i];
      rocksdb::Slice v(buf + off, lens[2 * i + 1]);
      off += lens[2 * i + 1];
      rocksdb::Status s;
      switch (ops[i]) {
        case 'P':
          s = b.Put(k, v);
          break;
        case 'D':
          s = b.Delete(k);
          break;
        default:
          return dup("snapdb_write: unknown operation");
      }
      if (!s.ok()) {
        return err(s);
      }
    }
    rocksdb::WriteOptions wo;
    wo.sync = sync != 0;
    return err(h->db->Write(wo, &b));
  });
}

char* snapdb_get(snapdb* h, const char* key, size_t klen, int* found,
                 char** val, size_t* vlen) {
  return guard([&]() -> char* {
    rocksdb::PinnableSlice v;
    rocksdb::Status s = h->db->Get(rocksdb::ReadOptions(),
                                   h->db->DefaultColumnFamily(),
                                   rocksdb::Slice(key, klen), &v);
    *found = 0;
    if (s.IsNotFound()) {
      return nullptr;
    }
    if (!s.ok()) {
      return err(s);
    }
    char* p = static_cast<char*>(std::malloc(v.size() + 1));
    if (p == nullptr) {
      return dup("snapdb_get: out of memory");
    }
    std::memcpy(p, v.data(), v.size());
    *found = 1;
    *val = p;
    *vlen = v.size();
    return nullptr;
  });
}

char* snapdb_count(snapdb* h, const char* start, size_t slen, const char* end,
                   size_t elen, uint64_t* count) {
  return guard([&]() -> char* {
    rocksdb::Slice upper(end, elen);
    rocksdb::ReadOptions ro;
    ro.iterate_upper_bound = &upper;
    std::unique_ptr<rocksdb::Iterator> it(h->db->NewIterator(ro));
    uint64_t c = 0;
    for (it->Seek(rocksdb::Slice(start, slen)); it->Valid(); it->Next()) {
      c++;
    }
    rocksdb::Status s = it->status();
    if (!s.ok()) {
      return err(s);
    }
    *count = c;
    return nullptr;
  });
}

char* snapdb_int_property(snapdb* h, const char* name, uint64_t* value) {
  return guard([&]() -> char* {
    if (!h->db->GetIntProperty(rocksdb::Slice(name), value)) {
      return dup(std::string("property ") + name + " not available");
    }
    return nullptr;
  });
}

char* snapdb_flush(snapdb* h) {
  return guard([&]() -> char* {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    return err(h->db->Flush(fo));
  });
}

char* snapdb_compact(snapdb* h) {
  return guard([&]() -> char* {
    rocksdb::CompactRangeOptions co;
    // Rewrite the bottommost level too, so every COMPACT replaces SSTs.
    co.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    return err(h->db->CompactRange(co, nullptr, nullptr));
  });
}

char* snapdb_freeze(snapdb* h, char** out, size_t* outlen) {
  rocksdb::Status s = h->db->DisableFileDeletions();
  if (!s.ok()) {
    return err(s);
  }
  char* e = guard([&]() -> char* {
    std::vector<std::string> live;
    uint64_t manifest_size = 0;
    rocksdb::Status s = h->db->GetLiveFiles(live, &manifest_size,
                                            /*flush_memtable=*/false);
    if (!s.ok()) {
      return err(s);
    }
    rocksdb::VectorLogPtr wals;
    s = h->db->GetSortedWalFiles(wals);
    if (!s.ok()) {
      return err(s);
    }
    std::string r;
    for (const std::string& name : live) {
      r += name;
      if (name.rfind("/MANIFEST-", 0) == 0) {
        r += ":" + std::to_string(manifest_size);
      }
      r += '\n';
    }
    for (const auto& w : wals) {
      if (w->Type() != rocksdb::kAliveLogFile) {
        continue;
      }
      r += "/" + base_name(w->PathName()) + ":" +
           std::to_string(w->SizeFileBytes()) + '\n';
    }
    *out = dup(r);
    *outlen = r.size();
    return nullptr;
  });
  if (e != nullptr) {
    rocksdb::Status es = h->db->EnableFileDeletions(/*force=*/false);
    if (!es.ok()) {
      std::string m = std::string(e) + "; enable file deletions: " + es.ToString();
      std::free(e);
      e = dup(m);
    }
  }
  return e;
}

char* snapdb_thaw(snapdb* h) {
  return guard([&]() -> char* {
    return err(h->db->EnableFileDeletions(/*force=*/false));
  });
}

}  // extern "C"
