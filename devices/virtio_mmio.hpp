// The virtio-mmio transport, version 2 (virtio 1.x §4.2.2), and the
// VirtioDevice interface a device model (blk, rng, ...) implements under it.
//
// Why a split between transport and device: everything that is generic to
// virtio — the register file, feature negotiation, the device status state
// machine, queue setup and validation, interrupt status — lives here once;
// a device model only describes itself (id, features, config space, queues)
// and serves its queues.
//
// Threads and locks. Register accesses arrive concurrently on vCPU threads;
// lifecycle calls come from the control plane; device models complete
// requests on their own worker threads. Two locks keep this simple:
//   ctrl_mutex_  serializes register accesses, QueueNotify dispatch and the
//                lifecycle (pause/resume/reset/halt) — so a device model never
//                sees a notify concurrently with its own reset or pause;
//   irq_mutex_   guards the status register, InterruptStatus and the IRQ
//                line; it is all a worker thread ever takes (through
//                VirtioContext), so a reset or pause may wait for workers to
//                drain while holding ctrl_mutex_ without deadlocking.
// Lock order: ctrl_mutex_ -> device model's own locks -> Virtqueue -> irq_mutex_.
//
// Errors. A malformed ring or chain (see QueueError) sets
// DEVICE_NEEDS_RESET and, once DRIVER_OK, raises a configuration-change
// interrupt; notifies are then ignored until the driver resets the device by
// writing 0 to Status. Guest register accesses never throw and never fail the
// VMM: odd sizes, misaligned or unknown offsets read as 0 and are counted.
//
// Interrupts are level semantics: the line is high exactly while
// InterruptStatus != 0 (bit 0: used buffer, bit 1: configuration change) and
// drops when the driver acknowledges the last bit.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "devices/device.hpp"
#include "devices/virtqueue.hpp"
#include "vmm-core/guest_memory.hpp"

namespace apiary::devices {

namespace virtio {
// Device status bits (§2.1).
inline constexpr uint32_t kStatusAcknowledge = 0x01, kStatusDriver = 0x02, kStatusDriverOk = 0x04,
                          kStatusFeaturesOk = 0x08, kStatusNeedsReset = 0x40, kStatusFailed = 0x80;
// Reserved feature bits (§6) the transport offers itself.
inline constexpr unsigned kFeatureVersion1 = 32;
inline constexpr uint64_t feature_bit(unsigned bit) { return 1ull << bit; }
// InterruptStatus bits.
inline constexpr uint32_t kIntUsedBuffer = 0x1, kIntConfigChange = 0x2;
// Device ids (§5).
inline constexpr uint32_t kDeviceIdNet = 1, kDeviceIdBlock = 2, kDeviceIdRng = 4;
}  // namespace virtio

namespace virtio_mmio {
// Register offsets (§4.2.2). All are 32 bits wide and 32-bit aligned.
inline constexpr uint64_t kMagicValue = 0x000, kVersion = 0x004, kDeviceId = 0x008, kVendorId = 0x00c,
                          kDeviceFeatures = 0x010, kDeviceFeaturesSel = 0x014, kDriverFeatures = 0x020,
                          kDriverFeaturesSel = 0x024, kQueueSel = 0x030, kQueueNumMax = 0x034, kQueueNum = 0x038,
                          kQueueReady = 0x044, kQueueNotify = 0x050, kInterruptStatus = 0x060, kInterruptAck = 0x064,
                          kStatus = 0x070, kQueueDescLow = 0x080, kQueueDescHigh = 0x084, kQueueDriverLow = 0x090,
                          kQueueDriverHigh = 0x094, kQueueDeviceLow = 0x0a0, kQueueDeviceHigh = 0x0a4, kShmSel = 0x0ac,
                          kShmLenLow = 0x0b0, kShmLenHigh = 0x0b4, kShmBaseLow = 0x0b8, kShmBaseHigh = 0x0bc,
                          kConfigGeneration = 0x0fc, kConfig = 0x100;
inline constexpr uint32_t kMagic = 0x74726976;   // "virt"
inline constexpr uint32_t kVersion2 = 2;         // modern (non-legacy) interface
inline constexpr uint32_t kVendor = 0x59495041;  // "APIY"
// Bytes of MMIO space one device decodes (registers + config space).
inline constexpr uint64_t kRegionSize = 0x1000;
}  // namespace virtio_mmio

// What a device model may call on its transport. Thread-safe; callable from
// worker threads. Never blocks on anything but short internal locks.
class VirtioContext {
 public:
  virtual vmm::GuestMemory& memory() noexcept = 0;
  // Queue `index` < the device's num_queues().
  virtual Virtqueue& queue(uint16_t index) noexcept = 0;
  // Used buffers were added to `queue`: interrupt the driver if it wants one.
  virtual void notify_used(uint16_t queue) noexcept = 0;
  // `queue` is malformed: DEVICE_NEEDS_RESET + configuration interrupt.
  virtual void queue_failed(uint16_t queue, QueueError error) noexcept = 0;
  // The device's configuration space changed (bumps ConfigGeneration).
  virtual void config_changed() noexcept = 0;

