// The controller's durable store on SQLite. See state_store.hpp for the rules
// it enforces and why SQLite.
//
// Implementation notes:
//  * Only the sqlite3 C API, behind two RAII types: the connection (closed
//    with sqlite3_close_v2) and Stmt (finalized in its destructor). Every
//    SQLite failure goes through fail(), which throws a StoreError carrying
//    the SQL, SQLite's message and its extended result code.
//  * Statements are prepared per call: the control plane writes a handful of
//    rows per request, and preparing costs microseconds.
//  * Each public write runs inside with_transaction() (BEGIN IMMEDIATE, so a
//    read-validate-write sequence cannot interleave with another writer);
//    nested calls become savepoints.
//  * The action log's events column is a JSON array built and read by
//    SQLite's own JSON functions (json_object, json_insert, json_each), so
//    there is no hand-written JSON here.
#include "cluster/state_store.hpp"

#include <sqlite3.h>

#include <algorithm>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

namespace apiary::control {

namespace {

// Prepared statements, kept per connection and reused: preparing is most
// of the cost of a small statement (measured: ~150 us per simulated record
// setup at 100 k rows without it). A Stmt takes an idle statement for its
// SQL text or prepares one, and gives it back reset when it is destroyed.
// Connections register on open and unregister (finalizing what is idle)
// before they close; the mutex only matters when several stores exist.
class StatementCache {
 public:
  static void open(sqlite3* db) {
    std::lock_guard lock(mu());
    connections()[db];
  }
  static void close(sqlite3* db) noexcept {
    std::lock_guard lock(mu());
    auto it = connections().find(db);
    if (it == connections().end()) return;
    for (auto& [sql, stmts] : it->second)
      for (auto* st : stmts) sqlite3_finalize(st);
    connections().erase(it);
  }
  static sqlite3_stmt* take(sqlite3* db, const std::string& sql) {
    std::lock_guard lock(mu());
    auto it = connections().find(db);
    if (it == connections().end()) return nullptr;
    auto s = it->second.find(sql);
    if (s == it->second.end() || s->second.empty()) return nullptr;
    sqlite3_stmt* st = s->second.back();
    s->second.pop_back();
    return st;
  }
  // False when the statement was not kept (the caller finalizes it).
  static bool give_back(sqlite3* db, const std::string& sql, sqlite3_stmt* st) noexcept {
    static constexpr size_t kIdlePerSql = 4;  // nested uses of one statement are rare
    std::lock_guard lock(mu());
    auto it = connections().find(db);
    if (it == connections().end()) return false;
    auto& idle = it->second[sql];
    if (idle.size() >= kIdlePerSql) return false;
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    idle.push_back(st);
    return true;
  }

 private:
  using PerConnection = std::unordered_map<std::string, std::vector<sqlite3_stmt*>>;
  static std::mutex& mu() {
    static std::mutex m;
    return m;
  }
  static std::unordered_map<sqlite3*, PerConnection>& connections() {
    static std::unordered_map<sqlite3*, PerConnection> c;
    return c;
  }
};

struct DbCloser {
  void operator()(sqlite3* db) const noexcept {
    StatementCache::close(db);
    sqlite3_close_v2(db);
  }
};
using DbHandle = std::unique_ptr<sqlite3, DbCloser>;

StoreErrc classify(int rc) {
  switch (rc & 0xff) {
    case SQLITE_NOTADB: return StoreErrc::not_a_database;
    case SQLITE_CORRUPT: return StoreErrc::corrupt;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return StoreErrc::busy;
    case SQLITE_CANTOPEN: return StoreErrc::open_failed;
    default: return StoreErrc::sql_failed;
  }
}

[[noreturn]] void fail(sqlite3* db, int rc, const std::string& what, std::string_view sql) {
  throw StoreError(classify(rc), what, std::string(sql), db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc),
                   db != nullptr ? sqlite3_extended_errcode(db) : rc);
}

// One prepared statement. Parameters are positional (?1, ?2, ...).
class Stmt {
 public:
  Stmt(sqlite3* db, std::string_view sql) : db_(db), sql_(sql) {
    stmt_ = StatementCache::take(db_, sql_);
    if (stmt_ != nullptr) return;
    const int rc = sqlite3_prepare_v2(db_, sql_.data(), static_cast<int>(sql_.size()), &stmt_, nullptr);
    if (rc != SQLITE_OK) fail(db_, rc, "preparing statement", sql_);
  }
  ~Stmt() {
    if (stmt_ != nullptr && !StatementCache::give_back(db_, sql_, stmt_)) sqlite3_finalize(stmt_);
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  Stmt& bind(int i, std::string_view v) {
    check(sqlite3_bind_text(stmt_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT), "binding a parameter");
    return *this;
  }
  Stmt& bind(int i, const std::string& v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, const char* v) { return bind(i, std::string_view(v)); }
  Stmt& bind(int i, int64_t v) {
    check(sqlite3_bind_int64(stmt_, i, v), "binding a parameter");
    return *this;
  }
  Stmt& bind(int i, std::optional<int64_t> v) {
    check(v ? sqlite3_bind_int64(stmt_, i, *v) : sqlite3_bind_null(stmt_, i), "binding a parameter");
    return *this;
  }
  Stmt& bind_null(int i) {
    check(sqlite3_bind_null(stmt_, i), "binding a parameter");
    return *this;
  }
  Stmt& bind_blob(int i, const std::string& bytes) {
    check(sqlite3_bind_blob(stmt_, i, bytes.data(), static_cast<int>(bytes.size()), SQLITE_TRANSIENT),
          "binding a parameter");
    return *this;
  }
  // A nullable text column: empty string -> NULL.
  Stmt& bind_text_or_null(int i, const std::string& v) { return v.empty() ? bind_null(i) : bind(i, v); }

  // true: a row is available; false: done.
  bool step() {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, rc, "executing statement", sql_);
  }
  // Runs a statement that returns no rows; returns the number of rows changed.
  int run() {
    while (step()) {
    }
    return sqlite3_changes(db_);
  }

  bool is_null(int col) const { return sqlite3_column_type(stmt_, col) == SQLITE_NULL; }
  int64_t int64(int col) const { return sqlite3_column_int64(stmt_, col); }
  std::optional<int64_t> opt_int64(int col) const {
    return is_null(col) ? std::nullopt : std::optional<int64_t>(int64(col));
  }
  std::string text(int col) const {
    const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, col));
    return p != nullptr ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }
  std::string blob(int col) const {
    const auto* p = static_cast<const char*>(sqlite3_column_blob(stmt_, col));
    return p != nullptr ? std::string(p, static_cast<size_t>(sqlite3_column_bytes(stmt_, col))) : std::string();
  }
  const std::string& sql() const { return sql_; }

 private:
  void check(int rc, const char* what) {
    if (rc != SQLITE_OK) fail(db_, rc, what, sql_);
  }
  sqlite3* db_;
  std::string sql_;
  sqlite3_stmt* stmt_ = nullptr;
};

void exec(sqlite3* db, std::string_view sql) { Stmt(db, sql).run(); }

