// A split virtqueue (virtio 1.x §2.7), device side, over guest RAM.
//
// Why so defensive: every byte of the three rings and of every descriptor is
// written by the guest, possibly while we read it, possibly maliciously. The
// queue therefore reads each guest structure exactly once into a local copy,
// validates the copy, and hands the device a Chain of (gpa, len, writable)
// buffers that are known to lie inside guest RAM and to respect the spec's
// rules (bounded length, no loops, readable before writable, ...). Any
// violation is reported as a named QueueError; the queue then stays broken
// (sticky error) until it is reset, and the transport turns the error into
// DEVICE_NEEDS_RESET. Nothing here ever throws on the data path or touches
// host memory outside guest RAM.
//
// Ordering with the guest: the avail index is loaded with acquire semantics
// before any ring entry or descriptor is read; used elements are written
// before the used index is published with a release (seq_cst) store, and the
// driver's suppression fields (avail flags / used_event) are read after it
// with a seq_cst load — the store-load barrier the notification-suppression
// protocol needs. Index fields are accessed through std::atomic_ref (the
// rings are naturally aligned, which enable() checks).
//
// Thread safety: all members are safe to call concurrently (one mutex per
// queue); typically pop() runs on a vCPU thread and push_used() on a device
// worker thread.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "vmm-core/guest_memory.hpp"

namespace apiary::devices {

namespace virtq {
// Descriptor flags.
inline constexpr uint16_t kDescFNext = 1, kDescFWrite = 2, kDescFIndirect = 4;
// Driver -> device: "don't interrupt me" (avail.flags).
inline constexpr uint16_t kAvailFNoInterrupt = 1;
// Device -> driver: "don't notify me" (used.flags).
inline constexpr uint16_t kUsedFNoNotify = 1;
// Transport-independent feature bits that concern the ring layout.
inline constexpr unsigned kFeatureIndirectDesc = 28, kFeatureEventIdx = 29;
// Largest queue size the split layout allows.
inline constexpr uint16_t kMaxQueueSize = 32768;
// Largest indirect table we accept, in descriptors (Linux never exceeds the
// queue size; QEMU caps at 1024 as well).
inline constexpr uint32_t kMaxIndirectDescs = 1024;
// Ring alignment requirements (§2.7: descriptor table 16, avail 2, used 4).
inline constexpr uint64_t kDescAlign = 16, kAvailAlign = 2, kUsedAlign = 4;
inline constexpr uint64_t kDescSize = 16;
}  // namespace virtq

// Why a queue (or a chain on it) was refused.
enum class QueueError {
  none = 0,
  bad_size,                 // QueueNum zero, not a power of 2, or above the maximum
  desc_table_misaligned,    // descriptor table not 16-byte aligned
  desc_table_out_of_range,  // descriptor table not (entirely) in guest RAM
  avail_ring_misaligned,
  avail_ring_out_of_range,
  used_ring_misaligned,
  used_ring_out_of_range,
  avail_idx_jump,           // avail.idx moved by more than the queue size
  head_out_of_range,        // avail ring entry >= queue size
  head_in_use,              // avail ring offers a head the device still holds
  next_out_of_range,        // descriptor next >= table size
  chain_too_long,           // more descriptors than the table holds: a loop
  zero_length,              // a buffer of length 0
  buffer_out_of_range,      // a buffer not (entirely) in guest RAM
  readable_after_writable,  // device-readable buffer after a device-writable one
  length_overflow,          // total chain length does not fit 32 bits
  indirect_not_negotiated,  // VIRTQ_DESC_F_INDIRECT without VIRTIO_F_INDIRECT_DESC
  indirect_with_next,       // INDIRECT together with NEXT
  indirect_not_head,        // INDIRECT on a descriptor other than the chain head
  indirect_bad_size,        // table length 0, not a multiple of 16, or too large
  indirect_out_of_range,    // indirect table not in guest RAM
  nested_indirect,          // INDIRECT inside an indirect table
  bad_used_head,            // push_used of a head that is not outstanding (device bug)
};
const char* to_string(QueueError e) noexcept;

// One guest buffer of a validated chain. [gpa, gpa+len) is inside guest RAM.
struct VirtqBuffer {
  uint64_t gpa;
  uint32_t len;
  bool writable;
};

// A validated descriptor chain: readable buffers first, then writable ones.
struct VirtqChain {
  uint16_t head = 0;
  uint32_t generation = 0;  // queue generation it was popped in (see push_used)
  std::vector<VirtqBuffer> buffers;
  uint32_t readable_bytes = 0;
  uint32_t writable_bytes = 0;

