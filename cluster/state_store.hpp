// The controller's durable store: instance, network and node records, the
// network attachments and every instance's action log, in one SQLite file.
//
// Why SQLite: the controller must not forget an acknowledged change when it
// is killed, and must come back with the same picture of the cluster. SQLite
// in WAL mode with synchronous=FULL makes every commit durable before the
// call returns, gives us transactions across tables and needs no server.
//
// Rules the store enforces, so that no caller can write a state the models
// do not allow:
//  * Every state change is validated against the tables in
//    shakenfist_states.hpp (sf_state / network / node) and nova_states.hpp
//    (vm_state / task_state, through begin_action / finish_action). An
//    illegal change throws StoreError{transition_refused} (or
//    action_refused) and writes nothing.
//  * A new record starts in its machine's entry state (initial, or created
//    for a node).
//  * Every public write runs in its own transaction and is committed before
//    it returns, unless it runs inside with_transaction(), whose commit then
//    covers it.
//  * Every failure is a StoreError naming what went wrong, with the SQL and
//    SQLite's message where SQLite was involved.
//
// A StateStore is one connection and is not thread-safe: one owner (the
// controller actor) uses it at a time; it may move between threads. Other
// processes may open the same file (readers see committed data; writers wait
// up to busy_timeout). Times are Unix milliseconds from the injected clock,
// so deterministic tests can drive them. No CAF here.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "cluster/nova_states.hpp"
#include "cluster/shakenfist_states.hpp"
#include "proto/apiary/v1/instance.pb.h"

struct sqlite3;

namespace apiary::control {

using UnixMillis = std::int64_t;

// The schema this build reads and writes. A file with another version is
// refused (schema_mismatch) rather than guessed at.
inline constexpr int kSchemaVersion = 1;

enum class StoreErrc : uint8_t {
  open_failed,         // the file could not be opened or created
  not_a_database,      // the file is not an SQLite database (SQLITE_NOTADB)
  corrupt,             // SQLite found the database damaged (SQLITE_CORRUPT)
  schema_mismatch,     // not an Apiary store, or another schema version
  sql_failed,          // any other SQLite failure
  busy,                // another connection held the lock past busy_timeout
  not_found,           // no record with that key
  invalid_record,      // a record that breaks a rule (entry state, missing field, bad spec)
  transition_refused,  // the state machine has no such transition
  action_refused,      // Nova refused the action (refusal() says why: 409 / 501)
  corrupt_record,      // a stored row does not decode (unknown state name, bad spec bytes)
  commit_failed,       // a batch of transactions could not be made durable: none of it may be acknowledged
  read_only,           // a write through a reader (StateStore::open_reader)
};
const char* to_string(StoreErrc e) noexcept;

class StoreError : public std::runtime_error {
 public:
  StoreError(StoreErrc code, std::string detail, std::string sql = {}, std::string sqlite_message = {},
             int sqlite_code = 0);
  explicit StoreError(Refusal refusal);  // action_refused

  StoreErrc code() const noexcept { return code_; }
  const std::string& detail() const noexcept { return detail_; }
  const std::string& sql() const noexcept { return sql_; }
  const std::string& sqlite_message() const noexcept { return sqlite_message_; }
  int sqlite_code() const noexcept { return sqlite_code_; }  // extended result code, 0 if none
  const std::optional<Refusal>& refusal() const noexcept { return refusal_; }