// The schema, version 1. STRICT tables: SQLite enforces the column types.
constexpr const char* kSchema[] = {
    "CREATE TABLE schema_version (version INTEGER NOT NULL) STRICT",
    "CREATE TABLE instances ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " name TEXT NOT NULL,"
    " spec BLOB NOT NULL,"           // serialized apiary.v1.InstanceSpec
    " sf_state TEXT NOT NULL,"       // shakenfist_states.hpp names
    " vm_state TEXT NOT NULL,"       // nova_states.hpp names
    " task_state TEXT,"              // NULL = none
    " node TEXT,"                    // NULL = not placed
    " created_at INTEGER NOT NULL,"  // Unix ms
    " updated_at INTEGER NOT NULL,"
    " deleted_at INTEGER"
    ") STRICT",
    "CREATE INDEX instances_by_node ON instances (node)",
    "CREATE INDEX instances_by_deletion ON instances (sf_state, deleted_at)",
    "CREATE TABLE networks ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " name TEXT NOT NULL,"
    " state TEXT NOT NULL,"
    " cidr TEXT,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " deleted_at INTEGER"
    ") STRICT",
    "CREATE TABLE nodes ("
    " name TEXT PRIMARY KEY NOT NULL,"
    " state TEXT NOT NULL,"
    " last_checkin INTEGER NOT NULL,"
    " vcpus INTEGER NOT NULL,"
    " memory_mib INTEGER NOT NULL,"
    " instances INTEGER NOT NULL"
    ") STRICT",
    "CREATE TABLE network_attachments ("
    " network_id TEXT NOT NULL REFERENCES networks (id) ON DELETE CASCADE,"
    " instance_id TEXT NOT NULL REFERENCES instances (id) ON DELETE CASCADE,"
    " PRIMARY KEY (network_id, instance_id)"
    ") STRICT",
    "CREATE INDEX attachments_by_instance ON network_attachments (instance_id)",
    "CREATE TABLE action_log ("
    " id INTEGER PRIMARY KEY,"
    " instance_id TEXT NOT NULL REFERENCES instances (id) ON DELETE CASCADE,"
    " request_id TEXT NOT NULL,"
    " action TEXT NOT NULL,"
    " start INTEGER NOT NULL,"
    " finish INTEGER,"
    " result TEXT NOT NULL,"
    " events TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(events) AND json_type(events) = 'array')"
    ") STRICT",
    "CREATE INDEX action_log_by_instance ON action_log (instance_id, id)",
};

constexpr const char* kInstanceColumns =
    "id, name, spec, sf_state, vm_state, task_state, node, created_at, updated_at, deleted_at";
constexpr const char* kNetworkColumns = "id, name, state, cidr, created_at, updated_at, deleted_at";
constexpr const char* kNodeColumns = "name, state, last_checkin, vcpus, memory_mib, instances";
constexpr const char* kActionColumns = "id, instance_id, request_id, action, start, finish, result";

[[noreturn]] void corrupt_record(const std::string& what) { throw StoreError(StoreErrc::corrupt_record, what); }

template <typename T>
T decode(std::optional<T> v, const char* table, const std::string& key, const char* column, const std::string& raw) {
  if (!v) corrupt_record(std::string(table) + " " + key + ": unknown " + column + " '" + raw + "'");
  return *v;
}

InstanceRecord read_instance(const Stmt& s) {
  InstanceRecord r;
  r.id = s.text(0);
  r.name = s.text(1);
  const std::string spec = s.blob(2);
  if (!r.spec.ParseFromString(spec)) corrupt_record("instances " + r.id + ": spec does not parse as InstanceSpec");
  const std::string sf = s.text(3), vm = s.text(4), task = s.text(5);
  r.sf_state = decode(sf_instance_state_from_string(sf), "instances", r.id, "sf_state", sf);
  r.vm_state = decode(vm_state_from_string(vm), "instances", r.id, "vm_state", vm);
  r.task_state =
      s.is_null(5) ? TaskState::none : decode(task_state_from_string(task), "instances", r.id, "task_state", task);
  if (!s.is_null(5) && r.task_state == TaskState::none)
    corrupt_record("instances " + r.id + ": task_state 'none' stored");
  r.node = s.text(6);
  r.created_at = s.int64(7);
  r.updated_at = s.int64(8);
  r.deleted_at = s.opt_int64(9);
  return r;
}

NetworkRecord read_network(const Stmt& s) {
  NetworkRecord r;
  r.id = s.text(0);
  r.name = s.text(1);
  const std::string st = s.text(2);
  r.state = decode(network_state_from_string(st), "networks", r.id, "state", st);
  r.cidr = s.text(3);
  r.created_at = s.int64(4);
  r.updated_at = s.int64(5);
  r.deleted_at = s.opt_int64(6);
  return r;
}

NodeRecord read_node(const Stmt& s) {
  NodeRecord r;
  r.name = s.text(0);
  const std::string st = s.text(1);
  r.state = decode(node_state_from_string(st), "nodes", r.name, "state", st);
  r.last_checkin = s.int64(2);
  r.vcpus = static_cast<uint32_t>(s.int64(3));
  r.memory_mib = static_cast<uint64_t>(s.int64(4));
  r.instances = static_cast<uint32_t>(s.int64(5));
  return r;
}

ActionLogEntry read_action(const Stmt& s) {
  ActionLogEntry e;
  e.id = s.int64(0);
  e.instance_id = s.text(1);
  e.request_id = s.text(2);
  const std::string key = "action " + std::to_string(e.id);
  const std::string action = s.text(3), result = s.text(6);
  e.action = decode(action_from_string(action), "action_log", key, "action", action);
  e.start = s.int64(4);
  e.finish = s.opt_int64(5);
  e.result = decode(action_result_from_string(result), "action_log", key, "result", result);
  return e;
}

std::vector<ActionEvent> read_events(sqlite3* db, int64_t action_id) {
  Stmt s(db,
         "SELECT json_extract(e.value, '$.name'), json_extract(e.value, '$.start'),"
         " json_extract(e.value, '$.finish'), json_extract(e.value, '$.result'),"
         " json_extract(e.value, '$.detail')"
         " FROM action_log AS a, json_each(a.events) AS e WHERE a.id = ?1 ORDER BY e.key");
  s.bind(1, action_id);
  std::vector<ActionEvent> out;
  while (s.step()) {
    ActionEvent ev;
    ev.name = s.text(0);
    ev.start = s.int64(1);
    ev.finish = s.opt_int64(2);
    ev.result = s.text(3);
    ev.detail = s.text(4);
    out.push_back(std::move(ev));
  }
  return out;
}

UnixMillis system_now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string spec_bytes(const InstanceRecord& r) {
  std::string out;
  if (!r.spec.SerializeToString(&out))
    throw StoreError(StoreErrc::invalid_record, "instance " + r.id + ": spec does not serialize");
  return out;
}

void require_key(const std::string& key, const char* what) {
  if (key.empty()) throw StoreError(StoreErrc::invalid_record, std::string(what) + " with an empty key");
}

}  // namespace

// --- errors -----------------------------------------------------------------

const char* to_string(StoreErrc e) noexcept {
  switch (e) {
    case StoreErrc::open_failed: return "open_failed";
    case StoreErrc::not_a_database: return "not_a_database";
    case StoreErrc::corrupt: return "corrupt";
    case StoreErrc::schema_mismatch: return "schema_mismatch";
    case StoreErrc::sql_failed: return "sql_failed";
    case StoreErrc::busy: return "busy";
    case StoreErrc::not_found: return "not_found";
    case StoreErrc::invalid_record: return "invalid_record";
    case StoreErrc::transition_refused: return "transition_refused";
    case StoreErrc::action_refused: return "action_refused";
    case StoreErrc::corrupt_record: return "corrupt_record";
    case StoreErrc::commit_failed: return "commit_failed";
    case StoreErrc::read_only: return "read_only";
  }
  return "unknown";
}

