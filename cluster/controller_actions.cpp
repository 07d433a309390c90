// Nova's actions on an existing instance: the precondition check, then the
// node work (plain power actions, and those with arguments: resize,
// rebuild, snapshots...) and how each ends.
#include "cluster/controller_internal.hpp"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cinttypes>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

namespace apiary::actors::controller_detail {

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

// No answer came back: the node may have done the work all the same.
static bool answer_lost(const caf::error& e) {
  // (A node proxy that goes down with its connection fails its pending
  // requests with request_receiver_down.)
  return e == caf::sec::request_timeout || e == caf::sec::request_receiver_down;
}

// The node refused the action in the VM's current state and did nothing:
// its instance was still busy with something else (a reboot the controller
// gave up waiting for, a pause done behind its back). Nova's compute would
// refuse such a call and leave vm_state alone; calling it ERROR would mark a
// VM that runs on as broken (found by the chaos suite: a pause refused while
// the instance was still rebooting set vm_state error).
static bool is_node_error(const caf::error& e, ActorErrc code) {
  return e.category() == kErrorCategory && e.code() == static_cast<uint8_t>(code);
}
static bool node_refused(const caf::error& e) { return is_node_error(e, ActorErrc::wrong_state); }

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
          [self, a, id, action_id, name, start, work, node = rec.node, before = rec.vm_state](caf::error& e) {
            event(self, action_id, name, "error", describe(e), start);
            if (a == Action::delete_) {
              event(self, action_id, "local_delete", "success", "the node did not complete the delete");
              complete_delete(self, id, action_id);
              // A VM the node still runs is a stray now: reconciliation
              // stops it (found by the chaos suite: a delete whose answer
              // was lost left its VM running with no record).
              if (node_reachable(self, node)) reconcile(self, node);
            } else if (const bool refused = node_refused(e); refused || answer_lost(e)) {
              settle_from_node(self, id, node, action_id, work.success, before, refused);
            } else {
              finish(self, action_id, ActionResult::error);  // the node said what went wrong
            }
          });
}

// An action whose node did not answer (a lost reply, a connection that
// dropped and came back, a deadline) may or may not have been done. Before
// calling it an error, ask the node what the VM's power state is now: the
// action's target means it was done; the state before it means it was not
// (reverted: the record keeps its vm_state). Only an answer that is neither,
// or no answer at all, leaves the instance in ERROR. Found by the chaos suite:
// a stop whose message was lost with a BASP connection ended in ERROR while
// the VM kept running on its node. A refused action is settled the same way:
// the record then says what the node runs (already in the action's target:
// success; as it was: reverted).
void settle_from_node(controller_pointer self, const std::string& id, const std::string& node, int64_t action_id,
                      VmState success, VmState before, bool refused) {
  if (!node_reachable(self, node)) {
    finish(self, action_id, ActionResult::error);
    return;
  }
  const auto start = self->state.store->now();
  self->request(self->state.nodes.at(node), self->state.cfg.node_deadline, power_list_atom::value)
      .then(
          [self, id, node, action_id, success, before, refused,
           start](const std::map<std::string, std::string>& power) {
            auto p = power.find(id);
            const std::string ps = p == power.end() ? std::string(kPowerDeleted) : p->second;
            const std::optional<VmState> now = ps == kPowerRunning  ? std::optional(VmState::active)
                                               : ps == kPowerPaused ? std::optional(VmState::paused)
                                               : ps == kPowerShutdown ? std::optional(VmState::stopped)
                                               : ps == kPowerSuspended ? std::optional(VmState::suspended)
                                                                      : std::nullopt;
            if (now == success && success != before) {
              event(self, action_id, "power_check", "success",
                    "node " + node + " reports it " + ps + (refused ? ": it was already" : ": done"), start);
              finish(self, action_id, ActionResult::success, success);
            } else if (now == before) {
              // (For a reboot, whose state is the same before and after, it
              // cannot tell whether it happened; the VM runs either way.)
              event(self, action_id, "power_check", "success",
                    "node " + node + " reports it " + ps +
                        (refused ? ": not done (refused)"
                         : success == before ? ": whether it was done is unknown"
                                             : ": not done") +
                        "; the record keeps its state",
                    start);
              finish(self, action_id, ActionResult::reverted);
            } else {
              event(self, action_id, "power_check", "error", "node " + node + " reports it " + ps, start);
              finish(self, action_id, ActionResult::error);
            }
          },
          [self, action_id, start](caf::error& e) {
            event(self, action_id, "power_check", "error", describe(e), start);
            finish(self, action_id, ActionResult::error);
          });
}