 private:
  StoreErrc code_;
  std::string detail_;
  std::string sql_;
  std::string sqlite_message_;
  int sqlite_code_ = 0;
  std::optional<Refusal> refusal_;
};

// --- records ----------------------------------------------------------------

struct InstanceRecord {
  std::string id;  // primary key
  std::string name;
  apiary::v1::InstanceSpec spec;
  SfInstanceState sf_state = kSfInstanceEntry;
  VmState vm_state = VmState::building;
  TaskState task_state = TaskState::none;
  std::string node;                      // empty until placed
  UnixMillis created_at = 0;             // set by the store on insert
  UnixMillis updated_at = 0;             // set by the store on every write
  std::optional<UnixMillis> deleted_at;  // set by the store when sf_state becomes deleted
};

struct NetworkRecord {
  std::string id;  // primary key
  std::string name;
  NetworkState state = kNetworkEntry;
  std::string cidr;  // empty = none
  UnixMillis created_at = 0;
  UnixMillis updated_at = 0;
  std::optional<UnixMillis> deleted_at;
};

struct NodeRecord {
  std::string name;  // primary key
  NodeState state = kNodeEntry;
  UnixMillis last_checkin = 0;
  uint32_t vcpus = 0;
  uint64_t memory_mib = 0;
  uint32_t instances = 0;  // instances the node reported at its last check-in
};

struct NetworkAttachment {
  std::string network_id;
  std::string instance_id;
  bool operator==(const NetworkAttachment&) const = default;
};

// One step of an action, as Nova's instance-action events: what ran, when,
// how it ended.
struct ActionEvent {
  std::string name;  // e.g. "vmm_quiesce"
  UnixMillis start = 0;
  std::optional<UnixMillis> finish;
  std::string result;  // "" while running, otherwise e.g. "success" / "error"
  std::string detail;  // free text (an error message)
  bool operator==(const ActionEvent&) const = default;
};

enum class ActionResult : uint8_t {
  running,     // not finished
  success,     // vm_state moved to the success state
  error,       // vm_state moved to ERROR
  reverted,    // failed, vm_state left as it was (Nova's reverts_task_state)
  superseded,  // a delete or hard reboot took over the instance before it finished
};
const char* to_string(ActionResult r) noexcept;
std::optional<ActionResult> action_result_from_string(std::string_view s) noexcept;

struct ActionLogEntry {
  int64_t id = 0;
  std::string instance_id;
  std::string request_id;
  Action action = Action::create;
  UnixMillis start = 0;
  std::optional<UnixMillis> finish;
  ActionResult result = ActionResult::running;
  std::vector<ActionEvent> events;  // stored as a JSON array
};

struct PurgeCounts {
  size_t instances = 0;
  size_t networks = 0;
};

// What sweep_silent_nodes changed.
struct NodeChange {
  std::string name;
  NodeState from;
  NodeState to;
  std::vector<std::string> instances_errored;  // set when the node went to error
};

// --- the store --------------------------------------------------------------

// What one committed transaction changed, by key: an instance is listed
// when its record, its action log or its network attachments changed; a
// network when its record or attachments changed; a node when its record
// changed (check-ins included). Each list is sorted and without repeats. A
// key whose row is gone (purged or deleted) is listed too: a reader asking
// for it gets "not found".
struct StoreChanges {
  std::vector<std::string> instances;
  std::vector<std::string> networks;
  std::vector<std::string> nodes;
  // Every state a record entered, in the order of the writes (several may
  // be in one transaction, e.g. preflight and creating): kind 'i' instance
  // (field "vm_state" or "record_state"), 'n' network or 'd' node (field
  // "state"); field "gone" when the row was deleted.
  struct Step {
    char kind;
    std::string key;
    std::string field;
    std::string state;
  };
  std::vector<Step> steps;
  bool empty() const noexcept { return instances.empty() && networks.empty() && nodes.empty(); }
};

// What the live instances placed on one node hold: what the scheduler
// checks a new instance against (see StateStore::node_usage).
struct NodeUsage {
  uint32_t instances = 0;
  uint64_t vcpus = 0;
  uint64_t memory_mib = 0;
  bool operator==(const NodeUsage&) const = default;
};

// Whether an instance in this record state holds its node's vCPUs and
// memory: from the first record (initial) until it is deleted or in error.
bool holds_resources(SfInstanceState s) noexcept;

struct StoreOptions {
  std::function<UnixMillis()> clock;  // default: the system clock
  int busy_timeout_ms = 5000;         // how long a write waits for another connection's lock
  // Test-only fault hook (the simulator's "broken rule" check): a node that
  // goes to error does NOT take its instances with it. Never set in production.
  bool test_skip_error_fanout = false;
  // Called after every outermost transaction that commits and changed
  // something, on the writer's thread, before the write call returns (so
  // whoever is told can read the committed rows). Never called for a
  // rollback. Why: the control plane's live views (the dashboard's event
  // stream) learn what changed from the one place every write passes. An
  // exception thrown here is swallowed: the data is committed already.
  std::function<void(const StoreChanges&)> on_commit;
  // Group commit (see StateStore::with_transaction): the first transaction
  // after a commit opens a batch and calls this; the writer must call
  // commit_batch() soon after (the controller: once the messages already in
  // its mailbox are handled).
  std::function<void()> on_batch_open;
  // The SQLite VFS to open the file with ("" = the default). Tests name one
  // that fails on demand (a failed fsync).
  std::string vfs;
};

class StateStore {
 public:
  using Options = StoreOptions;

  // Opens (creating if absent) the store at `path` (":memory:" for a
  // throwaway one). Throws StoreError: open_failed, not_a_database, corrupt,
  // schema_mismatch.
  static StateStore open(const std::string& path, Options options = {});