namespace {
std::string render(StoreErrc code, const std::string& detail, const std::string& sql, const std::string& msg) {
  std::string out = std::string(to_string(code)) + ": " + detail;
  if (!msg.empty()) out += ": " + msg;
  if (!sql.empty()) out += " [SQL: " + sql + "]";
  return out;
}
}  // namespace

StoreError::StoreError(StoreErrc code, std::string detail, std::string sql, std::string sqlite_message, int sqlite_code)
    : std::runtime_error(render(code, detail, sql, sqlite_message)),
      code_(code),
      detail_(std::move(detail)),
      sql_(std::move(sql)),
      sqlite_message_(std::move(sqlite_message)),
      sqlite_code_(sqlite_code) {}

StoreError::StoreError(Refusal refusal)
    : std::runtime_error(std::string(to_string(StoreErrc::action_refused)) + ": " + refusal.message),
      code_(StoreErrc::action_refused),
      detail_(refusal.message),
      refusal_(std::move(refusal)) {}

const char* to_string(ActionResult r) noexcept {
  switch (r) {
    case ActionResult::running: return "running";
    case ActionResult::success: return "success";
    case ActionResult::error: return "error";
    case ActionResult::reverted: return "reverted";
    case ActionResult::superseded: return "superseded";
  }
  return "unknown";
}

std::optional<ActionResult> action_result_from_string(std::string_view s) noexcept {
  for (auto r : {ActionResult::running, ActionResult::success, ActionResult::error, ActionResult::reverted,
                 ActionResult::superseded})
    if (s == to_string(r)) return r;
  return std::nullopt;
}

// --- the store --------------------------------------------------------------

struct StateStore::Db {
  DbHandle handle;
  int depth = 0;  // open transaction levels (0 = none)
  // Keys changed by the open transaction (StoreOptions::on_commit); a
  // savepoint rolled back drops what it added.
  std::vector<StoreChanges::Step> pending;  // field "" = only the key changed
  // StateStore::node_usage: the per-node sums, valid for data_version (other
  // connections' commits change it); the shares the open transaction moved,
  // undone if their savepoint rolls back; and the depth the sums were read
  // at (a rollback of a level that encloses the read cannot be undone share
  // by share: the sums are read again).
  struct UsageUndo {
    std::string node;
    NodeUsage share;
    bool added;
  };
  std::unordered_map<std::string, NodeUsage> usage;
  bool usage_valid = false;
  int usage_read_depth = 0;  // the transaction depth the sums were read at (0: outside any)
  int64_t data_version = -1;
  std::vector<UsageUndo> usage_undo;
  // Group commit: a batch transaction is open (it is depth level 0; the
  // writers' transactions are savepoints in it); `broken` once a batch could
  // not commit, or SQLite rolled it back under a savepoint (then every write
  // is refused: what the writer believes it wrote is not in the file).
  bool group_commit = false;  // StoreOptions::on_batch_open, once open() is done
  bool batch = false;
  bool read_only = false;  // open_reader()
  std::string broken;
  sqlite3* get() const { return handle.get(); }
};

namespace {
int64_t data_version(sqlite3* db) {
  Stmt v(db, "PRAGMA data_version");
  return v.step() ? v.int64(0) : -1;
}

void adjust(std::unordered_map<std::string, NodeUsage>& usage, const std::string& node, const NodeUsage& share,
            bool add) {
  NodeUsage& u = usage[node];
  if (add) {
    u.instances += share.instances;
    u.vcpus += share.vcpus;
    u.memory_mib += share.memory_mib;
  } else {
    u.instances -= std::min(u.instances, share.instances);
    u.vcpus -= std::min(u.vcpus, share.vcpus);
    u.memory_mib -= std::min(u.memory_mib, share.memory_mib);
  }
  if (u == NodeUsage{}) usage.erase(node);
}

// An existing store's schema: Apiary's, at the version this build reads.
void verify_schema(sqlite3* db) {
  Stmt has(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'schema_version'");
  has.step();
  if (has.int64(0) == 0)
    throw StoreError(StoreErrc::schema_mismatch, "not an Apiary state store: it has tables but no schema_version");
  Stmt v(db, "SELECT version FROM schema_version");
  std::vector<int64_t> versions;
  while (v.step()) versions.push_back(v.int64(0));
  if (versions.size() != 1)
    throw StoreError(StoreErrc::schema_mismatch,
                     "schema_version holds " + std::to_string(versions.size()) + " rows, expected 1");
  if (versions[0] != kSchemaVersion)
    throw StoreError(StoreErrc::schema_mismatch, "schema version " + std::to_string(versions[0]) +
                                                     ", this build reads version " +
                                                     std::to_string(kSchemaVersion));
}

}  // namespace

bool holds_resources(SfInstanceState s) noexcept {
  return s == SfInstanceState::initial || s == SfInstanceState::preflight || s == SfInstanceState::creating ||
         s == SfInstanceState::created;
}

StateStore::StateStore(std::string path, Options options)
    : db_(std::make_unique<Db>()), path_(std::move(path)), options_(std::move(options)) {
  if (!options_.clock) options_.clock = system_now;
}

StateStore::StateStore(StateStore&&) noexcept = default;
StateStore& StateStore::operator=(StateStore&&) noexcept = default;
StateStore::~StateStore() = default;

UnixMillis StateStore::now() const { return options_.clock(); }

StateStore StateStore::connect(const std::string& path, Options options, int flags, const char* what) {
  StateStore store(path, std::move(options));
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags | SQLITE_OPEN_NOMUTEX,
                                 store.options_.vfs.empty() ? nullptr : store.options_.vfs.c_str());
  store.db_->handle.reset(raw);  // closed on every path, even a failed open
  if (raw != nullptr) StatementCache::open(raw);
  if (rc != SQLITE_OK)
    throw StoreError(StoreErrc::open_failed, what + path, {}, raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc), rc);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, store.options_.busy_timeout_ms);
  return store;
}