 protected:
  ~VirtioContext() = default;
};

// A virtio device model. Hooks are called by the transport with its control
// lock held (never concurrently with each other); only the VirtioContext
// callbacks may come from other threads.
class VirtioDevice {
 public:
  virtual ~VirtioDevice() = default;
  virtual const char* kind() const noexcept = 0;
  virtual uint32_t device_id() const noexcept = 0;
  // Device-specific feature bits. The transport adds VIRTIO_F_VERSION_1 and
  // the ring features (INDIRECT_DESC, EVENT_IDX) itself.
  virtual uint64_t device_features() const noexcept = 0;
  virtual uint16_t num_queues() const noexcept = 0;
  virtual uint16_t queue_max_size(uint16_t queue) const noexcept = 0;
  // Configuration space. Accesses are already bounds-checked against
  // config_size(); the layout is little-endian.
  virtual uint32_t config_size() const noexcept { return 0; }
  virtual void read_config(uint32_t /*offset*/, std::span<uint8_t> out) const noexcept {
    for (auto& b : out) b = 0;
  }
  virtual void write_config(uint32_t /*offset*/, std::span<const uint8_t> /*in*/) noexcept {}

  // Called once by the transport's constructor.
  virtual void attach(VirtioContext& ctx) = 0;
  // DRIVER_OK was set with these negotiated features (not while NEEDS_RESET
  // is set: such a device stays out of service until the driver resets it).
  virtual void activate(uint64_t /*features*/) noexcept {}
  // `queue` may have new buffers (ready, DRIVER_OK, no NEEDS_RESET): the
  // driver notified it, or the transport looks at every queue once after
  // activate() and after a restore, for notifies it had to ignore. A call
  // with nothing new must be harmless. Runs on the vCPU thread: pop chains
  // and hand slow work to a worker.
  virtual void on_notify(uint16_t queue) noexcept = 0;
  // Device reset (Status = 0, or lifecycle reset): finish in-flight requests,
  // forget pending notifications, back to power-on state. The transport
  // resets the queues afterwards.
  virtual void reset() noexcept = 0;
  // Lifecycle: pause returns once nothing is in flight; notifies that arrive
  // while paused are remembered and served by resume; halt stops for good.
  virtual void pause() {}
  virtual void resume() {}
  virtual void halt() {}
  // Adds device-specific registers / counters; import_state reads back what
  // a restore needs (StateReader), before the transport re-activates it.
  virtual void export_state(v1::DeviceState& /*state*/) const {}
  virtual void import_state(const StateReader& /*state*/) {}
};

class VirtioMmio final : public Device, private VirtioContext {
 public:
  // Register on the MMIO bus at layout::kVirtioMmioBase + slot *
  // layout::kVirtioMmioStride with size virtio_mmio::kRegionSize; `irq` is
  // the slot's GSI (layout::kVirtioIrqs[slot]).
  VirtioMmio(std::string name, vmm::GuestMemory& memory, uint32_t irq, IrqLine& irq_line,
             std::unique_ptr<VirtioDevice> device);
  ~VirtioMmio() override;
  const char* kind() const noexcept override { return device_->kind(); }

  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;

  void start() override;
  void pause() override;
  void resume() override;
  void reset() override;
  void halt() override;
  // Pause and halt drain in-flight requests (a disk's worker thread, a
  // NIC's delivery into the rings).
  bool lifecycle_may_wait() const noexcept override { return true; }
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

  VirtioDevice& device() noexcept { return *device_; }
  uint32_t irq() const noexcept { return irq_; }
  // Everything the transport offers (device features + transport features).
  uint64_t offered_features() const noexcept { return offered_; }
  uint32_t status() const;
  uint32_t interrupt_status() const;
  bool irq_level() const;

 private:
  // VirtioContext
  vmm::GuestMemory& memory() noexcept override { return memory_; }
  Virtqueue& queue(uint16_t index) noexcept override { return *queues_[index]; }
  void notify_used(uint16_t queue) noexcept override;
  void queue_failed(uint16_t queue, QueueError error) noexcept override;
  void config_changed() noexcept override;

  // With ctrl_mutex_ held.
  uint32_t read_reg(uint64_t offset);
  void write_reg(uint64_t offset, uint32_t value);
  uint64_t read_config(uint64_t offset, unsigned size);
  void write_config(uint64_t offset, unsigned size, uint64_t value);
  void write_status(uint32_t value);
  void notify(uint32_t value);
  void device_reset();
  Virtqueue* selected_queue() noexcept;
  uint64_t negotiated_features() const;  // driver features once FEATURES_OK latched
  // With irq_mutex_ held.
  void update_line();
  void fail_locked(QueueError error);

  vmm::GuestMemory& memory_;
  const uint32_t irq_;
  IrqLine& irq_line_;
  std::vector<std::unique_ptr<Virtqueue>> queues_;
  std::unique_ptr<VirtioDevice> device_;  // after queues_: destroyed first
  uint64_t offered_ = 0;

  mutable std::mutex ctrl_mutex_;
  uint32_t device_features_sel_ = 0, driver_features_sel_ = 0, queue_sel_ = 0, shm_sel_ = 0;
  bool halted_ = false;
  uint64_t notifies_ = 0, ignored_notifies_ = 0, resets_ = 0, bad_accesses_ = 0, status_refused_ = 0,
           features_ok_refused_ = 0;

  mutable std::mutex irq_mutex_;
  uint32_t status_ = 0;
  uint64_t driver_features_ = 0;  // frozen once FEATURES_OK is latched
  uint32_t interrupt_status_ = 0;
  uint32_t config_generation_ = 0;
  bool irq_level_ = false;
  uint64_t interrupts_ = 0, queue_errors_ = 0;
  QueueError last_queue_error_ = QueueError::none;
};

}  // namespace apiary::devices
