#include "devices/device.hpp"

namespace apiary::devices {

const char* to_string(DeviceRunState s) noexcept {
  switch (s) {
    case DeviceRunState::created: return "created";
    case DeviceRunState::running: return "running";
    case DeviceRunState::paused: return "paused";
    case DeviceRunState::halted: return "halted";
  }
  return "unknown";
}

v1::DeviceState Device::base_state() const {
  v1::DeviceState s;
  s.set_device(name_);
  s.set_kind(kind());
  (*s.mutable_counters())["run_state"] = static_cast<uint64_t>(state_);
  return s;
}

}  // namespace apiary::devices