StateStore StateStore::open(const std::string& path, Options options) {
  StateStore store = connect(path, std::move(options), SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "opening store ");
  sqlite3* db = store.db_->get();
  try {
    {
      // The first statement that reads the file: a non-database fails here.
      Stmt s(db, "PRAGMA journal_mode=WAL");
      const std::string mode = s.step() ? s.text(0) : std::string();
      const bool memory = path == ":memory:";
      if (mode != "wal" && !(memory && mode == "memory"))
        throw StoreError(StoreErrc::open_failed, "journal_mode=WAL refused (got '" + mode + "')", s.sql());
    }
    exec(db, "PRAGMA synchronous=FULL");
    {
      Stmt s(db, "PRAGMA synchronous");
      if (!s.step() || s.int64(0) != 2)
        throw StoreError(StoreErrc::open_failed, "synchronous=FULL did not take", s.sql());
    }
    exec(db, "PRAGMA foreign_keys=ON");
    // SQLite's temporary files (savepoint journals past 64 KiB) stay files
    // (temp_store default): kept in memory (PRAGMA temp_store=MEMORY) they
    // made the 10,000 x 100 simulation's sweep of its crashed nodes, one
    // savepoint with 100,000 instance updates, spend its time in
    // sqlite3PagerSavepoint: the run was still going after 18 minutes,
    // about 6 without it (docs/control-plane.md, "Group commit").
    store.with_transaction([&] {
      Stmt tables(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'");
      tables.step();
      if (tables.int64(0) == 0) {
        for (const char* ddl : kSchema) exec(db, ddl);
        Stmt(db, "INSERT INTO schema_version (version) VALUES (?1)").bind(1, int64_t{kSchemaVersion}).run();
        return;
      }
      verify_schema(db);
    });
    // Indexes added within schema version 1 (harmless on a store that has them).
    exec(db, "CREATE INDEX IF NOT EXISTS action_log_by_request ON action_log (request_id)");
    exec(db, "CREATE INDEX IF NOT EXISTS action_log_running ON action_log (id) WHERE finish IS NULL");
  } catch (const StoreError& e) {
    throw StoreError(e.code(), "opening store " + path + ": " + e.detail(), e.sql(), e.sqlite_message(),
                     e.sqlite_code());
  }
  store.db_->group_commit = static_cast<bool>(store.options_.on_batch_open);  // opening is not batched
  return store;
}

StateStore StateStore::open_reader(const std::string& path, Options options) {
  StateStore store = connect(path, std::move(options), SQLITE_OPEN_READONLY, "opening store to read ");
  store.db_->read_only = true;
  sqlite3* db = store.db_->get();
  try {
    {
      // A reader sees only committed transactions in WAL mode; in a rollback
      // journal it would block the writer instead.
      Stmt s(db, "PRAGMA journal_mode");
      const std::string mode = s.step() ? s.text(0) : std::string();
      if (mode != "wal")
        throw StoreError(StoreErrc::open_failed, "a reader needs a store in WAL mode (got '" + mode + "')", s.sql());
    }
    store.read_snapshot([&] { verify_schema(db); });
  } catch (const StoreError& e) {
    throw StoreError(e.code(), "opening store to read " + path + ": " + e.detail(), e.sql(), e.sqlite_message(),
                     e.sqlite_code());
  }
  return store;
}

bool StateStore::read_only() const noexcept { return db_->read_only; }

void StateStore::read_snapshot(const std::function<void()>& fn) {
  sqlite3* db = db_->get();
  if (sqlite3_get_autocommit(db) == 0) return fn();
  exec(db, "BEGIN");
  try {
    fn();
    exec(db, "COMMIT");  // ends the read: a reader holding its snapshot would pin the WAL
  } catch (...) {
    // Never left inside the read (also when COMMIT fails): every later read
    // would see this snapshot.
    sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    throw;
  }
}

void StateStore::with_transaction(const std::function<void()>& fn) {
  sqlite3* db = db_->get();
  if (db_->read_only)
    throw StoreError(StoreErrc::read_only, "a write through a reader of " + path_ + " (it opened read-only)");
  if (db_->batch && db_->broken.empty() && sqlite3_get_autocommit(db) != 0)
    db_->broken = "SQLite rolled back the open batch";  // e.g. an I/O error in a read between two writes
  if (!db_->broken.empty()) throw StoreError(StoreErrc::commit_failed, "the store refuses writes: " + db_->broken);
  // The outermost transaction (or the batch): another connection's commit
  // since the last one makes the node usage stale.
  auto begin_outermost = [&] {
    exec(db, "BEGIN IMMEDIATE");
    try {
      if (db_->usage_valid && data_version(db) != db_->data_version) db_->usage_valid = false;
    } catch (...) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  };
  if (db_->depth == 0 && db_->group_commit) {
    begin_outermost();
    db_->depth = 1;
    db_->batch = true;
    try {
      options_.on_batch_open();
    } catch (...) {  // nobody will commit this batch: it must not stay open
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
      db_->depth = 0;
      db_->batch = false;
      throw;
    }
  }
  const int level = db_->depth;
  const std::string savepoint = "apiary_sp" + std::to_string(level);
  if (level == 0)
    begin_outermost();
  else
    exec(db, "SAVEPOINT " + savepoint);
  ++db_->depth;
  const size_t pending_before = db_->pending.size();
  const size_t undo_before = db_->usage_undo.size();
  auto rollback = [&]() noexcept {
    --db_->depth;
    db_->pending.resize(level == 0 ? 0 : pending_before);
    if (db_->usage_read_depth > level) {
      db_->usage_valid = false;  // read inside what is rolled back: it may hold rows that are gone
      db_->usage_read_depth = 0;
    } else {
      for (size_t i = db_->usage_undo.size(); i > undo_before; --i) {
        const auto& u = db_->usage_undo[i - 1];
        adjust(db_->usage, u.node, u.share, !u.added);
      }
    }
    if (db_->usage_undo.size() > undo_before) db_->usage_undo.resize(undo_before);
    // Some failures (e.g. SQLITE_FULL) already rolled the whole transaction
    // back; then there is nothing left to undo, and in a batch the writes of
    // its earlier transactions are gone too.
    if (sqlite3_get_autocommit(db) != 0) {
      if (db_->batch) db_->broken = "SQLite rolled back the open batch";
      return;
    }
    if (level == 0) {
      sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    } else {
      const std::string sql = "ROLLBACK TO " + savepoint + "; RELEASE " + savepoint;
      sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
    }
  };
  try {
    fn();
  } catch (...) {
    rollback();
    throw;
  }
  try {
    exec(db, level == 0 ? std::string("COMMIT") : "RELEASE " + savepoint);
  } catch (...) {
    rollback();
    throw;
  }
  --db_->depth;
  // What was read inside this level now belongs to the enclosing one.
  if (db_->usage_read_depth > level) db_->usage_read_depth = level;
  if (level == 0) {
    db_->usage_undo.clear();
    emit_pending();
  }
}

// Hands on_commit what the committed transaction (or batch) changed.
void StateStore::emit_pending() {
  if (db_->pending.empty()) return;
  StoreChanges changes;
  for (auto& step : db_->pending) {
    (step.kind == 'i' ? changes.instances : step.kind == 'n' ? changes.networks : changes.nodes).push_back(step.key);
    if (!step.field.empty()) changes.steps.push_back(std::move(step));
  }
  db_->pending.clear();
  for (auto* v : {&changes.instances, &changes.networks, &changes.nodes}) {
    std::sort(v->begin(), v->end());
    v->erase(std::unique(v->begin(), v->end()), v->end());
  }
  if (options_.on_commit) {
    try {
      options_.on_commit(changes);
    } catch (...) {  // committed already; a listener's failure changes nothing
    }
  }
}

void StateStore::changed(char kind, const std::string& key, const char* field, std::string state) {
  if (db_->depth > 0) db_->pending.push_back({kind, key, field ? field : "", std::move(state)});
}

// The other side of every attachment of `key` ('i': an instance's networks,
// 'n': a network's instances), for changes that show on both (a placement
// moves a network's ports; a delete cascades to the attachments).
void StateStore::changed_attached(char kind, const std::string& key) {
  Stmt s(db_->get(), kind == 'i' ? "SELECT network_id FROM network_attachments WHERE instance_id = ?1"
                                 : "SELECT instance_id FROM network_attachments WHERE network_id = ?1");
  s.bind(1, key);
  while (s.step()) changed(kind == 'i' ? 'n' : 'i', s.text(0));
}

bool StateStore::batch_open() const noexcept { return db_->batch; }

void StateStore::commit_batch() {
  if (!db_->batch) return;
  sqlite3* db = db_->get();
  auto lost = [&](const std::string& why) {
    if (sqlite3_get_autocommit(db) == 0) sqlite3_exec(db, "ROLLBACK", nullptr, nullptr, nullptr);
    db_->batch = false;
    db_->depth = 0;
    db_->pending.clear();
    db_->usage_undo.clear();
    db_->usage_valid = false;
    db_->usage_read_depth = 0;
    db_->broken = why;
    throw StoreError(StoreErrc::commit_failed, "committing a batch of transactions: " + why);
  };
  if (db_->broken.empty() && sqlite3_get_autocommit(db) != 0) db_->broken = "SQLite rolled back the open batch";
  if (!db_->broken.empty()) lost(db_->broken);
  const int rc = sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) lost(std::string(sqlite3_errmsg(db)) + " (SQLite " + std::to_string(sqlite3_extended_errcode(db)) + ")");
  db_->batch = false;
  db_->depth = 0;
  db_->usage_undo.clear();
  db_->usage_read_depth = 0;
  emit_pending();
}

