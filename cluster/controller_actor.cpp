// The controller actor (see controller_actor.hpp for the messages and why it
// is one actor).
//
// Rules this file keeps:
//  * Every change goes through the StateStore (which validates it against
//    the Shaken Fist and Nova tables) before anything is acknowledged or sent
//    to a node; a StoreError becomes a 500 answer, never a half-written
//    change.
//  * Every accepted action ends in finish_action: the node's reply, its error
//    or the request deadline (action_deadline) closes it.
//  * Record transitions and scheduling decisions are written into the
//    action's events, so the action log tells the whole story of a request.
#include "cluster/controller_actor.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cinttypes>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

#include "actors/errors.hpp"
#include "actors/metrics.hpp"
#include "cluster/node_actor.hpp"
#include "cluster/state_store.hpp"
#include "proto/spec.hpp"

namespace apiary::actors {
namespace {

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

struct ControllerState {
  ControllerConfig cfg;
  std::map<std::string, ResizeMemo> resizes;  // instance id -> the spec before its resize
  std::shared_ptr<control::StateStore> store;
  std::map<std::string, node_actor> nodes;  // from check-ins
  std::map<std::string, std::string> cannot_run;  // node -> why its instances cannot run (from check-ins)
  std::mt19937_64 rng;
  std::vector<std::string> cluster_log;
  // /metrics: how long finished actions took, and how they ended.
  std::shared_ptr<LatencyFamily> action_latency = std::make_shared<LatencyFamily>("action");
  std::map<std::pair<std::string, std::string>, uint64_t> actions_finished;  // (action, result) -> count
  std::set<int64_t> inherited;  // actions running in the store when this controller started
  static inline const char* name = "controller";
};
using controller_pointer = controller_actor::stateful_pointer<ControllerState>;

std::string new_id(controller_pointer self, const char* prefix) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, static_cast<uint64_t>(self->state.rng()));
  return std::string(prefix) + buf;
}

caf::error store_failed(const StoreError& e) {
  return make_control_error(ControlErrc::internal, std::string("store: ") + control::to_string(e.code()) + ": " +
                                                       e.detail());
}

caf::error refusal_error(const control::Refusal& r) {
  return make_control_error(r.http_status == 501 ? ControlErrc::not_implemented : ControlErrc::conflict, r.message);
}

InstanceInfo to_info(const InstanceRecord& r) {
  return {r.id,
          r.name,
          r.node,
          control::to_string(r.sf_state),
          control::to_string(r.vm_state),
          control::to_string(r.task_state),
          r.created_at,
          r.updated_at,
          r.spec.SerializeAsString()};
}

void note(controller_pointer self, std::string line) { self->state.cluster_log.push_back(std::move(line)); }

// Appends an event to an action; a failure to log is noted, never thrown.
void event(controller_pointer self, int64_t action_id, const std::string& name, const std::string& result,
           const std::string& detail, std::optional<control::UnixMillis> start = std::nullopt) {
  auto& store = *self->state.store;
  try {
    const auto now = store.now();
    store.append_action_event(action_id, ActionEvent{name, start.value_or(now), now, result, detail});
  } catch (const StoreError& e) {
    note(self, "action " + std::to_string(action_id) + ": event " + name + " not logged: " + e.detail());
  }
}

// A validated sf_state change, logged as an event of the action.
void transition(controller_pointer self, const std::string& id, int64_t action_id, SfInstanceState to) {
  auto& store = *self->state.store;
  store.with_transaction([&] {
    const SfInstanceState from = store.record_transition(id, to);
    const auto now = store.now();
    store.append_action_event(action_id, ActionEvent{"sf_state", now, now, "success",
                                                     std::string(control::to_string(from)) + " -> " +
                                                         control::to_string(to)});
  });
}

// X -> X-error -> error, for a failure while the record is in `current`.
void fail_record(controller_pointer self, const std::string& id, int64_t action_id) {
  auto& store = *self->state.store;
  try {
    auto rec = store.get_instance(id);
    if (!rec) return;
    if (auto err = control::error_path(rec->sf_state)) transition(self, id, action_id, *err);
    rec = store.get_instance(id);
    if (rec && control::is_transitional_error(rec->sf_state)) transition(self, id, action_id, SfInstanceState::error);
  } catch (const StoreError& e) {
    note(self, "instance " + id + ": error path not recorded: " + e.detail());
  }
}

// Counts a finished action for /metrics (its duration on the store's clock).
void observe_finished(controller_pointer self, int64_t action_id) {
  auto& st = self->state;
  auto a = st.store->get_action(action_id);
  if (!a || !a->finish) return;
  const std::string name = control::to_string(a->action);
  st.action_latency->observe(name, std::chrono::milliseconds(std::max<int64_t>(0, *a->finish - a->start)));
  ++st.actions_finished[{name, control::to_string(a->result)}];
}

void finish(controller_pointer self, int64_t action_id, ActionResult result, std::optional<VmState> state = {}) {
  try {
    if (self->state.store->finish_action(action_id, result, state)) observe_finished(self, action_id);
  } catch (const StoreError& e) {
    note(self, "action " + std::to_string(action_id) + " not finished: " + e.detail());
  }
}

// --- networks ---------------------------------------------------------------

NetworkInfo to_info(control::StateStore& store, const NetworkRecord& n) {
  NetworkInfo out{n.id, n.name, n.cidr, control::to_string(n.state), {}};
  for (const auto& a : store.attachments_of_network(n.id)) out.instances.push_back(a.instance_id);
  return out;
}

// "a.b.c.d/n" with each octet 0..255 and n 0..32.
bool valid_cidr(const std::string& s) {
  unsigned a, b, c, d, n;
  char tail;
  if (std::sscanf(s.c_str(), "%3u.%3u.%3u.%3u/%2u%c", &a, &b, &c, &d, &n, &tail) != 5) return false;
  if (s.find_first_not_of("0123456789./") != std::string::npos) return false;
  return a <= 255 && b <= 255 && c <= 255 && d <= 255 && n <= 32;
}

// The network a NIC names: its id, or the name of exactly one live network.
// nullopt with `why` set when there is none (or it is dead, or ambiguous).
std::optional<NetworkRecord> resolve_network(control::StateStore& store, const std::string& ref, std::string& why) {
  if (auto n = store.get_network(ref)) {
    if (control::is_dead(n->state)) {
      why = "network " + ref + " is " + control::to_string(n->state);
      return std::nullopt;
    }
    return n;
  }
  std::vector<NetworkRecord> live;
  bool dead_match = false;
  for (auto& n : store.list_networks()) {
    if (n.name != ref) continue;
    if (control::is_dead(n.state))
      dead_match = true;
    else
      live.push_back(std::move(n));
  }
  if (live.size() == 1) return live.front();
  if (live.size() > 1)
    why = "network name '" + ref + "' is ambiguous (" + std::to_string(live.size()) + " live networks); use its id";
  else
    why = dead_match ? "network '" + ref + "' is being deleted or dead" : "network '" + ref + "' not found";
  return std::nullopt;
}

// Detaches a deleted instance from its networks; a network in delete_wait
// whose last instance this was becomes deleted. Runs in the caller's
// transaction.
void detach_instance(controller_pointer self, const std::string& id, int64_t action_id) {
  auto& store = *self->state.store;
  for (const auto& a : store.attachments_of_instance(id)) {
    store.detach(a.network_id, id);
    const auto now = store.now();
    store.append_action_event(action_id, ActionEvent{"network_detach", now, now, "success", "network " + a.network_id});
    auto net = store.get_network(a.network_id);
    if (net && net->state == NetworkState::delete_wait && store.attachments_of_network(a.network_id).empty()) {
      store.record_transition(a.network_id, NetworkState::deleted);
      note(self, "network " + a.network_id + ": delete_wait -> deleted (its last instance " + id + " was deleted)");
    }
  }
}

