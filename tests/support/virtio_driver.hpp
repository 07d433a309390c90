// A fake virtio driver for unit tests: it does what a guest's virtio-mmio
// driver does, through the transport's registers and rings laid out in guest
// RAM, for a device with any number of queues.
//
// Why a shared helper: each device test should exercise the device the way
// a guest does (feature negotiation, queue setup, descriptor chains,
// QueueNotify, the used ring), and the ring layout is the same for all of
// them. Framework-free (no Boost.Test here): steps that can fail return
// bool and the test asserts on them.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <vector>

#include "devices/virtio_mmio.hpp"
#include "vmm-core/guest_memory.hpp"

namespace apiary::test {

class VirtioDriver {
 public:
  // One descriptor as the guest writes it (§2.7.5).
  struct RawDesc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
  };
  // A buffer of a chain: guest address, length, device-writable or not.
  struct Buf {
    uint64_t gpa;
    uint32_t len;
    bool writable;
  };
  struct UsedElem {
    uint32_t id, len;
  };
  // Where queue q's rings live: desc at base, avail after it, used after
  // that (4-aligned); the caller keeps the areas of different queues apart.
  struct Queue {
    uint16_t size = 0;
    uint64_t desc = 0, avail = 0, used = 0;
    uint16_t avail_idx = 0;  // the driver's next avail.idx
    uint16_t seen_used = 0;  // used entries consumed with next_used()
  };

  VirtioDriver(vmm::GuestMemory& mem, devices::VirtioMmio& dev) : mem_(mem), dev_(dev) {}

  uint32_t rd(uint64_t off) { return static_cast<uint32_t>(dev_.io_read(off, 4)); }
  void wr(uint64_t off, uint32_t v) { dev_.io_write(off, 4, v); }
  uint64_t config(uint32_t off, unsigned size) { return dev_.io_read(devices::virtio_mmio::kConfig + off, size); }
  uint32_t status() { return rd(devices::virtio_mmio::kStatus); }

  uint64_t device_features() {
    namespace m = devices::virtio_mmio;
    wr(m::kDeviceFeaturesSel, 0);
    uint64_t f = rd(m::kDeviceFeatures);
    wr(m::kDeviceFeaturesSel, 1);
    return f | (uint64_t{rd(m::kDeviceFeatures)} << 32);
  }

  // Reset, ACKNOWLEDGE, DRIVER, the features, FEATURES_OK. Whether the
  // device latched FEATURES_OK.
  bool negotiate(uint64_t features) {
    namespace m = devices::virtio_mmio;
    namespace v = devices::virtio;
    wr(m::kStatus, 0);
    queues_.clear();
    wr(m::kStatus, v::kStatusAcknowledge);
    wr(m::kStatus, v::kStatusAcknowledge | v::kStatusDriver);
    wr(m::kDriverFeaturesSel, 0);
    wr(m::kDriverFeatures, static_cast<uint32_t>(features));
    wr(m::kDriverFeaturesSel, 1);
    wr(m::kDriverFeatures, static_cast<uint32_t>(features >> 32));
    wr(m::kStatus, status() | v::kStatusFeaturesOk);
    return status() & v::kStatusFeaturesOk;
  }

  // Lays out queue q (rings zeroed) at `base` and sets QueueReady. Whether
  // the device took it.
  bool setup_queue(uint16_t q, uint16_t size, uint64_t base) {
    namespace m = devices::virtio_mmio;
    if (queues_.size() <= q) queues_.resize(q + 1u);
    Queue& Q = queues_[q];
    Q = Queue{};
    Q.size = size;
    Q.desc = base;
    Q.avail = base + 16 * uint64_t{size};
    Q.used = (Q.avail + 6 + 2 * uint64_t{size} + 3) & ~uint64_t{3};
    mem_.fill(Q.desc, 16 * uint64_t{size}, 0);
    mem_.fill(Q.avail, 6 + 2 * uint64_t{size}, 0);
    mem_.fill(Q.used, 6 + 8 * uint64_t{size}, 0);
    wr(m::kQueueSel, q);
    wr(m::kQueueNum, size);
    wr(m::kQueueDescLow, static_cast<uint32_t>(Q.desc));
    wr(m::kQueueDescHigh, static_cast<uint32_t>(Q.desc >> 32));
    wr(m::kQueueDriverLow, static_cast<uint32_t>(Q.avail));
    wr(m::kQueueDriverHigh, static_cast<uint32_t>(Q.avail >> 32));
    wr(m::kQueueDeviceLow, static_cast<uint32_t>(Q.used));
    wr(m::kQueueDeviceHigh, static_cast<uint32_t>(Q.used >> 32));
    wr(m::kQueueReady, 1);
    return rd(m::kQueueReady) == 1;
  }

