// virtio-rng: fills the driver's writable buffers from getrandom(2), inline
// and bounded per chain. See virtio_rng.hpp.
#include "devices/virtio_rng.hpp"

#include <sys/random.h>

#include <algorithm>
#include <cerrno>

namespace apiary::devices {

using namespace virtio_rng;

VirtioRng::Counters VirtioRng::counters() const {
  std::lock_guard lock(mutex_);
  return {requests_, bytes_, errors_};
}

uint32_t VirtioRng::fill(const VirtqChain& chain) {
  vmm::GuestMemory& mem = ctx_->memory();
  uint32_t total = 0;
  for (const VirtqBuffer& b : chain.buffers) {
    if (!b.writable) continue;  // writable buffers come last; skip readable ones
    uint8_t* p = mem.host_range(b.gpa, b.len);
    if (!p) break;  // cannot happen: validated by the queue
    size_t left = std::min<uint64_t>(b.len, kMaxBytesPerChain - total);
    while (left > 0) {
      const ssize_t n = ::getrandom(p, left, 0);
      if (n < 0) {
        if (errno == EINTR) continue;
        ++errors_;
        return total;
      }
      mem.note_written(b.gpa + (p - mem.host_range(b.gpa, b.len)), static_cast<uint64_t>(n));  // after the bytes land
      p += n;
      left -= static_cast<size_t>(n);
      total += static_cast<uint32_t>(n);
    }
    if (total >= kMaxBytesPerChain) break;
  }
  return total;
}

void VirtioRng::serve() {
  if (!ctx_) return;
  Virtqueue& q = ctx_->queue(0);
  bool used = false;
  // Bounded: at most kQueueSize chains can be outstanding.
  for (;;) {
    VirtqPop r = q.pop();
    if (r.error != QueueError::none) {
      ctx_->queue_failed(0, r.error);
      break;
    }
    if (!r) break;
    const uint32_t n = fill(*r.chain);
    ++requests_;
    bytes_ += n;
    q.push_used(*r.chain, n);
    used = true;
  }
  if (used) ctx_->notify_used(0);
}

void VirtioRng::on_notify(uint16_t queue) noexcept {
  if (queue != 0) return;
  std::lock_guard lock(mutex_);
  if (halted_) return;
  if (paused_) {
    notify_pending_ = true;
    return;
  }
  serve();
}

void VirtioRng::reset() noexcept {
  // Nothing is ever in flight outside on_notify (which holds mutex_).
  std::lock_guard lock(mutex_);
  notify_pending_ = false;
}

void VirtioRng::pause() {
  std::lock_guard lock(mutex_);
  paused_ = true;
}

void VirtioRng::resume() {
  std::lock_guard lock(mutex_);
  paused_ = false;
  if (notify_pending_ && !halted_) {
    notify_pending_ = false;
    serve();
  }
}

void VirtioRng::halt() {
  std::lock_guard lock(mutex_);
  halted_ = true;
}

void VirtioRng::export_state(v1::DeviceState& state) const {
  std::lock_guard lock(mutex_);
  auto& c = *state.mutable_counters();
  c["requests"] = requests_;
  c["bytes"] = bytes_;
  c["errors"] = errors_;
}

}  // namespace apiary::devices