// --- scheduling -------------------------------------------------------------

struct Load {
  uint32_t instances = 0;
  uint64_t vcpus = 0;
  uint64_t memory_mib = 0;
};

bool holds_resources(const InstanceRecord& r) {
  return r.sf_state == SfInstanceState::initial || r.sf_state == SfInstanceState::preflight ||
         r.sf_state == SfInstanceState::creating || r.sf_state == SfInstanceState::created;
}

Load load_of(controller_pointer self, const std::string& node) {
  Load l;
  for (const auto& r : self->state.store->list_instances_on_node(node)) {
    if (!holds_resources(r)) continue;
    ++l.instances;
    uint64_t v = r.spec.board().vcpus();
    uint64_t m = r.spec.board().memory_mib();
    if (auto it = self->state.resizes.find(r.id); it != self->state.resizes.end()) {
      // Resized, not yet confirmed: either board may run, so hold the larger.
      v = std::max<uint64_t>(v, it->second.old_spec.board().vcpus());
      m = std::max<uint64_t>(m, it->second.old_spec.board().memory_mib());
    }
    l.vcpus += v;
    l.memory_mib += m;
  }
  return l;
}

// Filters and ranks the nodes; every rejection and the decision become
// events of the create action. nullopt: no valid host.
std::optional<std::string> pick_node(controller_pointer self, const v1::InstanceSpec& spec, int64_t action_id) {
  auto& st = self->state;
  const uint64_t want_v = spec.board().vcpus();
  const uint64_t want_m = spec.board().memory_mib();
  struct Candidate {
    std::string name;
    Load load;
  };
  std::vector<Candidate> ok;
  size_t rejected = 0;
  auto reject = [&](const std::string& why) {
    ++rejected;
    event(self, action_id, "filter", "rejected", why);
  };
  for (const auto& n : st.store->list_nodes()) {
    if (n.state != NodeState::created) {
      reject("node " + n.name + ": state " + control::to_string(n.state));
      continue;
    }
    if (!st.nodes.count(n.name)) {
      reject("node " + n.name + ": no check-in since the controller started");
      continue;
    }
    if (auto c = st.cannot_run.find(n.name); c != st.cannot_run.end() && !c->second.empty()) {
      reject("node " + n.name + ": cannot run instances: " + c->second);
      continue;
    }
    const Load l = load_of(self, n.name);
    const auto cap_v = static_cast<uint64_t>(n.vcpus * st.cfg.cpu_allocation_ratio);
    const auto cap_m = static_cast<uint64_t>(static_cast<double>(n.memory_mib) * st.cfg.ram_allocation_ratio);
    if (l.vcpus + want_v > cap_v) {
      std::ostringstream o;
      o << "node " << n.name << ": not enough vCPUs: " << want_v << " requested, " << l.vcpus << " of " << cap_v
        << " in use (" << n.vcpus << " x cpu_allocation_ratio " << st.cfg.cpu_allocation_ratio << ")";
      reject(o.str());
      continue;
    }
    if (l.memory_mib + want_m > cap_m) {
      std::ostringstream o;
      o << "node " << n.name << ": not enough memory: " << want_m << " MiB requested, " << l.memory_mib << " of "
        << cap_m << " MiB in use (" << n.memory_mib << " MiB x ram_allocation_ratio " << st.cfg.ram_allocation_ratio
        << ")";
      reject(o.str());
      continue;
    }
    ok.push_back({n.name, l});
  }
  if (ok.empty()) {
    event(self, action_id, "schedule", "error",
          "no valid host: " + std::to_string(rejected) + " node(s) rejected, none left");
    return std::nullopt;
  }
  // Lowest load first: fewest instances, then fewest vCPUs in use, then name.
  std::sort(ok.begin(), ok.end(), [](const Candidate& a, const Candidate& b) {
    return std::tie(a.load.instances, a.load.vcpus, a.name) < std::tie(b.load.instances, b.load.vcpus, b.name);
  });
  const Candidate& c = ok.front();
  event(self, action_id, "schedule", "success",
        "node " + c.name + " (" + std::to_string(c.load.instances) + " instances, " + std::to_string(c.load.vcpus) +
            " vCPUs in use; " + std::to_string(ok.size()) + " candidate(s))");
  return c.name;
}

// preflight -> (scheduled) creating -> node starts it -> created / ACTIVE.
// `in_preflight`: the record is already there (a create the controller
// takes up again after a restart).
void build(controller_pointer self, const std::string& id, int64_t action_id, bool in_preflight = false) {
  auto& st = self->state;
  auto& store = *st.store;
  std::optional<InstanceRecord> rec;
  std::optional<std::string> node;
  // Preflight, the scheduler's events and the placement are one commit (one
  // fsync): nothing outside the store happens between them.
  try {
    store.with_transaction([&] {
      if (!in_preflight) transition(self, id, action_id, SfInstanceState::preflight);
      rec = store.get_instance(id);
      node = pick_node(self, rec->spec, action_id);
      if (!node) return;
      auto r = store.get_instance(id);
      r->node = *node;
      store.put_instance(*r);
      transition(self, id, action_id, SfInstanceState::creating);
    });
  } catch (const StoreError& e) {
    note(self, "instance " + id + ": create failed in the store: " + e.detail());
    node.reset();
  }
  if (!node) {
    fail_record(self, id, action_id);
    finish(self, action_id, ActionResult::error);
    return;
  }
  const auto start = store.now();
  std::string bytes;
  rec->spec.SerializeToString(&bytes);
  self->request(st.nodes.at(*node), st.cfg.action_deadline, place_atom::value, id, bytes)
      .then(
          [self, id, action_id, start, node](const std::string&) {
            // The spawn event, created and the finished action: one commit,
            // all or nothing (the store's throwing calls, no swallowed errors).
            auto& store = *self->state.store;
            try {
              bool finished = false;
              store.with_transaction([&] {
                store.append_action_event(
                    action_id, ActionEvent{"spawn", start, store.now(), "success", "running on node " + *node});
                transition(self, id, action_id, SfInstanceState::created);
                finished = store.finish_action(action_id, ActionResult::success, VmState::active);
              });
              if (finished) observe_finished(self, action_id);
            } catch (const StoreError& e) {
              // e.g. the node was declared in error meanwhile (all of it rolled back).
              event(self, action_id, "spawn", "success", "running on node " + *node, start);
              event(self, action_id, "sf_state", "error", e.detail());
              finish(self, action_id, ActionResult::error);
            }
          },
          [self, id, action_id, start, node](caf::error& e) {
            event(self, action_id, "spawn", "error", "node " + *node + ": " + describe(e), start);
            fail_record(self, id, action_id);
            finish(self, action_id, ActionResult::error);
          });
}

// --- actions ----------------------------------------------------------------

struct NodeWork {
  const char* node_action;
  VmState success;
};

std::optional<NodeWork> node_work(Action a) {
  switch (a) {
    case Action::pause: return NodeWork{"pause", VmState::paused};
    case Action::unpause: return NodeWork{"unpause", VmState::active};
    case Action::stop: return NodeWork{"poweroff", VmState::stopped};
    case Action::start: return NodeWork{"poweron", VmState::active};
    case Action::reboot_soft: return NodeWork{"softreboot", VmState::active};
    case Action::reboot_hard: return NodeWork{"hardreboot", VmState::active};
    case Action::delete_: return NodeWork{"delete", VmState::deleted};
    case Action::soft_delete: return NodeWork{"poweroff", VmState::soft_deleted};
    case Action::restore: return NodeWork{"poweron", VmState::active};
    default: return std::nullopt;
  }
}

