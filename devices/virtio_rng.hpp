// virtio-rng (device id 4, virtio 1.x §5.4): an entropy source for the guest.
//
// Why inline on the vCPU thread: getrandom(2) on an initialised host never
// blocks and is fast, so a worker thread would only add latency. To keep
// the vCPU's exit bounded, each chain gets at most kMaxBytesPerChain bytes
// (the used length tells the driver how many) and the queue is small.
// Readable buffers in a request are ignored (the driver only posts writable
// ones). If getrandom fails, the chain is returned with the bytes produced so
// far (possibly 0) and the failure is counted; the guest simply asks again.
#pragma once

#include <mutex>

#include "devices/virtio_mmio.hpp"

namespace apiary::devices {

namespace virtio_rng {
inline constexpr uint16_t kQueueSize = 64;
inline constexpr uint32_t kMaxBytesPerChain = 64 * 1024;
}  // namespace virtio_rng

class VirtioRng final : public VirtioDevice {
 public:
  VirtioRng() = default;

  struct Counters {
    uint64_t requests, bytes, errors;
  };
  Counters counters() const;

  // VirtioDevice
  const char* kind() const noexcept override { return "virtio-rng"; }
  uint32_t device_id() const noexcept override { return virtio::kDeviceIdRng; }
  uint64_t device_features() const noexcept override { return 0; }
  uint16_t num_queues() const noexcept override { return 1; }
  uint16_t queue_max_size(uint16_t) const noexcept override { return virtio_rng::kQueueSize; }
  void attach(VirtioContext& ctx) override { ctx_ = &ctx; }
  void on_notify(uint16_t queue) noexcept override;
  void reset() noexcept override;
  void pause() override;
  void resume() override;
  void halt() override;
  void export_state(v1::DeviceState& state) const override;

 private:
  void serve();  // with mutex_ held
  uint32_t fill(const VirtqChain& chain);

  VirtioContext* ctx_ = nullptr;
  mutable std::mutex mutex_;
  bool paused_ = false, halted_ = false, notify_pending_ = false;
  uint64_t requests_ = 0, bytes_ = 0, errors_ = 0;
};

}  // namespace apiary::devices
