// Inside the controller actor: its state and the functions its parts share.
// controller_actor.cpp holds the behavior (the message handlers); each part
// of the work lives in a file of its own:
//   controller_records.cpp     record transitions, action events, ids
//   controller_networks.cpp    network records and attachments
//   controller_scheduling.cpp  create: validation, placement, the build
//   controller_actions.cpp     Nova actions run on the nodes
//   controller_recovery.cpp    reconciliation, drain, recovery after a restart
// Only the controller's files include this header.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

#include "actors/errors.hpp"
#include "actors/metrics.hpp"
#include "cluster/controller_actor.hpp"
#include "cluster/node_actor.hpp"
#include "cluster/state_store.hpp"
#include "devices/virtio_net.hpp"
#include "net/vxlan.hpp"
#include "proto/spec.hpp"

namespace apiary::actors::controller_detail {


using control::Action;
using control::ActionEvent;
using control::ActionResult;
using control::InstanceRecord;
using control::NetworkRecord;
using control::NetworkState;
using control::NodeState;
using control::SfInstanceState;
using control::StoreError;
using control::TaskState;
using control::VmState;

using Args = std::map<std::string, std::string>;

// What a resize keeps until confirm_resize / revert_resize.
struct ResizeMemo {
  v1::InstanceSpec old_spec;
  VmState before = VmState::active;
};

// --- live views (controller_feed.cpp) -----------------------------------------

// What the dashboard sees live, kept in the controller's memory only: who
// watches (watch_atom), each instance's VMM state as its node reported it
// (lifecycle_atom), and the distinct states each record has been in while
// this controller ran (the graphs' history). Why in memory: a history is a
// view, not a record; after a restart it starts again from the current
// state, and the store's schema stays as it is.
struct ChangeFeed {
  static constexpr size_t kHistoryMax = 32;
  // What one node reported of one instance. Kept per node, so a late report
  // from a node that no longer holds the record cannot hide the right one.
  struct Vmm {
    std::string state;
    std::string power;
    std::vector<std::string> history;
  };

  std::vector<caf::actor> watchers;  // the controller's thread only
  // Guards what follows: the controller writes it, and the API's readers
  // (ControllerReads, on the HTTP threads) read it through with_live_state
  // and with_history.
  mutable std::shared_mutex mu;
  std::map<std::string, std::map<std::string, Vmm>> vmm;  // instance id -> node -> its report
  // node -> the instances it reported: a node that goes away takes its
  // reports without a walk over every instance's (forget_node runs for
  // each node of a failure that takes hundreds at once).
  std::map<std::string, std::set<std::string>> reported_by;
  std::map<std::string, std::vector<std::string>> vm_history, sf_history, node_history, network_history;

  // StoreOptions::on_commit: note the changed records' states, tell the watchers.
  void committed(const control::StoreChanges& c);
  // A node's report; false when it changes nothing.
  bool report(const std::string& node, const std::string& id, const std::string& state, const std::string& power);
  // Forgets the VMM states `node` reported (it is gone); the ids it had.
  std::vector<std::string> forget_node(const std::string& node);
  void tell(const std::vector<std::string>& instances, const std::vector<std::string>& networks,
            const std::vector<std::string>& nodes) const;
  void drop_watcher(const caf::actor_addr& who);