void complete_delete(controller_pointer self, const std::string& id, int64_t action_id) {
  try {
    auto& store = *self->state.store;
    bool finished = false;
    store.with_transaction([&] {
      finished = store.finish_action(action_id, ActionResult::success, VmState::deleted);
      if (finished) {
        transition(self, id, action_id, SfInstanceState::deleted);
        detach_instance(self, id, action_id);
      }
    });
    if (finished) observe_finished(self, action_id);
  } catch (const StoreError& e) {
    event(self, action_id, "sf_state", "error", e.detail());
    finish(self, action_id, ActionResult::error);
  }
}

bool node_reachable(controller_pointer self, const std::string& node) {
  if (node.empty() || !self->state.nodes.count(node)) return false;
  auto rec = self->state.store->get_node(node);
  return rec && (rec->state == NodeState::created || rec->state == NodeState::stopping ||
                 rec->state == NodeState::stopped);
}

void dispatch(controller_pointer self, Action a, const InstanceRecord& rec, int64_t action_id) {
  const NodeWork work = *node_work(a);
  const std::string id = rec.id;
  const std::string name = std::string("compute_") + control::to_string(a);
  if (!node_reachable(self, rec.node)) {
    const std::string why = rec.node.empty() ? "the instance has no node" : "node " + rec.node + " is not reachable";
    if (a == Action::delete_) {
      // Nova's local delete: the record goes; a VM still running there is
      // a stray for reconciliation when the node returns.
      event(self, action_id, "local_delete", "success", why);
      complete_delete(self, id, action_id);
      return;
    }
    event(self, action_id, name, "error", why);
    finish(self, action_id, ActionResult::error);
    return;
  }
  std::string bytes;
  rec.spec.SerializeToString(&bytes);
  const auto start = self->state.store->now();
  self->request(self->state.nodes.at(rec.node), self->state.cfg.action_deadline, node_act_atom::value, id,
                std::string(work.node_action), bytes)
      .then(
          [self, a, id, action_id, name, start, work](const std::string& power) {
            event(self, action_id, name, "success", "power state " + power, start);
            if (a == Action::delete_)
              complete_delete(self, id, action_id);
            else
              finish(self, action_id, ActionResult::success, work.success);
          },
          [self, a, id, action_id, name, start](caf::error& e) {
            event(self, action_id, name, "error", describe(e), start);
            if (a == Action::delete_) {
              event(self, action_id, "local_delete", "success", "the node did not complete the delete");
              complete_delete(self, id, action_id);
            } else {
              finish(self, action_id, ActionResult::error);
            }
          });
}

// --- actions that do disk or VMM work with arguments ---------------------------

// The node action behind each of them.
const char* extended_node_action(Action a) {
  switch (a) {
    case Action::resize: return "resize";
    case Action::confirm_resize: return "confirmresize";
    case Action::revert_resize: return "revertresize";
    case Action::snapshot: return "snapshot";
    case Action::backup: return "backup";
    case Action::rebuild: return "rebuild";
    case Action::rescue: return "rescue";
    case Action::unrescue: return "unrescue";
    default: return nullptr;
  }
}

std::optional<uint64_t> parse_count(const std::string& s) {
  if (s.empty() || s.size() > 18 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoull(s);
}

std::string arg_of(const Args& args, const std::string& key) {
  auto it = args.find(key);
  return it == args.end() ? std::string() : it->second;
}

// Validates the arguments before anything is recorded; fills in defaults.
// Returns a 400 message, "" when they are fine. For resize, `new_spec` is
// the spec with the new board.
std::string check_args(Action a, const InstanceRecord& rec, Args& args, v1::InstanceSpec& new_spec) {
  if (a == Action::resize) {
    const std::string vs = arg_of(args, "vcpus");
    const std::string ms = arg_of(args, "memory_mib");
    if (vs.empty() && ms.empty()) return "resize needs the new board: args vcpus and/or memory_mib";
    new_spec = rec.spec;
    if (!vs.empty()) {
      auto v = parse_count(vs);
      if (!v || *v > UINT32_MAX) return "resize: vcpus '" + vs + "' is not a number";
      new_spec.mutable_board()->set_vcpus(static_cast<uint32_t>(*v));
    }
    if (!ms.empty()) {
      auto m = parse_count(ms);
      if (!m) return "resize: memory_mib '" + ms + "' is not a number";
      new_spec.mutable_board()->set_memory_mib(*m);
    }
    if (auto problems = spec::validate(new_spec, spec::Limits{}); !problems.empty()) {
      std::string msg = "resize: invalid board:";
      for (const auto& p : problems) msg += " " + spec::to_string(p) + ";";
      msg.pop_back();
      return msg;
    }
    if (new_spec.board().vcpus() == rec.spec.board().vcpus() &&
        new_spec.board().memory_mib() == rec.spec.board().memory_mib())
      return "resize: the new board is the same as the current one";
  } else if (a == Action::snapshot) {
    const std::string n = arg_of(args, "name");
    if (!n.empty() && (n.size() > 64 || n.front() == '.' || !std::all_of(n.begin(), n.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
                       })))
      return "snapshot: name '" + n + "' must be 1..64 of [A-Za-z0-9._-], not starting with '.'";
  } else if (a == Action::backup) {
    const std::string r = arg_of(args, "rotation");
    if (!r.empty()) {
      auto n = parse_count(r);
      if (!n || *n == 0) return "backup: rotation '" + r + "' must be a number >= 1";
    }
  } else if (a == Action::rescue) {
    const std::string img = arg_of(args, "image");
    if (img.find('/') != std::string::npos) return "rescue: image '" + img + "' must name an embedded guest";
  }
  return {};
}

// The resize's capacity check on the instance's own node; the reason when the
// new board does not fit.
std::optional<std::string> resize_misfit(controller_pointer self, const InstanceRecord& rec,
                                         const v1::InstanceSpec& new_spec) {
  auto& st = self->state;
  auto node = st.store->get_node(rec.node);
  if (!node) return "node " + rec.node + " is not known";
  Load l = load_of(self, rec.node);
  // This instance's share is replaced by the larger of its old and new boards.
  const uint64_t cur_v = rec.spec.board().vcpus();
  const uint64_t cur_m = rec.spec.board().memory_mib();
  const uint64_t other_v = l.vcpus >= cur_v ? l.vcpus - cur_v : 0;
  const uint64_t other_m = l.memory_mib >= cur_m ? l.memory_mib - cur_m : 0;
  const uint64_t want_v = std::max<uint64_t>(cur_v, new_spec.board().vcpus());
  const uint64_t want_m = std::max<uint64_t>(cur_m, new_spec.board().memory_mib());
  const auto cap_v = static_cast<uint64_t>(node->vcpus * st.cfg.cpu_allocation_ratio);
  const auto cap_m = static_cast<uint64_t>(static_cast<double>(node->memory_mib) * st.cfg.ram_allocation_ratio);
  std::ostringstream o;
  if (other_v + want_v > cap_v) {
    o << "node " << rec.node << ": not enough vCPUs for the resize: " << new_spec.board().vcpus() << " requested, "
      << other_v << " of " << cap_v << " in use by other instances (" << node->vcpus << " x cpu_allocation_ratio "
      << st.cfg.cpu_allocation_ratio << ")";
    return o.str();
  }
  if (other_m + want_m > cap_m) {
    o << "node " << rec.node << ": not enough memory for the resize: " << new_spec.board().memory_mib()
      << " MiB requested, " << other_m << " of " << cap_m << " MiB in use by other instances (" << node->memory_mib
      << " MiB x ram_allocation_ratio " << st.cfg.ram_allocation_ratio << ")";
    return o.str();
  }
  return std::nullopt;
}

