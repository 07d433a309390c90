// The per-VM lifecycle (seed: shared/seeds/propolis-instance-states.txt) as
// data: the states, every allowed transition, and the next hop from any state
// towards any target state. The instance actor is a driver over these tables;
// tests walk them directly. No CAF here.
//
// One extension to the seed: a user pause parks the VM in Quiesce (vCPUs out
// of guest context, devices paused) with target Quiesce, and a resume goes
// Quiesce -> Run. The seed's Quiesce is otherwise only a way to Halt.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>

namespace apiary::actors {

enum class InstanceState : uint8_t { start, initialize, boot, run, quiesce, halt, reboot, destroy };
inline constexpr size_t kInstanceStateCount = 8;
inline constexpr std::array<InstanceState, kInstanceStateCount> kAllInstanceStates = {
    InstanceState::start, InstanceState::initialize, InstanceState::boot,   InstanceState::run,
    InstanceState::quiesce, InstanceState::halt,     InstanceState::reboot, InstanceState::destroy};

const char* to_string(InstanceState s) noexcept;
std::optional<InstanceState> instance_state_from_string(std::string_view s) noexcept;

struct LifecycleTransition {
  InstanceState from;
  InstanceState to;
  const char* what;  // what the instance does while taking it
};

// Every allowed transition; anything else is refused (transition_refused).
std::span<const LifecycleTransition> lifecycle_transitions() noexcept;
bool transition_allowed(InstanceState from, InstanceState to) noexcept;

// The states a target may name: Run (keep running), Quiesce (paused), Halt
// (stopped for diagnostics), Reboot, Destroy.
bool valid_target(InstanceState target) noexcept;

// The next state on the way from `current` to `target`, or nullopt when
// `current` already satisfies the target (or cannot move towards it).
// After a Reboot the target becomes Run again; the driver handles that.
std::optional<InstanceState> next_hop(InstanceState current, InstanceState target) noexcept;

}  // namespace apiary::actors
