#include "devices/post_port.hpp"

namespace apiary::devices {

uint64_t PostPort::io_read(uint64_t, unsigned size) {
  std::lock_guard lock(mutex_);
  return size == 1 ? last_ : vmm::all_ones(size);
}

void PostPort::io_write(uint64_t, unsigned, uint64_t value) {
  const uint8_t code = static_cast<uint8_t>(value);
  {
    std::lock_guard lock(mutex_);
    last_ = code;
    ++total_;
    if (records_.size() == kMaxRecords) {
      records_.pop_front();
      ++dropped_;
    }
    records_.push_back({code, std::chrono::steady_clock::now()});
  }
  events_.progress(name(), code);
}

void PostPort::reset() {
  std::lock_guard lock(mutex_);
  last_ = 0;
}

std::vector<ProgressRecord> PostPort::records() const {
  std::lock_guard lock(mutex_);
  return {records_.begin(), records_.end()};
}

v1::DeviceState PostPort::export_state() const {
  std::lock_guard lock(mutex_);
  v1::DeviceState s = base_state();
  (*s.mutable_registers())["last_code"] = last_;
  (*s.mutable_counters())["codes"] = total_;
  (*s.mutable_counters())["dropped"] = dropped_;
  return s;
}

void PostPort::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  std::lock_guard lock(mutex_);
  last_ = r.reg_as<uint8_t>("last_code");
}

}  // namespace apiary::devices