// The record's spec, replaced (vm_state and task_state untouched).
void put_spec(controller_pointer self, const std::string& id, const v1::InstanceSpec& spec) {
  auto& store = *self->state.store;
  auto r = store.get_instance(id);
  if (!r) return;
  r->spec = spec;
  store.put_instance(*r);
}

// True for the node's "the disk-file step failed and the VM is as it was".
bool vm_left_intact(const caf::error& e) {
  return e.category() == kErrorCategory && e.code() == static_cast<uint8_t>(ActorErrc::invalid_argument);
}

void dispatch_extended(controller_pointer self, Action a, const InstanceRecord& rec, int64_t action_id, Args args,
                       const v1::InstanceSpec& new_spec) {
  auto& st = self->state;
  const std::string id = rec.id;
  const std::string name = std::string("compute_") + control::to_string(a);
  if (!node_reachable(self, rec.node)) {
    event(self, action_id, name, "error",
          rec.node.empty() ? "the instance has no node" : "node " + rec.node + " is not reachable");
    finish(self, action_id, ActionResult::error);
    return;
  }
  v1::InstanceSpec send = rec.spec;
  try {
    if (a == Action::resize) {
      if (auto why = resize_misfit(self, rec, new_spec)) {
        event(self, action_id, "schedule", "error", *why);
        finish(self, action_id, ActionResult::reverted);
        return;
      }
      event(self, action_id, "schedule", "success",
            "node " + rec.node + " has room for " + std::to_string(new_spec.board().vcpus()) + " vCPUs, " +
                std::to_string(new_spec.board().memory_mib()) + " MiB");
      st.resizes[id] = ResizeMemo{rec.spec, rec.vm_state};
      put_spec(self, id, new_spec);
      send = new_spec;
    } else if (a == Action::revert_resize) {
      auto it = st.resizes.find(id);
      if (it == st.resizes.end()) {
        event(self, action_id, name, "error",
              "the spec before the resize is not known to this controller (it restarted since): confirm the resize "
              "instead");
        finish(self, action_id, ActionResult::reverted);
        return;
      }
      send = it->second.old_spec;
    }
  } catch (const StoreError& e) {
    st.resizes.erase(id);
    event(self, action_id, name, "error", std::string("store: ") + e.detail());
    finish(self, action_id, ActionResult::error);
    return;
  }
  std::string bytes;
  send.SerializeToString(&bytes);
  const auto start = st.store->now();
  const bool files = a == Action::snapshot || a == Action::backup || a == Action::rebuild;
  self->request(st.nodes.at(rec.node), st.cfg.action_deadline, node_act_atom::value, id,
                std::string(extended_node_action(a)), bytes, args)
      .then(
          [self, a, id, action_id, name, start, files](const std::string& power, const std::string& detail) {
            event(self, action_id, name, "success", "power state " + power, start);
            std::istringstream lines(detail);
            for (std::string line; std::getline(lines, line);)
              if (!line.empty()) event(self, action_id, files ? "disk_file" : "vmm", "success", line);
            auto& st = self->state;
            const VmState stopped_or_active = power == kPowerShutdown ? VmState::stopped : VmState::active;
            try {
              switch (a) {
                case Action::resize: finish(self, action_id, ActionResult::success, VmState::resized); return;
                case Action::confirm_resize: {
                  auto it = st.resizes.find(id);
                  const VmState to = it != st.resizes.end()
                                         ? control::success_state(a, VmState::resized, {it->second.before, false})
                                         : stopped_or_active;
                  st.resizes.erase(id);
                  finish(self, action_id, ActionResult::success, to);
                  return;
                }
                case Action::revert_resize: {
                  auto it = st.resizes.find(id);
                  VmState to = stopped_or_active;
                  if (it != st.resizes.end()) {
                    to = control::success_state(a, VmState::resized, {it->second.before, false});
                    put_spec(self, id, it->second.old_spec);
                    st.resizes.erase(it);
                  }
                  finish(self, action_id, ActionResult::success, to);
                  return;
                }
                case Action::snapshot:
                case Action::backup: finish(self, action_id, ActionResult::success); return;
                case Action::rescue: finish(self, action_id, ActionResult::success, VmState::rescued); return;
                default: finish(self, action_id, ActionResult::success, VmState::active); return;
              }
            } catch (const StoreError& e) {
              event(self, action_id, name, "error", std::string("store: ") + e.detail());
              finish(self, action_id, ActionResult::error);
            }
          },
          [self, a, id, action_id, name, start](caf::error& e) {
            event(self, action_id, name, "error", describe(e), start);
            if (a == Action::resize) {
              // The resize did not happen: the record keeps the old board.
              auto it = self->state.resizes.find(id);
              if (it != self->state.resizes.end()) {
                try {
                  put_spec(self, id, it->second.old_spec);
                } catch (const StoreError& se) {
                  event(self, action_id, name, "error", std::string("store: ") + se.detail());
                }
                self->state.resizes.erase(it);
              }
            }
            finish(self, action_id, vm_left_intact(e) ? ActionResult::reverted : ActionResult::error);
          });
}

// The act API: Nova's check, then the action runs asynchronously.
caf::result<std::string> act(controller_pointer self, const std::string& id, const std::string& name,
                             const std::string& type, Args args) {
  auto a = control::action_from_api(name, type);
  if (!a) {
    if (name == "reboot")
      return make_control_error(ControlErrc::bad_request, "reboot needs type SOFT or HARD (got '" + type + "')");
    return make_control_error(ControlErrc::bad_request, "unknown action '" + name + "'");
  }
  auto& store = *self->state.store;
  try {
    auto rec = store.get_instance(id);
    if (!rec) return make_control_error(ControlErrc::not_found, "instance " + id + " not found");
    // No guest agent: like a missing host capability, refused whatever the state.
    if (*a == Action::set_admin_password)
      return make_control_error(ControlErrc::not_implemented, std::string("Cannot '") + control::api_name(*a) +
                                                                  "' instance " + id +
                                                                  ": not implemented, needs capability guest_agent");
    if (auto refusal = control::check(*a, rec->vm_state, rec->task_state, id)) return refusal_error(*refusal);
    const bool extended = extended_node_action(*a) != nullptr;
    if (!node_work(*a) && !extended)
      return make_control_error(ControlErrc::not_implemented, std::string("Cannot '") + control::api_name(*a) +
                                                                  "' instance " + id +
                                                                  ": not implemented by this control plane");
    // A node that has not (re-)registered since this controller started, or
    // that is cut off, cannot do the work: refuse now rather than accept an
    // action that can only fail. Delete is the exception (a local delete).
    if (*a != Action::delete_ && !rec->node.empty() && !self->state.nodes.count(rec->node))
      return make_control_error(ControlErrc::unavailable, "node " + rec->node + " of instance " + id +
                                                              " is not connected to the controller; try again");
    v1::InstanceSpec new_spec;
    if (extended)
      if (auto bad = check_args(*a, *rec, args, new_spec); !bad.empty())
        return make_control_error(ControlErrc::bad_request, bad);
    const std::string request_id = new_id(self, "req-");
    if (*a == Action::snapshot && arg_of(args, "name").empty()) args["name"] = request_id;
    int64_t action_id = 0;
    try {
      action_id = store.begin_action(id, *a, request_id);
    } catch (const StoreError& e) {
      if (e.refusal()) return refusal_error(*e.refusal());
      throw;
    }
    if (extended)
      dispatch_extended(self, *a, *rec, action_id, std::move(args), new_spec);
    else
      dispatch(self, *a, *rec, action_id);
    return request_id;
  } catch (const StoreError& e) {
    return store_failed(e);
  }
}

// --- reconciliation -----------------------------------------------------------

