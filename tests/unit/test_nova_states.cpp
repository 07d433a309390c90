// The Nova precondition table walked exhaustively against an independent copy
// of shared/STATE-MODELS.md section 1: every action x every vm_state is
// allowed or refused exactly as the contract says, refusal messages are
// Nova's, a task in flight refuses everything but delete and hard reboot, and
// actions needing a capability Apiary lacks answer 501 naming it.
#define BOOST_TEST_MODULE nova_states
#include <boost/test/unit_test.hpp>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cluster/nova_states.hpp"

using namespace apiary::control;

namespace {

std::set<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::set<std::string> out;
  for (std::string w; in >> w;) out.insert(w);
  return out;
}

// STATE-MODELS.md section 1, copied by hand: action, seed states, "+" states,
// task_state in flight, success result ("=" unchanged, "a|b" either), capability.
struct Expected {
  const char* action;
  const char* seed;
  const char* plus;
  const char* task;
  const char* result;
  const char* capability;
};
const Expected kContract[] = {
    {"create", "building", "", "scheduling", "active", ""},
    {"delete", "building paused suspended stopped rescued soft_deleted error",
     "active resized shelved shelved_offloaded", "deleting", "deleted", ""},
    {"soft_delete", "active stopped", "", "soft_deleting", "soft_deleted", ""},
    {"restore", "soft_deleted", "", "restoring", "active", ""},
    {"pause", "active", "", "pausing", "paused", ""},
    {"unpause", "paused", "", "unpausing", "active", ""},
    {"suspend", "active", "", "suspending", "suspended", "vm_state_save_restore"},
    {"resume", "suspended", "", "resuming", "active", "vm_state_save_restore"},
    {"start", "stopped", "", "powering_on", "active", ""},
    {"stop", "active error", "", "powering_off", "stopped", ""},
    {"rescue", "active stopped error", "", "rescuing", "rescued", ""},
    {"unrescue", "rescued", "", "unrescuing", "active", ""},
    {"resize", "active stopped", "", "resize_prep", "resized", ""},
    {"confirm_resize", "resized", "", "resize_confirming", "active|stopped", ""},
    {"revert_resize", "resized", "", "resize_reverting", "active|stopped", ""},
    {"snapshot", "active stopped", "paused suspended", "image_snapshot", "=", ""},
    {"backup", "active stopped", "paused suspended", "image_backup", "=", ""},
    {"rebuild", "active stopped", "error", "rebuilding", "active", ""},
    {"set_admin_password", "active", "", "updating_password", "active", ""},
    {"reboot_soft", "active", "", "rebooting", "active", ""},
    {"reboot_hard", "active stopped paused suspended error", "", "rebooting_hard", "active", ""},
    {"live_migrate", "active", "paused", "migrating", "=", "migration"},
    {"shelve", "active stopped paused suspended", "", "shelving", "shelved|shelved_offloaded", "vm_state_save_restore"},
    {"shelve_offload", "shelved", "", "shelving_offloading", "shelved_offloaded", "vm_state_save_restore"},
    {"unshelve", "shelved shelved_offloaded", "", "unshelving", "active", "vm_state_save_restore"},
};

const Expected& expected(Action a) {
  for (const auto& e : kContract)
    if (to_string(a) == std::string(e.action)) return e;
  BOOST_FAIL("no contract row for " << to_string(a));
  return kContract[0];
}

std::set<std::string> expected_allowed(Action a) {
  auto s = words(expected(a).seed);
  for (auto& w : words(expected(a).plus)) s.insert(w);
  return s;
}

std::string api(Action a) {
  if (a == Action::reboot_soft || a == Action::reboot_hard) return "reboot";
  return expected(a).action;
}

// Needs a capability this build does not have (suspend and resume have had
// vm_state_save_restore since snapshots: docs/snapshots.md).
bool needs_capability(Action a) { return !CapabilitySet{true, false}.has(rule(a).needs); }  // without migration

}  // namespace

