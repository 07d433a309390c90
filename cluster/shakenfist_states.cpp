// The Shaken Fist-style record machines as tables. See shakenfist_states.hpp
// for where each edge comes from.
#include "cluster/shakenfist_states.hpp"

namespace apiary::control {

namespace {
using I = SfInstanceState;
using N = NetworkState;
using D = NodeState;

constexpr Transition<I> kInstance[] = {
    {I::initial, I::preflight, "creation request dequeued; the scheduler validates it"},
    {I::preflight, I::creating, "placed on a node; the node starts building the instance"},
    {I::creating, I::created, "the instance runs"},
    {I::created, I::deleted, "deleted by the user"},
    {I::initial, I::deleted, "deleted before it was scheduled"},
    {I::preflight, I::deleted, "deleted while being scheduled"},
    {I::creating, I::deleted, "deleted while being created"},
    {I::error, I::deleted, "the user acknowledged the error by deleting the instance"},
    {I::initial, I::initial_error, "failed in initial; the error job is queued"},
    {I::preflight, I::preflight_error, "failed in preflight (e.g. no node fits); the error job is queued"},
    {I::creating, I::creating_error, "failed while creating; the error job is queued"},
    {I::created, I::created_error, "failed while running (e.g. its node is in error); the error job is queued"},
    {I::initial_error, I::error, "error job ran"},
    {I::preflight_error, I::error, "error job ran"},
    {I::creating_error, I::error, "error job ran"},
    {I::created_error, I::error, "error job ran"},
};

constexpr Transition<N> kNetwork[] = {
    {N::initial, N::created, "created on the network node"},
    {N::created, N::delete_wait, "deletion requested; waiting for the instances on it to go"},
    {N::delete_wait, N::deleted, "the last instance on it is gone"},
    {N::initial, N::deleted, "deleted before it was created"},
    {N::created, N::deleted, "deleted with no instances on it"},
    {N::initial, N::error, "creation failed"},
    {N::created, N::error, "the network broke"},
    {N::delete_wait, N::error, "teardown failed"},
    {N::error, N::deleted, "the user deleted the broken network"},
};

constexpr Transition<D> kNode[] = {
    {D::created, D::stopping, "graceful shutdown began"},
    {D::stopping, D::stopped, "graceful shutdown finished"},
    {D::stopping, D::created, "shutdown abandoned; the node checks in as usual"},
    {D::stopped, D::created, "restarted and checked in"},
    {D::created, D::missing, "no check-in within NODE_CHECKIN_MAXIMUM"},
    {D::stopping, D::missing, "went silent while shutting down"},
    {D::missing, D::created, "checked in again"},
    {D::created, D::error, "silent for ten times NODE_CHECKIN_MAXIMUM; its instances are in error"},
    {D::stopping, D::error, "silent for ten times NODE_CHECKIN_MAXIMUM; its instances are in error"},
    {D::missing, D::error, "silent for ten times NODE_CHECKIN_MAXIMUM; its instances are in error"},
    {D::error, D::created, "checked in again after the error (its instances stay in error)"},
    {D::created, D::deleted, "evacuated and removed"},
    {D::stopping, D::deleted, "evacuated and removed"},
    {D::stopped, D::deleted, "evacuated and removed"},
    {D::missing, D::deleted, "evacuated and removed"},
    {D::error, D::deleted, "evacuated and removed"},
};

template <typename S, size_t Size>
constexpr bool in_table(const Transition<S> (&table)[Size], S from, S to) {
  for (const auto& t : table)
    if (t.from == from && t.to == to) return true;
  return false;
}

template <typename S, size_t Size>
constexpr bool nothing_leaves(const Transition<S> (&table)[Size], S terminal) {
  for (const auto& t : table)
    if (t.from == terminal) return false;
  return true;
}
static_assert(nothing_leaves(kInstance, I::deleted));
static_assert(nothing_leaves(kNetwork, N::deleted));
static_assert(nothing_leaves(kNode, D::deleted));

template <typename S, size_t Count, typename ToString>
std::optional<S> parse(const std::array<S, Count>& all, std::string_view s, ToString name) {
  for (S v : all)
    if (s == name(v)) return v;
  return std::nullopt;
}
}  // namespace

const char* to_string(Machine m) noexcept {
  switch (m) {
    case Machine::instance: return "instance";
    case Machine::network: return "network";
    case Machine::node: return "node";
  }
  return "unknown";
}

std::span<const Transition<SfInstanceState>> sf_instance_transitions() noexcept { return kInstance; }
std::span<const Transition<NetworkState>> network_transitions() noexcept { return kNetwork; }
std::span<const Transition<NodeState>> node_transitions() noexcept { return kNode; }

bool transition_allowed(SfInstanceState from, SfInstanceState to) noexcept { return in_table(kInstance, from, to); }
bool transition_allowed(NetworkState from, NetworkState to) noexcept { return in_table(kNetwork, from, to); }
bool transition_allowed(NodeState from, NodeState to) noexcept { return in_table(kNode, from, to); }

bool transition_allowed(Machine m, std::string_view from, std::string_view to) noexcept {
  switch (m) {
    case Machine::instance: {
      auto f = sf_instance_state_from_string(from), t = sf_instance_state_from_string(to);
      return f && t && transition_allowed(*f, *t);
    }
    case Machine::network: {
      auto f = network_state_from_string(from), t = network_state_from_string(to);
      return f && t && transition_allowed(*f, *t);
    }
    case Machine::node: {
      auto f = node_state_from_string(from), t = node_state_from_string(to);
      return f && t && transition_allowed(*f, *t);
    }
  }
  return false;
}

std::optional<SfInstanceState> error_path(SfInstanceState s) noexcept {
  switch (s) {
    case I::initial: return I::initial_error;
    case I::preflight: return I::preflight_error;
    case I::creating: return I::creating_error;
    case I::created: return I::created_error;
    default: return std::nullopt;
  }
}

bool is_transitional_error(SfInstanceState s) noexcept {
  return s == I::initial_error || s == I::preflight_error || s == I::creating_error || s == I::created_error;
}

bool is_dead(NetworkState s) noexcept { return s == N::deleted || s == N::delete_wait || s == N::error; }

NodeState node_state_after_silence(NodeState current, std::chrono::milliseconds since_checkin,
                                   std::chrono::seconds checkin_max) noexcept {
  if (current != D::created && current != D::stopping && current != D::missing) return current;
  if (since_checkin > checkin_max * Defaults::node_error_factor) return D::error;
  if (since_checkin > checkin_max) return D::missing;
  return current;
}

std::optional<NodeState> node_state_after_checkin(NodeState current) noexcept {
  switch (current) {
    case D::created:
    case D::missing:
    case D::error:
    case D::stopped: return D::created;
    case D::stopping: return D::stopping;
    case D::deleted: return std::nullopt;
  }
  return std::nullopt;
}

const char* to_string(SfInstanceState s) noexcept {
  switch (s) {
    case I::initial: return "initial";
    case I::preflight: return "preflight";
    case I::creating: return "creating";
    case I::created: return "created";
    case I::deleted: return "deleted";
    case I::error: return "error";
    case I::initial_error: return "initial-error";
    case I::preflight_error: return "preflight-error";
    case I::creating_error: return "creating-error";
    case I::created_error: return "created-error";
  }
  return "unknown";
}

const char* to_string(NetworkState s) noexcept {
  switch (s) {
    case N::initial: return "initial";
    case N::created: return "created";
    case N::delete_wait: return "delete_wait";
    case N::deleted: return "deleted";
    case N::error: return "error";
  }
  return "unknown";
}

const char* to_string(NodeState s) noexcept {
  switch (s) {
    case D::created: return "created";
    case D::stopping: return "stopping";
    case D::stopped: return "stopped";
    case D::deleted: return "deleted";
    case D::missing: return "missing";
    case D::error: return "error";
  }
  return "unknown";
}

std::optional<SfInstanceState> sf_instance_state_from_string(std::string_view s) noexcept {
  return parse(kAllSfInstanceStates, s, [](I v) { return to_string(v); });
}
std::optional<NetworkState> network_state_from_string(std::string_view s) noexcept {
  return parse(kAllNetworkStates, s, [](N v) { return to_string(v); });
}
std::optional<NodeState> node_state_from_string(std::string_view s) noexcept {
  return parse(kAllNodeStates, s, [](D v) { return to_string(v); });
}

}  // namespace apiary::control