// --- actions that do disk or VMM work with arguments ---------------------------

// The node action behind each of them.
static const char* extended_node_action(Action a) {
  switch (a) {
    case Action::resize: return "resize";
    case Action::confirm_resize: return "confirmresize";
    case Action::revert_resize: return "revertresize";
    case Action::snapshot: return "snapshot";
    case Action::backup: return "backup";
    case Action::rebuild: return "rebuild";
    case Action::rescue: return "rescue";
    case Action::unrescue: return "unrescue";
    case Action::suspend: return "suspend";
    case Action::resume: return "resume";
    case Action::shelve: return "shelve";
    case Action::shelve_offload: return "shelveoffload";
    case Action::unshelve: return "unshelve";
    default: return nullptr;
  }
}

static std::optional<uint64_t> parse_count(const std::string& s) {
  if (s.empty() || s.size() > 18 || !std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  return std::stoull(s);
}

static std::string arg_of(const Args& args, const std::string& key) {
  auto it = args.find(key);
  return it == args.end() ? std::string() : it->second;
}

// Validates the arguments before anything is recorded; fills in defaults.
// Returns a 400 message, "" when they are fine. For resize, `new_spec` is
// the spec with the new board.
static std::string check_args(Action a, const InstanceRecord& rec, Args& args, v1::InstanceSpec& new_spec) {
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
static std::optional<std::string> resize_misfit(controller_pointer self, const InstanceRecord& rec,
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
static void put_spec(controller_pointer self, const std::string& id, const v1::InstanceSpec& spec) {
  auto& store = *self->state.store;
  auto r = store.get_instance(id);
  if (!r) return;
  r->spec = spec;
  store.put_instance(*r);
}

// True for the node's "the disk-file step failed and the VM is as it was".
static bool vm_left_intact(const caf::error& e) { return is_node_error(e, ActorErrc::invalid_argument); }

// Where an instance's shelf is: <shelf_dir>/<id>.
static std::string shelf_of(controller_pointer self, const std::string& id) {
  std::string dir = self->state.cfg.shelf_dir;
  if (dir.empty()) {
    std::error_code ec;
    auto tmp = std::filesystem::temp_directory_path(ec);
    dir = ((ec ? std::filesystem::path("/tmp") : tmp) / "apiary-shelf").string();
  }
  return dir + "/" + id;
}

// The record's node, replaced (an offload clears it: its resources are free;
// an unshelve places it anew).
static void set_node(controller_pointer self, const std::string& id, const std::string& node) {
  auto& store = *self->state.store;
  auto r = store.get_instance(id);
  if (!r || r->node == node) return;
  r->node = node;
  store.put_instance(*r);
}

static void dispatch_extended(controller_pointer self, Action a, const InstanceRecord& rec_in, int64_t action_id,
                              Args args, const v1::InstanceSpec& new_spec) {
  auto& st = self->state;
  InstanceRecord rec = rec_in;
  const std::string id = rec.id;
  const std::string name = std::string("compute_") + control::to_string(a);
  if (a == Action::unshelve && rec.node.empty()) {
    // Offloaded: scheduled anew, like a create (or on the named host).
    std::string decision;
    auto node = choose_node(self, rec.spec, arg_of(args, "host"), decision);
    if (!node) {
      event(self, action_id, "schedule", "error", decision);
      finish(self, action_id, ActionResult::reverted);
      return;
    }
    try {
      set_node(self, id, *node);
    } catch (const StoreError& e) {
      event(self, action_id, "schedule", "error", std::string("store: ") + e.detail());
      finish(self, action_id, ActionResult::error);
      return;
    }
    event(self, action_id, "schedule", "success", decision);
    rec.node = *node;
  }
  if (a == Action::shelve || a == Action::unshelve) args["shelf"] = shelf_of(self, id);
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
  const bool files = a == Action::snapshot || a == Action::backup || a == Action::rebuild || a == Action::suspend ||
                     a == Action::resume || a == Action::shelve || a == Action::unshelve;
  self->request(st.nodes.at(rec.node), st.cfg.action_deadline, node_act_atom::value, id,
                std::string(extended_node_action(a)), bytes, args)
      .then(
          [self, a, id, action_id, name, start, files, node = rec.node](const std::string& power,
                                                                       const std::string& detail) {
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
                case Action::suspend: finish(self, action_id, ActionResult::success, VmState::suspended); return;
                case Action::shelve_offload:
                  set_node(self, id, "");
                  finish(self, action_id, ActionResult::success, VmState::shelved_offloaded);
                  return;
                case Action::shelve: {
                  if (!st.cfg.shelve_offloads || !node_reachable(self, node)) {
                    finish(self, action_id, ActionResult::success, VmState::shelved);
                    return;
                  }
                  // Nova's shelved_offload_time = 0: offload at once.
                  std::string spec_bytes;
                  self->request(st.nodes.at(node), st.cfg.action_deadline, node_act_atom::value, id,
                                std::string("shelveoffload"), spec_bytes, Args{})
                      .then(
                          [self, id, action_id](const std::string&, const std::string& d) {
                            event(self, action_id, "offload", "success", d);
                            try {
                              set_node(self, id, "");
                              finish(self, action_id, ActionResult::success, VmState::shelved_offloaded);
                            } catch (const StoreError& e) {
                              event(self, action_id, "offload", "error", std::string("store: ") + e.detail());
                              finish(self, action_id, ActionResult::success, VmState::shelved);
                            }
                          },
                          [self, action_id](caf::error& e) {
                            event(self, action_id, "offload", "error", describe(e) + "; it stays shelved on its node");
                            finish(self, action_id, ActionResult::success, VmState::shelved);
                          });
                  return;
                }
                default: finish(self, action_id, ActionResult::success, VmState::active); return;
              }
            } catch (const StoreError& e) {
              event(self, action_id, name, "error", std::string("store: ") + e.detail());
              finish(self, action_id, ActionResult::error);
            }
          },
          [self, a, id, action_id, name, start, placed = rec_in.node.empty() && a == Action::unshelve](caf::error& e) {
            event(self, action_id, name, "error", describe(e), start);
            // (An answer lost on the way may be a VM that runs there after
            // all: the record keeps that node, for reconciliation to see.)
            if (placed && !answer_lost(e)) {
              // The unshelve did not land: the instance is offloaded as before.
              try {
                set_node(self, id, "");
              } catch (const StoreError& se) {
                event(self, action_id, name, "error", std::string("store: ") + se.detail());
              }
            }
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

// --- live migration -------------------------------------------------------------

// The first line of a node's detail, for an event.
static std::string first_line(const std::string& s) { return s.substr(0, s.find('\n')); }

// A migration whose end is not known (the source says commit went out but
// the destination never confirmed, or the source's answer was lost): the
// destination's power list decides. Running there: the switchover happened,
// the source's paused copy goes. Not running: the destination's VMM goes
// and the source resumes. Either way the guest ends up on exactly one node.
void settle_migration(controller_pointer self, const std::string& id, int64_t action_id, const std::string& source,
                      const std::string& dest, bool source_paused) {
  auto& st = self->state;
  if (!node_reachable(self, dest)) {
    event(self, action_id, "migration_settle", "error", "node " + dest + " is not reachable; reconciliation decides");
    finish(self, action_id, ActionResult::error);
    return;
  }
  self->request(st.nodes.at(dest), st.cfg.node_deadline, power_list_atom::value)
      .then(
          [self, id, action_id, source, dest, source_paused](const std::map<std::string, std::string>& power) {
            auto& st = self->state;
            auto p = power.find(id);
            const bool runs_there = p != power.end() && p->second == kPowerRunning;
            const std::string drop_on = runs_there ? source : dest;
            event(self, action_id, "migration_settle", "success",
                  runs_there ? "node " + dest + " runs the guest: switched over; the source's copy is dropped"
                             : "node " + dest + " does not run the guest: it stays on node " + source);
            if (runs_there) {
              try {
                set_node(self, id, dest);
              } catch (const StoreError& e) {
                event(self, action_id, "migration_settle", "error", std::string("store: ") + e.detail());
                finish(self, action_id, ActionResult::error);
                return;
              }
            }
            if (node_reachable(self, drop_on))
              self->request(st.nodes.at(drop_on), st.cfg.action_deadline, node_act_atom::value, id,
                            std::string("delete"), std::string())
                  .then([](const std::string&) {}, [](caf::error&) {});
            if (runs_there) return finish(self, action_id, ActionResult::success);
            if (!source_paused) return finish(self, action_id, ActionResult::reverted);
            if (!node_reachable(self, source)) return finish(self, action_id, ActionResult::error);
            self->request(st.nodes.at(source), st.cfg.action_deadline, node_act_atom::value, id,
                          std::string("unpause"), std::string())
                .then(
                    [self, action_id](const std::string& ps) {
                      event(self, action_id, "migration_settle", "success", "the source resumed: " + ps);
                      finish(self, action_id, ActionResult::reverted);
                    },
                    [self, action_id](caf::error& e) {
                      event(self, action_id, "migration_settle", "error", "resume the source: " + describe(e));
                      finish(self, action_id, ActionResult::error);
                    });
          },
          [self, action_id](caf::error& e) {
            event(self, action_id, "migration_settle", "error", "power list: " + describe(e));
            finish(self, action_id, ActionResult::error);
          });
}

// Nova's live migration: the destination the scheduler picks (or the named
// host), a VMM there waiting for the stream, then the source node migrates
// the guest to it. The record's node changes when the source reports that
// the destination runs the guest, never before; a failure before the
// commit leaves the guest running on its node and the action reverted.
static void dispatch_live_migrate(controller_pointer self, const InstanceRecord& rec, int64_t action_id,
                                  const Args& args) {
  auto& st = self->state;
  const std::string id = rec.id, source = rec.node;
  std::string decision;
  auto dest = choose_node(self, rec.spec, arg_of(args, "host"), decision, source);
  if (!dest) {
    event(self, action_id, "schedule", "error", decision);
    finish(self, action_id, ActionResult::reverted);
    return;
  }
  if (!node_reachable(self, source)) {
    event(self, action_id, "live_migration", "error", "node " + source + " is not reachable");
    finish(self, action_id, ActionResult::reverted);
    return;
  }
  event(self, action_id, "schedule", "success", decision);
  std::string bytes;
  rec.spec.SerializeToString(&bytes);
  const auto start = st.store->now();
  self->request(st.nodes.at(*dest), st.cfg.action_deadline, node_act_atom::value, id, std::string("migratein"), bytes,
                Args{})
      .then(
          [self, id, action_id, source, dest = *dest, bytes, start](const std::string&, const std::string& detail) {
            auto& st = self->state;
            const std::string line = first_line(detail);
            const std::string prefix = "listening ";
            if (line.compare(0, prefix.size(), prefix) != 0) {
              event(self, action_id, "migration_prepare", "error", "node " + dest + " answered '" + line + "'", start);
              finish(self, action_id, ActionResult::reverted);
              return;
            }
            const std::string where = line.substr(prefix.size());
            event(self, action_id, "migration_prepare", "success", "node " + dest + " listens on " + where, start);
            if (!node_reachable(self, source)) {
              event(self, action_id, "live_migration", "error", "node " + source + " is not reachable");
              finish(self, action_id, ActionResult::reverted);
              return;
            }
            const auto t1 = st.store->now();
            self->request(st.nodes.at(source), st.cfg.migration_deadline, node_act_atom::value, id,
                          std::string("migrateout"), bytes, Args{{"destination", where}})
                .then(
                    [self, id, action_id, dest, t1](const std::string&, const std::string& d) {
                      event(self, action_id, "live_migration", "success", first_line(d), t1);
                      try {
                        set_node(self, id, dest);  // the switchover, now that the destination runs it
                        finish(self, action_id, ActionResult::success);
                      } catch (const StoreError& e) {
                        event(self, action_id, "live_migration", "error", std::string("store: ") + e.detail());
                        finish(self, action_id, ActionResult::error);
                      }
                    },
                    [self, id, action_id, source, dest, t1](caf::error& e) {
                      event(self, action_id, "live_migration", "error", describe(e), t1);
                      if (!vm_left_intact(e)) return settle_migration(self, id, action_id, source, dest);
                      // Nothing was committed: the guest runs on at the source.
                      if (node_reachable(self, dest))
                        self->request(self->state.nodes.at(dest), self->state.cfg.action_deadline,
                                      node_act_atom::value, id, std::string("delete"), std::string())
                            .then([](const std::string&) {}, [](caf::error&) {});
                      finish(self, action_id, ActionResult::reverted);
                    });
          },
          [self, action_id, dest = *dest, start](caf::error& e) {
            event(self, action_id, "migration_prepare", "error", "node " + dest + ": " + describe(e), start);
            finish(self, action_id, ActionResult::reverted);
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
    const bool migrate = *a == Action::live_migrate;
    if (migrate && !arg_of(args, "host").empty() && arg_of(args, "host") == rec->node)
      return make_control_error(ControlErrc::bad_request,
                                "live_migrate: instance " + id + " is already on node " + rec->node);
    if (!node_work(*a) && !extended && !migrate)
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
    if (migrate)
      dispatch_live_migrate(self, *rec, action_id, args);
    else if (extended)
      dispatch_extended(self, *a, *rec, action_id, std::move(args), new_spec);
    else
      dispatch(self, *a, *rec, action_id);
    return request_id;
  } catch (const StoreError& e) {
    return store_failed(e);
  }
}

}  // namespace apiary::actors::controller_detail