  // Opens an existing store read-only: a second connection to the file that
  // sees only committed transactions, never a writer's open batch or
  // transaction, so what it reads has been made durable (synchronous=FULL).
  // Why: the API's reads then wait for neither the controller's mailbox
  // nor its next commit (docs/control-plane.md, "Reads off the writer").
  // Throws StoreError as open() does (a missing file: open_failed); every
  // write through it throws read_only.
  static StateStore open_reader(const std::string& path, Options options = {});

  StateStore(StateStore&&) noexcept;
  StateStore& operator=(StateStore&&) noexcept;
  ~StateStore();

  const std::string& path() const noexcept { return path_; }
  UnixMillis now() const;

  // Runs fn in one transaction: committed when fn returns, rolled back (and
  // the exception rethrown) when it throws. Nests (as savepoints).
  //
  // With on_batch_open set (group commit), the outermost transaction is a
  // savepoint of a batch instead: its writes are final (a later failure of
  // another transaction of the batch does not undo them) but not durable
  // until commit_batch(), which makes the whole batch durable with one
  // fsync. Why: the controller's writes were one fsync each, one request at
  // a time; a batch carries the writes of every request the controller
  // handled meanwhile, and the controller answers them only after it.
  void with_transaction(const std::function<void()>& fn);
  // Runs fn's reads in one read transaction: one snapshot of the store
  // across several statements (a reader's record and its action log agree).
  // Inside an open transaction fn just runs.
  void read_snapshot(const std::function<void()>& fn);
  bool read_only() const noexcept;
  // Whether a batch is open (written, not durable yet).
  bool batch_open() const noexcept;
  // Commits the open batch (nothing if none) and hands on_commit everything
  // it changed. Throws StoreError{commit_failed} when SQLite cannot commit
  // (a failed fsync): then no write of the batch may be acknowledged (the
  // file may or may not hold them, as with any write a crash interrupts),
  // this connection is back at the last durable state, and the store refuses
  // writes until it is opened again (what its writer believes it wrote is
  // not what the file holds).
  void commit_batch();

  // --- instances ---
  // Inserts, or replaces the record with the same id. A new record must be
  // in sf_state initial, vm_state building, task_state none. On replace, a
  // changed sf_state must be an allowed transition and vm_state/task_state
  // must not change (use begin_action / finish_action).
  void put_instance(const InstanceRecord& r);
  std::optional<InstanceRecord> get_instance(const std::string& id);
  // Records an instance that already runs on r.node: sf_state created,
  // vm_state active, no task, with a finished, successful create action
  // (request_id) in its log, in one transaction. What put_instance,
  // begin_action, three record_transitions and finish_action would leave,
  // in two inserts: for adopting VMs the store has no record of, and the
  // simulator's preplaced instances. r.sf_state, vm_state and task_state
  // must say so (created, active, none) and r.node must be set; throws
  // invalid_record otherwise, or when a record with r.id exists (nothing
  // written).
  void import_running_instance(const InstanceRecord& r, const std::string& request_id);
  std::vector<InstanceRecord> list_instances();  // ordered by id
  std::vector<InstanceRecord> list_instances_on_node(const std::string& node);
  bool delete_instance(const std::string& id);  // hard delete (with attachments, action log)
  // The sum of the boards of the instances placed on `node` that hold
  // resources (holds_resources), as the open transaction sees it. Kept in
  // memory and updated by every write of this store (a rolled-back write
  // undoes its part), so the scheduler's check costs a lookup, not a decode
  // of every record on the node per create; rebuilt from the table when
  // another connection has committed since (PRAGMA data_version).
  NodeUsage node_usage(const std::string& node);
  // Validated sf_state change; returns the previous state. deleted_at is set
  // when `to` is deleted. Throws not_found / transition_refused.
  SfInstanceState record_transition(const std::string& instance_id, SfInstanceState to);