// --- instances --------------------------------------------------------------

NodeUsage StateStore::node_usage(const std::string& node) {
  sqlite3* db = db_->get();
  if (db_->usage_valid && db_->depth == 0 && data_version(db) != db_->data_version) db_->usage_valid = false;
  if (!db_->usage_valid) {
    db_->usage.clear();
    db_->usage_undo.clear();
    // The version first: a commit of another connection between it and the
    // rows makes the next check read them again, never the reverse.
    const int64_t version = data_version(db);
    Stmt s(db, std::string("SELECT ") + kInstanceColumns + " FROM instances WHERE node IS NOT NULL");
    while (s.step()) {
      const InstanceRecord r = read_instance(s);
      if (!r.node.empty() && holds_resources(r.sf_state))
        adjust(db_->usage, r.node, {1, r.spec.board().vcpus(), r.spec.board().memory_mib()}, true);
    }
    db_->data_version = version;
    db_->usage_valid = true;
    db_->usage_read_depth = db_->depth;
  }
  auto it = db_->usage.find(node);
  return it == db_->usage.end() ? NodeUsage{} : it->second;
}

void StateStore::account(const InstanceRecord* before, const InstanceRecord* after) {
  if (!db_->usage_valid) return;  // read afresh when next asked
  for (const auto& [r, add] : {std::pair{before, false}, std::pair{after, true}}) {
    if (r == nullptr || r->node.empty() || !holds_resources(r->sf_state)) continue;
    const NodeUsage share{1, r->spec.board().vcpus(), r->spec.board().memory_mib()};
    adjust(db_->usage, r->node, share, add);
    if (db_->depth > 0) db_->usage_undo.push_back({r->node, share, add});
  }
}

std::optional<InstanceRecord> StateStore::get_instance(const std::string& id) {
  Stmt s(db_->get(), std::string("SELECT ") + kInstanceColumns + " FROM instances WHERE id = ?1");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_instance(s);
}

std::vector<InstanceRecord> StateStore::list_instances() {
  Stmt s(db_->get(), std::string("SELECT ") + kInstanceColumns + " FROM instances ORDER BY id");
  std::vector<InstanceRecord> out;
  while (s.step()) out.push_back(read_instance(s));
  return out;
}

std::vector<InstanceRecord> StateStore::list_instances_on_node(const std::string& node) {
  Stmt s(db_->get(), std::string("SELECT ") + kInstanceColumns + " FROM instances WHERE node = ?1 ORDER BY id");
  s.bind(1, node);
  std::vector<InstanceRecord> out;
  while (s.step()) out.push_back(read_instance(s));
  return out;
}

void StateStore::put_instance(const InstanceRecord& r) {
  require_key(r.id, "instance");
  const std::string spec = spec_bytes(r);
  with_transaction([&] {
    const UnixMillis t = now();
    auto cur = get_instance(r.id);
    if (!cur) {
      if (r.sf_state != kSfInstanceEntry || r.vm_state != VmState::building || r.task_state != TaskState::none)
        throw StoreError(StoreErrc::invalid_record,
                         "new instance " + r.id +
                             " must start in sf_state initial, vm_state building, task_state "
                             "none (got " +
                             to_string(r.sf_state) + ", " + to_string(r.vm_state) + ", " + to_string(r.task_state) +
                             ")");
      insert_instance(r, spec, t);
      return;
    }
    if (r.sf_state != cur->sf_state && !transition_allowed(cur->sf_state, r.sf_state))
      throw StoreError(StoreErrc::transition_refused, "instance " + r.id + ": " + to_string(cur->sf_state) + " -> " +
                                                          to_string(r.sf_state) +
                                                          " is not a transition of the instance machine");
    if (r.vm_state != cur->vm_state || r.task_state != cur->task_state)
      throw StoreError(StoreErrc::invalid_record, "instance " + r.id +
                                                      ": vm_state and task_state change only through "
                                                      "begin_action / finish_action");
    std::optional<UnixMillis> deleted_at = cur->deleted_at;
    if (r.sf_state == SfInstanceState::deleted && cur->sf_state != SfInstanceState::deleted) deleted_at = t;
    Stmt s(db_->get(),
           "UPDATE instances SET name = ?2, spec = ?3, sf_state = ?4, node = ?5, updated_at = ?6, deleted_at = ?7"
           " WHERE id = ?1");
    s.bind(1, r.id).bind(2, r.name).bind_blob(3, spec).bind(4, to_string(r.sf_state)).bind_text_or_null(5, r.node);
    s.bind(6, t).bind(7, deleted_at);
    s.run();
    account(&*cur, &r);
    changed('i', r.id, "record_state", to_string(r.sf_state));
    if (r.node != cur->node) changed_attached('i', r.id);
  });
}

void StateStore::import_running_instance(const InstanceRecord& r, const std::string& request_id) {
  require_key(r.id, "instance");
  if (r.sf_state != SfInstanceState::created || r.vm_state != VmState::active || r.task_state != TaskState::none ||
      r.node.empty())
    throw StoreError(StoreErrc::invalid_record,
                     "imported instance " + r.id + " must be sf_state created, vm_state active, task_state none, on a node (got " +
                         to_string(r.sf_state) + ", " + to_string(r.vm_state) + ", " + to_string(r.task_state) +
                         (r.node.empty() ? ", no node)" : ", node " + r.node + ")"));
  const std::string spec = spec_bytes(r);
  with_transaction([&] {
    if (Stmt(db_->get(), "SELECT 1 FROM instances WHERE id = ?1").bind(1, r.id).step())
      throw StoreError(StoreErrc::invalid_record, "imported instance " + r.id + " has a record already");
    const UnixMillis t = now();
    insert_instance(r, spec, t);
    Stmt a(db_->get(),
           "INSERT INTO action_log (instance_id, request_id, action, start, finish, result, events)"
           " VALUES (?1, ?2, ?3, ?4, ?4, ?5, '[]')");
    a.bind(1, r.id).bind(2, request_id).bind(3, to_string(Action::create)).bind(4, t);
    a.bind(5, to_string(ActionResult::success));
    a.run();
  });
}

void StateStore::insert_instance(const InstanceRecord& r, const std::string& spec, UnixMillis t) {
  Stmt s(db_->get(),
         "INSERT INTO instances (id, name, spec, sf_state, vm_state, task_state, node, created_at, updated_at,"
         " deleted_at) VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6, ?7, ?7, NULL)");
  s.bind(1, r.id).bind(2, r.name).bind_blob(3, spec).bind(4, to_string(r.sf_state)).bind(5, to_string(r.vm_state));
  s.bind_text_or_null(6, r.node).bind(7, t);
  s.run();
  account(nullptr, &r);
  changed('i', r.id, "record_state", to_string(r.sf_state));
  changed('i', r.id, "vm_state", to_string(r.vm_state));
}

bool StateStore::delete_instance(const std::string& id) {
  bool deleted = false;
  with_transaction([&] {
    changed_attached('i', id);
    const auto cur = db_->usage_valid ? get_instance(id) : std::nullopt;
    deleted = Stmt(db_->get(), "DELETE FROM instances WHERE id = ?1").bind(1, id).run() > 0;
    if (cur) account(&*cur, nullptr);
    if (deleted) changed('i', id, "gone");
  });
  return deleted;
}

