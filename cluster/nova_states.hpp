// The user-facing instance state model (OpenStack Nova's vm_state /
// task_state pair) as data: which command may run from which vm_state, what
// task_state it holds while in flight, where it lands on success, and whether
// Apiary can run it yet.
//
// Why a table and not code in the API handler: the preconditions are the
// contract with API users (shared/STATE-MODELS.md section 1, from the seed
// shared/seeds/nova-vm-states.rst plus the states Nova's own code accepts).
// Kept as constexpr data, the control plane, the state store and the tests
// all read the same rows, and a test can walk every action x every state
// against an independently written copy of the contract. No CAF here.
//
// Names: vm_state and task_state strings are the enum names (snake_case, as
// in STATE-MODELS.md); from_string also accepts Nova's own spellings where
// they differ ("soft-delete", "powering-off", ...). Actions have two names:
// to_string() is the identifier ("reboot_hard"), api_name() the name of the
// command in the API and in refusal messages ("reboot", with a SOFT/HARD
// type).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace apiary::control {

enum class VmState : uint8_t {
  building,
  active,
  paused,
  suspended,
  stopped,
  rescued,
  resized,
  soft_deleted,
  deleted,
  error,
  shelved,
  shelved_offloaded,
};
inline constexpr size_t kVmStateCount = 12;
inline constexpr std::array<VmState, kVmStateCount> kAllVmStates = {
    VmState::building, VmState::active,  VmState::paused,  VmState::suspended,
    VmState::stopped,  VmState::rescued, VmState::resized, VmState::soft_deleted,
    VmState::deleted,  VmState::error,   VmState::shelved, VmState::shelved_offloaded};

// task_state: none while nothing is in flight, otherwise what is happening.
enum class TaskState : uint8_t {
  none,
  scheduling,
  spawning,
  pausing,
  unpausing,
  suspending,
  resuming,
  powering_off,
  powering_on,
  rebooting,
  rebooting_hard,
  rescuing,
  unrescuing,
  resize_prep,
  resize_migrating,
  resize_finish,
  resize_reverting,
  resize_confirming,
  image_snapshot,
  image_backup,
  rebuilding,
  migrating,
  shelving,
  shelving_offloading,
  unshelving,
  updating_password,
  deleting,
  soft_deleting,
  restoring,
};
inline constexpr size_t kTaskStateCount = 29;
inline constexpr std::array<TaskState, kTaskStateCount> kAllTaskStates = {
    TaskState::none,           TaskState::scheduling,        TaskState::spawning,
    TaskState::pausing,        TaskState::unpausing,         TaskState::suspending,
    TaskState::resuming,       TaskState::powering_off,      TaskState::powering_on,
    TaskState::rebooting,      TaskState::rebooting_hard,    TaskState::rescuing,
    TaskState::unrescuing,     TaskState::resize_prep,       TaskState::resize_migrating,
    TaskState::resize_finish,  TaskState::resize_reverting,  TaskState::resize_confirming,
    TaskState::image_snapshot, TaskState::image_backup,      TaskState::rebuilding,
    TaskState::migrating,      TaskState::shelving,          TaskState::shelving_offloading,
    TaskState::unshelving,     TaskState::updating_password, TaskState::deleting,
    TaskState::soft_deleting,  TaskState::restoring};

enum class Action : uint8_t {
  create,
  delete_,  // "delete"; trailing underscore because delete is a keyword
  soft_delete,
  restore,
  pause,
  unpause,
  suspend,
  resume,
  start,
  stop,
  rescue,
  unrescue,
  resize,
  confirm_resize,
  revert_resize,
  snapshot,
  backup,
  rebuild,
  set_admin_password,
  reboot_soft,
  reboot_hard,
  live_migrate,
  shelve,
  shelve_offload,
  unshelve,
};
inline constexpr size_t kActionCount = 25;
// clang-format off
inline constexpr std::array<Action, kActionCount> kAllActions = {
    Action::create,        Action::delete_,         Action::soft_delete,   Action::restore,
    Action::pause,         Action::unpause,         Action::suspend,       Action::resume,
    Action::start,         Action::stop,            Action::rescue,        Action::unrescue,
    Action::resize,        Action::confirm_resize,  Action::revert_resize, Action::snapshot,
    Action::backup,        Action::rebuild,         Action::set_admin_password,
    Action::reboot_soft,   Action::reboot_hard,     Action::live_migrate,
    Action::shelve,        Action::shelve_offload,  Action::unshelve};
// clang-format on

// Host capabilities some actions need and Apiary does not have yet. An action
// whose capability is missing answers 501 whatever the instance's state.
enum class Capability : uint8_t {
  none,                   // nothing beyond what is built
  vm_state_save_restore,  // save memory + vCPU + device state to disk and restore it (suspend, shelve)
  migration,              // move a running instance's memory and disks to another node
};