  // --- Nova actions ---
  // Checks Nova's preconditions against the stored vm_state/task_state; on
  // refusal throws StoreError{action_refused} carrying the Refusal (nothing
  // written). Otherwise sets task_state to the action's task and appends an
  // action-log row, in one transaction, and returns the row's id. A delete
  // or hard reboot that takes over from another task closes the open rows
  // of that instance as superseded.
  int64_t begin_action(const std::string& instance_id, Action action, const std::string& request_id,
                       const CapabilitySet& caps = kBuiltCapabilities);
  // Ends an action. success: vm_state becomes `result_state` (must be one of
  // success_states(action, current vm_state); may be omitted when there is
  // only one); error: vm_state becomes ERROR; reverted: vm_state unchanged.
  // task_state becomes none. Returns false, writing nothing, if the row was
  // already closed (superseded). Throws not_found, invalid_record.
  bool finish_action(int64_t action_id, ActionResult result, std::optional<VmState> result_state = std::nullopt);
  void append_action_event(int64_t action_id, const ActionEvent& event);
  // Nova's force_stop, for the power sync: the node runs no VM for an
  // instance whose record says otherwise (a PAUSED one, from which a user's
  // stop is refused). Appends a finished "stop" row with `event`, and sets
  // vm_state stopped; nothing if a task is in flight (returns 0). Returns
  // the row's id. Throws not_found.
  int64_t force_stopped(const std::string& instance_id, const std::string& request_id, const ActionEvent& event);
  std::optional<ActionLogEntry> get_action(int64_t action_id);
  // The same row without its events (empty): what deciding on an action
  // needs, without decoding its event list (a JSON array in the row).
  std::optional<ActionLogEntry> get_action_head(int64_t action_id);
  std::vector<ActionLogEntry> list_actions(const std::string& instance_id);  // oldest first
  // The oldest action with this request id (a client's idempotency key for
  // create), its row without its events (as get_action_head); nullopt if
  // none (or its record was purged).
  std::optional<ActionLogEntry> find_action(const std::string& request_id);
  // Every action not finished yet, oldest first, with their events (after a
  // controller restart: the ones it must finish or fail).
  std::vector<ActionLogEntry> list_running_actions();

  // --- networks ---
  // Same rules as put_instance: a new network is initial; a changed state
  // must be an allowed transition.
  void put_network(const NetworkRecord& r);
  std::optional<NetworkRecord> get_network(const std::string& id);
  std::vector<NetworkRecord> list_networks();
  bool delete_network(const std::string& id);
  NetworkState record_transition(const std::string& network_id, NetworkState to);

  // --- attachments ---
  // Both records must exist (not_found otherwise); attaching twice is a no-op.
  void attach(const std::string& network_id, const std::string& instance_id);
  bool detach(const std::string& network_id, const std::string& instance_id);
  std::vector<NetworkAttachment> attachments_of_network(const std::string& network_id);
  std::vector<NetworkAttachment> attachments_of_instance(const std::string& instance_id);

  // --- nodes ---
  // Same rules: a new node is created; a changed state must be allowed.
  void put_node(const NodeRecord& r);
  std::optional<NodeRecord> get_node(const std::string& name);
  std::vector<NodeRecord> list_nodes();
  bool delete_node(const std::string& name);
  NodeState record_transition(const std::string& node_name, NodeState to);
  // A check-in: creates the node (created) on its first one, otherwise
  // applies node_state_after_checkin and refreshes last_checkin and the
  // reported resources. A deleted node is refused (transition_refused).
  NodeRecord node_checkin(const std::string& name, uint32_t vcpus, uint64_t memory_mib, uint32_t instances);
  // Applies node_state_after_silence to every node, in one transaction. A
  // node that goes to error takes its instances with it: each live one
  // (initial..created) moves to its X-error state, vm_state ERROR, task none.
  std::vector<NodeChange> sweep_silent_nodes(std::chrono::seconds checkin_max = Defaults::node_checkin_maximum);

  // --- cleanup ---
  // Hard-deletes instances (sf_state deleted) and networks (deleted) whose
  // deleted_at <= deleted_before, with their attachments and action logs.
  // Deleted nodes are kept: they must never come back.
  PurgeCounts purge_deleted(UnixMillis deleted_before);
  // purge_deleted(now - delay).
  PurgeCounts purge_deleted_after(std::chrono::seconds delay = Defaults::cleaner_delay);

 private:
  StateStore(std::string path, Options options);
  // The connection open() and open_reader() share: opened with `flags`,
  // extended result codes, the busy timeout. Throws open_failed ("what path").
  static StateStore connect(const std::string& path, Options options, int flags, const char* what);
  // Notes a changed key for on_commit ('i' instance, 'n' network, 'd' node),
  // and with a field, the state it entered (StoreChanges::Step).
  void changed(char kind, const std::string& key, const char* field = nullptr, std::string state = {});
  void changed_attached(char kind, const std::string& key);
  void emit_pending();
  // Moves an instance's share of the node usage from `before` to `after`
  // (either may be absent: a new or a removed record).
  void account(const InstanceRecord* before, const InstanceRecord* after);
  // A new record's row, usage and change-feed entries (put_instance, import_running_instance).
  void insert_instance(const InstanceRecord& r, const std::string& spec, UnixMillis t);
  struct Db;
  std::unique_ptr<Db> db_;
  std::string path_;
  Options options_;
};

}  // namespace apiary::control
