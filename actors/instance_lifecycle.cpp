#include "actors/instance_lifecycle.hpp"

#include <string_view>

namespace apiary::actors {

namespace {
using S = InstanceState;
constexpr LifecycleTransition kTransitions[] = {
    {S::start, S::initialize, "creation payload received: allocate VMM resources, devices, vCPU threads"},
    {S::start, S::destroy, "destroyed before creation: nothing to free"},
    {S::initialize, S::boot, "resources ready; vCPUs held at INIT outside the run loop"},
    {S::initialize, S::destroy, "initialization failed or forced poweroff: free what was allocated"},
    {S::boot, S::run, "boot conditions met: devices started, vCPUs released"},
    {S::boot, S::quiesce, "stopped before the guest ran"},
    {S::run, S::quiesce, "fan-out: vCPUs leave guest context (acks), then devices pause (acks)"},
    {S::quiesce, S::run, "resume: devices first (acks), then vCPUs (acks)"},
    {S::quiesce, S::halt, "everything quiesced: collect diagnostics"},
    {S::halt, S::reboot, "fan-out: devices reset (acks), vCPUs to RESET/INIT state (acks)"},
    {S::halt, S::destroy, "vCPU threads exit and are joined, devices halt, backends detached"},
    {S::reboot, S::boot, "back to the hold point"},
};
}  // namespace

const char* to_string(InstanceState s) noexcept {
  switch (s) {
    case S::start: return "start";
    case S::initialize: return "initialize";
    case S::boot: return "boot";
    case S::run: return "run";
    case S::quiesce: return "quiesce";
    case S::halt: return "halt";
    case S::reboot: return "reboot";
    case S::destroy: return "destroy";
  }
  return "unknown";
}

std::optional<InstanceState> instance_state_from_string(std::string_view s) noexcept {
  for (auto st : kAllInstanceStates)
    if (s == to_string(st)) return st;
  return std::nullopt;
}

std::span<const LifecycleTransition> lifecycle_transitions() noexcept { return kTransitions; }

bool transition_allowed(InstanceState from, InstanceState to) noexcept {
  for (const auto& t : kTransitions)
    if (t.from == from && t.to == to) return true;
  return false;
}

bool valid_target(InstanceState t) noexcept {
  return t == S::run || t == S::quiesce || t == S::halt || t == S::reboot || t == S::destroy;
}

std::optional<InstanceState> next_hop(InstanceState cur, InstanceState target) noexcept {
  if (cur == S::destroy) return std::nullopt;  // terminal
  switch (target) {
    case S::run:
      switch (cur) {
        case S::start: return S::initialize;
        case S::initialize: return S::boot;
        case S::boot: return S::run;
        case S::quiesce: return S::run;
        case S::reboot: return S::boot;
        default: return std::nullopt;  // run: done; halt: only reboot/destroy leave it
      }
    case S::quiesce:
      switch (cur) {
        case S::start: return S::initialize;
        case S::initialize: return S::boot;
        case S::boot:
        case S::run: return S::quiesce;
        case S::reboot: return S::boot;
        default: return std::nullopt;
      }
    case S::halt:
      switch (cur) {
        case S::start: return S::initialize;
        case S::initialize: return S::boot;
        case S::boot:
        case S::run: return S::quiesce;
        case S::quiesce: return S::halt;
        case S::reboot: return S::boot;
        default: return std::nullopt;
      }
    case S::reboot:
      switch (cur) {
        case S::start: return S::initialize;
        case S::initialize: return S::boot;
        case S::boot:
        case S::run: return S::quiesce;
        case S::quiesce: return S::halt;
        case S::halt: return S::reboot;
        default: return std::nullopt;  // reboot: reached; the driver retargets Run
      }
    case S::destroy:
      switch (cur) {
        case S::start:
        case S::initialize: return S::destroy;
        case S::boot:
        case S::run: return S::quiesce;
        case S::quiesce: return S::halt;
        case S::halt: return S::destroy;
        case S::reboot: return S::boot;
        default: return std::nullopt;
      }
    default:
      return std::nullopt;
  }
}

}  // namespace apiary::actors
