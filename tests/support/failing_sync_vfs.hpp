// A test's disk that refuses to make a commit durable: an SQLite VFS that
// passes everything to the default VFS, except that fsync fails with
// SQLITE_IOERR_FSYNC while FailingSyncVfs::fail_sync is set. The store under
// test takes the real SQLite commit path and meets the failure where a bad
// disk would put it. Open a store with StoreOptions::vfs =
// FailingSyncVfs::name() (or ControllerConfig::store_vfs).
#pragma once

#include <sqlite3.h>

namespace apiary::test {

// An SQLite VFS that passes everything to the default one, except that
// fsync fails (SQLITE_IOERR_FSYNC) while `fail_sync` is set: a disk that
// refuses to make a commit durable, under the real SQLite commit path.
struct FailingSyncVfs {
  static inline int syncs = 0;  // every fsync asked for, failed or not
  static inline bool fail_sync = false;
  static inline int syncs_failed = 0;
  static inline sqlite3_vfs vfs{};
  static inline sqlite3_io_methods methods{};
  static inline const sqlite3_io_methods* base_methods = nullptr;
  struct File {
    sqlite3_file base;  // must be first: SQLite sees this
    sqlite3_file* real;
  };
  static sqlite3_file* real(sqlite3_file* f) { return reinterpret_cast<File*>(f)->real; }
  static const char* name() {
    if (vfs.zName != nullptr) return vfs.zName;
    sqlite3_vfs* def = sqlite3_vfs_find(nullptr);
    vfs = *def;
    vfs.zName = "apiary-failing-sync";
    vfs.szOsFile = static_cast<int>(sizeof(File)) + def->szOsFile;
    vfs.pAppData = def;
    vfs.xOpen = [](sqlite3_vfs* self, const char* zname, sqlite3_file* f, int flags, int* out) -> int {
      auto* def = static_cast<sqlite3_vfs*>(self->pAppData);
      auto* file = reinterpret_cast<File*>(f);
      file->real = reinterpret_cast<sqlite3_file*>(reinterpret_cast<char*>(f) + sizeof(File));
      const int rc = def->xOpen(def, zname, file->real, flags, out);
      if (rc != SQLITE_OK) {
        file->base.pMethods = nullptr;
        return rc;
      }
      base_methods = file->real->pMethods;
      methods = *base_methods;
      methods.xClose = [](sqlite3_file* f) { return real(f)->pMethods->xClose(real(f)); };
      methods.xRead = [](sqlite3_file* f, void* b, int n, sqlite3_int64 o) { return real(f)->pMethods->xRead(real(f), b, n, o); };
      methods.xWrite = [](sqlite3_file* f, const void* b, int n, sqlite3_int64 o) {
        return real(f)->pMethods->xWrite(real(f), b, n, o);
      };
      methods.xTruncate = [](sqlite3_file* f, sqlite3_int64 n) { return real(f)->pMethods->xTruncate(real(f), n); };
      methods.xSync = [](sqlite3_file* f, int flags) {
        ++syncs;
        if (fail_sync) {
          ++syncs_failed;
          return SQLITE_IOERR_FSYNC;
        }
        return real(f)->pMethods->xSync(real(f), flags);
      };
      methods.xFileSize = [](sqlite3_file* f, sqlite3_int64* n) { return real(f)->pMethods->xFileSize(real(f), n); };
      methods.xLock = [](sqlite3_file* f, int l) { return real(f)->pMethods->xLock(real(f), l); };
      methods.xUnlock = [](sqlite3_file* f, int l) { return real(f)->pMethods->xUnlock(real(f), l); };
      methods.xCheckReservedLock = [](sqlite3_file* f, int* r) {
        return real(f)->pMethods->xCheckReservedLock(real(f), r);
      };
      methods.xFileControl = [](sqlite3_file* f, int op, void* a) { return real(f)->pMethods->xFileControl(real(f), op, a); };
      methods.xSectorSize = [](sqlite3_file* f) { return real(f)->pMethods->xSectorSize(real(f)); };
      methods.xDeviceCharacteristics = [](sqlite3_file* f) {
        return real(f)->pMethods->xDeviceCharacteristics(real(f));
      };
      methods.xShmMap = [](sqlite3_file* f, int i, int sz, int ext, void volatile** p) {
        return real(f)->pMethods->xShmMap(real(f), i, sz, ext, p);
      };
      methods.xShmLock = [](sqlite3_file* f, int o, int n, int fl) { return real(f)->pMethods->xShmLock(real(f), o, n, fl); };
      methods.xShmBarrier = [](sqlite3_file* f) { real(f)->pMethods->xShmBarrier(real(f)); };
      methods.xShmUnmap = [](sqlite3_file* f, int d) { return real(f)->pMethods->xShmUnmap(real(f), d); };
      methods.xFetch = [](sqlite3_file* f, sqlite3_int64 o, int n, void** p) {
        return real(f)->pMethods->xFetch(real(f), o, n, p);
      };
      methods.xUnfetch = [](sqlite3_file* f, sqlite3_int64 o, void* p) { return real(f)->pMethods->xUnfetch(real(f), o, p); };
      file->base.pMethods = &methods;
      return SQLITE_OK;
    };
    sqlite3_vfs_register(&vfs, 0);
    return vfs.zName;
  }
};

// Fails every fsync while it lives (also when the test fails half-way).
struct FailingSyncs {
  FailingSyncs() { FailingSyncVfs::fail_sync = true; }
  ~FailingSyncs() { FailingSyncVfs::fail_sync = false; }
  FailingSyncs(const FailingSyncs&) = delete;
  FailingSyncs& operator=(const FailingSyncs&) = delete;
};

}  // namespace apiary::test
