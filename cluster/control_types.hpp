// Messages of the control plane: the atoms and payload types shared by the
// controller actor (controller_actor.hpp) and the node actor
// (node_actor.hpp), and the control plane's own error category.
//
// Why a separate header: the controller and the node talk to each other in
// both directions (check-ins one way, placements and actions the other), so
// the vocabulary lives below both interfaces. Atoms of the instance layer
// stay in atoms.hpp; these are the control plane's (CAF 0.17: at most 10
// characters each).
//
// Why these payloads: an InstanceSpec travels as its serialized protobuf
// bytes (std::string), power reports as std::map<std::string, std::string>
// (a CAF built-in type). Records and action logs are small structs with an
// `inspect` overload: they work in local messages as they are, and a process
// that sends them over the middleman calls register_control_types() on its
// actor_system_config first.
//
// Refusals: an API call that is refused answers a caf::error of category
// "apiarycp" whose code is the HTTP status class (ControlErrc) and whose
// context is the exact message (e.g. Nova's "Cannot 'pause' instance <id>
// while it is in vm_state stopped"). http_status() and message_of() read
// them back.
#pragma once

#include <caf/all.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace apiary::actors {

// --- atoms --------------------------------------------------------------------

// node -> controller
using checkin_atom = caf::atom_constant<caf::atom("checkin")>;  // periodic check-in with capacity
using node_net_atom = caf::atom_constant<caf::atom("nodenet")>;  // the networks a node hosts -> their VTEP peers
// controller -> node
using place_atom = caf::atom_constant<caf::atom("place")>;          // spawn and start an instance
using node_act_atom = caf::atom_constant<caf::atom("nodeact")>;     // an action on one instance
using power_list_atom = caf::atom_constant<caf::atom("powerlist")>;  // id -> power state
using capacity_atom = caf::atom_constant<caf::atom("capacity")>;
using drain_atom = caf::atom_constant<caf::atom("drain")>;  // graceful stop
// API (client -> controller)
using create_atom = caf::atom_constant<caf::atom("create")>;
using list_atom = caf::atom_constant<caf::atom("list")>;
using get_atom = caf::atom_constant<caf::atom("get")>;
using act_atom = caf::atom_constant<caf::atom("act")>;
using actions_atom = caf::atom_constant<caf::atom("actions")>;
using nodes_atom = caf::atom_constant<caf::atom("nodes")>;
using cluster_log_atom = caf::atom_constant<caf::atom("clusterlog")>;
using net_create_atom = caf::atom_constant<caf::atom("netcreate")>;  // name, cidr -> network id
using net_list_atom = caf::atom_constant<caf::atom("netlist")>;
using net_get_atom = caf::atom_constant<caf::atom("netget")>;
using net_delete_atom = caf::atom_constant<caf::atom("netdelete")>;
using metrics_atom = caf::atom_constant<caf::atom("metrics")>;        // Prometheus text (controller, node)
using console_of_atom = caf::atom_constant<caf::atom("consoleof")>;  // an instance's console actor, via its node
using recover_atom = caf::atom_constant<caf::atom("recover")>;       // controller: settle actions left running
using replace_atom = caf::atom_constant<caf::atom("replace")>;       // controller: try a waiting placement again
// internal timers
using tick_atom = caf::atom_constant<caf::atom("tick")>;      // node: time to check in
using sweep_atom = caf::atom_constant<caf::atom("sweep")>;    // controller: apply the silence rule
using purge_atom = caf::atom_constant<caf::atom("purge")>;    // controller: hard-delete old deleted records
using flush_atom = caf::atom_constant<caf::atom("flush")>;    // controller: commit the open batch of writes
using power_sync_atom = caf::atom_constant<caf::atom("powersync")>;  // controller: records against nodes' power lists
using wait_dl_atom = caf::atom_constant<caf::atom("waitdl")>;  // node: its state waits' timer fired
using file_poll_atom = caf::atom_constant<caf::atom("filepoll")>;  // node: look at a disk-file job (copy, zero)
// tests / simulation
using instance_of_atom = caf::atom_constant<caf::atom("instof")>;    // the instance actor of an id
using inst_spec_atom = caf::atom_constant<caf::atom("instspec")>;   // the spec an id's VMM was built from
using partition_atom = caf::atom_constant<caf::atom("partition")>;  // cut the node off (no check-ins, no answers)
using disk_fault_atom = caf::atom_constant<caf::atom("diskfault")>;  // the node's disk-file steps fail (EIO)
using watch_atom = caf::atom_constant<caf::atom("watch")>;            // controller: tell this actor what changes
using changed_atom = caf::atom_constant<caf::atom("changed")>;        // controller -> watcher: these keys changed
using lifecycle_atom = caf::atom_constant<caf::atom("lifecycle")>;    // node -> controller: an instance's VMM state

