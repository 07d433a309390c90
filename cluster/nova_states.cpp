// The Nova precondition table (shared/STATE-MODELS.md section 1) and the
// check built on it. See nova_states.hpp for why this is data.
#include "cluster/nova_states.hpp"

namespace apiary::control {

namespace {
using V = VmState;
using T = TaskState;
using A = Action;
using O = Outcome;
using C = Capability;

// One row per action, in Action order (rule() indexes by value; the test
// checks the order). Columns: action, seed states, "+" states, task in flight,
// outcome, success state, capability, may run during another task.
// clang-format off
constexpr ActionRule kRules[] = {
    // {action, seed states, "+" states,
    //  task in flight, outcome, success state, capability, may run during another task}
    {A::create, {V::building}, {},
     T::scheduling,          O::to_state,           V::active,            C::none,                  false},
    {A::delete_,
     {V::building, V::paused, V::suspended, V::stopped, V::rescued, V::soft_deleted, V::error},
     {V::active, V::resized, V::shelved, V::shelved_offloaded},
     T::deleting,            O::to_state,           V::deleted,           C::none,                  true},
    {A::soft_delete, {V::active, V::stopped}, {},
     T::soft_deleting,       O::to_state,           V::soft_deleted,      C::none,                  false},
    {A::restore, {V::soft_deleted}, {},
     T::restoring,           O::to_state,           V::active,            C::none,                  false},
    {A::pause, {V::active}, {},
     T::pausing,             O::to_state,           V::paused,            C::none,                  false},
    {A::unpause, {V::paused}, {},
     T::unpausing,           O::to_state,           V::active,            C::none,                  false},
    {A::suspend, {V::active}, {},
     T::suspending,          O::to_state,           V::suspended,         C::vm_state_save_restore, false},
    {A::resume, {V::suspended}, {},
     T::resuming,            O::to_state,           V::active,            C::vm_state_save_restore, false},
    {A::start, {V::stopped}, {},
     T::powering_on,         O::to_state,           V::active,            C::none,                  false},
    {A::stop, {V::active, V::error}, {},
     T::powering_off,        O::to_state,           V::stopped,           C::none,                  false},
    {A::rescue, {V::active, V::stopped, V::error}, {},
     T::rescuing,            O::to_state,           V::rescued,           C::none,                  false},
    {A::unrescue, {V::rescued}, {},
     T::unrescuing,          O::to_state,           V::active,            C::none,                  false},
    {A::resize, {V::active, V::stopped}, {},
     T::resize_prep,         O::to_state,           V::resized,           C::none,                  false},
    {A::confirm_resize, {V::resized}, {},
     T::resize_confirming,   O::state_or_stopped,   V::active,            C::none,                  false},
    {A::revert_resize, {V::resized}, {},
     T::resize_reverting,    O::state_or_stopped,   V::active,            C::none,                  false},
    {A::snapshot, {V::active, V::stopped}, {V::paused, V::suspended},
     T::image_snapshot,      O::unchanged,          V::active,            C::none,                  false},
    {A::backup, {V::active, V::stopped}, {V::paused, V::suspended},
     T::image_backup,        O::unchanged,          V::active,            C::none,                  false},
    {A::rebuild, {V::active, V::stopped}, {V::error},
     T::rebuilding,          O::to_state,           V::active,            C::none,                  false},
    {A::set_admin_password, {V::active}, {},
     T::updating_password,   O::to_state,           V::active,            C::none,                  false},
    {A::reboot_soft, {V::active}, {},
     T::rebooting,           O::to_state,           V::active,            C::none,                  false},
    {A::reboot_hard, {V::active, V::stopped, V::paused, V::suspended, V::error}, {},
     T::rebooting_hard,      O::to_state,           V::active,            C::none,                  true},
    {A::live_migrate, {V::active}, {V::paused},
     T::migrating,           O::unchanged,          V::active,            C::migration,             false},
    {A::shelve, {V::active, V::stopped, V::paused, V::suspended}, {},
     T::shelving,            O::state_or_offloaded, V::shelved,           C::vm_state_save_restore, false},
    {A::shelve_offload, {V::shelved}, {},
     T::shelving_offloading, O::to_state,           V::shelved_offloaded, C::vm_state_save_restore, false},
    {A::unshelve, {V::shelved, V::shelved_offloaded}, {},
     T::unshelving,          O::to_state,           V::active,            C::vm_state_save_restore, false},
};
// clang-format on
static_assert(std::size(kRules) == kActionCount);

constexpr bool rules_in_action_order() {
  for (size_t i = 0; i < kActionCount; ++i)
    if (static_cast<size_t>(kRules[i].action) != i || kAllActions[i] != kRules[i].action) return false;
  return true;
}
static_assert(rules_in_action_order(), "kRules must list the actions in enum order");
}  // namespace

std::span<const ActionRule> action_rules() noexcept { return kRules; }

const ActionRule& rule(Action a) noexcept { return kRules[static_cast<size_t>(a)]; }

VmStateSet allowed_from(Action a) noexcept {
  const ActionRule& r = rule(a);
  return r.allowed_seed | r.allowed_plus;
}

VmStateSet success_states(Action a, VmState from) noexcept {
  const ActionRule& r = rule(a);
  switch (r.outcome) {
    case O::to_state: return {r.success};
    case O::unchanged: return {from};
    case O::state_or_stopped: return {r.success, V::stopped};
    case O::state_or_offloaded: return {r.success, V::shelved_offloaded};
  }
  return {};
}

VmState success_state(Action a, VmState from, const SuccessContext& ctx) noexcept {
  const ActionRule& r = rule(a);
  switch (r.outcome) {
    case O::to_state: return r.success;
    case O::unchanged: return from;
    case O::state_or_stopped: return ctx.before_resize == V::stopped ? V::stopped : r.success;
    case O::state_or_offloaded: return ctx.offloaded ? V::shelved_offloaded : r.success;
  }
  return r.success;
}

std::optional<Refusal> check(Action a, VmState vm, TaskState task, std::string_view instance_id,
                             const CapabilitySet& caps) {
  const ActionRule& r = rule(a);
  const std::string head = std::string("Cannot '") + api_name(a) + "' instance " + std::string(instance_id);
  if (!caps.has(r.needs))
    return Refusal{501, RefusalReason::not_implemented,
                   head + ": not implemented, needs capability " + to_string(r.needs)};
  if (!allowed_from(a, vm))
    return Refusal{409, RefusalReason::vm_state, head + " while it is in vm_state " + to_string(vm)};
  if (task != T::none && !r.runs_during_task)
    return Refusal{409, RefusalReason::task_state, head + " while it is in task_state " + to_string(task)};
  return std::nullopt;
}

const char* to_string(VmState s) noexcept {
  switch (s) {
    case V::building: return "building";
    case V::active: return "active";
    case V::paused: return "paused";
    case V::suspended: return "suspended";
    case V::stopped: return "stopped";
    case V::rescued: return "rescued";
    case V::resized: return "resized";
    case V::soft_deleted: return "soft_deleted";
    case V::deleted: return "deleted";
    case V::error: return "error";
    case V::shelved: return "shelved";
    case V::shelved_offloaded: return "shelved_offloaded";
  }
  return "unknown";
}

const char* to_string(TaskState t) noexcept {
  switch (t) {
    case T::none: return "none";
    case T::scheduling: return "scheduling";
    case T::spawning: return "spawning";
    case T::pausing: return "pausing";
    case T::unpausing: return "unpausing";
    case T::suspending: return "suspending";
    case T::resuming: return "resuming";
    case T::powering_off: return "powering_off";
    case T::powering_on: return "powering_on";
    case T::rebooting: return "rebooting";
    case T::rebooting_hard: return "rebooting_hard";
    case T::rescuing: return "rescuing";
    case T::unrescuing: return "unrescuing";
    case T::resize_prep: return "resize_prep";
    case T::resize_migrating: return "resize_migrating";
    case T::resize_finish: return "resize_finish";
    case T::resize_reverting: return "resize_reverting";
    case T::resize_confirming: return "resize_confirming";
    case T::image_snapshot: return "image_snapshot";
    case T::image_backup: return "image_backup";
    case T::rebuilding: return "rebuilding";
    case T::migrating: return "migrating";
    case T::shelving: return "shelving";
    case T::shelving_offloading: return "shelving_offloading";
    case T::unshelving: return "unshelving";
    case T::updating_password: return "updating_password";
    case T::deleting: return "deleting";
    case T::soft_deleting: return "soft_deleting";
    case T::restoring: return "restoring";
  }
  return "unknown";
}

const char* to_string(Action a) noexcept {
  switch (a) {
    case A::create: return "create";
    case A::delete_: return "delete";
    case A::soft_delete: return "soft_delete";
    case A::restore: return "restore";
    case A::pause: return "pause";
    case A::unpause: return "unpause";
    case A::suspend: return "suspend";
    case A::resume: return "resume";
    case A::start: return "start";
    case A::stop: return "stop";
    case A::rescue: return "rescue";
    case A::unrescue: return "unrescue";
    case A::resize: return "resize";
    case A::confirm_resize: return "confirm_resize";
    case A::revert_resize: return "revert_resize";
    case A::snapshot: return "snapshot";
    case A::backup: return "backup";
    case A::rebuild: return "rebuild";
    case A::set_admin_password: return "set_admin_password";
    case A::reboot_soft: return "reboot_soft";
    case A::reboot_hard: return "reboot_hard";
    case A::live_migrate: return "live_migrate";
    case A::shelve: return "shelve";
    case A::shelve_offload: return "shelve_offload";
    case A::unshelve: return "unshelve";
  }
  return "unknown";
}

const char* to_string(Capability c) noexcept {
  switch (c) {
    case C::none: return "none";
    case C::vm_state_save_restore: return "vm_state_save_restore";
    case C::migration: return "migration";
  }
  return "unknown";
}

const char* to_string(RefusalReason r) noexcept {
  switch (r) {
    case RefusalReason::vm_state: return "vm_state";
    case RefusalReason::task_state: return "task_state";
    case RefusalReason::not_implemented: return "not_implemented";
  }
  return "unknown";
}

std::optional<VmState> vm_state_from_string(std::string_view s) noexcept {
  for (VmState v : kAllVmStates)
    if (s == to_string(v)) return v;
  if (s == "soft-delete") return V::soft_deleted;  // Nova's spelling
  return std::nullopt;
}

std::optional<TaskState> task_state_from_string(std::string_view s) noexcept {
  for (TaskState t : kAllTaskStates)
    if (s == to_string(t)) return t;
  // Nova's spellings of the three that use a hyphen there.
  if (s == "powering-off") return T::powering_off;
  if (s == "powering-on") return T::powering_on;
  if (s == "soft-deleting") return T::soft_deleting;
  return std::nullopt;
}

std::optional<Action> action_from_string(std::string_view s) noexcept {
  for (Action a : kAllActions)
    if (s == to_string(a)) return a;
  return std::nullopt;
}

const char* api_name(Action a) noexcept {
  if (a == A::reboot_soft || a == A::reboot_hard) return "reboot";
  return to_string(a);
}

const char* reboot_type(Action a) noexcept {
  if (a == A::reboot_soft) return "SOFT";
  if (a == A::reboot_hard) return "HARD";
  return nullptr;
}

std::optional<Action> action_from_api(std::string_view name, std::string_view type) noexcept {
  if (name == "reboot") {
    if (type == "SOFT") return A::reboot_soft;
    if (type == "HARD") return A::reboot_hard;
    return std::nullopt;
  }
  if (name == "reboot_soft" || name == "reboot_hard") return std::nullopt;  // identifiers, not API names
  return action_from_string(name);
}

}  // namespace apiary::control