SfInstanceState StateStore::record_transition(const std::string& instance_id, SfInstanceState to) {
  SfInstanceState from{};
  with_transaction([&] {
    auto cur = get_instance(instance_id);
    if (!cur) throw StoreError(StoreErrc::not_found, "instance " + instance_id);
    from = cur->sf_state;
    if (!transition_allowed(from, to))
      throw StoreError(StoreErrc::transition_refused, "instance " + instance_id + ": " + to_string(from) + " -> " +
                                                          to_string(to) +
                                                          " is not a transition of the instance machine");
    const UnixMillis t = now();
    Stmt s(db_->get(),
           "UPDATE instances SET sf_state = ?2, updated_at = ?3,"
           " deleted_at = CASE WHEN ?2 = 'deleted' THEN ?3 ELSE deleted_at END WHERE id = ?1");
    s.bind(1, instance_id).bind(2, to_string(to)).bind(3, t);
    s.run();
    InstanceRecord after = *cur;
    after.sf_state = to;
    account(&*cur, &after);
    changed('i', instance_id, "record_state", to_string(to));
  });
  return from;
}

// --- actions ----------------------------------------------------------------

int64_t StateStore::begin_action(const std::string& instance_id, Action action, const std::string& request_id,
                                 const CapabilitySet& caps) {
  int64_t id = 0;
  with_transaction([&] {
    auto cur = get_instance(instance_id);
    if (!cur) throw StoreError(StoreErrc::not_found, "instance " + instance_id);
    if (auto refusal = check(action, cur->vm_state, cur->task_state, instance_id, caps))
      throw StoreError(std::move(*refusal));
    const UnixMillis t = now();
    sqlite3* db = db_->get();
    if (cur->task_state != TaskState::none) {
      // A delete or hard reboot takes over: whatever was in flight is over.
      Stmt s(db, "UPDATE action_log SET finish = ?2, result = ?3 WHERE instance_id = ?1 AND finish IS NULL");
      s.bind(1, instance_id).bind(2, t).bind(3, to_string(ActionResult::superseded));
      s.run();
    }
    Stmt u(db, "UPDATE instances SET task_state = ?2, updated_at = ?3 WHERE id = ?1");
    u.bind(1, instance_id).bind(2, to_string(rule(action).task)).bind(3, t);
    u.run();
    Stmt i(db,
           "INSERT INTO action_log (instance_id, request_id, action, start, finish, result, events)"
           " VALUES (?1, ?2, ?3, ?4, NULL, ?5, '[]')");
    i.bind(1, instance_id).bind(2, request_id).bind(3, to_string(action)).bind(4, t);
    i.bind(5, to_string(ActionResult::running));
    i.run();
    id = sqlite3_last_insert_rowid(db);
    changed('i', instance_id);
  });
  return id;
}

bool StateStore::finish_action(int64_t action_id, ActionResult result, std::optional<VmState> result_state) {
  if (result == ActionResult::running || result == ActionResult::superseded)
    throw StoreError(StoreErrc::invalid_record, std::string("an action cannot be finished as ") + to_string(result));
  bool applied = false;
  with_transaction([&] {
    auto entry = get_action_head(action_id);
    if (!entry) throw StoreError(StoreErrc::not_found, "action " + std::to_string(action_id));
    if (entry->finish) return;  // superseded (or finished twice): nothing to do
    auto inst = get_instance(entry->instance_id);
    if (!inst) throw StoreError(StoreErrc::not_found, "instance " + entry->instance_id);
    const std::string what =
        "action " + std::to_string(action_id) + " (" + to_string(entry->action) + ") on instance " + entry->instance_id;
    VmState next = inst->vm_state;
    switch (result) {
      case ActionResult::success: {
        const VmStateSet possible = success_states(entry->action, inst->vm_state);
        if (result_state) {
          if (!possible.contains(*result_state))
            throw StoreError(
                StoreErrc::invalid_record,
                what + ": " + to_string(*result_state) + " is not a success state from " + to_string(inst->vm_state));
          next = *result_state;
        } else if (possible.size() == 1) {
          for (VmState v : kAllVmStates)
            if (possible.contains(v)) next = v;
        } else {
          throw StoreError(StoreErrc::invalid_record, what + ": two success states are possible; name the result");
        }
        break;
      }
      case ActionResult::error:
        if (result_state && *result_state != VmState::error)
          throw StoreError(StoreErrc::invalid_record, what + ": a failed action ends in error");
        next = VmState::error;
        break;
      case ActionResult::reverted:
        if (result_state && *result_state != inst->vm_state)
          throw StoreError(StoreErrc::invalid_record, what + ": a reverted action leaves vm_state unchanged");
        break;
      default: break;
    }
    const UnixMillis t = now();
    Stmt u(db_->get(), "UPDATE instances SET vm_state = ?2, task_state = NULL, updated_at = ?3 WHERE id = ?1");
    u.bind(1, entry->instance_id).bind(2, to_string(next)).bind(3, t);
    u.run();
    Stmt l(db_->get(), "UPDATE action_log SET finish = ?2, result = ?3 WHERE id = ?1");
    l.bind(1, action_id).bind(2, t).bind(3, to_string(result));
    l.run();
    applied = true;
    changed('i', entry->instance_id, "vm_state", to_string(next));
  });
  return applied;
}

void StateStore::append_action_event(int64_t action_id, const ActionEvent& event) {
  with_transaction([&] {
    Stmt s(db_->get(),
           "UPDATE action_log SET events = json_insert(events, '$[#]',"
           " json_object('name', ?2, 'start', ?3, 'finish', ?4, 'result', ?5, 'detail', ?6)) WHERE id = ?1"
           " RETURNING instance_id");
    s.bind(1, action_id).bind(2, event.name).bind(3, event.start).bind(4, event.finish).bind(5, event.result);
    s.bind(6, event.detail);
    if (!s.step()) throw StoreError(StoreErrc::not_found, "action " + std::to_string(action_id));
    changed('i', s.text(0));  // SQLite applies the whole update at the first step
  });
}

int64_t StateStore::force_stopped(const std::string& instance_id, const std::string& request_id,
                                  const ActionEvent& event) {
  int64_t id = 0;
  with_transaction([&] {
    auto cur = get_instance(instance_id);
    if (!cur) throw StoreError(StoreErrc::not_found, "instance " + instance_id);
    if (cur->task_state != TaskState::none) return;
    const UnixMillis t = now();
    sqlite3* db = db_->get();
    Stmt i(db,
           "INSERT INTO action_log (instance_id, request_id, action, start, finish, result, events)"
           " VALUES (?1, ?2, ?3, ?4, ?4, ?5, '[]')");
    i.bind(1, instance_id).bind(2, request_id).bind(3, to_string(Action::stop)).bind(4, t);
    i.bind(5, to_string(ActionResult::success));
    i.run();
    id = sqlite3_last_insert_rowid(db);
    append_action_event(id, event);
    Stmt u(db, "UPDATE instances SET vm_state = ?2, updated_at = ?3 WHERE id = ?1");
    u.bind(1, instance_id).bind(2, to_string(VmState::stopped)).bind(3, t);
    u.run();
    changed('i', instance_id, "vm_state", to_string(VmState::stopped));
  });
  return id;
}

std::optional<ActionLogEntry> StateStore::get_action(int64_t action_id) {
  std::optional<ActionLogEntry> e;
  read_snapshot([&] {  // the row and its events from one snapshot
    e = get_action_head(action_id);
    if (e) e->events = read_events(db_->get(), e->id);
  });
  return e;
}

