// A device that claims a port and does nothing: the target of the exit
// dispatch benchmark, so the measured cost is the bus and the loop, not a
// device model.
#pragma once

#include <atomic>

#include "devices/device.hpp"

namespace apiary::devices {

class NoopPort final : public Device {
 public:
  explicit NoopPort(std::string name) : Device(std::move(name)) {}
  const char* kind() const noexcept override { return "noop"; }
  uint64_t io_read(uint64_t, unsigned) override { return 0; }
  void io_write(uint64_t, unsigned, uint64_t) override { writes_.fetch_add(1, std::memory_order_relaxed); }
  void reset() override {}
  v1::DeviceState export_state() const override {
    v1::DeviceState s = base_state();
    (*s.mutable_counters())["writes"] = writes_.load(std::memory_order_relaxed);
    return s;
  }
  void import_state(const v1::DeviceState& state) override { StateReader(*this, state); }
  uint64_t writes() const noexcept { return writes_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> writes_{0};
};

}  // namespace apiary::devices