// A set of VmStates as a bit mask (bit i = VmState value i).
class VmStateSet {
 public:
  constexpr VmStateSet() = default;
  constexpr VmStateSet(std::initializer_list<VmState> states) {
    for (VmState s : states) bits_ |= bit(s);
  }
  constexpr bool contains(VmState s) const { return (bits_ & bit(s)) != 0; }
  constexpr VmStateSet operator|(VmStateSet o) const { return from_bits(bits_ | o.bits_); }
  constexpr bool empty() const { return bits_ == 0; }
  constexpr size_t size() const {
    size_t n = 0;
    for (uint16_t b = bits_; b != 0; b &= static_cast<uint16_t>(b - 1)) ++n;
    return n;
  }
  constexpr bool operator==(const VmStateSet&) const = default;

 private:
  static constexpr uint16_t bit(VmState s) { return static_cast<uint16_t>(1u << static_cast<unsigned>(s)); }
  static constexpr VmStateSet from_bits(uint16_t b) {
    VmStateSet s;
    s.bits_ = b;
    return s;
  }
  uint16_t bits_ = 0;
};

// Which capabilities this build has.
struct CapabilitySet {
  bool vm_state_save_restore = false;
  bool migration = false;
  constexpr bool has(Capability c) const {
    switch (c) {
      case Capability::none: return true;
      case Capability::vm_state_save_restore: return vm_state_save_restore;
      case Capability::migration: return migration;
    }
    return false;
  }
};
inline constexpr CapabilitySet kBuiltCapabilities{true, true};  // what Apiary can do today
inline constexpr CapabilitySet kAllCapabilities{true, true};

// Where an action lands on success.
enum class Outcome : uint8_t {
  to_state,            // always `ActionRule::success`
  unchanged,           // stays in the vm_state it started from (snapshot, backup, live_migrate)
  state_or_stopped,    // `success` (ACTIVE), or STOPPED if the instance was stopped before the resize
  state_or_offloaded,  // `success` (SHELVED), or SHELVED_OFFLOADED when offloaded straight away
};

// One row of the precondition table.
struct ActionRule {
  Action action;
  VmStateSet allowed_seed;  // the edges drawn in seeds/nova-vm-states.rst
  VmStateSet allowed_plus;  // the "+" states: accepted by Nova's code, not drawn in the seed
  TaskState task;           // task_state while the action is in flight (the first one, for multi-step tasks)
  Outcome outcome;
  VmState success;        // meaning depends on `outcome`; ignored for `unchanged`
  Capability needs;       // Capability::none = implemented now
  bool runs_during_task;  // may start while another task is in flight (delete, hard reboot)
};

std::span<const ActionRule> action_rules() noexcept;
const ActionRule& rule(Action a) noexcept;

// The vm_states an action may start from: seed edges plus the "+" states.
VmStateSet allowed_from(Action a) noexcept;
inline bool allowed_from(Action a, VmState s) noexcept { return allowed_from(a).contains(s); }

// Every vm_state the action may end in on success when it started from
// `from` (one or two states). ERROR is always possible on failure as well and
// is not included.
VmStateSet success_states(Action a, VmState from) noexcept;

// What decides between the two outcomes of state_or_stopped / state_or_offloaded.
struct SuccessContext {
  std::optional<VmState> before_resize;  // the vm_state the resize started from
  bool offloaded = false;                // shelve: the node was released immediately
};
VmState success_state(Action a, VmState from, const SuccessContext& ctx = {}) noexcept;

enum class RefusalReason : uint8_t { vm_state, task_state, not_implemented };

struct Refusal {
  int http_status;  // 409 Conflict or 501 Not Implemented
  RefusalReason reason;
  std::string message;
};

// Nova's precondition check. In order: a missing capability (501), then the
// vm_state (409), then a task in flight (409; delete and hard reboot are
// never refused for that). nullopt = accepted.
//   409: "Cannot 'pause' instance <id> while it is in vm_state stopped"
//        "Cannot 'pause' instance <id> while it is in task_state powering_off"
//   501: "Cannot 'suspend' instance <id>: not implemented, needs capability vm_state_save_restore"
std::optional<Refusal> check(Action a, VmState vm, TaskState task, std::string_view instance_id,
                             const CapabilitySet& caps = kBuiltCapabilities);

const char* to_string(VmState s) noexcept;
const char* to_string(TaskState t) noexcept;
const char* to_string(Action a) noexcept;  // identifier: "reboot_hard", "delete"
const char* to_string(Capability c) noexcept;
const char* to_string(RefusalReason r) noexcept;
std::optional<VmState> vm_state_from_string(std::string_view s) noexcept;
std::optional<TaskState> task_state_from_string(std::string_view s) noexcept;
std::optional<Action> action_from_string(std::string_view s) noexcept;  // identifiers only

// The API name: "reboot" for both reboots, the identifier otherwise.
const char* api_name(Action a) noexcept;
// "SOFT" / "HARD" for the reboots, nullptr otherwise.
const char* reboot_type(Action a) noexcept;
// Parses an API command. `type` is only read for "reboot" and must then be
// "SOFT" or "HARD" (Nova rejects a reboot without a type, and so do we).
std::optional<Action> action_from_api(std::string_view name, std::string_view type = {}) noexcept;

}  // namespace apiary::control