bool expected_running(const InstanceRecord& r, const std::string& node) {
  if (r.node != node) return false;
  if (r.task_state != TaskState::none) return true;  // an action is on its way: leave it alone
  return r.sf_state == SfInstanceState::created &&
         (r.vm_state == VmState::active || r.vm_state == VmState::paused || r.vm_state == VmState::rescued ||
          r.vm_state == VmState::resized);
}

// Stops a VM the records do not want running, and logs it.
void stop_stray(controller_pointer self, const std::string& node, const std::string& id,
                const std::optional<InstanceRecord>& rec) {
  auto& store = *self->state.store;
  const std::string what =
      rec ? "node " + node + " runs it while the record says sf_state " + control::to_string(rec->sf_state) +
                ", vm_state " + control::to_string(rec->vm_state) + (rec->node != node ? ", node " + rec->node : "")
          : "node " + node + " runs it and no record exists";
  auto h = self->state.nodes.at(node);
  const bool forget = !rec || rec->sf_state == SfInstanceState::deleted;
  const std::string node_action = forget ? "delete" : "poweroff";
  int64_t action_id = 0;
  try {
    if (rec && !forget && !control::check(Action::stop, rec->vm_state, rec->task_state, id)) {
      action_id = store.begin_action(id, Action::stop, new_id(self, "reconcile-"));
    } else if (rec) {
      auto log = store.list_actions(id);
      if (!log.empty()) action_id = log.back().id;
    }
  } catch (const StoreError& e) {
    note(self, "stray " + id + ": " + e.detail());
  }
  if (action_id)
    event(self, action_id, "reconcile_stray", "running", what + "; stopping it");
  else
    note(self, "stray " + id + ": " + what + "; stopping it");
  const bool owns_action = rec && !forget && action_id && store.get_instance(id)->task_state == TaskState::powering_off;
  self->request(h, self->state.cfg.action_deadline, node_act_atom::value, id, node_action, std::string())
      .then(
          [self, id, action_id, owns_action, node](const std::string& power) {
            if (action_id) event(self, action_id, "reconcile_stray", "success", "stopped on node " + node + ": " + power);
            else note(self, "stray " + id + ": stopped on node " + node);
            if (owns_action) finish(self, action_id, ActionResult::success, VmState::stopped);
          },
          [self, id, action_id, owns_action, node](caf::error& e) {
            if (action_id) event(self, action_id, "reconcile_stray", "error", describe(e));
            else note(self, "stray " + id + ": stop on node " + node + " failed: " + describe(e));
            if (owns_action) finish(self, action_id, ActionResult::error);
          });
}

void reconcile(controller_pointer self, const std::string& node) {
  auto h = self->state.nodes.at(node);
  self->request(h, self->state.cfg.node_deadline, power_list_atom::value)
      .then(
          [self, node](const std::map<std::string, std::string>& power) {
            auto& store = *self->state.store;
            try {
              for (const auto& [id, ps] : power) {
                if (ps == kPowerShutdown) continue;
                auto rec = store.get_instance(id);
                if (!rec || !expected_running(*rec, node)) stop_stray(self, node, id, rec);
              }
              // Nova's power sync: ACTIVE on the record, nothing running on the node.
              for (const auto& r : store.list_instances_on_node(node)) {
                if (r.sf_state != SfInstanceState::created || r.vm_state != VmState::active ||
                    r.task_state != TaskState::none)
                  continue;
                auto p = power.find(r.id);
                if (p != power.end() && p->second != kPowerShutdown) continue;
                const int64_t aid = store.begin_action(r.id, Action::stop, new_id(self, "power-sync-"));
                event(self, aid, "power_sync", "success",
                      "node " + node + " runs no VM for this ACTIVE instance: recorded stopped");
                finish(self, aid, ActionResult::success, VmState::stopped);
              }
            } catch (const StoreError& e) {
              note(self, "reconcile of node " + node + ": " + e.detail());
            }
          },
          [self, node](caf::error& e) { note(self, "reconcile of node " + node + " failed: " + describe(e)); });
}

// --- drain ----------------------------------------------------------------------

void drained(controller_pointer self, const std::string& node) {
  auto& store = *self->state.store;
  try {
    for (const auto& r : store.list_instances_on_node(node)) {
      if (control::check(Action::stop, r.vm_state, r.task_state, r.id) || r.vm_state == VmState::error) continue;
      const int64_t aid = store.begin_action(r.id, Action::stop, new_id(self, "drain-"));
      event(self, aid, "drain", "success", "node " + node + " stopped its instances");
      finish(self, aid, ActionResult::success, VmState::stopped);
    }
    store.record_transition(node, NodeState::stopped);
    note(self, "node " + node + ": drained, stopped");
  } catch (const StoreError& e) {
    note(self, "drain of node " + node + ": " + e.detail());
  }
}

// --- recovery after a restart -------------------------------------------------

// What the node's power state must be once an action has done its work
// (kPowerDeleted: the node no longer runs it, or runs it shut down).
std::optional<std::string> power_after(Action a) {
  switch (a) {
    case Action::create:
    case Action::unpause:
    case Action::start:
    case Action::restore:
    case Action::reboot_soft:
    case Action::reboot_hard: return std::string(kPowerRunning);
    case Action::pause: return std::string(kPowerPaused);
    case Action::stop:
    case Action::soft_delete: return std::string(kPowerShutdown);
    case Action::delete_: return std::string(kPowerDeleted);
    default: return std::nullopt;  // resize, rescue, disk copies: the power state does not tell
  }
}

// The power state a record's vm_state stands for ("" when it says nothing).
std::string power_of(VmState s) {
  switch (s) {
    case VmState::active: return kPowerRunning;
    case VmState::paused: return kPowerPaused;
    case VmState::stopped:
    case VmState::soft_deleted: return kPowerShutdown;
    default: return {};
  }
}

// Shut down and gone count as the same thing: the VM does not run.
bool same_power(const std::string& expected, const std::string& reported) {
  const auto off = [](const std::string& p) { return p == kPowerShutdown || p == kPowerDeleted; };
  return !expected.empty() && (expected == reported || (off(expected) && off(reported)));
}

// Settles one action the previous controller left running, from what its
// node really runs (`power`: the node's power list entry, kPowerDeleted
// when absent). Success when the node shows the action's effect; reverted
// when the VM is as it was before; error otherwise. The record's
// vm_state follows (Nova: success state, unchanged, ERROR).
void settle(controller_pointer self, const control::ActionLogEntry& e, const InstanceRecord& rec,
            const std::string& power) {
  const std::string seen = "node " + rec.node + " reports " + power;
  const auto want = power_after(e.action);
  try {
    if (e.action == Action::create) {
      if (power == kPowerRunning) {
        event(self, e.id, "recover", "success", seen + ": the VM was started");
        transition(self, rec.id, e.id, SfInstanceState::created);
        finish(self, e.id, ActionResult::success, VmState::active);
      } else {
        event(self, e.id, "recover", "error", seen + ": the VM was not started");
        fail_record(self, rec.id, e.id);
        finish(self, e.id, ActionResult::error);
      }
      return;
    }
    if (e.action == Action::delete_) {
      if (power == kPowerDeleted) {  // shut down but still known: its files are still there
        event(self, e.id, "recover", "success", seen + ": the VM is gone");
        complete_delete(self, rec.id, e.id);
      } else {
        event(self, e.id, "recover", "running", seen + ": sending the delete again");
        dispatch(self, Action::delete_, rec, e.id);
      }
      return;
    }
    if (want && same_power(*want, power)) {
      event(self, e.id, "recover", "success", seen + ": the action took effect");
      finish(self, e.id, ActionResult::success, node_work(e.action) ? std::optional(node_work(e.action)->success)
                                                                    : std::nullopt);
      return;
    }
    // Disk copies leave the VM as it was (paused copies are resumed), so
    // the only thing lost is the copy: the user can ask again. A power
    // action whose VM still has the power state of the record's vm_state
    // did not happen.
    const bool copy_only =
        e.action == Action::snapshot || e.action == Action::backup || e.action == Action::confirm_resize;
    const bool vm_as_before = copy_only || (want && same_power(power_of(rec.vm_state), power));
    if (vm_as_before) {
      event(self, e.id, "recover", "error", seen + ": the action did not take effect; the VM is as it was");
      finish(self, e.id, ActionResult::reverted);
    } else {
      event(self, e.id, "recover", "error",
            seen + ": the action was interrupted by the controller restart and its outcome is unknown");
      finish(self, e.id, ActionResult::error);
    }
  } catch (const StoreError& err) {
    event(self, e.id, "recover", "error", std::string("store: ") + err.detail());
    finish(self, e.id, ActionResult::error);
  }
}