std::optional<ActionLogEntry> StateStore::get_action_head(int64_t action_id) {
  Stmt s(db_->get(), std::string("SELECT ") + kActionColumns + " FROM action_log WHERE id = ?1");
  s.bind(1, action_id);
  if (!s.step()) return std::nullopt;
  return read_action(s);
}

std::vector<ActionLogEntry> StateStore::list_actions(const std::string& instance_id) {
  Stmt s(db_->get(), std::string("SELECT ") + kActionColumns + " FROM action_log WHERE instance_id = ?1 ORDER BY id");
  s.bind(1, instance_id);
  std::vector<ActionLogEntry> out;
  while (s.step()) out.push_back(read_action(s));
  for (auto& e : out) e.events = read_events(db_->get(), e.id);
  return out;
}

std::optional<ActionLogEntry> StateStore::find_action(const std::string& request_id) {
  Stmt s(db_->get(),
         std::string("SELECT ") + kActionColumns + " FROM action_log WHERE request_id = ?1 ORDER BY id LIMIT 1");
  s.bind(1, request_id);
  if (!s.step()) return std::nullopt;
  return read_action(s);
}

std::vector<ActionLogEntry> StateStore::list_running_actions() {
  Stmt s(db_->get(), std::string("SELECT ") + kActionColumns + " FROM action_log WHERE finish IS NULL ORDER BY id");
  std::vector<ActionLogEntry> out;
  while (s.step()) out.push_back(read_action(s));
  for (auto& e : out) e.events = read_events(db_->get(), e.id);
  return out;
}

// --- networks ---------------------------------------------------------------

std::optional<NetworkRecord> StateStore::get_network(const std::string& id) {
  Stmt s(db_->get(), std::string("SELECT ") + kNetworkColumns + " FROM networks WHERE id = ?1");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_network(s);
}

std::vector<NetworkRecord> StateStore::list_networks() {
  Stmt s(db_->get(), std::string("SELECT ") + kNetworkColumns + " FROM networks ORDER BY id");
  std::vector<NetworkRecord> out;
  while (s.step()) out.push_back(read_network(s));
  return out;
}

void StateStore::put_network(const NetworkRecord& r) {
  require_key(r.id, "network");
  with_transaction([&] {
    const UnixMillis t = now();
    auto cur = get_network(r.id);
    if (!cur) {
      if (r.state != kNetworkEntry)
        throw StoreError(StoreErrc::invalid_record,
                         "new network " + r.id + " must start in state initial (got " + to_string(r.state) + ")");
      Stmt s(db_->get(),
             "INSERT INTO networks (id, name, state, cidr, created_at, updated_at, deleted_at)"
             " VALUES (?1, ?2, ?3, ?4, ?5, ?5, NULL)");
      s.bind(1, r.id).bind(2, r.name).bind(3, to_string(r.state)).bind_text_or_null(4, r.cidr).bind(5, t);
      s.run();
      changed('n', r.id, "state", to_string(r.state));
      return;
    }
    if (r.state != cur->state && !transition_allowed(cur->state, r.state))
      throw StoreError(StoreErrc::transition_refused, "network " + r.id + ": " + to_string(cur->state) + " -> " +
                                                          to_string(r.state) +
                                                          " is not a transition of the network machine");
    std::optional<UnixMillis> deleted_at = cur->deleted_at;
    if (r.state == NetworkState::deleted && cur->state != NetworkState::deleted) deleted_at = t;
    Stmt s(db_->get(),
           "UPDATE networks SET name = ?2, state = ?3, cidr = ?4, updated_at = ?5, deleted_at = ?6 WHERE id = ?1");
    s.bind(1, r.id).bind(2, r.name).bind(3, to_string(r.state)).bind_text_or_null(4, r.cidr).bind(5, t);
    s.bind(6, deleted_at);
    s.run();
    changed('n', r.id, "state", to_string(r.state));
  });
}

bool StateStore::delete_network(const std::string& id) {
  bool deleted = false;
  with_transaction([&] {
    changed_attached('n', id);
    deleted = Stmt(db_->get(), "DELETE FROM networks WHERE id = ?1").bind(1, id).run() > 0;
    if (deleted) changed('n', id, "gone");
  });
  return deleted;
}

NetworkState StateStore::record_transition(const std::string& network_id, NetworkState to) {
  NetworkState from{};
  with_transaction([&] {
    auto cur = get_network(network_id);
    if (!cur) throw StoreError(StoreErrc::not_found, "network " + network_id);
    from = cur->state;
    if (!transition_allowed(from, to))
      throw StoreError(StoreErrc::transition_refused, "network " + network_id + ": " + to_string(from) + " -> " +
                                                          to_string(to) +
                                                          " is not a transition of the network machine");
    Stmt s(db_->get(),
           "UPDATE networks SET state = ?2, updated_at = ?3,"
           " deleted_at = CASE WHEN ?2 = 'deleted' THEN ?3 ELSE deleted_at END WHERE id = ?1");
    s.bind(1, network_id).bind(2, to_string(to)).bind(3, now());
    s.run();
    changed('n', network_id, "state", to_string(to));
  });
  return from;
}

// --- attachments ------------------------------------------------------------

void StateStore::attach(const std::string& network_id, const std::string& instance_id) {
  with_transaction([&] {
    if (!get_network(network_id)) throw StoreError(StoreErrc::not_found, "network " + network_id);
    if (!get_instance(instance_id)) throw StoreError(StoreErrc::not_found, "instance " + instance_id);
    Stmt s(db_->get(), "INSERT OR IGNORE INTO network_attachments (network_id, instance_id) VALUES (?1, ?2)");
    s.bind(1, network_id).bind(2, instance_id);
    s.run();
    changed('n', network_id);
    changed('i', instance_id);
  });
}

bool StateStore::detach(const std::string& network_id, const std::string& instance_id) {
  bool removed = false;
  with_transaction([&] {
    Stmt s(db_->get(), "DELETE FROM network_attachments WHERE network_id = ?1 AND instance_id = ?2");
    removed = s.bind(1, network_id).bind(2, instance_id).run() > 0;
    if (removed) {
      changed('n', network_id);
      changed('i', instance_id);
    }
  });
  return removed;
}

std::vector<NetworkAttachment> StateStore::attachments_of_network(const std::string& network_id) {
  Stmt s(db_->get(),
         "SELECT network_id, instance_id FROM network_attachments WHERE network_id = ?1 ORDER BY instance_id");
  s.bind(1, network_id);
  std::vector<NetworkAttachment> out;
  while (s.step()) out.push_back({s.text(0), s.text(1)});
  return out;
}

std::vector<NetworkAttachment> StateStore::attachments_of_instance(const std::string& instance_id) {
  Stmt s(db_->get(),
         "SELECT network_id, instance_id FROM network_attachments WHERE instance_id = ?1 ORDER BY network_id");
  s.bind(1, instance_id);
  std::vector<NetworkAttachment> out;
  while (s.step()) out.push_back({s.text(0), s.text(1)});
  return out;
}

// --- nodes ------------------------------------------------------------------

std::optional<NodeRecord> StateStore::get_node(const std::string& name) {
  Stmt s(db_->get(), std::string("SELECT ") + kNodeColumns + " FROM nodes WHERE name = ?1");
  s.bind(1, name);
  if (!s.step()) return std::nullopt;
  return read_node(s);
}

std::vector<NodeRecord> StateStore::list_nodes() {
  Stmt s(db_->get(), std::string("SELECT ") + kNodeColumns + " FROM nodes ORDER BY name");
  std::vector<NodeRecord> out;
  while (s.step()) out.push_back(read_node(s));
  return out;
}