BOOST_AUTO_TEST_CASE(the_contract_and_the_table_list_the_same_actions) {
  BOOST_TEST(std::size(kContract) == kActionCount);
  BOOST_TEST(action_rules().size() == kActionCount);
  std::set<std::string> names;
  for (const auto& e : kContract) names.insert(e.action);
  BOOST_TEST(names.size() == kActionCount);
  for (Action a : kAllActions) {
    BOOST_TEST(names.count(to_string(a)) == 1u, to_string(a));
    BOOST_TEST((rule(a).action == a));
  }
}

BOOST_AUTO_TEST_CASE(seed_edges_and_plus_states_match_the_contract) {
  for (Action a : kAllActions) {
    const auto seed = words(expected(a).seed), plus = words(expected(a).plus);
    for (VmState v : kAllVmStates) {
      const std::string n = to_string(v);
      BOOST_TEST(rule(a).allowed_seed.contains(v) == (seed.count(n) > 0), to_string(a) << " seed " << n);
      BOOST_TEST(rule(a).allowed_plus.contains(v) == (plus.count(n) > 0), to_string(a) << " plus " << n);
    }
  }
}

BOOST_AUTO_TEST_CASE(every_action_from_every_vm_state_with_all_capabilities) {
  size_t allowed = 0, refused = 0;
  for (Action a : kAllActions) {
    const auto ok = expected_allowed(a);
    for (VmState v : kAllVmStates) {
      const auto r = check(a, v, TaskState::none, "inst-1", kAllCapabilities);
      const bool should = ok.count(to_string(v)) > 0;
      BOOST_TEST(allowed_from(a, v) == should, to_string(a) << " from " << to_string(v));
      if (should) {
        BOOST_TEST(!r.has_value(), to_string(a) << " from " << to_string(v) << ": " << (r ? r->message : ""));
        ++allowed;
      } else {
        BOOST_REQUIRE_MESSAGE(r.has_value(), to_string(a) << " from " << to_string(v) << " was accepted");
        BOOST_TEST(r->http_status == 409);
        BOOST_TEST((r->reason == RefusalReason::vm_state));
        BOOST_TEST(r->message == "Cannot '" + api(a) + "' instance inst-1 while it is in vm_state " + to_string(v));
        ++refused;
      }
    }
  }
  BOOST_TEST(allowed + refused == kActionCount * kVmStateCount);
  BOOST_TEST_MESSAGE(allowed << " allowed, " << refused << " refused");
  // Nothing at all is allowed from deleted.
  for (Action a : kAllActions) BOOST_TEST(!allowed_from(a, VmState::deleted), to_string(a));
}

BOOST_AUTO_TEST_CASE(missing_capabilities_answer_501_whatever_the_state) {
  // Every capability is built today; the 501 path is walked with a control
  // plane built without live migration.
  BOOST_TEST(kBuiltCapabilities.has(Capability::migration));
  BOOST_TEST(kBuiltCapabilities.has(Capability::vm_state_save_restore));
  constexpr CapabilitySet kNoMigration{true, false};
  size_t unimplemented = 0;
  for (Action a : kAllActions) {
    if (needs_capability(a)) ++unimplemented;
    for (VmState v : kAllVmStates)
      for (TaskState t : {TaskState::none, TaskState::pausing}) {
        const auto r = check(a, v, t, "abc", kNoMigration);
        if (!needs_capability(a)) {
          // Same answer as with every capability.
          const auto full = check(a, v, t, "abc", kAllCapabilities);
          BOOST_TEST(r.has_value() == full.has_value());
          if (r && full) BOOST_TEST(r->message == full->message);
          continue;
        }
        BOOST_REQUIRE(r.has_value());
        BOOST_TEST(r->http_status == 501);
        BOOST_TEST((r->reason == RefusalReason::not_implemented));
        BOOST_TEST(r->message ==
                   "Cannot '" + api(a) + "' instance abc: not implemented, needs capability " + expected(a).capability);
        BOOST_TEST(to_string(rule(a).needs) == std::string(expected(a).capability));
      }
  }
  BOOST_TEST(unimplemented == 1u);  // live_migrate
  for (Action a : kAllActions)
    BOOST_TEST(to_string(rule(a).needs) == std::string(*expected(a).capability ? expected(a).capability : "none"));
  // One capability at a time.
  CapabilitySet save_restore_only{true, false};
  BOOST_TEST(!check(Action::suspend, VmState::active, TaskState::none, "x", save_restore_only).has_value());
  BOOST_TEST(check(Action::live_migrate, VmState::active, TaskState::none, "x", save_restore_only)->http_status == 501);
}