// Every action the previous controller left running gets finished or
// failed: unplaced creates are scheduled again; the others are settled
// from their node's power list once the nodes had recovery_grace to
// re-register. A node that did not come back fails its actions.
void recover(controller_pointer self) {
  auto& st = self->state;
  std::vector<control::ActionLogEntry> running;
  try {
    running = st.store->list_running_actions();
  } catch (const StoreError& e) {
    note(self, std::string("recovery: cannot list running actions: ") + e.detail());
    return;
  }
  // Only what the previous controller left; this one's actions have their deadlines.
  std::erase_if(running, [&](const control::ActionLogEntry& e) { return !st.inherited.count(e.id); });
  st.inherited.clear();
  std::map<std::string, std::vector<std::pair<control::ActionLogEntry, InstanceRecord>>> by_node;
  for (auto& e : running) {
    std::optional<InstanceRecord> rec;
    try {
      rec = st.store->get_instance(e.instance_id);
    } catch (const StoreError& err) {
      note(self, "recovery of action " + e.request_id + ": " + err.detail());
      continue;
    }
    if (!rec) continue;
    event(self, e.id, "controller_restart", "running", "the controller restarted while this action was in flight");
    if (e.action == Action::create &&
        (rec->sf_state == SfInstanceState::initial || rec->sf_state == SfInstanceState::preflight)) {
      build(self, rec->id, e.id, rec->sf_state == SfInstanceState::preflight);
      continue;
    }
    if (rec->node.empty() || !st.nodes.count(rec->node)) {
      event(self, e.id, "recover", "error",
            rec->node.empty() ? std::string("the instance has no node")
                              : "node " + rec->node + " did not check in after the controller restart");
      if (e.action == Action::create) fail_record(self, rec->id, e.id);
      if (e.action == Action::delete_)
        complete_delete(self, rec->id, e.id);
      else
        finish(self, e.id, ActionResult::error);
      continue;
    }
    by_node[rec->node].emplace_back(std::move(e), std::move(*rec));
  }
  for (auto& [node, pending] : by_node) {
    auto items = std::make_shared<std::vector<std::pair<control::ActionLogEntry, InstanceRecord>>>(std::move(pending));
    self->request(st.nodes.at(node), st.cfg.node_deadline, power_list_atom::value)
        .then(
            [self, items](const std::map<std::string, std::string>& power) {
              for (const auto& [e, rec] : *items) {
                auto p = power.find(rec.id);
                settle(self, e, rec, p == power.end() ? std::string(kPowerDeleted) : p->second);
              }
            },
            [self, items, node = node](caf::error& err) {
              for (const auto& [e, rec] : *items) {
                event(self, e.id, "recover", "error", "node " + node + ": power list: " + describe(err));
                if (e.action == Action::create) fail_record(self, rec.id, e.id);
                finish(self, e.id, ActionResult::error);
              }
            });
  }
}

// --- metrics ---------------------------------------------------------------------

// The controller's own families (records, nodes, actions); the nodes'
// fan-out samples are appended by the caller.
std::string render_metrics(controller_pointer self) {
  auto& st = self->state;
  std::ostringstream out;
  std::map<std::string, uint64_t> vm, record, task;
  for (const auto& r : st.store->list_instances()) {
    ++vm[control::to_string(r.vm_state)];
    ++record[control::to_string(r.sf_state)];
    if (r.task_state != TaskState::none) ++task[control::to_string(r.task_state)];
  }
  auto gauge = [&out](const std::string& name, const std::string& help, const std::string& label,
                      const std::map<std::string, uint64_t>& values) {
    out << metric_header(name, "gauge", help);
    for (const auto& [k, v] : values) out << name << "{" << label << "=\"" << escape_label(k) << "\"} " << v << "\n";
  };
  gauge("apiary_instances", "Instance records by Nova vm_state.", "vm_state", vm);
  gauge("apiary_instance_records", "Instance records by Shaken Fist record state.", "record_state", record);
  gauge("apiary_instance_tasks", "Instances with a task in flight, by Nova task_state.", "task_state", task);
  std::map<std::string, uint64_t> node_states;
  const auto nodes = st.store->list_nodes();
  for (const auto& n : nodes) ++node_states[control::to_string(n.state)];
  gauge("apiary_nodes", "Node records by state.", "state", node_states);
  out << metric_header("apiary_node_checkin_age_seconds", "gauge", "Time since the node's last check-in.");
  const auto now = st.store->now();
  for (const auto& n : nodes)
    out << "apiary_node_checkin_age_seconds{node=\"" << escape_label(n.name) << "\"} "
        << static_cast<double>(std::max<int64_t>(0, now - n.last_checkin)) / 1000.0 << "\n";
  out << metric_header("apiary_action_duration_seconds", "histogram",
                       "Time from accepting an action to its end, by Nova action (since the controller started).");
  out << st.action_latency->render("apiary_action_duration_seconds");
  out << metric_header("apiary_actions_finished_total", "counter",
                       "Actions finished since the controller started, by action and result.");
  for (const auto& [k, v] : st.actions_finished)
    out << "apiary_actions_finished_total{action=\"" << escape_label(k.first) << "\",result=\"" << escape_label(k.second)
        << "\"} " << v << "\n";
  return out.str();
}

// The create API: validate, write the record (initial, building, action
// "create") and start building it. A non-empty `request_id` is the client's
// idempotency key: a create with a key already used answers the instance
// that key created (or 409 when another action used it).
caf::result<std::string> create_instance(controller_pointer self, const std::string& bytes,
                                         const std::string& request_id) {
  if (!request_id.empty()) {
    const bool valid = request_id.size() <= 64 && std::all_of(request_id.begin(), request_id.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    });
    if (!valid)
      return make_control_error(ControlErrc::bad_request,
                                "request_id '" + request_id.substr(0, 80) + "' must be 1..64 of [A-Za-z0-9._-]");
    try {
      if (auto prior = self->state.store->find_action(request_id)) {
        if (prior->action != Action::create)
          return make_control_error(ControlErrc::conflict, "request_id " + request_id + " was used by a '" +
                                                               control::to_string(prior->action) + "' action of " +
                                                               prior->instance_id);
        return prior->instance_id;
      }
    } catch (const StoreError& e) {
      return store_failed(e);
    }
  }
  v1::InstanceSpec spec;
  if (!spec.ParseFromString(bytes))
    return make_control_error(ControlErrc::bad_request, "the instance spec does not parse");
  spec::apply_defaults(spec);
  if (auto problems = spec::validate(spec, spec::Limits{}); !problems.empty()) {
    std::string msg = "invalid instance spec:";
    for (const auto& p : problems) msg += " " + spec::to_string(p) + ";";
    msg.pop_back();
    return make_control_error(ControlErrc::bad_request, msg);
  }
  auto& store = *self->state.store;
  std::vector<std::string> networks;  // ids, in NIC order
  try {
    for (int i = 0; i < spec.devices().nics_size(); ++i) {
      std::string why;
      auto net = resolve_network(store, spec.devices().nics(i).network(), why);
      if (!net)
        return make_control_error(ControlErrc::bad_request,
                                  "invalid instance spec: devices.nics[" + std::to_string(i) + "].network: " + why);
      networks.push_back(net->id);
    }
  } catch (const StoreError& e) {
    return store_failed(e);
  }
  InstanceRecord r;
  r.id = new_id(self, "i-");
  r.name = spec.name();
  r.spec = spec;
  int64_t action_id = 0;
  try {
    store.with_transaction([&] {
      store.put_instance(r);
      for (const auto& net : networks) store.attach(net, r.id);
      action_id = store.begin_action(r.id, Action::create, request_id.empty() ? new_id(self, "req-") : request_id);
    });
  } catch (const StoreError& e) {
    return store_failed(e);
  }
  build(self, r.id, action_id);
  return r.id;
}