  // Gather: copies bytes [offset, offset+out.size()) of the readable part into
  // `out`; returns how many bytes were available and copied.
  size_t read(const vmm::GuestMemory& mem, uint64_t offset, std::span<uint8_t> out) const noexcept;
  // Scatter: copies `in` into the writable part starting at `offset`; returns
  // how many bytes fitted and were written.
  size_t write(const vmm::GuestMemory& mem, uint64_t offset, std::span<const uint8_t> in) const noexcept;
  // Host iovecs for [offset, offset+len) of the readable (writable=false) or
  // writable part; fewer bytes when the part is shorter. Appends to `out`.
  size_t iovecs(const vmm::GuestMemory& mem, bool writable, uint64_t offset, uint64_t len,
                std::vector<iovec>& out) const;
  // Records [offset, offset+len) of the writable part as written by the
  // device (GuestMemory::note_written), after it wrote through iovecs():
  // a live migration's log must see the write after its data landed.
  void note_written(const vmm::GuestMemory& mem, uint64_t offset, uint64_t len) const noexcept;
};

// The result of Virtqueue::pop(): a chain, nothing (queue empty / not ready),
// or an error (the queue is now broken).
struct VirtqPop {
  QueueError error = QueueError::none;
  std::optional<VirtqChain> chain;
  explicit operator bool() const noexcept { return chain.has_value(); }
};

class Virtqueue {
 public:
  Virtqueue(const vmm::GuestMemory& mem, uint16_t max_size);
  Virtqueue(const Virtqueue&) = delete;
  Virtqueue& operator=(const Virtqueue&) = delete;

  uint16_t max_size() const noexcept { return max_size_; }

  // --- Driver-side configuration (through the transport). Ignored while the
  // queue is ready, as the spec forbids changing a live queue.
  void set_size(uint32_t n) noexcept;  // QueueNum (validated by enable())
  void set_desc_addr(uint64_t gpa) noexcept;
  void set_driver_addr(uint64_t gpa) noexcept;  // available ring
  void set_device_addr(uint64_t gpa) noexcept;  // used ring
  uint32_t size() const noexcept;
  uint64_t desc_addr() const noexcept;
  uint64_t driver_addr() const noexcept;
  uint64_t device_addr() const noexcept;

  // Validates size, alignment and placement of the three rings and makes the
  // queue live with fresh indices. `features` are the negotiated feature bits
  // (only INDIRECT_DESC and EVENT_IDX matter here). On error the queue stays
  // not ready and the error is returned (not sticky).
  QueueError enable(uint64_t features) noexcept;
  // enable() for a queue a snapshot left live: the same validation, then the
  // ring positions it had (nothing outstanding: snapshots are taken with the
  // device paused and drained). A sticky error, if the queue had broken, is
  // restored as well.
  QueueError restore(uint64_t features, uint16_t last_avail, uint16_t used_idx, uint16_t signalled_used,
                     QueueError sticky) noexcept;
  uint16_t signalled_used() const noexcept;
  // Back to not-ready with the current configuration kept (QueueReady = 0).
  void disable() noexcept;
  // Power-on state: not ready, size = max, addresses 0, error cleared.
  void reset() noexcept;
  bool ready() const noexcept;
  // The sticky error, if the queue broke.
  QueueError error() const noexcept;

  // --- Device side.
  // The next available chain, validated. An error breaks the queue.
  VirtqPop pop() noexcept;
  // Returns a chain to the driver with `len` bytes written into its writable
  // part. Refused (returned error, nothing written) when the queue is not
  // ready, broken, the chain belongs to an earlier generation (queue was reset
  // or re-enabled meanwhile) or its head is not outstanding.
  QueueError push_used(const VirtqChain& chain, uint32_t len) noexcept;
  QueueError push_used(uint16_t head, uint32_t len) noexcept;
  // Whether the driver wants an interrupt for the used buffers added since
  // the last call (avail NO_INTERRUPT flag, or used_event with EVENT_IDX).
  bool needs_notify() noexcept;

  // Counters.
  uint64_t popped() const noexcept;
  uint64_t used() const noexcept;
  uint16_t last_avail_idx() const noexcept;
  uint16_t used_idx() const noexcept;

 private:
  QueueError push_used_locked(uint16_t head, uint32_t len) noexcept;  // mutex_ held
  struct Desc {
    uint64_t addr;
    uint32_t len;
    uint16_t flags;
    uint16_t next;
  };
  static_assert(sizeof(Desc) == 16);

  QueueError fail(QueueError e) noexcept;  // with mutex_ held
  QueueError walk(uint16_t head, VirtqChain& out) const noexcept;
  QueueError add_buffer(const Desc& d, VirtqChain& out, uint64_t& readable, uint64_t& writable) const noexcept;
  uint16_t load_avail_idx() const noexcept;
  void publish_avail_event() noexcept;

  const vmm::GuestMemory& mem_;
  const uint16_t max_size_;
  mutable std::mutex mutex_;
  uint32_t size_;
  uint64_t desc_gpa_ = 0, avail_gpa_ = 0, used_gpa_ = 0;
  bool ready_ = false;
  bool indirect_ = false, event_idx_ = false;
  QueueError error_ = QueueError::none;
  // Host pointers of the rings, valid while ready_ (checked by enable()).
  uint8_t* desc_ = nullptr;
  uint8_t* avail_ = nullptr;
  uint8_t* used_ = nullptr;
  uint16_t last_avail_ = 0;  // next avail ring slot to consume
  uint16_t used_idx_ = 0;    // next used ring slot to fill
  uint16_t signalled_used_ = 0;
  uint32_t generation_ = 0;
  std::vector<bool> outstanding_;  // per head: popped but not yet used
  uint64_t popped_ = 0, used_count_ = 0;
};

}  // namespace apiary::devices
