// Reset control register at 0xCF9: RST_CPU writes become reset requests.
#include "devices/reset_control.hpp"

namespace apiary::devices {

using namespace reset_control;

uint64_t ResetControl::io_read(uint64_t offset, unsigned size) {
  const uint64_t ones = vmm::all_ones(size);
  if (offset != 0) return ones;
  std::lock_guard lock(mutex_);
  return (ones & ~0xffull) | value_;
}

void ResetControl::io_write(uint64_t offset, unsigned, uint64_t value) {
  if (offset != 0) return;
  const auto v = static_cast<uint8_t>(value);
  bool request = false;
  {
    std::lock_guard lock(mutex_);
    ++writes_;
    value_ = v & kStored;
    if (v & kRstCpu) {
      ++reset_requests_;
      request = true;
    }
  }
  // Outside the lock: the owner may react by resetting this device.
  if (request) events_.reset_requested(name());
}

void ResetControl::reset() {
  std::lock_guard lock(mutex_);
  value_ = 0;
}

v1::DeviceState ResetControl::export_state() const {
  std::lock_guard lock(mutex_);
  v1::DeviceState s = base_state();
  (*s.mutable_registers())["rst_cnt"] = value_;
  (*s.mutable_counters())["writes"] = writes_;
  (*s.mutable_counters())["reset_requests"] = reset_requests_;
  return s;
}

void ResetControl::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  std::lock_guard lock(mutex_);
  value_ = r.reg_as<uint8_t>("rst_cnt");
}

}  // namespace apiary::devices
