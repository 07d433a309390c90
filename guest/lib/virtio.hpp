// A minimal virtio-mmio driver core (virtio 1.x, MMIO transport version 2):
// device discovery, initialization, and one split virtqueue driven by
// polling.
//
// Why this shape: the guests only need to prove the VMM's virtio devices
// work (blk, rng), one request at a time, so the driver is as small as the
// spec allows: no interrupts (the used ring is polled with a bounded loop),
// no indirect descriptors or event index, only VIRTIO_F_VERSION_1 plus the
// few device features a driver asks for by name. Rings live in a static,
// page-aligned QueueMemory the caller owns; guest memory is identity
// mapped, so their addresses are what the device is told.
//
// Every request uses descriptors 0..n-1 as one chain and waits for it to
// complete before the next is made, so the ring never holds more than one
// chain. A request that times out leaves the device unusable (it may still
// write into the buffers later) until init() runs again, which resets it
// first; the buffers must not be reused before that.
#pragma once

#include <stddef.h>
#include <stdint.h>

namespace apiary::guestlib::virtio {

// MMIO register offsets (virtio 1.x §4.2.2).
inline constexpr uint32_t kRegMagic = 0x000, kRegVersion = 0x004, kRegDeviceId = 0x008,
                          kRegVendorId = 0x00c, kRegDeviceFeatures = 0x010, kRegDeviceFeaturesSel = 0x014,
                          kRegDriverFeatures = 0x020, kRegDriverFeaturesSel = 0x024, kRegQueueSel = 0x030,
                          kRegQueueNumMax = 0x034, kRegQueueNum = 0x038, kRegQueueReady = 0x044,
                          kRegQueueNotify = 0x050, kRegInterruptStatus = 0x060, kRegInterruptAck = 0x064,
                          kRegStatus = 0x070, kRegQueueDescLow = 0x080, kRegQueueDescHigh = 0x084,
                          kRegQueueDriverLow = 0x090, kRegQueueDriverHigh = 0x094,
                          kRegQueueDeviceLow = 0x0a0, kRegQueueDeviceHigh = 0x0a4,
                          kRegConfigGeneration = 0x0fc, kRegConfig = 0x100;
inline constexpr uint32_t kMagic = 0x74726976;  // "virt"
inline constexpr uint32_t kVersionModern = 2;

// Device status bits.
inline constexpr uint32_t kStatusAcknowledge = 1, kStatusDriver = 2, kStatusDriverOk = 4,
                          kStatusFeaturesOk = 8, kStatusNeedsReset = 64, kStatusFailed = 128;

inline constexpr unsigned kFeatureVersion1 = 32;

// Device ids.
inline constexpr uint32_t kDeviceBlock = 2, kDeviceRng = 4;

// Split virtqueue (§2.7).
inline constexpr uint16_t kQueueSize = 8;  // we use at most this many entries
inline constexpr uint16_t kDescNext = 1, kDescWrite = 2;

struct Desc {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;
  uint16_t next;
};
struct Avail {
  uint16_t flags;
  uint16_t idx;
  uint16_t ring[kQueueSize];
  uint16_t used_event;
};
struct UsedElem {
  uint32_t id;
  uint32_t len;
};
struct Used {
  uint16_t flags;
  uint16_t idx;
  UsedElem ring[kQueueSize];
  uint16_t avail_event;
};
// One queue's rings: descriptor table 16-aligned, avail 2, used 4 (§2.7).
struct alignas(4096) QueueMemory {
  Desc desc[kQueueSize];
  Avail avail;
  alignas(4) Used used;
};

enum class Result {
  ok,
  no_device,         // no slot has the device id
  legacy_device,     // MMIO version 1: not supported
  features_refused,  // FEATURES_OK did not stick, or VERSION_1 not offered
  no_queue,          // queue 0 missing or already in use
  timeout,           // the device did not complete in time
  needs_reset,       // the device set DEVICE_NEEDS_RESET
  not_ready,         // request made before a successful init
};
const char* result_name(Result r);

// One buffer of a request chain, in order: device-readable ones first.
struct Buffer {
  const void* addr;
  uint32_t len;
  bool device_writes;
};

// Used-ring polls before a request times out. A poll is ~10 instructions
// and no exit; the emulator here runs ~70k of them a second, so this is
// ~3 s (much less on hardware virtualization).
inline constexpr uint32_t kDefaultPolls = 200000;

class Device {
 public:
  // Finds the first virtio-mmio slot whose device id is `device_id`, resets
  // it and brings it to DRIVER_OK with queue 0 on `mem`. The driver
  // accepts VIRTIO_F_VERSION_1 plus those of `wanted_features` the device
  // offers.
  Result init(uint32_t device_id, uint64_t wanted_features, QueueMemory* mem);
  bool ready() const { return ready_; }
  // Submits bufs[0..n) as one chain, notifies queue 0 and polls for its
  // completion; *written gets the used length the device reported.
  Result transfer(const Buffer* bufs, size_t n, uint32_t* written, uint32_t polls = kDefaultPolls);
  // Writes 0 to the status register (bounded wait for it to read back 0).
  void reset();

  uint64_t base() const { return base_; }
  uint32_t slot() const { return slot_; }
  uint64_t features() const { return features_; }
  uint16_t queue_size() const { return queue_size_; }
  uint32_t config32(uint32_t offset) const;
  uint64_t config64(uint32_t offset) const;  // retried across ConfigGeneration changes

 private:
  uint32_t reg(uint32_t offset) const;
  void set_reg(uint32_t offset, uint32_t v);

  uint64_t base_ = 0;
  uint32_t slot_ = 0;
  uint64_t features_ = 0;
  uint16_t queue_size_ = 0;
  uint16_t last_used_ = 0;
  QueueMemory* mem_ = nullptr;
  bool ready_ = false;
};

}  // namespace apiary::guestlib::virtio
