// virtio-mmio transport and a polled split virtqueue; see virtio.hpp.
#include "guest/lib/virtio.hpp"

#include "guest/lib/io.hpp"
#include "guest/lib/string.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib::virtio {

namespace {
constexpr uint32_t kResetPolls = 10000;
// How often (in used-ring polls) the status register is checked for
// DEVICE_NEEDS_RESET: that read is an exit, the ring poll is not.
constexpr uint32_t kStatusCheckInterval = 4096;
}  // namespace

const char* result_name(Result r) {
  switch (r) {
    case Result::ok: return "ok";
    case Result::no_device: return "no device";
    case Result::legacy_device: return "legacy (version 1) device";
    case Result::features_refused: return "features refused";
    case Result::no_queue: return "queue unavailable";
    case Result::timeout: return "timeout";
    case Result::needs_reset: return "device needs reset";
    case Result::not_ready: return "not initialized";
  }
  return "?";
}

uint32_t Device::reg(uint32_t offset) const { return mmio_read32(base_ + offset); }
void Device::set_reg(uint32_t offset, uint32_t v) { mmio_write32(base_ + offset, v); }

uint32_t Device::config32(uint32_t offset) const { return reg(kRegConfig + offset); }

uint64_t Device::config64(uint32_t offset) const {
  for (int attempt = 0; attempt < 8; ++attempt) {
    uint32_t gen = reg(kRegConfigGeneration);
    uint64_t lo = reg(kRegConfig + offset);
    uint64_t hi = reg(kRegConfig + offset + 4);
    if (reg(kRegConfigGeneration) == gen) return lo | (hi << 32);
  }
  return 0;
}

void Device::reset() {
  ready_ = false;
  if (!base_) return;
  set_reg(kRegStatus, 0);
  for (uint32_t i = 0; i < kResetPolls && reg(kRegStatus) != 0; ++i) {
  }
}

Result Device::init(uint32_t device_id, uint64_t wanted_features, QueueMemory* mem) {
  ready_ = false;
  base_ = 0;
  bool legacy = false;
  for (uint32_t slot = 0; slot < layout::kVirtioMmioSlots; ++slot) {
    uint64_t b = layout::kVirtioMmioBase + slot * layout::kVirtioMmioStride;
    if (mmio_read32(b + kRegMagic) != kMagic || mmio_read32(b + kRegDeviceId) != device_id) continue;
    if (mmio_read32(b + kRegVersion) != kVersionModern) {
      legacy = true;
      continue;
    }
    base_ = b;
    slot_ = slot;
    break;
  }
  if (!base_) return legacy ? Result::legacy_device : Result::no_device;

  // §3.1.1: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK, queues, DRIVER_OK.
  reset();
  set_reg(kRegStatus, kStatusAcknowledge);
  set_reg(kRegStatus, kStatusAcknowledge | kStatusDriver);
  set_reg(kRegDeviceFeaturesSel, 0);
  uint64_t offered = reg(kRegDeviceFeatures);
  set_reg(kRegDeviceFeaturesSel, 1);
  offered |= static_cast<uint64_t>(reg(kRegDeviceFeatures)) << 32;
  uint64_t version1 = 1ull << kFeatureVersion1;
  if (!(offered & version1)) {
    set_reg(kRegStatus, kStatusFailed);
    return Result::features_refused;
  }
  features_ = version1 | (offered & wanted_features);
  set_reg(kRegDriverFeaturesSel, 0);
  set_reg(kRegDriverFeatures, static_cast<uint32_t>(features_));
  set_reg(kRegDriverFeaturesSel, 1);
  set_reg(kRegDriverFeatures, static_cast<uint32_t>(features_ >> 32));
  set_reg(kRegStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk);
  if (!(reg(kRegStatus) & kStatusFeaturesOk)) {
    set_reg(kRegStatus, kStatusFailed);
    return Result::features_refused;
  }

  set_reg(kRegQueueSel, 0);
  uint32_t max = reg(kRegQueueNumMax);
  if (max == 0 || reg(kRegQueueReady) != 0) {
    set_reg(kRegStatus, kStatusFailed);
    return Result::no_queue;
  }
  // Split queues need a power-of-2 size: the largest one we and the device allow.
  uint16_t size = kQueueSize;
  while (size > max) size = static_cast<uint16_t>(size / 2);
  queue_size_ = size;
  mem_ = mem;
  memset(mem_, 0, sizeof *mem_);
  last_used_ = 0;
  uint64_t desc = reinterpret_cast<uint64_t>(&mem_->desc);
  uint64_t avail = reinterpret_cast<uint64_t>(&mem_->avail);
  uint64_t used = reinterpret_cast<uint64_t>(&mem_->used);
  set_reg(kRegQueueNum, size);
  set_reg(kRegQueueDescLow, static_cast<uint32_t>(desc));
  set_reg(kRegQueueDescHigh, static_cast<uint32_t>(desc >> 32));
  set_reg(kRegQueueDriverLow, static_cast<uint32_t>(avail));
  set_reg(kRegQueueDriverHigh, static_cast<uint32_t>(avail >> 32));
  set_reg(kRegQueueDeviceLow, static_cast<uint32_t>(used));
  set_reg(kRegQueueDeviceHigh, static_cast<uint32_t>(used >> 32));
  set_reg(kRegQueueReady, 1);
  set_reg(kRegStatus, kStatusAcknowledge | kStatusDriver | kStatusFeaturesOk | kStatusDriverOk);
  if (reg(kRegStatus) & (kStatusNeedsReset | kStatusFailed)) {
    reset();
    return Result::needs_reset;
  }
  ready_ = true;
  return Result::ok;
}

Result Device::transfer(const Buffer* bufs, size_t n, uint32_t* written, uint32_t polls) {
  if (!ready_) return Result::not_ready;
  if (n == 0 || n > queue_size_) return Result::not_ready;
  volatile Desc* desc = mem_->desc;
  for (size_t i = 0; i < n; ++i) {
    desc[i].addr = reinterpret_cast<uint64_t>(bufs[i].addr);
    desc[i].len = bufs[i].len;
    desc[i].flags = static_cast<uint16_t>((i + 1 < n ? kDescNext : 0) | (bufs[i].device_writes ? kDescWrite : 0));
    desc[i].next = static_cast<uint16_t>(i + 1 < n ? i + 1 : 0);
  }
  volatile Avail* avail = &mem_->avail;
  uint16_t idx = avail->idx;
  avail->ring[idx % queue_size_] = 0;  // the chain's head
  memory_fence();                      // ring entry before index
  avail->idx = static_cast<uint16_t>(idx + 1);
  memory_fence();                      // index before the doorbell
  set_reg(kRegQueueNotify, 0);

  volatile Used* used = &mem_->used;
  for (uint32_t i = 0; i < polls; ++i) {
    if (used->idx != last_used_) {
      memory_fence();  // the index before the element it publishes
      uint32_t len = used->ring[last_used_ % queue_size_].len;
      last_used_ = static_cast<uint16_t>(last_used_ + 1);
      if (written) *written = len;
      return Result::ok;
    }
    if (i % kStatusCheckInterval == kStatusCheckInterval - 1 && (reg(kRegStatus) & kStatusNeedsReset)) {
      reset();
      return Result::needs_reset;
    }
    cpu_relax();
  }
  // The device may still own the buffers. Not reset here (a reset waits for
  // the request in flight, which may be what hangs); init() resets the
  // device before anything is submitted again, and until then ready_ is off.
  ready_ = false;
  return Result::timeout;
}

}  // namespace apiary::guestlib::virtio