BOOST_AUTO_TEST_CASE(a_task_in_flight_refuses_all_but_delete_and_hard_reboot) {
  for (Action a : kAllActions) {
    const auto ok = expected_allowed(a);
    const bool exempt = a == Action::delete_ || a == Action::reboot_hard;
    BOOST_TEST(rule(a).runs_during_task == exempt, to_string(a));
    for (VmState v : kAllVmStates)
      for (TaskState t : kAllTaskStates) {
        if (t == TaskState::none) continue;
        const auto r = check(a, v, t, "i-9", kAllCapabilities);
        const std::string where = std::string(to_string(a)) + " from " + to_string(v) + "/" + to_string(t);
        if (ok.count(to_string(v)) == 0) {
          // The vm_state is checked first, as in Nova.
          BOOST_REQUIRE_MESSAGE(r.has_value(), where);
          BOOST_TEST((r->reason == RefusalReason::vm_state), where);
        } else if (exempt) {
          BOOST_TEST(!r.has_value(), where);
        } else {
          BOOST_REQUIRE_MESSAGE(r.has_value(), where);
          BOOST_TEST(r->http_status == 409);
          BOOST_TEST((r->reason == RefusalReason::task_state), where);
          BOOST_TEST(r->message == "Cannot '" + api(a) + "' instance i-9 while it is in task_state " + to_string(t));
        }
      }
  }
}

BOOST_AUTO_TEST_CASE(refusal_messages_read_exactly_like_nova) {
  auto r = check(Action::pause, VmState::stopped, TaskState::none, "7f3c0e1a", kAllCapabilities);
  BOOST_REQUIRE(r.has_value());
  BOOST_TEST(r->message == "Cannot 'pause' instance 7f3c0e1a while it is in vm_state stopped");
  r = check(Action::reboot_soft, VmState::paused, TaskState::none, "u-1");
  BOOST_TEST(r->message == "Cannot 'reboot' instance u-1 while it is in vm_state paused");
  r = check(Action::stop, VmState::active, TaskState::powering_off, "u-1");
  BOOST_TEST(r->message == "Cannot 'stop' instance u-1 while it is in task_state powering_off");
  r = check(Action::delete_, VmState::deleted, TaskState::none, "u-1");
  BOOST_TEST(r->message == "Cannot 'delete' instance u-1 while it is in vm_state deleted");
  r = check(Action::live_migrate, VmState::active, TaskState::none, "u-1", CapabilitySet{true, false});
  BOOST_TEST(r->http_status == 501);
  BOOST_TEST(r->message == "Cannot 'live_migrate' instance u-1: not implemented, needs capability migration");
  BOOST_TEST(!check(Action::suspend, VmState::active, TaskState::none, "u-1").has_value());
}

