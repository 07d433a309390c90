// virtio-mmio v2 transport: register file, feature negotiation, the status
// state machine, queue setup, interrupt status. See virtio_mmio.hpp.
#include "devices/virtio_mmio.hpp"

#include <string>

#include "vmm-core/error.hpp"

namespace apiary::devices {

using namespace virtio;
using namespace virtio_mmio;

VirtioMmio::VirtioMmio(std::string name, vmm::GuestMemory& memory, uint32_t irq, IrqLine& irq_line,
                       std::unique_ptr<VirtioDevice> device)
    : Device(std::move(name)), memory_(memory), irq_(irq), irq_line_(irq_line), device_(std::move(device)) {
  if (!device_) throw vmm::Error(vmm::Errc::invalid_argument, "virtio-mmio: no device model");
  for (uint16_t q = 0; q < device_->num_queues(); ++q)
    queues_.push_back(std::make_unique<Virtqueue>(memory_, device_->queue_max_size(q)));
  offered_ = device_->device_features() | feature_bit(kFeatureVersion1) | feature_bit(virtq::kFeatureIndirectDesc) |
             feature_bit(virtq::kFeatureEventIdx);
  device_->attach(*this);
}

VirtioMmio::~VirtioMmio() {
  // Stop the model's workers while the queues and this transport (which
  // they call back into) still exist.
  std::lock_guard lock(ctrl_mutex_);
  device_->halt();
}

uint32_t VirtioMmio::status() const {
  std::lock_guard lock(irq_mutex_);
  return status_;
}

uint32_t VirtioMmio::interrupt_status() const {
  std::lock_guard lock(irq_mutex_);
  return interrupt_status_;
}

bool VirtioMmio::irq_level() const {
  std::lock_guard lock(irq_mutex_);
  return irq_level_;
}

// ------------------------------------------------------------ interrupts --

void VirtioMmio::update_line() {
  const bool level = interrupt_status_ != 0;
  if (level == irq_level_) return;
  irq_level_ = level;
  if (level) ++interrupts_;
  irq_line_.set_level(irq_, level);
}

void VirtioMmio::fail_locked(QueueError error) {
  ++queue_errors_;
  last_queue_error_ = error;
  if (status_ & kStatusNeedsReset) return;
  status_ |= kStatusNeedsReset;
  // §2.1.2: once DRIVER_OK, entering NEEDS_RESET is announced with a
  // configuration change notification.
  if (status_ & kStatusDriverOk) {
    interrupt_status_ |= kIntConfigChange;
    update_line();
  }
}

void VirtioMmio::notify_used(uint16_t queue) noexcept {
  if (queue >= queues_.size() || !queues_[queue]->needs_notify()) return;
  std::lock_guard lock(irq_mutex_);
  interrupt_status_ |= kIntUsedBuffer;
  update_line();
}

void VirtioMmio::queue_failed(uint16_t, QueueError error) noexcept {
  std::lock_guard lock(irq_mutex_);
  fail_locked(error);
}

void VirtioMmio::config_changed() noexcept {
  std::lock_guard lock(irq_mutex_);
  ++config_generation_;
  if (status_ & kStatusDriverOk) {
    interrupt_status_ |= kIntConfigChange;
    update_line();
  }
}

// ------------------------------------------------------------- registers --

Virtqueue* VirtioMmio::selected_queue() noexcept {
  return queue_sel_ < queues_.size() ? queues_[queue_sel_].get() : nullptr;
}

uint64_t VirtioMmio::negotiated_features() const {
  std::lock_guard lock(irq_mutex_);
  return (status_ & kStatusFeaturesOk) ? driver_features_ : 0;
}

uint64_t VirtioMmio::io_read(uint64_t offset, unsigned size) {
  std::lock_guard lock(ctrl_mutex_);
  if (offset >= kConfig) return read_config(offset - kConfig, size);
  if (size != 4 || offset % 4) {
    ++bad_accesses_;
    return 0;
  }
  return read_reg(offset);
}

void VirtioMmio::io_write(uint64_t offset, unsigned size, uint64_t value) {
  std::lock_guard lock(ctrl_mutex_);
  if (offset >= kConfig) return write_config(offset - kConfig, size, value);
  if (size != 4 || offset % 4) {
    ++bad_accesses_;
    return;
  }
  write_reg(offset, static_cast<uint32_t>(value));
}

uint32_t VirtioMmio::read_reg(uint64_t offset) {
  Virtqueue* q = selected_queue();
  switch (offset) {
    case kMagicValue: return kMagic;
    case kVersion: return kVersion2;
    case kDeviceId: return device_->device_id();
    case kVendorId: return kVendor;
    case kDeviceFeatures:
      return device_features_sel_ < 2 ? static_cast<uint32_t>(offered_ >> (32 * device_features_sel_)) : 0;
    case kQueueNumMax: return q ? q->max_size() : 0;
    case kQueueReady: return q && q->ready() ? 1 : 0;
    case kInterruptStatus: {
      std::lock_guard lock(irq_mutex_);
      return interrupt_status_;
    }
    case kStatus: {
      std::lock_guard lock(irq_mutex_);
      return status_;
    }
    case kConfigGeneration: {
      std::lock_guard lock(irq_mutex_);
      return config_generation_;
    }
    // No shared memory regions: every region reads as length -1 (§4.2.2).
    case kShmLenLow:
    case kShmLenHigh:
    case kShmBaseLow:
    case kShmBaseHigh: return 0xffffffffu;
  }
  // Write-only and reserved registers read as 0.
  return 0;
}

void VirtioMmio::write_reg(uint64_t offset, uint32_t value) {
  Virtqueue* q = selected_queue();
  switch (offset) {
    case kDeviceFeaturesSel: device_features_sel_ = value; return;
    case kDriverFeaturesSel: driver_features_sel_ = value; return;
    case kDriverFeatures: {
      std::lock_guard lock(irq_mutex_);
      // Frozen once FEATURES_OK is latched (§3.1.1).
      if ((status_ & kStatusFeaturesOk) || driver_features_sel_ >= 2) return;
      const unsigned shift = 32 * driver_features_sel_;
      driver_features_ = (driver_features_ & ~(0xffffffffull << shift)) | (uint64_t{value} << shift);
      return;
    }
    case kQueueSel: queue_sel_ = value; return;
    case kQueueNum:
      if (q) q->set_size(value);
      return;
    case kQueueReady:
      if (!q) return;
      if (value == 0) {
        q->disable();
      } else if (!q->ready()) {
        if (const QueueError e = q->enable(negotiated_features()); e != QueueError::none) {
          std::lock_guard lock(irq_mutex_);
          fail_locked(e);
        }
      }
      return;
    case kQueueNotify: notify(value); return;
    case kInterruptAck: {
      std::lock_guard lock(irq_mutex_);
      interrupt_status_ &= ~value;
      update_line();
      return;
    }
    case kStatus: write_status(value); return;
    case kQueueDescLow:
      if (q) q->set_desc_addr((q->desc_addr() & ~0xffffffffull) | value);
      return;
    case kQueueDescHigh:
      if (q) q->set_desc_addr((q->desc_addr() & 0xffffffffull) | (uint64_t{value} << 32));
      return;
    case kQueueDriverLow:
      if (q) q->set_driver_addr((q->driver_addr() & ~0xffffffffull) | value);
      return;
    case kQueueDriverHigh:
      if (q) q->set_driver_addr((q->driver_addr() & 0xffffffffull) | (uint64_t{value} << 32));
      return;
    case kQueueDeviceLow:
      if (q) q->set_device_addr((q->device_addr() & ~0xffffffffull) | value);
      return;
    case kQueueDeviceHigh:
      if (q) q->set_device_addr((q->device_addr() & 0xffffffffull) | (uint64_t{value} << 32));
      return;
    case kShmSel: shm_sel_ = value; return;
  }
  ++bad_accesses_;  // read-only or reserved
}

uint64_t VirtioMmio::read_config(uint64_t offset, unsigned size) {
  const uint32_t n = device_->config_size();
  if ((size != 1 && size != 2 && size != 4 && size != 8) || offset > n || size > n - offset) {
    ++bad_accesses_;
    return 0;
  }
  uint8_t bytes[8] = {};
  device_->read_config(static_cast<uint32_t>(offset), std::span<uint8_t>(bytes, size));
  uint64_t v = 0;
  for (unsigned i = 0; i < size; ++i) v |= uint64_t{bytes[i]} << (8 * i);
  return v;
}

void VirtioMmio::write_config(uint64_t offset, unsigned size, uint64_t value) {
  const uint32_t n = device_->config_size();
  if ((size != 1 && size != 2 && size != 4 && size != 8) || offset > n || size > n - offset) {
    ++bad_accesses_;
    return;
  }
  uint8_t bytes[8];
  for (unsigned i = 0; i < size; ++i) bytes[i] = static_cast<uint8_t>(value >> (8 * i));
  device_->write_config(static_cast<uint32_t>(offset), std::span<const uint8_t>(bytes, size));
}

// ------------------------------------------------------- status machine --

void VirtioMmio::write_status(uint32_t value) {
  if (value == 0) {
    device_reset();
    return;
  }
  bool activate = false, config_irq_pending = false;
  uint64_t features = 0;
  {
    std::lock_guard lock(irq_mutex_);
    // The driver may only add bits (§2.1.2); NEEDS_RESET is the device's.
    const uint32_t driver_bits = status_ & ~kStatusNeedsReset;
    if ((value & driver_bits) != driver_bits) {
      ++status_refused_;
      return;
    }
    const uint32_t added = value & ~status_ & ~kStatusNeedsReset;
    uint32_t s = status_;
    if (added & kStatusAcknowledge) s |= kStatusAcknowledge;
    if ((added & kStatusDriver) && (s & kStatusAcknowledge)) s |= kStatusDriver;
    if ((added & kStatusFeaturesOk) && (s & kStatusDriver)) {
      // FEATURES_OK is not latched when the driver took something we did
      // not offer, or did not accept VERSION_1 (a legacy driver): the
      // driver reads Status back and gives up (§3.1.1 step 6).
      const bool subset = (driver_features_ & ~offered_) == 0;
      const bool modern = driver_features_ & feature_bit(kFeatureVersion1);
      if (subset && modern) {
        s |= kStatusFeaturesOk;
      } else {
        ++features_ok_refused_;
      }
    }
    if ((added & kStatusDriverOk) && (s & kStatusFeaturesOk)) {
      s |= kStatusDriverOk;
      // A queue that failed to enable set NEEDS_RESET: the driver must reset
      // first, and until then the device serves nothing (its model would
      // otherwise fill the other queues while every notify is ignored).
      activate = !(status_ & kStatusNeedsReset);
      features = driver_features_;
      if (!activate) {
        // NEEDS_RESET came before DRIVER_OK, so it was not announced then
        // (§2.1.2): announce it now that the driver is listening.
        interrupt_status_ |= kIntConfigChange;
        config_irq_pending = true;
      }
    }
    if (added & kStatusFailed) s |= kStatusFailed;
    if ((s | kStatusNeedsReset) != (status_ | value | kStatusNeedsReset)) ++status_refused_;
    status_ = s;
    if (config_irq_pending) update_line();
  }
  if (!activate) return;
  device_->activate(features);
  // A notify the driver wrote before DRIVER_OK was ignored, and with
  // EVENT_IDX it does not write another until the device has consumed what
  // it offered: look at every queue once now (a notify with nothing new is
  // harmless). Linux sets DRIVER_OK before it uses a queue, but a driver
  // that does not would otherwise wait forever.
  for (size_t i = 0; i < queues_.size(); ++i) {
    {
      std::lock_guard lock(irq_mutex_);  // a queue served just before may have failed
      if ((status_ & kStatusNeedsReset) || halted_) return;
    }
    if (queues_[i]->ready()) device_->on_notify(static_cast<uint16_t>(i));
  }
}

void VirtioMmio::device_reset() {
  // The model finishes what is in flight first (its workers need only
  // irq_mutex_ and the queues), then everything returns to power-on state.
  device_->reset();
  for (auto& q : queues_) q->reset();
  device_features_sel_ = driver_features_sel_ = queue_sel_ = shm_sel_ = 0;
  ++resets_;
  std::lock_guard lock(irq_mutex_);
  driver_features_ = 0;
  status_ = 0;
  interrupt_status_ = 0;
  update_line();
}

void VirtioMmio::notify(uint32_t value) {
  const uint32_t index = value & 0xffff;  // without NOTIFICATION_DATA: the queue index
  {
    std::lock_guard lock(irq_mutex_);
    const bool live = (status_ & kStatusDriverOk) && !(status_ & kStatusNeedsReset);
    if (!live || halted_ || index >= queues_.size() || !queues_[index]->ready()) {
      ++ignored_notifies_;
      return;
    }
  }
  ++notifies_;
  device_->on_notify(static_cast<uint16_t>(index));
}

// ------------------------------------------------------------- lifecycle --

void VirtioMmio::start() {
  std::lock_guard lock(ctrl_mutex_);
  Device::start();
  // A reboot quiesces (pauses) the model, resets it and starts it again:
  // without this it stayed paused, and the rebooted guest's NIC, disk and
  // rng never served a request. On a first start it is a no-op.
  device_->resume();
}

void VirtioMmio::pause() {
  std::lock_guard lock(ctrl_mutex_);
  device_->pause();
  Device::pause();
}

void VirtioMmio::resume() {
  std::lock_guard lock(ctrl_mutex_);
  Device::resume();
  device_->resume();
}

void VirtioMmio::reset() {
  std::lock_guard lock(ctrl_mutex_);
  device_reset();
}

void VirtioMmio::halt() {
  std::lock_guard lock(ctrl_mutex_);
  halted_ = true;
  device_->halt();
  Device::halt();
}

v1::DeviceState VirtioMmio::export_state() const {
  std::lock_guard ctrl(ctrl_mutex_);
  v1::DeviceState s = base_state();
  auto& r = *s.mutable_registers();
  auto& c = *s.mutable_counters();
  r["device_id"] = device_->device_id();
  r["device_features"] = offered_;
  r["queue_sel"] = queue_sel_;
  r["device_features_sel"] = device_features_sel_;
  r["driver_features_sel"] = driver_features_sel_;
  r["shm_sel"] = shm_sel_;
  for (size_t i = 0; i < queues_.size(); ++i) {
    const Virtqueue& q = *queues_[i];
    const std::string p = "q" + std::to_string(i) + ".";
    r[p + "size"] = q.size();
    r[p + "ready"] = q.ready();
    r[p + "desc"] = q.desc_addr();
    r[p + "driver"] = q.driver_addr();
    r[p + "device"] = q.device_addr();
    r[p + "last_avail_idx"] = q.last_avail_idx();
    r[p + "used_idx"] = q.used_idx();
    r[p + "signalled_used"] = q.signalled_used();
    r[p + "error"] = static_cast<uint64_t>(q.error());
    c[p + "popped"] = q.popped();
    c[p + "used"] = q.used();
    c[p + "error"] = static_cast<uint64_t>(q.error());
  }
  c["notifies"] = notifies_;
  c["ignored_notifies"] = ignored_notifies_;
  c["resets"] = resets_;
  c["bad_accesses"] = bad_accesses_;
  c["status_refused"] = status_refused_;
  c["features_ok_refused"] = features_ok_refused_;
  {
    std::lock_guard lock(irq_mutex_);
    r["driver_features"] = driver_features_;
    r["status"] = status_;
    r["interrupt_status"] = interrupt_status_;
    r["config_generation"] = config_generation_;
    c["interrupts"] = interrupts_;
    c["irq_level"] = irq_level_;
    c["queue_errors"] = queue_errors_;
    c["last_queue_error"] = static_cast<uint64_t>(last_queue_error_);
  }
  device_->export_state(s);
  return s;
}

void VirtioMmio::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  if (r.reg("device_id") != device_->device_id() || r.reg("device_features") != offered_)
    r.fail("saved for device id " + std::to_string(r.reg("device_id")) + " with features " +
           std::to_string(r.reg("device_features")) + ", this one is " + std::to_string(device_->device_id()) +
           " with " + std::to_string(offered_));
  std::lock_guard ctrl(ctrl_mutex_);
  queue_sel_ = r.reg_as<uint32_t>("queue_sel");
  device_features_sel_ = r.reg_as<uint32_t>("device_features_sel");
  driver_features_sel_ = r.reg_as<uint32_t>("driver_features_sel");
  shm_sel_ = r.reg_as<uint32_t>("shm_sel");
  uint64_t features = 0;
  bool live = false;
  {
    std::lock_guard lock(irq_mutex_);
    status_ = r.reg_as<uint8_t>("status");
    driver_features_ = r.reg("driver_features");
    if (driver_features_ & ~offered_) r.fail("driver features outside those offered");
    interrupt_status_ = static_cast<uint32_t>(r.reg("interrupt_status", kIntUsedBuffer | kIntConfigChange));
    config_generation_ = r.reg_as<uint32_t>("config_generation");
    features = (status_ & kStatusFeaturesOk) ? driver_features_ : 0;
    live = (status_ & kStatusDriverOk) && !(status_ & kStatusNeedsReset);
    update_line();
  }
  for (size_t i = 0; i < queues_.size(); ++i) {
    Virtqueue& q = *queues_[i];
    const std::string p = "q" + std::to_string(i) + ".";
    q.reset();
    q.set_size(static_cast<uint32_t>(r.reg(p + "size", q.max_size())));
    q.set_desc_addr(r.reg(p + "desc"));
    q.set_driver_addr(r.reg(p + "driver"));
    q.set_device_addr(r.reg(p + "device"));
    if (!r.flag(p + "ready")) continue;
    const auto sticky = static_cast<QueueError>(r.reg(p + "error", static_cast<uint64_t>(QueueError::bad_used_head)));
    if (QueueError e = q.restore(features, r.reg_as<uint16_t>(p + "last_avail_idx"), r.reg_as<uint16_t>(p + "used_idx"),
                                 r.reg_as<uint16_t>(p + "signalled_used"), sticky);
        e != QueueError::none)
      r.fail("queue " + std::to_string(i) + ": " + to_string(e));
  }
  device_->import_state(r);
  if (!live) return;
  device_->activate(features);
  // Requests the driver made available while the device was paused for the
  // snapshot were remembered only in the old process: look at every queue
  // once (a notify with nothing new is harmless).
  for (size_t i = 0; i < queues_.size(); ++i)
    if (queues_[i]->ready()) device_->on_notify(static_cast<uint16_t>(i));
}

}  // namespace apiary::devices
