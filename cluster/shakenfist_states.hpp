// The cluster-bookkeeping state machines, after Shaken Fist
// (shared/seeds/shakenfist-state-machine.rst, shared/STATE-MODELS.md
// section 2): instance records, networks and nodes, as transition tables.
//
// Why separate from the Nova model: Nova's vm_state is what the user asked
// for and sees; these records are what the controller knows about placement
// and cleanup (is the record still being created, has the node vanished, can
// the row be purged). The two are stored side by side (state_store.hpp) and
// change for different reasons.
//
// Why tables: the state store validates every recorded transition against
// them, and the tests walk every (from, to) pair. No CAF here.
//
// Where the seed draws no edge, the tables follow Shaken Fist's own
// behaviour, except where STATE-MODELS.md says otherwise (it wins):
//  * instances: any live state (initial, preflight, creating, created,
//    error) may be deleted; X -> X-error -> error; an X-error state only
//    leads to error. There is no deleted-error: nothing leaves deleted.
//  * networks: initial -> created -> delete_wait -> deleted; initial and
//    created may go straight to deleted (nothing attached); error from any
//    live state, and an error network may be deleted.
//  * nodes: deleted never returns (Shaken Fist lets a repaired node come
//    back; STATE-MODELS.md does not). A check-in brings a missing, error,
//    stopped or stopping node back to created.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace apiary::control {

// Shaken Fist's defaults, named as in its configuration.
struct Defaults {
  // NODE_CHECKIN_MAXIMUM: a node silent for longer is missing.
  static constexpr std::chrono::seconds node_checkin_maximum{120};
  // A node silent for more than this many times NODE_CHECKIN_MAXIMUM is in
  // error, and so is every instance on it.
  static constexpr int node_error_factor = 10;
  // CLEANER_DELAY: how long a deleted record is kept before it is purged.
  static constexpr std::chrono::seconds cleaner_delay{3600};
};

enum class Machine : uint8_t { instance, network, node };
const char* to_string(Machine m) noexcept;

// --- instance records -------------------------------------------------------

enum class SfInstanceState : uint8_t {
  initial,
  preflight,
  creating,
  created,
  deleted,
  error,
  initial_error,    // "initial-error": on the way to error, from initial
  preflight_error,  // "preflight-error"
  creating_error,   // "creating-error"
  created_error,    // "created-error"
};
inline constexpr size_t kSfInstanceStateCount = 10;
inline constexpr std::array<SfInstanceState, kSfInstanceStateCount> kAllSfInstanceStates = {
    SfInstanceState::initial,       SfInstanceState::preflight,       SfInstanceState::creating,
    SfInstanceState::created,       SfInstanceState::deleted,         SfInstanceState::error,
    SfInstanceState::initial_error, SfInstanceState::preflight_error, SfInstanceState::creating_error,
    SfInstanceState::created_error};

// --- networks ---------------------------------------------------------------

enum class NetworkState : uint8_t { initial, created, delete_wait, deleted, error };
inline constexpr size_t kNetworkStateCount = 5;
inline constexpr std::array<NetworkState, kNetworkStateCount> kAllNetworkStates = {
    NetworkState::initial, NetworkState::created, NetworkState::delete_wait, NetworkState::deleted,
    NetworkState::error};

// --- nodes ------------------------------------------------------------------

enum class NodeState : uint8_t { created, stopping, stopped, deleted, missing, error };
inline constexpr size_t kNodeStateCount = 6;
inline constexpr std::array<NodeState, kNodeStateCount> kAllNodeStates = {NodeState::created, NodeState::stopping,
                                                                          NodeState::stopped, NodeState::deleted,
                                                                          NodeState::missing, NodeState::error};

// --- tables -----------------------------------------------------------------

template <typename State>
struct Transition {
  State from;
  State to;
  const char* why;  // when the controller takes it
};

std::span<const Transition<SfInstanceState>> sf_instance_transitions() noexcept;
std::span<const Transition<NetworkState>> network_transitions() noexcept;
std::span<const Transition<NodeState>> node_transitions() noexcept;

// A state to itself is not a transition (false).
bool transition_allowed(SfInstanceState from, SfInstanceState to) noexcept;
bool transition_allowed(NetworkState from, NetworkState to) noexcept;
bool transition_allowed(NodeState from, NodeState to) noexcept;
// The same by name; false for names the machine does not have.
bool transition_allowed(Machine m, std::string_view from, std::string_view to) noexcept;

// The state a new record must start in: initial (instances, networks),
// created (nodes, on their first check-in).
inline constexpr SfInstanceState kSfInstanceEntry = SfInstanceState::initial;
inline constexpr NetworkState kNetworkEntry = NetworkState::initial;
inline constexpr NodeState kNodeEntry = NodeState::created;

// --- state helpers ----------------------------------------------------------

// initial -> initial-error, ..., created -> created-error; nullopt for states
// that have no error path (deleted, error, the X-error states themselves).
std::optional<SfInstanceState> error_path(SfInstanceState s) noexcept;
// The X-error states.
bool is_transitional_error(SfInstanceState s) noexcept;

// Shaken Fist's "Dead": deleted, delete_wait or error.
bool is_dead(NetworkState s) noexcept;

// The check-in rule. A node in created, stopping or missing is expected to
// check in: silent for more than `checkin_max` it is missing, for more than
// node_error_factor x checkin_max it is in error. Exactly at a deadline it is
// still within it. stopped (shut down on purpose), error and deleted nodes
// are left as they are, and silence never makes a missing node created again
// (only a check-in does).
NodeState node_state_after_silence(NodeState current, std::chrono::milliseconds since_checkin,
                                   std::chrono::seconds checkin_max = Defaults::node_checkin_maximum) noexcept;

// The state after a check-in: created for created, missing, error, stopped;
// stopping stays stopping (it is still shutting down); nullopt for deleted
// (a deleted node never returns).
std::optional<NodeState> node_state_after_checkin(NodeState current) noexcept;

// Names as Shaken Fist writes them: "initial-error", "delete_wait", ...
const char* to_string(SfInstanceState s) noexcept;
const char* to_string(NetworkState s) noexcept;
const char* to_string(NodeState s) noexcept;
std::optional<SfInstanceState> sf_instance_state_from_string(std::string_view s) noexcept;
std::optional<NetworkState> network_state_from_string(std::string_view s) noexcept;
std::optional<NodeState> node_state_from_string(std::string_view s) noexcept;

}  // namespace apiary::control
