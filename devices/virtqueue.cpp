// Split virtqueue, device side: ring validation, chain walking and the used
// ring. See virtqueue.hpp for the threat model and the memory ordering.
#include "devices/virtqueue.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <limits>
#include <new>

namespace apiary::devices {

static_assert(std::endian::native == std::endian::little, "virtio rings are little-endian; so must the host be");

using namespace virtq;

const char* to_string(QueueError e) noexcept {
  switch (e) {
    case QueueError::none: return "none";
    case QueueError::bad_size: return "bad_size";
    case QueueError::desc_table_misaligned: return "desc_table_misaligned";
    case QueueError::desc_table_out_of_range: return "desc_table_out_of_range";
    case QueueError::avail_ring_misaligned: return "avail_ring_misaligned";
    case QueueError::avail_ring_out_of_range: return "avail_ring_out_of_range";
    case QueueError::used_ring_misaligned: return "used_ring_misaligned";
    case QueueError::used_ring_out_of_range: return "used_ring_out_of_range";
    case QueueError::avail_idx_jump: return "avail_idx_jump";
    case QueueError::head_out_of_range: return "head_out_of_range";
    case QueueError::head_in_use: return "head_in_use";
    case QueueError::next_out_of_range: return "next_out_of_range";
    case QueueError::chain_too_long: return "chain_too_long";
    case QueueError::zero_length: return "zero_length";
    case QueueError::buffer_out_of_range: return "buffer_out_of_range";
    case QueueError::readable_after_writable: return "readable_after_writable";
    case QueueError::length_overflow: return "length_overflow";
    case QueueError::indirect_not_negotiated: return "indirect_not_negotiated";
    case QueueError::indirect_with_next: return "indirect_with_next";
    case QueueError::indirect_not_head: return "indirect_not_head";
    case QueueError::indirect_bad_size: return "indirect_bad_size";
    case QueueError::indirect_out_of_range: return "indirect_out_of_range";
    case QueueError::nested_indirect: return "nested_indirect";
    case QueueError::bad_used_head: return "bad_used_head";
  }
  return "unknown";
}

namespace {

// The ring index fields are shared with the guest's vCPUs: access them
// atomically. Alignment was checked by enable().
std::atomic_ref<uint16_t> ring_u16(uint8_t* p) noexcept {
  return std::atomic_ref<uint16_t>(*reinterpret_cast<uint16_t*>(p));
}

// Avail ring: flags @0, idx @2, ring[size] @4, used_event @4+2*size.
constexpr uint64_t avail_bytes(uint64_t n) { return 6 + 2 * n; }
// Used ring: flags @0, idx @2, ring[size] of {u32 id, u32 len} @4, avail_event @4+8*size.
constexpr uint64_t used_bytes(uint64_t n) { return 6 + 8 * n; }

}  // namespace

// ------------------------------------------------------------------ chain --

size_t VirtqChain::read(const vmm::GuestMemory& mem, uint64_t offset, std::span<uint8_t> out) const noexcept {
  size_t done = 0;
  for (const auto& b : buffers) {
    if (b.writable || done == out.size()) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const uint8_t* p = mem.host_range(b.gpa, b.len);
    if (!p) break;
    const size_t n = std::min<uint64_t>(b.len - offset, out.size() - done);
    std::memcpy(out.data() + done, p + offset, n);
    done += n;
    offset = 0;
  }
  return done;
}

size_t VirtqChain::write(const vmm::GuestMemory& mem, uint64_t offset, std::span<const uint8_t> in) const noexcept {
  size_t done = 0;
  for (const auto& b : buffers) {
    if (!b.writable) continue;
    if (done == in.size()) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    uint8_t* p = mem.host_range(b.gpa, b.len);
    if (!p) break;
    const size_t n = std::min<uint64_t>(b.len - offset, in.size() - done);
    std::memcpy(p + offset, in.data() + done, n);
    mem.note_written(b.gpa + offset, n);
    done += n;
    offset = 0;
  }
  return done;
}

size_t VirtqChain::iovecs(const vmm::GuestMemory& mem, bool writable, uint64_t offset, uint64_t len,
                          std::vector<iovec>& out) const {
  size_t done = 0;
  for (const auto& b : buffers) {
    if (b.writable != writable) continue;
    if (done == len) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    uint8_t* p = mem.host_range(b.gpa, b.len);
    if (!p) break;
    const size_t n = std::min<uint64_t>(b.len - offset, len - done);
    out.push_back(iovec{p + offset, n});
    done += n;
    offset = 0;
  }
  return done;
}

void VirtqChain::note_written(const vmm::GuestMemory& mem, uint64_t offset, uint64_t len) const noexcept {
  uint64_t done = 0;
  for (const auto& b : buffers) {
    if (!b.writable) continue;
    if (done == len) break;
    if (offset >= b.len) {
      offset -= b.len;
      continue;
    }
    const uint64_t n = std::min<uint64_t>(b.len - offset, len - done);
    mem.note_written(b.gpa + offset, n);
    done += n;
    offset = 0;
  }
}

// ------------------------------------------------------------------ queue --

Virtqueue::Virtqueue(const vmm::GuestMemory& mem, uint16_t max_size)
    : mem_(mem),
      max_size_(max_size == 0 ? 1 : (max_size > kMaxQueueSize ? kMaxQueueSize : max_size)),
      size_(max_size_) {}

void Virtqueue::set_size(uint32_t n) noexcept {
  std::lock_guard lock(mutex_);
  if (!ready_) size_ = n;
}
void Virtqueue::set_desc_addr(uint64_t gpa) noexcept {
  std::lock_guard lock(mutex_);
  if (!ready_) desc_gpa_ = gpa;
}
void Virtqueue::set_driver_addr(uint64_t gpa) noexcept {
  std::lock_guard lock(mutex_);
  if (!ready_) avail_gpa_ = gpa;
}
void Virtqueue::set_device_addr(uint64_t gpa) noexcept {
  std::lock_guard lock(mutex_);
  if (!ready_) used_gpa_ = gpa;
}
uint32_t Virtqueue::size() const noexcept {
  std::lock_guard lock(mutex_);
  return size_;
}
uint64_t Virtqueue::desc_addr() const noexcept {
  std::lock_guard lock(mutex_);
  return desc_gpa_;
}
uint64_t Virtqueue::driver_addr() const noexcept {
  std::lock_guard lock(mutex_);
  return avail_gpa_;
}
uint64_t Virtqueue::device_addr() const noexcept {
  std::lock_guard lock(mutex_);
  return used_gpa_;
}
bool Virtqueue::ready() const noexcept {
  std::lock_guard lock(mutex_);
  return ready_;
}
QueueError Virtqueue::error() const noexcept {
  std::lock_guard lock(mutex_);
  return error_;
}
uint64_t Virtqueue::popped() const noexcept {
  std::lock_guard lock(mutex_);
  return popped_;
}
uint64_t Virtqueue::used() const noexcept {
  std::lock_guard lock(mutex_);
  return used_count_;
}
uint16_t Virtqueue::last_avail_idx() const noexcept {
  std::lock_guard lock(mutex_);
  return last_avail_;
}
uint16_t Virtqueue::used_idx() const noexcept {
  std::lock_guard lock(mutex_);
  return used_idx_;
}

QueueError Virtqueue::enable(uint64_t features) noexcept {
  std::lock_guard lock(mutex_);
  if (ready_) return QueueError::none;
  if (size_ == 0 || size_ > max_size_ || !std::has_single_bit(size_)) return QueueError::bad_size;
  if (desc_gpa_ % kDescAlign) return QueueError::desc_table_misaligned;
  if (avail_gpa_ % kAvailAlign) return QueueError::avail_ring_misaligned;
  if (used_gpa_ % kUsedAlign) return QueueError::used_ring_misaligned;
  uint8_t* desc = mem_.host_range(desc_gpa_, kDescSize * size_);
  if (!desc) return QueueError::desc_table_out_of_range;
  uint8_t* avail = mem_.host_range(avail_gpa_, avail_bytes(size_));
  if (!avail) return QueueError::avail_ring_out_of_range;
  uint8_t* used = mem_.host_range(used_gpa_, used_bytes(size_));
  if (!used) return QueueError::used_ring_out_of_range;
  desc_ = desc;
  avail_ = avail;
  used_ = used;
  indirect_ = features & (1ull << kFeatureIndirectDesc);
  event_idx_ = features & (1ull << kFeatureEventIdx);
  last_avail_ = used_idx_ = signalled_used_ = 0;
  error_ = QueueError::none;
  ++generation_;
  outstanding_.assign(size_, false);
  ready_ = true;
  return QueueError::none;
}

QueueError Virtqueue::restore(uint64_t features, uint16_t last_avail, uint16_t used_idx, uint16_t signalled_used,
                              QueueError sticky) noexcept {
  if (QueueError e = enable(features); e != QueueError::none) return e;
  std::lock_guard lock(mutex_);
  last_avail_ = last_avail;
  used_idx_ = used_idx;
  signalled_used_ = signalled_used;
  error_ = sticky;
  return QueueError::none;
}

uint16_t Virtqueue::signalled_used() const noexcept {
  std::lock_guard lock(mutex_);
  return signalled_used_;
}

void Virtqueue::disable() noexcept {
  std::lock_guard lock(mutex_);
  ready_ = false;
  ++generation_;
  outstanding_.clear();
  desc_ = avail_ = used_ = nullptr;
}

void Virtqueue::reset() noexcept {
  std::lock_guard lock(mutex_);
  ready_ = false;
  size_ = max_size_;
  desc_gpa_ = avail_gpa_ = used_gpa_ = 0;
  desc_ = avail_ = used_ = nullptr;
  indirect_ = event_idx_ = false;
  error_ = QueueError::none;
  last_avail_ = used_idx_ = signalled_used_ = 0;
  ++generation_;
  outstanding_.clear();
}

QueueError Virtqueue::fail(QueueError e) noexcept {
  error_ = e;
  return e;
}

uint16_t Virtqueue::load_avail_idx() const noexcept {
  // Acquire: ring entries and descriptors are read only after this.
  return ring_u16(avail_ + 2).load(std::memory_order_acquire);
}

void Virtqueue::publish_avail_event() noexcept {
  // "Notify me once you make avail.idx pass last_avail_" (EVENT_IDX).
  ring_u16(used_ + 4 + 8 * uint64_t{size_}).store(last_avail_, std::memory_order_seq_cst);
  mem_.note_written(used_gpa_ + 4 + 8 * uint64_t{size_}, 2);
}

VirtqPop Virtqueue::pop() noexcept {
  std::lock_guard lock(mutex_);
  if (!ready_) return {};
  if (error_ != QueueError::none) return {error_, std::nullopt};
  uint16_t avail_idx = load_avail_idx();
  if (avail_idx == last_avail_ && event_idx_) {
    // Ask for a notification, then look again: the driver may have added a
    // buffer before it could see the new avail_event.
    publish_avail_event();
    avail_idx = ring_u16(avail_ + 2).load(std::memory_order_seq_cst);
  }
  const uint16_t pending = static_cast<uint16_t>(avail_idx - last_avail_);
  if (pending == 0) return {};
  if (pending > size_) return {fail(QueueError::avail_idx_jump), std::nullopt};

  uint16_t head;
  std::memcpy(&head, avail_ + 4 + 2 * uint64_t{static_cast<uint16_t>(last_avail_ % size_)}, sizeof head);
  if (head >= size_) return {fail(QueueError::head_out_of_range), std::nullopt};
  if (outstanding_[head]) return {fail(QueueError::head_in_use), std::nullopt};

  VirtqChain chain;
  chain.head = head;
  chain.generation = generation_;
  if (const QueueError e = walk(head, chain); e != QueueError::none) return {fail(e), std::nullopt};
  outstanding_[head] = true;
  ++last_avail_;
  ++popped_;
  if (event_idx_) publish_avail_event();
  return {QueueError::none, std::move(chain)};
}

QueueError Virtqueue::add_buffer(const Desc& d, VirtqChain& out, uint64_t& readable,
                                 uint64_t& writable) const noexcept {
  if (d.len == 0) return QueueError::zero_length;
  if (!mem_.host_range(d.addr, d.len)) return QueueError::buffer_out_of_range;
  const bool w = d.flags & kDescFWrite;
  if (!w && !out.buffers.empty() && out.buffers.back().writable) return QueueError::readable_after_writable;
  (w ? writable : readable) += d.len;
  if (readable + writable > std::numeric_limits<uint32_t>::max()) return QueueError::length_overflow;
  out.buffers.push_back(VirtqBuffer{d.addr, d.len, w});
  return QueueError::none;
}

QueueError Virtqueue::walk(uint16_t head, VirtqChain& out) const noexcept {
  // Each descriptor is copied once and only the copy is examined: the guest
  // may rewrite the table under our feet.
  const uint8_t* table = desc_;
  uint32_t table_size = size_;
  bool indirect = false;
  Desc d;
  std::memcpy(&d, desc_ + kDescSize * head, sizeof d);
  if (d.flags & kDescFIndirect) {
    if (!indirect_) return QueueError::indirect_not_negotiated;
    if (d.flags & kDescFNext) return QueueError::indirect_with_next;
    if (d.len == 0 || d.len % kDescSize || d.len / kDescSize > kMaxIndirectDescs) return QueueError::indirect_bad_size;
    table = mem_.host_range(d.addr, d.len);
    if (!table) return QueueError::indirect_out_of_range;
    table_size = static_cast<uint32_t>(d.len / kDescSize);
    indirect = true;
    std::memcpy(&d, table, sizeof d);
  }
  uint64_t readable = 0, writable = 0;
  uint32_t count = 0;
  try {
    out.buffers.reserve(4);
    for (;;) {
      if (++count > table_size) return QueueError::chain_too_long;
      if (d.flags & kDescFIndirect) return indirect ? QueueError::nested_indirect : QueueError::indirect_not_head;
      if (const QueueError e = add_buffer(d, out, readable, writable); e != QueueError::none) return e;
      if (!(d.flags & kDescFNext)) break;
      if (d.next >= table_size) return QueueError::next_out_of_range;
      std::memcpy(&d, table + kDescSize * d.next, sizeof d);
    }
  } catch (const std::bad_alloc&) {
    // At most kMaxIndirectDescs (or 32768) small entries; treat exhaustion
    // as an oversized chain rather than letting it escape a noexcept path.
    return QueueError::chain_too_long;
  }
  out.readable_bytes = static_cast<uint32_t>(readable);
  out.writable_bytes = static_cast<uint32_t>(writable);
  return QueueError::none;
}

QueueError Virtqueue::push_used(const VirtqChain& chain, uint32_t len) noexcept {
  // The generation is checked in the same critical section as the push: a
  // queue disabled and enabled again in between must not take a chain of
  // its earlier life.
  std::lock_guard lock(mutex_);
  if (chain.generation != generation_) return QueueError::bad_used_head;
  // A device never reports more than the chain could hold.
  return push_used_locked(chain.head, std::min(len, chain.writable_bytes));
}

QueueError Virtqueue::push_used(uint16_t head, uint32_t len) noexcept {
  std::lock_guard lock(mutex_);
  return push_used_locked(head, len);
}

QueueError Virtqueue::push_used_locked(uint16_t head, uint32_t len) noexcept {
  if (!ready_ || head >= size_ || !outstanding_[head]) return QueueError::bad_used_head;
  outstanding_[head] = false;
  uint8_t* elem = used_ + 4 + 8 * uint64_t{static_cast<uint16_t>(used_idx_ % size_)};
  const uint32_t id = head;
  std::memcpy(elem, &id, 4);
  std::memcpy(elem + 4, &len, 4);
  ++used_idx_;
  ++used_count_;
  // Publish: the element above becomes visible no later than the index
  // (release), and the index before we read the driver's suppression fields
  // in needs_notify() (seq_cst store + seq_cst load = store-load barrier).
  ring_u16(used_ + 2).store(used_idx_, std::memory_order_seq_cst);
  mem_.note_written(used_gpa_, 4 + 8 * uint64_t{size_});
  return QueueError::none;
}

bool Virtqueue::needs_notify() noexcept {
  std::lock_guard lock(mutex_);
  if (!ready_) return false;
  const uint16_t new_idx = used_idx_;
  const uint16_t old_idx = signalled_used_;
  if (new_idx == old_idx) return false;
  signalled_used_ = new_idx;
  if (event_idx_) {
    const uint16_t used_event = ring_u16(avail_ + 4 + 2 * uint64_t{size_}).load(std::memory_order_seq_cst);
    // Interrupt iff used_event lies in [old_idx, new_idx) (mod 2^16).
    return static_cast<uint16_t>(new_idx - used_event - 1) < static_cast<uint16_t>(new_idx - old_idx);
  }
  return !(ring_u16(avail_).load(std::memory_order_seq_cst) & kAvailFNoInterrupt);
}

}  // namespace apiary::devices
