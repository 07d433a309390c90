// Debug exit (port 0xf4), QEMU's isa-debug-exit convention: a write of v ends
// the VM with status (v << 1) | 1. Test guests report pass/fail through it.
#pragma once

#include <atomic>

#include "devices/device.hpp"

namespace apiary::devices {

class DebugExit final : public Device {
 public:
  DebugExit(std::string name, DeviceEvents& events) : Device(std::move(name)), events_(events) {}
  const char* kind() const noexcept override { return "isa-debug-exit"; }
  uint64_t io_read(uint64_t, unsigned size) override { return vmm::all_ones(size); }
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;
  void reset() override { last_status_ = -1; }
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

 private:
  DeviceEvents& events_;
  std::atomic<int> last_status_{-1};
};

}  // namespace apiary::devices