namespace {
void write_node(sqlite3* db, const NodeRecord& r, bool insert) {
  Stmt s(db, insert ? "INSERT INTO nodes (name, state, last_checkin, vcpus, memory_mib, instances)"
                      " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
                    : "UPDATE nodes SET state = ?2, last_checkin = ?3, vcpus = ?4, memory_mib = ?5, instances = ?6"
                      " WHERE name = ?1");
  s.bind(1, r.name).bind(2, to_string(r.state)).bind(3, r.last_checkin).bind(4, int64_t{r.vcpus});
  s.bind(5, static_cast<int64_t>(r.memory_mib)).bind(6, int64_t{r.instances});
  s.run();
}
}  // namespace

void StateStore::put_node(const NodeRecord& r) {
  require_key(r.name, "node");
  with_transaction([&] {
    auto cur = get_node(r.name);
    if (!cur) {
      if (r.state != kNodeEntry)
        throw StoreError(StoreErrc::invalid_record,
                         "new node " + r.name + " must start in state created (got " + to_string(r.state) + ")");
    } else if (r.state != cur->state && !transition_allowed(cur->state, r.state)) {
      throw StoreError(StoreErrc::transition_refused, "node " + r.name + ": " + to_string(cur->state) + " -> " +
                                                          to_string(r.state) +
                                                          " is not a transition of the node machine");
    }
    write_node(db_->get(), r, !cur);
    changed('d', r.name, "state", to_string(r.state));
  });
}

bool StateStore::delete_node(const std::string& name) {
  bool deleted = false;
  with_transaction([&] {
    deleted = Stmt(db_->get(), "DELETE FROM nodes WHERE name = ?1").bind(1, name).run() > 0;
    if (deleted) changed('d', name, "gone");
  });
  return deleted;
}

NodeState StateStore::record_transition(const std::string& node_name, NodeState to) {
  NodeState from{};
  with_transaction([&] {
    auto cur = get_node(node_name);
    if (!cur) throw StoreError(StoreErrc::not_found, "node " + node_name);
    from = cur->state;
    if (!transition_allowed(from, to))
      throw StoreError(StoreErrc::transition_refused, "node " + node_name + ": " + to_string(from) + " -> " +
                                                          to_string(to) + " is not a transition of the node machine");
    Stmt s(db_->get(), "UPDATE nodes SET state = ?2 WHERE name = ?1");
    s.bind(1, node_name).bind(2, to_string(to));
    s.run();
    changed('d', node_name, "state", to_string(to));
  });
  return from;
}

NodeRecord StateStore::node_checkin(const std::string& name, uint32_t vcpus, uint64_t memory_mib, uint32_t instances) {
  require_key(name, "node");
  NodeRecord r;
  with_transaction([&] {
    auto cur = get_node(name);
    r = NodeRecord{name, kNodeEntry, now(), vcpus, memory_mib, instances};
    if (cur) {
      auto next = node_state_after_checkin(cur->state);
      if (!next || (*next != cur->state && !transition_allowed(cur->state, *next)))
        throw StoreError(StoreErrc::transition_refused, "node " + name + " checked in while " + to_string(cur->state) +
                                                            "; a deleted node never returns");
      r.state = *next;
    }
    write_node(db_->get(), r, !cur);
    changed('d', r.name, "state", to_string(r.state));
  });
  return r;
}

std::vector<NodeChange> StateStore::sweep_silent_nodes(std::chrono::seconds checkin_max) {
  std::vector<NodeChange> changes;
  with_transaction([&] {
    changes.clear();
    sqlite3* db = db_->get();
    const UnixMillis t = now();
    for (const NodeRecord& n : list_nodes()) {
      const NodeState next =
          node_state_after_silence(n.state, std::chrono::milliseconds(t - n.last_checkin), checkin_max);
      if (next == n.state) continue;
      if (!transition_allowed(n.state, next))
        throw StoreError(StoreErrc::transition_refused, "node " + n.name + ": " + to_string(n.state) + " -> " +
                                                            to_string(next) +
                                                            " is not a transition of the node machine");
      Stmt(db, "UPDATE nodes SET state = ?2 WHERE name = ?1").bind(1, n.name).bind(2, to_string(next)).run();
      changed('d', n.name, "state", to_string(next));
      NodeChange change{n.name, n.state, next, {}};
      if (next == NodeState::error && !options_.test_skip_error_fanout) {
        for (const InstanceRecord& inst : list_instances_on_node(n.name)) {
          auto err = error_path(inst.sf_state);
          if (!err) continue;  // already deleted or in error
          Stmt u(db,
                 "UPDATE instances SET sf_state = ?2, vm_state = ?3, task_state = NULL, updated_at = ?4 WHERE id = ?1");
          u.bind(1, inst.id).bind(2, to_string(*err)).bind(3, to_string(VmState::error)).bind(4, t);
          u.run();
          InstanceRecord after = inst;
          after.sf_state = *err;
          account(&inst, &after);
          Stmt l(db, "UPDATE action_log SET finish = ?2, result = ?3 WHERE instance_id = ?1 AND finish IS NULL");
          l.bind(1, inst.id).bind(2, t).bind(3, to_string(ActionResult::error));
          l.run();
          change.instances_errored.push_back(inst.id);
          changed('i', inst.id, "record_state", to_string(*err));
          changed('i', inst.id, "vm_state", to_string(VmState::error));
        }
      }
      changes.push_back(std::move(change));
    }
  });
  return changes;
}

// --- cleanup ----------------------------------------------------------------

PurgeCounts StateStore::purge_deleted(UnixMillis deleted_before) {
  PurgeCounts counts;
  with_transaction([&] {
    sqlite3* db = db_->get();
    // The attachments go with the rows (ON DELETE CASCADE): the other sides
    // are named first.
    Stmt ia(db,
            "SELECT network_id FROM network_attachments WHERE instance_id IN (SELECT id FROM instances"
            " WHERE sf_state = ?1 AND deleted_at IS NOT NULL AND deleted_at <= ?2)");
    ia.bind(1, to_string(SfInstanceState::deleted)).bind(2, deleted_before);
    while (ia.step()) changed('n', ia.text(0));
    Stmt na(db,
            "SELECT instance_id FROM network_attachments WHERE network_id IN (SELECT id FROM networks"
            " WHERE state = ?1 AND deleted_at IS NOT NULL AND deleted_at <= ?2)");
    na.bind(1, to_string(NetworkState::deleted)).bind(2, deleted_before);
    while (na.step()) changed('i', na.text(0));
    Stmt i(db,
           "DELETE FROM instances WHERE sf_state = ?1 AND deleted_at IS NOT NULL AND deleted_at <= ?2 RETURNING id");
    i.bind(1, to_string(SfInstanceState::deleted)).bind(2, deleted_before);
    for (; i.step(); ++counts.instances) changed('i', i.text(0), "gone");
    Stmt n(db, "DELETE FROM networks WHERE state = ?1 AND deleted_at IS NOT NULL AND deleted_at <= ?2 RETURNING id");
    n.bind(1, to_string(NetworkState::deleted)).bind(2, deleted_before);
    for (; n.step(); ++counts.networks) changed('n', n.text(0), "gone");
  });
  return counts;
}

PurgeCounts StateStore::purge_deleted_after(std::chrono::seconds delay) {
  return purge_deleted(now() - std::chrono::duration_cast<std::chrono::milliseconds>(delay).count());
}

}  // namespace apiary::control