// --- power states a node reports ----------------------------------------------

inline constexpr const char* kPowerRunning = "running";    // initialize / boot / run / reboot
inline constexpr const char* kPowerPaused = "paused";      // quiesced on purpose
inline constexpr const char* kPowerShutdown = "shutdown";  // halt / destroy
inline constexpr const char* kPowerDeleted = "deleted";    // the node no longer knows it
inline constexpr const char* kPowerSuspended = "suspended";  // no VMM; its state saved on the node
inline constexpr const char* kPowerMigrating = "migrating";  // a live migration's destination, the guest not yet there

// --- payloads -----------------------------------------------------------------

struct InstanceInfo {
  std::string id;
  std::string name;
  std::string node;
  std::string sf_state;
  std::string vm_state;
  std::string task_state;
  int64_t created_at = 0;  // Unix milliseconds
  int64_t updated_at = 0;
  std::string spec_bytes;  // the serialized InstanceSpec (defaults applied)
  // What its node last reported (lifecycle_atom; in the controller's memory,
  // "" until a report): the per-VM monitor's state (Propolis' lifecycle:
  // start, boot, run, quiesce, ...) and the power state derived from it.
  std::string lifecycle;
  std::string power;
  // The distinct states this controller has seen the instance in, oldest
  // first, the current one last (at most kHistoryMax; from the current
  // state again after a controller restart): vm_state, sf_state, lifecycle.
  std::vector<std::string> vm_history;
  std::vector<std::string> sf_history;
  std::vector<std::string> lifecycle_history;
};

struct ActionEventInfo {
  std::string name;
  int64_t start = 0;
  int64_t finish = -1;  // -1 while running
  std::string result;
  std::string detail;
};

struct ActionInfo {
  std::string request_id;
  std::string action;
  int64_t start = 0;
  int64_t finish = -1;  // -1 while running
  std::string result;   // running, success, error, reverted, superseded
  std::vector<ActionEventInfo> events;
};

struct NodeInfo {
  std::string name;
  std::string state;
  int64_t last_checkin = 0;
  uint32_t vcpus = 0;
  uint64_t memory_mib = 0;
  uint32_t instances = 0;
  int64_t checkin_age_ms = 0;  // the controller's clock minus last_checkin
  std::string cannot_run;      // empty: the node can run instances; else why not
  std::vector<std::string> history;  // its states as this controller saw them (like InstanceInfo's)
  bool connected = false;            // its actor is connected to this controller now
};

// One NIC attached to a network: which instance, where it runs, its
// addresses.
struct NetworkPortInfo {
  std::string instance;
  uint32_t nic = 0;  // index in the instance's devices.nics
  std::string mac;
  std::string ipv4;  // "" = none
  std::string node;  // "" = not placed
};

// A network record with the ids of the instances attached to it, its
// ports and the VTEPs of the nodes hosting them.
struct NetworkInfo {
  std::string id;
  std::string name;
  std::string cidr;
  std::string state;
  std::vector<std::string> instances;
  uint32_t vni = 0;
  std::vector<NetworkPortInfo> ports;
  std::map<std::string, std::string> vteps;  // node -> "a.b.c.d:port" ("" = the node has no overlay)
  std::string error;  // why it is error ("" otherwise, or when the controller restarted since)
  std::vector<std::string> history;  // its states as this controller saw them (like InstanceInfo's)
};

