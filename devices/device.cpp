#include "devices/device.hpp"

#include "vmm-core/error.hpp"

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

StateReader::StateReader(const Device& device, const v1::DeviceState& state) : device_(device), state_(state) {
  if (state.device() != device.name() || state.kind() != device.kind())
    fail("the state is of " + state.device() + " (" + state.kind() + ")");
}

void StateReader::fail(const std::string& what) const {
  throw vmm::Error(vmm::Errc::snapshot_corrupt, device_.name() + " (" + device_.kind() + "): " + what);
}

uint64_t StateReader::reg(const std::string& name, uint64_t max) const {
  auto it = state_.registers().find(name);
  if (it == state_.registers().end()) fail("register '" + name + "' missing");
  if (it->second > max)
    fail("register '" + name + "' = " + std::to_string(it->second) + " exceeds " + std::to_string(max));
  return it->second;
}

uint8_t OpaqueReader::u8() {
  if (pos_ >= data_.size()) r_.fail("private state ends early (" + std::to_string(data_.size()) + " bytes)");
  return static_cast<uint8_t>(data_[pos_++]);
}
uint16_t OpaqueReader::u16() {
  uint16_t lo = u8();
  return static_cast<uint16_t>(lo | (static_cast<uint16_t>(u8()) << 8));
}
uint32_t OpaqueReader::u32() {
  uint32_t lo = u16();
  return lo | (static_cast<uint32_t>(u16()) << 16);
}
std::string OpaqueReader::bytes(size_t max) {
  const uint32_t n = u32();
  if (n > max) r_.fail("private state holds " + std::to_string(n) + " bytes where at most " + std::to_string(max) + " fit");
  if (data_.size() - pos_ < n) r_.fail("private state ends early (" + std::to_string(data_.size()) + " bytes)");
  std::string out(data_.substr(pos_, n));
  pos_ += n;
  return out;
}
void OpaqueReader::expect_end() const {
  if (pos_ != data_.size()) r_.fail("private state has " + std::to_string(data_.size() - pos_) + " extra bytes");
}

}  // namespace apiary::devices
