// Keeping the records and the nodes in agreement: reconciliation against a
// node's power list, drain, and settling what a previous controller left
// running.
#include "cluster/controller_internal.hpp"

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

namespace apiary::actors::controller_detail {

static bool expected_running(const InstanceRecord& r, const std::string& node) {
  // A live migration runs the guest on its source and prepares it on the
  // destination: neither is a stray until the action has ended.
  if (r.task_state == TaskState::migrating) return true;
  if (r.node != node) return false;
  if (r.task_state != TaskState::none) return true;  // an action is on its way: leave it alone
  return r.sf_state == SfInstanceState::created &&
         (r.vm_state == VmState::active || r.vm_state == VmState::paused || r.vm_state == VmState::rescued ||
          r.vm_state == VmState::resized);
}

// Stops a VM the records do not want running, and logs it.
static void stop_stray(controller_pointer self, const std::string& node, const std::string& id,
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

void reconcile(controller_pointer self, const std::string& node, bool power_sync) {
  auto h = self->state.nodes.at(node);
  self->request(h, self->state.cfg.node_deadline, power_list_atom::value)
      .then(
          [self, node, power_sync](const std::map<std::string, std::string>& power) {
            auto& store = *self->state.store;
            try {
              for (const auto& [id, ps] : power) {
                if (ps == kPowerShutdown || ps == kPowerSuspended) continue;  // nothing runs
                auto rec = store.get_instance(id);
                if (power_sync && rec && rec->vm_state == VmState::error) continue;
                if (!rec || !expected_running(*rec, node)) stop_stray(self, node, id, rec);
              }
              // Nova's power sync: ACTIVE on the record, nothing running on the node.
              for (const auto& r : store.list_instances_on_node(node)) {
                if (r.sf_state != SfInstanceState::created ||
                    (r.vm_state != VmState::active && r.vm_state != VmState::paused) ||
                    r.task_state != TaskState::none)
                  continue;
                auto p = power.find(r.id);
                if (p != power.end() && p->second != kPowerShutdown) continue;
                const std::string what = "node " + node + " runs no VM for this " +
                                         control::to_string(r.vm_state) + " instance: recorded stopped";
                if (r.vm_state == VmState::paused) {
                  // Nova's power sync force-stops a PAUSED instance that is
                  // no longer running (a user's stop is refused from PAUSED).
                  // Found by the chaos suite: a node killed with a paused VM.
                  const auto t = store.now();
                  store.force_stopped(r.id, new_id(self, "power-sync-"), {"power_sync", t, t, "success", what});
                  continue;
                }
                const int64_t aid = store.begin_action(r.id, Action::stop, new_id(self, "power-sync-"));
                event(self, aid, "power_sync", "success", what);
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
static std::optional<std::string> power_after(Action a) {
  switch (a) {
    case Action::create:
    case Action::unpause:
    case Action::start:
    case Action::restore:
    case Action::reboot_soft:
    case Action::reboot_hard:
    case Action::resume: return std::string(kPowerRunning);
    case Action::pause: return std::string(kPowerPaused);
    case Action::suspend: return std::string(kPowerSuspended);
    case Action::stop:
    case Action::soft_delete: return std::string(kPowerShutdown);
    case Action::delete_: return std::string(kPowerDeleted);
    default: return std::nullopt;  // resize, rescue, disk copies: the power state does not tell
  }
}

// The power state a record's vm_state stands for ("" when it says nothing).
static std::string power_of(VmState s) {
  switch (s) {
    case VmState::active: return kPowerRunning;
    case VmState::paused: return kPowerPaused;
    case VmState::suspended: return kPowerSuspended;
    case VmState::stopped:
    case VmState::soft_deleted: return kPowerShutdown;
    default: return {};
  }
}

// Shut down and gone count as the same thing: the VM does not run.
static bool same_power(const std::string& expected, const std::string& reported) {
  const auto off = [](const std::string& p) { return p == kPowerShutdown || p == kPowerDeleted; };
  return !expected.empty() && (expected == reported || (off(expected) && off(reported)));
}

// Settles one action the previous controller left running, from what its
// node really runs (`power`: the node's power list entry, kPowerDeleted
// when absent). Success when the node shows the action's effect; reverted
// when the VM is as it was before; error otherwise. The record's
// vm_state follows (Nova: success state, unchanged, ERROR).
static void settle(controller_pointer self, const control::ActionLogEntry& e, const InstanceRecord& rec,
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
    if (e.action == Action::live_migrate) {
      // Where it was going is in the prepare event ("node N listens on ...").
      std::string dest;
      for (const auto& ev : e.events) {
        const std::string tag = "node ";
        if (ev.name == "migration_prepare" && ev.result == "success" && ev.detail.compare(0, tag.size(), tag) == 0)
          dest = ev.detail.substr(tag.size(), ev.detail.find(' ', tag.size()) - tag.size());
      }
      if (dest.empty()) {  // nothing was prepared: the guest never left
        event(self, e.id, "recover", "error", seen + ": no destination was prepared; the VM is as it was");
        finish(self, e.id, ActionResult::reverted);
        return;
      }
      event(self, e.id, "recover", "running", seen + "; asking node " + dest + " whether it runs the VM");
      settle_migration(self, rec.id, e.id, rec.node, dest, power == kPowerPaused);
      return;
    }
    if (want && same_power(*want, power)) {
      event(self, e.id, "recover", "success", seen + ": the action took effect");
      const std::optional<VmState> to = node_work(e.action)          ? std::optional(node_work(e.action)->success)
                                        : e.action == Action::suspend ? std::optional(VmState::suspended)
                                        : e.action == Action::resume  ? std::optional(VmState::active)
                                                                      : std::nullopt;
      finish(self, e.id, ActionResult::success, to);
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

}  // namespace apiary::actors::controller_detail