template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NetworkPortInfo& x) {
  return f(caf::meta::type_name("NetworkPortInfo"), x.instance, x.nic, x.mac, x.ipv4, x.node);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NetworkInfo& x) {
  return f(caf::meta::type_name("NetworkInfo"), x.id, x.name, x.cidr, x.state, x.instances, x.vni, x.ports, x.vteps,
           x.error, x.history);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, InstanceInfo& x) {
  return f(caf::meta::type_name("InstanceInfo"), x.id, x.name, x.node, x.sf_state, x.vm_state, x.task_state,
           x.created_at, x.updated_at, x.spec_bytes, x.lifecycle, x.power, x.vm_history, x.sf_history,
           x.lifecycle_history);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ActionEventInfo& x) {
  return f(caf::meta::type_name("ActionEventInfo"), x.name, x.start, x.finish, x.result, x.detail);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, ActionInfo& x) {
  return f(caf::meta::type_name("ActionInfo"), x.request_id, x.action, x.start, x.finish, x.result, x.events);
}
template <class Inspector>
typename Inspector::result_type inspect(Inspector& f, NodeInfo& x) {
  return f(caf::meta::type_name("NodeInfo"), x.name, x.state, x.last_checkin, x.vcpus, x.memory_mib, x.instances,
           x.checkin_age_ms, x.cannot_run, x.history, x.connected);
}

// Registers the payload types above (needed only when they cross processes).
inline void register_control_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<InstanceInfo>("apiary.InstanceInfo");
  cfg.add_message_type<std::vector<InstanceInfo>>("apiary.InstanceInfoVec");
  cfg.add_message_type<ActionEventInfo>("apiary.ActionEventInfo");
  cfg.add_message_type<ActionInfo>("apiary.ActionInfo");
  cfg.add_message_type<std::vector<ActionInfo>>("apiary.ActionInfoVec");
  cfg.add_message_type<NodeInfo>("apiary.NodeInfo");
  cfg.add_message_type<std::vector<NodeInfo>>("apiary.NodeInfoVec");
  cfg.add_message_type<std::map<std::string, std::vector<std::string>>>("apiary.PeerMap");
  cfg.add_message_type<NetworkPortInfo>("apiary.NetworkPortInfo");
  cfg.add_message_type<std::vector<NetworkPortInfo>>("apiary.NetworkPortInfoVec");
  cfg.add_message_type<NetworkInfo>("apiary.NetworkInfo");
  cfg.add_message_type<std::vector<NetworkInfo>>("apiary.NetworkInfoVec");
}

// --- the control plane's errors ---------------------------------------------------

inline constexpr caf::atom_value kControlErrorCategory = caf::atom("apiarycp");

// Codes are the HTTP status minus 300, so they fit caf::error's uint8_t (400 -> 100, 404 -> 104, 409 -> 109, ...).
enum class ControlErrc : uint8_t {
  bad_request = 100,      // 400: the spec or the arguments are malformed
  not_found = 104,        // 404: no such instance, node or network
  conflict = 109,         // 409: Nova refused the action in this state
  internal = 200,         // 500: the store failed
  not_implemented = 201,  // 501: the action is not available (yet)
  unavailable = 203,      // 503: no node can take it right now
};

inline caf::error make_control_error(ControlErrc c, std::string message) {
  return caf::error(static_cast<uint8_t>(c), kControlErrorCategory, caf::make_message(std::move(message)));
}
// The HTTP status of a control-plane error, 0 for any other error.
inline int http_status(const caf::error& e) {
  return e.category() == kControlErrorCategory ? static_cast<int>(e.code()) + 300 : 0;
}
// The message of a control-plane error ("" if none).
inline std::string message_of(const caf::error& e) {
  if (e.category() == kControlErrorCategory && e.context().match_elements<std::string>())
    return e.context().get_as<std::string>(0);
  return {};
}

}  // namespace apiary::actors