BOOST_AUTO_TEST_CASE(task_in_flight_and_success_states_match_the_contract) {
  for (Action a : kAllActions) {
    BOOST_TEST(to_string(rule(a).task) == std::string(expected(a).task), to_string(a));
    BOOST_TEST((rule(a).task != TaskState::none));
    const std::string res = expected(a).result;
    for (VmState from : kAllVmStates) {
      if (!allowed_from(a, from)) continue;
      std::set<std::string> want;
      if (res == "=") {
        want.insert(to_string(from));
      } else {
        std::string r = res;
        for (auto& c : r)
          if (c == '|') c = ' ';
        want = words(r);
      }
      std::set<std::string> got;
      const VmStateSet s = success_states(a, from);
      for (VmState v : kAllVmStates)
        if (s.contains(v)) got.insert(to_string(v));
      BOOST_TEST((got == want), to_string(a) << " from " << to_string(from));
      BOOST_TEST(s.size() == want.size());
      // success_state picks one of them.
      BOOST_TEST(s.contains(success_state(a, from)));
    }
  }
  // The "or STOPPED if it was stopped" cases.
  BOOST_TEST((success_state(Action::confirm_resize, VmState::resized) == VmState::active));
  BOOST_TEST((success_state(Action::confirm_resize, VmState::resized, {VmState::stopped, false}) == VmState::stopped));
  BOOST_TEST((success_state(Action::revert_resize, VmState::resized, {VmState::active, false}) == VmState::active));
  BOOST_TEST((success_state(Action::revert_resize, VmState::resized, {VmState::stopped, false}) == VmState::stopped));
  BOOST_TEST((success_state(Action::shelve, VmState::paused) == VmState::shelved));
  BOOST_TEST((success_state(Action::shelve, VmState::paused, {std::nullopt, true}) == VmState::shelved_offloaded));
  BOOST_TEST((success_state(Action::snapshot, VmState::suspended) == VmState::suspended));
  BOOST_TEST((success_state(Action::live_migrate, VmState::paused) == VmState::paused));
}

BOOST_AUTO_TEST_CASE(names_round_trip_and_api_names) {
  for (VmState v : kAllVmStates) BOOST_TEST((vm_state_from_string(to_string(v)) == v));
  for (TaskState t : kAllTaskStates) BOOST_TEST((task_state_from_string(to_string(t)) == t));
  for (Action a : kAllActions) BOOST_TEST((action_from_string(to_string(a)) == a));
  BOOST_TEST(std::set<std::string>({"scheduling",
                                    "spawning",
                                    "pausing",
                                    "unpausing",
                                    "suspending",
                                    "resuming",
                                    "powering_off",
                                    "powering_on",
                                    "rebooting",
                                    "rebooting_hard",
                                    "rescuing",
                                    "unrescuing",
                                    "resize_prep",
                                    "resize_migrating",
                                    "resize_finish",
                                    "resize_reverting",
                                    "resize_confirming",
                                    "image_snapshot",
                                    "image_backup",
                                    "rebuilding",
                                    "migrating",
                                    "shelving",
                                    "shelving_offloading",
                                    "unshelving",
                                    "updating_password",
                                    "deleting",
                                    "soft_deleting",
                                    "restoring"})
                 .size() == kTaskStateCount - 1);
  // Nova's own spellings are accepted on input.
  BOOST_TEST((vm_state_from_string("soft-delete") == VmState::soft_deleted));
  BOOST_TEST((task_state_from_string("powering-off") == TaskState::powering_off));
  BOOST_TEST((task_state_from_string("powering-on") == TaskState::powering_on));
  BOOST_TEST((task_state_from_string("soft-deleting") == TaskState::soft_deleting));
  BOOST_TEST(!vm_state_from_string("ACTIVE").has_value());
  BOOST_TEST(!action_from_string("reboot").has_value());
  // API names: one "reboot" with a type.
  BOOST_TEST(std::string(api_name(Action::reboot_soft)) == "reboot");
  BOOST_TEST(std::string(api_name(Action::reboot_hard)) == "reboot");
  BOOST_TEST(std::string(reboot_type(Action::reboot_soft)) == "SOFT");
  BOOST_TEST(std::string(reboot_type(Action::reboot_hard)) == "HARD");
  BOOST_TEST(reboot_type(Action::pause) == nullptr);
  BOOST_TEST((action_from_api("reboot", "SOFT") == Action::reboot_soft));
  BOOST_TEST((action_from_api("reboot", "HARD") == Action::reboot_hard));
  BOOST_TEST(!action_from_api("reboot").has_value());
  BOOST_TEST(!action_from_api("reboot", "hard").has_value());
  BOOST_TEST(!action_from_api("reboot_hard").has_value());
  BOOST_TEST((action_from_api("delete") == Action::delete_));
  for (Action a : kAllActions) {
    const char* type = reboot_type(a);
    BOOST_TEST((action_from_api(api_name(a), type ? type : "") == a), to_string(a));
  }
}