controller_actor::behavior_type controller_impl(controller_pointer self, ControllerConfig cfg,
                                                std::shared_ptr<control::StateStore> store) {
  auto& st = self->state;
  st.cfg = std::move(cfg);
  st.store = std::move(store);
  st.rng.seed(st.cfg.id_seed ? st.cfg.id_seed : std::random_device{}());
  self->delayed_send(self, st.cfg.sweep_interval, sweep_atom::value);
  self->delayed_send(self, st.cfg.purge_interval, purge_atom::value);
  // A node actor that is gone (its process died, the connection dropped)
  // is not connected any more: actions on its instances answer 503 instead
  // of failing against a dead peer. Its record is left to the silence rule.
  self->set_down_handler([self](caf::down_msg& m) {
    auto& nodes = self->state.nodes;
    for (auto it = nodes.begin(); it != nodes.end(); ++it) {
      if (it->second.address() != m.source) continue;
      note(self, "node " + it->first + ": disconnected (" + describe(m.reason) + ")");
      nodes.erase(it);
      return;
    }
  });
  // Actions a previous controller left running are settled once the nodes
  // had time to register again.
  try {
    for (const auto& e : st.store->list_running_actions()) st.inherited.insert(e.id);
  } catch (const StoreError& e) {
    note(self, std::string("recovery: cannot list running actions: ") + e.detail());
  }
  if (!st.inherited.empty()) self->delayed_send(self, st.cfg.recovery_grace, recover_atom::value);
  return {
      [=](create_atom, const std::string& bytes) -> caf::result<std::string> {
        return create_instance(self, bytes, std::string());
      },
      [=](create_atom, const std::string& bytes, const std::string& request_id) -> caf::result<std::string> {
        return create_instance(self, bytes, request_id);
      },
      [=](console_of_atom, const std::string& id) -> caf::result<caf::actor> {
        auto& st = self->state;
        std::optional<InstanceRecord> rec;
        try {
          rec = st.store->get_instance(id);
        } catch (const StoreError& e) {
          return store_failed(e);
        }
        if (!rec) return make_control_error(ControlErrc::not_found, "instance " + id + " not found");
        if (rec->node.empty() || !st.nodes.count(rec->node))
          return make_control_error(ControlErrc::unavailable, "instance " + id + " is not on a connected node");
        auto rp = self->make_response_promise<caf::actor>();
        self->request(st.nodes.at(rec->node), st.cfg.node_deadline, console_of_atom::value, id)
            .then([rp](const caf::actor& console) mutable { rp.deliver(console); },
                  [rp, id](caf::error& e) mutable {
                    if (e.category() == kErrorCategory)
                      rp.deliver(make_control_error(ControlErrc::conflict,
                                                    "instance " + id + " is not running: " + describe(e)));
                    else
                      rp.deliver(make_control_error(ControlErrc::unavailable,
                                                    "the node of instance " + id + " did not answer: " + describe(e)));
                  });
        return rp;
      },
      [=](metrics_atom) {
        auto rp = self->make_response_promise<std::string>();
        auto& st = self->state;
        // The controller's families now; the nodes' fan-out samples as they
        // answer (each within a short deadline: a silent node is "down").
        struct Scrape {
          std::string own;
          std::string samples;
          std::map<std::string, bool> up;
          size_t pending = 0;
          caf::typed_response_promise<std::string> rp;
          void one_done() {
            if (--pending > 0) return;
            std::string out = std::move(own);
            out += metric_header("apiary_node_scrape_up", "gauge", "1 if the node answered this scrape, else 0.");
            for (const auto& [n, ok] : up)
              out += "apiary_node_scrape_up{node=\"" + escape_label(n) + "\"} " + (ok ? "1" : "0") + "\n";
            out += metric_header("apiary_fanout_duration_seconds", "histogram",
                                 "Duration of one instance fan-out phase (every vCPU or device acknowledged), by node "
                                 "and phase.");
            out += samples;
            rp.deliver(std::move(out));
          }
        };
        auto scrape = std::make_shared<Scrape>();
        scrape->rp = rp;
        try {
          scrape->own = render_metrics(self);
        } catch (const StoreError& e) {
          rp.deliver(store_failed(e));
          return rp;
        }
        scrape->pending = st.nodes.size() + 1;
        const auto deadline = std::min<std::chrono::milliseconds>(st.cfg.node_deadline, std::chrono::seconds(2));
        for (const auto& [name, h] : st.nodes) {
          self->request(h, deadline, metrics_atom::value)
              .then(
                  [scrape, name = name](const std::string& text) {
                    scrape->up[name] = true;
                    scrape->samples += text;
                    scrape->one_done();
                  },
                  [scrape, name = name](caf::error&) {
                    scrape->up[name] = false;
                    scrape->one_done();
                  });
        }
        scrape->one_done();  // the controller's own part
        return rp;
      },
      [=](recover_atom) { recover(self); },
      [=](list_atom) -> caf::result<std::vector<InstanceInfo>> {
        try {
          std::vector<InstanceInfo> out;
          for (const auto& r : self->state.store->list_instances()) out.push_back(to_info(r));
          return out;
        } catch (const StoreError& e) {
          return store_failed(e);
        }
      },
      [=](get_atom, const std::string& id) -> caf::result<InstanceInfo> {
        try {
          auto r = self->state.store->get_instance(id);
          if (!r) return make_control_error(ControlErrc::not_found, "instance " + id + " not found");
          return to_info(*r);
        } catch (const StoreError& e) {
          return store_failed(e);
        }
      },
      [=](act_atom, const std::string& id, const std::string& name, const std::string& type)
          -> caf::result<std::string> { return act(self, id, name, type, {}); },
      [=](act_atom, const std::string& id, const std::string& name, const std::string& type, const Args& args)
          -> caf::result<std::string> { return act(self, id, name, type, args); },
      [=](actions_atom, const std::string& id) -> caf::result<std::vector<ActionInfo>> {
        try {
          auto& store = *self->state.store;
          if (!store.get_instance(id)) return make_control_error(ControlErrc::not_found, "instance " + id + " not found");
          std::vector<ActionInfo> out;
          for (const auto& e : store.list_actions(id)) {
            ActionInfo ai{e.request_id, control::to_string(e.action), e.start, e.finish.value_or(-1),
                          control::to_string(e.result), {}};
            for (const auto& ev : e.events)
              ai.events.push_back({ev.name, ev.start, ev.finish.value_or(-1), ev.result, ev.detail});
            out.push_back(std::move(ai));
          }
          return out;
        } catch (const StoreError& e) {
          return store_failed(e);
        }
      },
      [=](nodes_atom) -> caf::result<std::vector<NodeInfo>> {
        try {
          std::vector<NodeInfo> out;
          for (const auto& n : self->state.store->list_nodes())
            out.push_back({n.name, control::to_string(n.state), n.last_checkin, n.vcpus, n.memory_mib, n.instances,
                           std::max<int64_t>(0, self->state.store->now() - n.last_checkin),
                           self->state.cannot_run.count(n.name) ? self->state.cannot_run.at(n.name) : ""});
          return out;
        } catch (const StoreError& e) {
          return store_failed(e);
        }
      },
      [=](drain_atom, const std::string& node) -> caf::result<ack_atom> {
        auto& st = self->state;
        try {
          auto rec = st.store->get_node(node);
          if (!rec || !st.nodes.count(node))
            return make_control_error(ControlErrc::not_found, "node " + node + " not found");
          st.store->record_transition(node, NodeState::stopping);
        } catch (const StoreError& e) {
          if (e.code() == control::StoreErrc::transition_refused)
            return make_control_error(ControlErrc::conflict, e.detail());
          return store_failed(e);
        }
        self->request(st.nodes.at(node), st.cfg.action_deadline, drain_atom::value)
            .then([self, node](ack_atom) { drained(self, node); },
                  [self, node](caf::error& e) { note(self, "drain of node " + node + " failed: " + describe(e)); });
        return ack_atom::value;
      },
      [=](cluster_log_atom) -> std::vector<std::string> { return self->state.cluster_log; },
      [=](net_create_atom, const std::string& name, const std::string& cidr) -> caf::result<std::string> {
        if (name.empty()) return make_control_error(ControlErrc::bad_request, "a network needs a name");
        if (!cidr.empty() && !valid_cidr(cidr))
          return make_control_error(ControlErrc::bad_request, "cidr '" + cidr + "' is not of the form a.b.c.d/n");
        auto& store = *self->state.store;
        NetworkRecord n;
        n.id = new_id(self, "net-");
        n.name = name;
        n.cidr = cidr;
        try {
          // No data plane to set up: initial -> created at once.
          store.with_transaction([&] {
            store.put_network(n);
            store.record_transition(n.id, NetworkState::created);
          });
        } catch (const StoreError& e) {
          return store_failed(e);
        }
        return n.id;
      },
      [=](net_list_atom) -> caf::result<std::vector<NetworkInfo>> {
        try {
          auto& store = *self->state.store;
          std::vector<NetworkInfo> out;
          for (const auto& n : store.list_networks()) out.push_back(to_info(store, n));
          return out;
        } catch (const StoreError& e) {
          return store_failed(e);
        }
      },
      [=](net_get_atom, const std::string& id) -> caf::result<NetworkInfo> {
        try {
          auto& store = *self->state.store;
          auto n = store.get_network(id);
          if (!n) return make_control_error(ControlErrc::not_found, "network " + id + " not found");
          return to_info(store, *n);
        } catch (const StoreError& e) {
          return store_failed(e);
        }
      },
      [=](net_delete_atom, const std::string& id) -> caf::result<NetworkInfo> {
        try {
          auto& store = *self->state.store;
          auto n = store.get_network(id);
          if (!n) return make_control_error(ControlErrc::not_found, "network " + id + " not found");
          if (n->state == NetworkState::deleted)
            return make_control_error(ControlErrc::conflict, "network " + id + " is already deleted");
          if (n->state != NetworkState::delete_wait) {
            const bool attached = !store.attachments_of_network(id).empty();
            // An error network is deleted whatever is attached (its
            // attachments go when the record is purged).
            const NetworkState to =
                attached && n->state != NetworkState::error ? NetworkState::delete_wait : NetworkState::deleted;
            store.record_transition(id, to);
            note(self, "network " + id + ": " + control::to_string(n->state) + " -> " + control::to_string(to));
            n = store.get_network(id);
          }
          return to_info(store, *n);
        } catch (const StoreError& e) {
          if (e.code() == control::StoreErrc::transition_refused)
            return make_control_error(ControlErrc::conflict, e.detail());
          return store_failed(e);
        }
      },
      [=](purge_atom) {
        auto& st = self->state;
        try {
          const auto c = st.store->purge_deleted_after(st.cfg.cleaner_delay);
          if (c.instances || c.networks)
            note(self, "purge: " + std::to_string(c.instances) + " instance(s), " + std::to_string(c.networks) +
                           " network(s) deleted more than " + std::to_string(st.cfg.cleaner_delay.count()) + " s ago");
        } catch (const StoreError& e) {
          note(self, std::string("purge failed: ") + e.detail());
        }
        self->delayed_send(self, st.cfg.purge_interval, purge_atom::value);
      },
      [=](checkin_atom, const std::string& name, uint32_t vcpus, uint64_t memory_mib, uint32_t instances,
          const caf::actor& node, const std::string& cannot_run) -> caf::result<ack_atom> {
        auto& st = self->state;
        if (cannot_run != st.cannot_run[name]) {
          note(self, "node " + name + (cannot_run.empty() ? ": can run instances again"
                                                          : ": cannot run instances: " + cannot_run));
          st.cannot_run[name] = cannot_run;
        }
        std::optional<NodeState> before;
        try {
          if (auto prev = st.store->get_node(name)) before = prev->state;
          st.store->node_checkin(name, vcpus, memory_mib, instances);
        } catch (const StoreError& e) {
          if (e.code() == control::StoreErrc::transition_refused)
            return make_control_error(ControlErrc::conflict, e.detail());
          return store_failed(e);
        }
        auto handle = caf::actor_cast<node_actor>(node);
        auto known = st.nodes.find(name);
        // A node process that restarted (a new actor), or the first check-in
        // since this controller started: what it runs may differ from the
        // records.
        const bool new_incarnation = known == st.nodes.end() || known->second != handle;
        st.nodes[name] = handle;
        if (new_incarnation) self->monitor(handle);  // a dead node is not "connected" (503), see the down handler
        if (before && (*before == NodeState::missing || *before == NodeState::error)) {
          note(self, "node " + name + ": returned from " + control::to_string(*before) + ", reconciling");
          reconcile(self, name);
        } else if (before && new_incarnation) {
          note(self, "node " + name + ": registered (again), reconciling");
          reconcile(self, name);
        }
        return ack_atom::value;
      },
      [=](sweep_atom) {
        auto& st = self->state;
        try {
          for (const auto& c : st.store->sweep_silent_nodes(st.cfg.checkin_max)) {
            note(self, "node " + c.name + ": " + control::to_string(c.from) + " -> " + control::to_string(c.to));
            for (const auto& id : c.instances_errored) {
              auto rec = st.store->get_instance(id);
              if (rec && control::is_transitional_error(rec->sf_state))
                st.store->record_transition(id, SfInstanceState::error);
              note(self, "instance " + id + ": error (node " + c.name + " in error)");
            }
          }
        } catch (const StoreError& e) {
          note(self, std::string("sweep failed: ") + e.detail());
        }
        self->delayed_send(self, st.cfg.sweep_interval, sweep_atom::value);
      },
  };
}

}  // namespace

controller_actor spawn_controller(caf::actor_system& sys, ControllerConfig config) {
  // The store's clock is the actor system's clock (simulated time under the
  // test coordinator), anchored to the Unix epoch once.
  using namespace std::chrono;
  const auto anchor = config.clock_epoch_ms
                          ? *config.clock_epoch_ms
                          : duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count() -
                                duration_cast<milliseconds>(sys.clock().now().time_since_epoch()).count();
  control::StoreOptions options;
  options.test_skip_error_fanout = config.test_skip_error_fanout;
  caf::actor_system* s = &sys;
  options.clock = [s, anchor] {
    return anchor + duration_cast<milliseconds>(s->clock().now().time_since_epoch()).count();
  };
  auto store = std::make_shared<control::StateStore>(control::StateStore::open(config.store_path, options));
  return sys.spawn(controller_impl, std::move(config), std::move(store));
}

}  // namespace apiary::actors
