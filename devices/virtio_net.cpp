// virtio-net: the transmit path on the vCPU thread, the receive path from the
// data plane with its bounded pending queue, the configuration space and the
// link state. See virtio_net.hpp for the choices and the lock order.
#include "devices/virtio_net.hpp"

#include <cstring>
#include <new>

namespace apiary::devices {

using namespace virtio_net;

std::array<uint8_t, 6> default_mac(std::string_view instance_id, unsigned index) {
  // 64-bit FNV-1a: tiny, stable everywhere (unlike std::hash), and good
  // enough to spread ids over 40 bits; the spec validator still refuses
  // duplicate MACs within an instance.
  constexpr uint64_t kOffsetBasis = 0xcbf29ce484222325ull, kPrime = 0x100000001b3ull;
  uint64_t h = kOffsetBasis;
  auto mix = [&](uint8_t b) {
    h ^= b;
    h *= kPrime;
  };
  for (char c : instance_id) mix(static_cast<uint8_t>(c));
  mix(0);  // separator: ("ab", 1) and ("a", ...) must not collide by construction
  for (unsigned i = 0; i < sizeof index; ++i) mix(static_cast<uint8_t>(index >> (8 * i)));
  std::array<uint8_t, 6> mac{kDefaultMacFirstOctet};
  for (size_t i = 1; i < mac.size(); ++i) mac[i] = static_cast<uint8_t>(h >> (8 * (i - 1)));
  return mac;
}

VirtioNet::VirtioNet(VirtioNetConfig config) : config_(std::move(config)) {}

VirtioNet::~VirtioNet() { disconnect(); }

VirtioNet::Counters VirtioNet::counters() const {
  Counters c{};
  c.tx_frames = tx_frames_.load();
  c.tx_bytes = tx_bytes_.load();
  c.tx_dropped_malformed = tx_malformed_.load();
  c.tx_dropped_oversized = tx_oversized_.load();
  c.tx_dropped_link_down = tx_link_down_.load();
  c.tx_dropped_backend = tx_backend_.load();
  c.tx_budget_exhausted = tx_budget_.load();
  c.rx_frames = rx_frames_.load();
  c.rx_bytes = rx_bytes_.load();
  c.rx_dropped_bad_length = rx_bad_length_.load();
  c.rx_dropped_no_buffer = rx_no_buffer_.load();
  c.rx_dropped_not_ready = rx_not_ready_.load();
  c.rx_dropped_bad_chain = rx_bad_chain_.load();
  c.rx_pending = rx_pending_.load();
  return c;
}

// ------------------------------------------------- config space and link --

uint64_t VirtioNet::device_features() const noexcept {
  return virtio::feature_bit(kFMac) | virtio::feature_bit(kFMtu) | virtio::feature_bit(kFStatus);
}

uint16_t VirtioNet::config_status() const {
  return connected_.load() && admin_up_.load() ? kSLinkUp : 0;
}

bool VirtioNet::link_up() const { return config_status() & kSLinkUp; }

void VirtioNet::set_link(bool up) {
  if (admin_up_.exchange(up) != up && ctx_) ctx_->config_changed();
}

void VirtioNet::read_config(uint32_t offset, std::span<uint8_t> out) const noexcept {
  uint8_t cfg[kCfgSize] = {};
  const uint16_t status = config_status(), pairs = kMaxVirtqueuePairs, mtu = layout::kNetMtu;
  std::memcpy(cfg + kCfgMac, config_.mac.data(), config_.mac.size());
  std::memcpy(cfg + kCfgStatus, &status, 2);  // x86: host order is little endian
  std::memcpy(cfg + kCfgMaxVirtqueuePairs, &pairs, 2);
  std::memcpy(cfg + kCfgMtu, &mtu, 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = offset + i < kCfgSize ? cfg[offset + i] : 0;
}

// --------------------------------------------------------------- lifecycle --

void VirtioNet::attach(VirtioContext& ctx) {
  ctx_ = &ctx;
  if (config_.backend) {
    connected_ = true;  // before connect(): the first frame may arrive inside it
    config_.backend->connect(this);
  }
}

void VirtioNet::disconnect() {
  // Neither device lock is held: the backend may wait here for a deliver()
  // that is waiting for rx_mutex_.
  if (connected_.exchange(false) && config_.backend) config_.backend->connect(nullptr);
}

void VirtioNet::activate(uint64_t) noexcept {
  // VERSION_1 is guaranteed by the transport, so the header is 12 bytes
  // whatever else was negotiated; none of our features changes the rings.
  std::lock_guard lock(rx_mutex_);
  activated_ = true;
}

void VirtioNet::drop_pending() {
  rx_not_ready_ += pending_.size();
  pending_.clear();
  rx_pending_ = 0;
}

void VirtioNet::reset() noexcept {
  {
    std::lock_guard lock(tx_mutex_);
    tx_notify_pending_ = false;
    tx_backlog_ = false;
  }
  std::lock_guard lock(rx_mutex_);
  activated_ = false;
  needs_reset_ = false;
  drop_pending();
}

void VirtioNet::pause() {
  {
    std::lock_guard lock(tx_mutex_);
    tx_paused_ = true;
  }
  // Taking rx_mutex_ waits for a deliver() that is writing the rings.
  std::lock_guard lock(rx_mutex_);
  rx_paused_ = true;
}

void VirtioNet::resume() {
  {
    std::lock_guard lock(tx_mutex_);
    tx_paused_ = false;
    if ((tx_notify_pending_ || tx_backlog_) && !tx_halted_) {
      tx_notify_pending_ = false;
      serve_tx();
    }
  }
  std::lock_guard lock(rx_mutex_);
  rx_paused_ = false;
  if (activated_ && !rx_halted_ && !needs_reset_) drain_rx();
}

void VirtioNet::halt() {
  {
    std::lock_guard lock(tx_mutex_);
    tx_halted_ = true;
  }
  {
    std::lock_guard lock(rx_mutex_);
    rx_halted_ = true;
    drop_pending();
  }
  disconnect();
}

void VirtioNet::queue_failed(uint16_t queue, QueueError error) {
  needs_reset_ = true;  // the transport ignores notifies now; deliver() drops
  ctx_->queue_failed(queue, error);
}

// ---------------------------------------------------------------- transmit --

void VirtioNet::on_notify(uint16_t queue) noexcept {
  if (queue >= kNumQueues || !ctx_) return;
  {
    std::lock_guard lock(tx_mutex_);
    if (tx_halted_) return;
    if (tx_paused_) {
      if (queue == kTxQueue) tx_notify_pending_ = true;  // served by resume()
    } else if (queue == kTxQueue || tx_backlog_) {
      serve_tx();
    }
  }
  if (queue != kRxQueue) return;
  // The driver posted rx buffers: place the frames that waited for them.
  std::lock_guard lock(rx_mutex_);
  if (!rx_paused_ && !rx_halted_ && !needs_reset_) drain_rx();
}

void VirtioNet::serve_tx() {
  Virtqueue& q = ctx_->queue(kTxQueue);
  const vmm::GuestMemory& mem = ctx_->memory();
  tx_backlog_ = false;
  bool used = false;
  for (uint32_t served = 0;; ++served) {
    if (served == kTxChainsPerNotify) {
      tx_backlog_ = true;
      ++tx_budget_;
      break;
    }
    VirtqPop r = q.pop();
    if (r.error != QueueError::none) {
      queue_failed(kTxQueue, r.error);
      break;
    }
    if (!r) break;
    const VirtqChain& chain = *r.chain;
    // A transmit chain is header + frame, all device-readable.
    if (chain.writable_bytes != 0 || chain.readable_bytes < kHdrBytes + kMinFrameBytes) {
      ++tx_malformed_;
    } else if (chain.readable_bytes - kHdrBytes > kMaxFrameBytes) {
      ++tx_oversized_;
    } else if (!link_up()) {
      ++tx_link_down_;
    } else {
      const uint32_t n = chain.readable_bytes - kHdrBytes;
      const std::span<uint8_t> frame(tx_frame_.data(), n);
      chain.read(mem, kHdrBytes, frame);  // the whole readable part: validated by the queue
      // Outside rx_mutex_: a loopback backend may deliver() from in here.
      if (config_.backend->transmit(frame)) {
        ++tx_frames_;
        tx_bytes_ += n;
      } else {
        ++tx_backend_;
      }
    }
    q.push_used(chain, 0);  // nothing written into a transmit buffer
    used = true;
  }
  if (used) ctx_->notify_used(kTxQueue);
}

// ----------------------------------------------------------------- receive --

bool VirtioNet::rx_ready() const { return activated_ && !rx_halted_ && !needs_reset_ && link_up(); }

bool VirtioNet::place(const VirtqChain& chain, std::span<const uint8_t> frame) {
  Virtqueue& q = ctx_->queue(kRxQueue);
  const uint32_t need = kHdrBytes + static_cast<uint32_t>(frame.size());
  if (chain.readable_bytes != 0 || chain.writable_bytes < need) {
    // Not a receive buffer for this frame: give it back empty, drop the
    // frame (see the header for why not try the next chain).
    ++rx_bad_chain_;
    q.push_used(chain, 0);
    return false;
  }
  const vmm::GuestMemory& mem = ctx_->memory();
  std::array<uint8_t, kHdrBytes> hdr{};  // no offloads: flags, gso_type, ... all 0
  hdr[kHdrNumBuffers] = 1;                // le16 num_buffers = 1 (no MRG_RXBUF)
  chain.write(mem, 0, hdr);
  chain.write(mem, kHdrBytes, frame);
  if (q.push_used(chain, need) != QueueError::none) {
    // The driver disabled or reset the queue meanwhile.
    ++rx_not_ready_;
    return false;
  }
  ++rx_frames_;
  rx_bytes_ += frame.size();
  return true;
}

void VirtioNet::drain_rx() {
  Virtqueue& q = ctx_->queue(kRxQueue);
  bool used = false;
  // Bounded by the pending queue.
  while (!pending_.empty()) {
    VirtqPop r = q.pop();
    if (r.error != QueueError::none) {
      queue_failed(kRxQueue, r.error);
      drop_pending();
      break;
    }
    if (!r) break;  // no buffers: wait for the driver's next notify
    place(*r.chain, pending_.front());
    pending_.pop_front();
    used = true;
  }
  rx_pending_ = pending_.size();
  if (used) ctx_->notify_used(kRxQueue);
}

bool VirtioNet::deliver(std::span<const uint8_t> frame) noexcept {
  if (frame.size() < kMinFrameBytes || frame.size() > kMaxFrameBytes) {
    ++rx_bad_length_;
    return false;
  }
  std::lock_guard lock(rx_mutex_);
  if (!rx_ready() || !ctx_) {
    ++rx_not_ready_;
    return false;
  }
  if (!rx_paused_) {
    // Older frames first, should buffers have come without a notify.
    if (!pending_.empty()) drain_rx();
    if (pending_.empty() && !needs_reset_) {
      // The usual case: straight into a posted buffer, no copy in between.
      VirtqPop r = ctx_->queue(kRxQueue).pop();
      if (r.error != QueueError::none) queue_failed(kRxQueue, r.error);
      if (r) {
        const bool placed = place(*r.chain, frame);
        ctx_->notify_used(kRxQueue);
        return placed;
      }
    }
    if (needs_reset_) {
      ++rx_not_ready_;
      return false;
    }
  }
  if (pending_.size() >= kRxPendingFrames) {
    ++rx_no_buffer_;
    return false;
  }
  try {
    pending_.emplace_back(frame.begin(), frame.end());
  } catch (const std::bad_alloc&) {
    ++rx_no_buffer_;
    return false;
  }
  rx_pending_ = pending_.size();
  return true;
}

void VirtioNet::export_state(v1::DeviceState& state) const {
  auto& r = *state.mutable_registers();
  uint64_t mac = 0;
  for (uint8_t b : config_.mac) mac = (mac << 8) | b;
  r["mac"] = mac;  // 0x525400123456 for 52:54:00:12:34:56
  r["mtu"] = layout::kNetMtu;
  r["link_up"] = link_up();
  r["admin_up"] = admin_up_.load();
  r["backend"] = config_.backend != nullptr;
  const Counters c = counters();
  auto& m = *state.mutable_counters();
  m["tx_frames"] = c.tx_frames;
  m["tx_bytes"] = c.tx_bytes;
  m["tx_dropped"] = c.tx_dropped();
  m["tx_dropped_malformed"] = c.tx_dropped_malformed;
  m["tx_dropped_oversized"] = c.tx_dropped_oversized;
  m["tx_dropped_link_down"] = c.tx_dropped_link_down;
  m["tx_dropped_backend"] = c.tx_dropped_backend;
  m["tx_budget_exhausted"] = c.tx_budget_exhausted;
  m["rx_frames"] = c.rx_frames;
  m["rx_bytes"] = c.rx_bytes;
  m["rx_dropped"] = c.rx_dropped();
  m["rx_dropped_bad_length"] = c.rx_dropped_bad_length;
  m["rx_dropped_no_buffer"] = c.rx_dropped_no_buffer;
  m["rx_dropped_not_ready"] = c.rx_dropped_not_ready;
  m["rx_dropped_bad_chain"] = c.rx_dropped_bad_chain;
  m["rx_pending"] = c.rx_pending;
}

void VirtioNet::import_state(const StateReader& state) { admin_up_.store(state.flag("admin_up")); }

}  // namespace apiary::devices
