// POST / progress-code port (0x80). Every byte written is recorded with a
// host monotonic timestamp, so boot milestones can be timed from the host
// (time from vCPU release to code 0x01, and so on). Bounded: the oldest
// records are dropped first and counted.
#pragma once

#include <chrono>
#include <mutex>
#include <vector>

#include "devices/device.hpp"
#include "devices/fifo.hpp"

namespace apiary::devices {

struct ProgressRecord {
  uint8_t code;
  std::chrono::steady_clock::time_point at;
};

class PostPort final : public Device {
 public:
  static constexpr size_t kMaxRecords = 1024;
  PostPort(std::string name, DeviceEvents& events) : Device(std::move(name)), events_(events) {}
  const char* kind() const noexcept override { return "post-port"; }
  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;
  void reset() override;
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

  std::vector<ProgressRecord> records() const;

 private:
  DeviceEvents& events_;
  mutable std::mutex mutex_;
  LazyFifo<ProgressRecord> records_{kMaxRecords};
  uint8_t last_ = 0;
  uint64_t dropped_ = 0, total_ = 0;
};

}  // namespace apiary::devices