  // The infos with the live parts filled in.
  InstanceInfo with_live_state(InstanceInfo info) const;
  NodeInfo with_history(NodeInfo info) const;
  NetworkInfo with_history(NetworkInfo info) const;
};

// How many lines of the cluster log the controller keeps in memory: a
// controller runs for months, and its process prints every line anyway.
constexpr size_t kClusterLogLines = 4096;

struct ControllerState {
  ControllerConfig cfg;
  std::map<std::string, ResizeMemo> resizes;  // instance id -> the spec before its resize
  std::shared_ptr<control::StateStore> store;
  std::map<std::string, node_actor> nodes;  // from check-ins
  std::map<std::string, std::string> cannot_run;  // node -> why its instances cannot run (from check-ins)
  std::mt19937_64 rng;
  // The latest kClusterLogLines lines of the cluster log (cluster_log_atom);
  // ControllerConfig::on_note sees every one.
  std::deque<std::string> cluster_log;
  // /metrics: how long finished actions took, and how they ended.
  std::shared_ptr<LatencyFamily> action_latency = std::make_shared<LatencyFamily>("action");
  std::map<std::pair<std::string, std::string>, uint64_t> actions_finished;  // (action, result) -> count
  std::set<int64_t> inherited;  // actions running in the store when this controller started
  control::UnixMillis started = 0;  // the store's clock when this controller started
  std::set<std::string> power_sync_pending;  // nodes with a lifecycle-triggered power sync on its way
  std::set<int64_t> waiting_placements;  // create actions waiting for nodes to connect (logged once)
  // node -> its VTEP ("a.b.c.d:port"; "" = no overlay), from its nodenet
  // requests; kept in memory: every node repeats it at each tick.
  std::map<std::string, std::string> vteps;
  // network id -> why a node turned it error (NetworkInfo::error). In
  // memory only: the store has no column for it, so after a restart the
  // record still says error without the reason (the cluster log had it).
  std::map<std::string, std::string> network_errors;
  // The live views: watchers, VMM states, histories (controller_feed.cpp).
  // Shared with the store's on_commit hook, which runs inside this actor's
  // handlers (the store's only writer), and with the API's readers
  // (ControllerReads), which take the feed's lock.
  std::shared_ptr<ChangeFeed> feed;
  // Group commit: what to do once the open batch is durable (or failed):
  // the answers it holds back (durable()). Called with the failure, if any.
  std::vector<std::function<void(const caf::error*)>> after_commit;
  static inline const char* name = "controller";
};
using controller_pointer = controller_actor::stateful_pointer<ControllerState>;

// --- group commit (controller_actor.cpp) --------------------------------------
// Commits the open batch, then sends the answers it held back; when the
// commit fails every one of them gets the error and the controller stops
// (what it holds in memory is no longer what the store holds).
// Returns false when the commit failed (the controller is stopping).
bool commit_writes(controller_pointer self);

// An answer that may show or acknowledge writes: sent now when no batch is
// open, otherwise once the batch is durable (or with the error that made it
// fail). Why every answer and not only a write's: a read served from the
// writer's connection sees the open batch, and must not show what may not
// survive a crash. An answer a handler delegates to a promise of its own is
// left alone (none of those carries store data).
template <class T>
caf::result<T> durable(controller_pointer self, caf::result<T> r) {
  auto& st = self->state;
  if (!st.store->batch_open() || r.flag == caf::rt_delegated || r.flag == caf::rt_skip) return r;
  auto rp = self->template make_response_promise<T>();
  if (r.flag == caf::rt_error) {
    st.after_commit.push_back([rp, e = std::move(r.err)](const caf::error* failed) mutable {
      rp.deliver(failed != nullptr ? *failed : e);
    });
  } else {
    st.after_commit.push_back([rp, v = r.value.template get_as<T>(0)](const caf::error* failed) mutable {
      if (failed != nullptr)
        rp.deliver(*failed);
      else
        rp.deliver(std::move(v));
    });
  }
  return rp;
}

// --- records and action events (controller_records.cpp) ---------------------
std::string new_id(controller_pointer self, const char* prefix);
caf::error store_failed(const StoreError& e);
caf::error refusal_error(const control::Refusal& r);
InstanceInfo to_info(const InstanceRecord& r);
// The reads of instances, one body for the controller's handlers and its
// readers off the writer (ControllerReads): not_found for an unknown id; a
// store failure is thrown (StoreError) for the caller to answer.
caf::expected<std::vector<InstanceInfo>> read_instances(control::StateStore& store, const ChangeFeed& feed);
caf::expected<InstanceInfo> read_instance(control::StateStore& store, const ChangeFeed& feed, const std::string& id);
caf::expected<std::vector<ActionInfo>> read_actions(control::StateStore& store, const std::string& id);
void note(controller_pointer self, std::string line);
// Appends an event to an action; a failure to log is noted, never thrown.
void event(controller_pointer self, int64_t action_id, const std::string& name, const std::string& result,
           const std::string& detail, std::optional<control::UnixMillis> start = std::nullopt);
// A validated sf_state change, logged as an event of the action.
void transition(controller_pointer self, const std::string& id, int64_t action_id, SfInstanceState to);
// X -> X-error -> error, for a failure while the record is in `current`.
void fail_record(controller_pointer self, const std::string& id, int64_t action_id);
// Counts a finished action for /metrics (its duration on the store's clock).
void observe_finished(controller_pointer self, int64_t action_id);
void finish(controller_pointer self, int64_t action_id, ActionResult result, std::optional<VmState> state = {});

// --- networks (controller_networks.cpp) -------------------------------------
NetworkInfo to_info(control::StateStore& store, const NetworkRecord& n,
                    const std::map<std::string, std::string>& vteps, const std::map<std::string, std::string>& errors);
// Completes a new instance's NICs (networks[i] is NIC i's resolved
// network): the network by id, a MAC when none is given, and an address of
// the network's CIDR (the lowest free one, or the one asked for if it is a
// free host address). The error names the field; nothing is changed in the
// store.
std::optional<std::string> assign_nic_addresses(control::StateStore& store, v1::InstanceSpec& spec,
                                                const std::string& instance_id,
                                                const std::vector<NetworkRecord>& networks);
// The nodenet request (controller_actor.hpp): records the node's VTEP,
// marks networks a node cannot carry as error, answers each network's
// peer VTEPs. Throws StoreError.
std::map<std::string, std::vector<std::string>> node_networks(controller_pointer self, const std::string& node,
                                                             const std::string& vtep,
                                                             const std::map<std::string, std::string>& hosted);
// Whether any network record in the store (whatever its state, until it is
// purged: a deleted error network may still have ports on nodes) already
// has the VNI that `id` derives (net::vni_of).
bool vni_taken(control::StateStore& store, const std::string& id);
// The network a NIC names: its id, or the name of exactly one live network.
// nullopt with `why` set when there is none (or it is dead, or ambiguous).
std::optional<NetworkRecord> resolve_network(control::StateStore& store, const std::string& ref, std::string& why);
// Detaches a deleted instance from its networks (in the caller's transaction).
void detach_instance(controller_pointer self, const std::string& id, int64_t action_id);

// --- scheduling and the create path (controller_scheduling.cpp) --------------
struct Load {
  uint32_t instances = 0;
  uint64_t vcpus = 0;
  uint64_t memory_mib = 0;
};
// What the records place on `node`.
Load load_of(controller_pointer self, const std::string& node);
// The scheduler's choice for `spec` now (only: that node or none), with the
// decision (and every rejection) in `decision`. Writes nothing.
// exclude: a node not to pick (a live migration's source).
std::optional<std::string> choose_node(controller_pointer self, const v1::InstanceSpec& spec, const std::string& only,
                                       std::string& decision, const std::string& exclude = {});
// A live migration whose end is not known (controller_actions.cpp): the
// destination's power list decides which node keeps the guest; the action
// ends success (switched over) or reverted (the source resumed).
void settle_migration(controller_pointer self, const std::string& id, int64_t action_id, const std::string& source,
                      const std::string& dest, bool source_paused = true);
// preflight -> (scheduled) creating -> node starts it -> created / ACTIVE.
// A placement that waits for nodes to connect stays in preflight and comes
// back as replace_atom (in_preflight set).
void build(controller_pointer self, const std::string& id, int64_t action_id, bool in_preflight = false);
// The create API (validation, the record, idempotency keys, the build).
caf::result<std::string> create_instance(controller_pointer self, const std::string& bytes,
                                         const std::string& request_id);

// --- actions (controller_actions.cpp) ---------------------------------------
struct NodeWork {
  const char* node_action;
  VmState success;
};
// The node action behind a plain Nova action, and the vm_state it leads to.
std::optional<NodeWork> node_work(Action a);
void complete_delete(controller_pointer self, const std::string& id, int64_t action_id);
void dispatch(controller_pointer self, Action a, const InstanceRecord& rec, int64_t action_id);
// A node the controller can ask: connected, and its record created,
// stopping or stopped (not missing or error).
bool node_reachable(controller_pointer self, const std::string& node);
// Ends an action whose node did not answer, or refused it (`refused`: the
// node said it did nothing), from the node's power state now.
void settle_from_node(controller_pointer self, const std::string& id, const std::string& node, int64_t action_id,
                      VmState success, VmState before, bool refused = false);
// The act API: Nova's check, then the action runs asynchronously.
caf::result<std::string> act(controller_pointer self, const std::string& id, const std::string& name,
                             const std::string& type, Args args);

// --- reconciliation, drain, recovery (controller_recovery.cpp) --------------
// A node's power list against the records: at its registration, or for
// the power sync (`power_sync`: a VM whose record is in ERROR runs on, as
// Nova's sync leaves ERROR to the operator).
void reconcile(controller_pointer self, const std::string& node, bool power_sync = false);
void drained(controller_pointer self, const std::string& node);
void recover(controller_pointer self);

}  // namespace apiary::actors::controller_detail