  bool driver_ok() {
    namespace v = devices::virtio;
    wr(devices::virtio_mmio::kStatus, status() | v::kStatusDriverOk);
    return status() & v::kStatusDriverOk;
  }

  Queue& queue(uint16_t q) { return queues_.at(q); }
  // Carries on where `other` left off (the same rings, in RAM restored from
  // a snapshot) without touching the device.
  void adopt(const VirtioDriver& other) { queues_ = other.queues_; }

  void set_desc(uint16_t q, uint16_t i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next = 0) {
    mem_.write_obj(queue(q).desc + 16 * uint64_t{i}, RawDesc{addr, len, flags, next});
  }
  // Writes `bufs` as a chain in descriptors head, head+1, ... and offers it.
  void post(uint16_t q, uint16_t head, std::span<const Buf> bufs) {
    namespace vq = devices::virtq;
    const uint16_t size = queue(q).size;
    for (size_t i = 0; i < bufs.size(); ++i) {
      const auto idx = static_cast<uint16_t>((head + i) % size);
      const bool last = i + 1 == bufs.size();
      set_desc(q, idx, bufs[i].gpa, bufs[i].len,
               static_cast<uint16_t>((bufs[i].writable ? vq::kDescFWrite : 0) | (last ? 0 : vq::kDescFNext)),
               static_cast<uint16_t>((idx + 1) % size));
    }
    offer(q, head);
  }
  void post(uint16_t q, uint16_t head, std::initializer_list<Buf> bufs) {
    post(q, head, std::span<const Buf>(bufs.begin(), bufs.size()));
  }
  // Puts `head` on the available ring and publishes avail.idx.
  void offer(uint16_t q, uint16_t head) {
    Queue& Q = queue(q);
    mem_.write_obj<uint16_t>(Q.avail + 4 + 2 * uint64_t{static_cast<uint16_t>(Q.avail_idx % Q.size)}, head);
    u16(Q.avail + 2).store(++Q.avail_idx, std::memory_order_release);
  }
  void kick(uint16_t q) { wr(devices::virtio_mmio::kQueueNotify, q); }

  uint16_t used_idx(uint16_t q) { return u16(queue(q).used + 2).load(std::memory_order_acquire); }
  UsedElem used(uint16_t q, uint16_t i) {
    const Queue& Q = queue(q);
    return mem_.read_obj<UsedElem>(Q.used + 4 + 8 * uint64_t{static_cast<uint16_t>(i % Q.size)});
  }
  // The next used element not consumed yet, if any.
  bool next_used(uint16_t q, UsedElem& out) {
    Queue& Q = queue(q);
    if (Q.seen_used == used_idx(q)) return false;
    out = used(q, Q.seen_used++);
    return true;
  }

  std::vector<uint8_t> bytes(uint64_t gpa, size_t n) {
    std::vector<uint8_t> v(n);
    mem_.read(gpa, v);
    return v;
  }

 private:
  std::atomic_ref<uint16_t> u16(uint64_t gpa) {
    return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(mem_.host_range(gpa, 2)));
  }

  vmm::GuestMemory& mem_;
  devices::VirtioMmio& dev_;
  std::vector<Queue> queues_;
};

}  // namespace apiary::test
