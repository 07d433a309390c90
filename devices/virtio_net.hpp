// virtio-net (device id 1, virtio 1.x §5.1): the guest's Ethernet NIC, with
// the wire behind a NetBackend (devices/net_backend.hpp).
//
// Why this feature set: MAC (the control plane chooses the address, so ARP
// tables and the switch's forwarding entries are stable across reboots), MTU
// (layout::kNetMtu leaves room for VXLAN in a 1500-byte underlay; without it
// a guest would send 1500-byte IP packets the overlay must drop) and STATUS
// (link up only while a backend is connected, so the guest sees a cable pull
// as carrier loss instead of a black hole). Nothing else: no checksum or
// segmentation offloads (the data plane would have to finish checksums and
// segment on the guest's behalf), no mergeable rx buffers (every frame fits
// one buffer: Linux posts 12 + 1518 bytes per rx buffer without it), no
// control queue and one queue pair.
//
// Queues: 0 = receiveq, 1 = transmitq. Every buffer starts with the 12-byte
// VERSION_1 virtio_net_hdr; the device ignores the one on transmit (nothing
// was negotiated that gives its fields a meaning) and writes an all-zero one
// with num_buffers = 1 on receive.
//
// Transmit runs inline on the vCPU thread that wrote QueueNotify: pop a
// chain, copy header + frame out of guest RAM, hand the frame to the
// backend, return the chain with used length 0. A chain that is not a frame
// (a writable descriptor, shorter than header + Ethernet header, longer
// than header + layout::kNetMaxFrameBytes) is returned unsent and counted.
// One notify serves at most kQueueSize chains, so a guest that keeps the
// ring full from other vCPUs cannot hold this vCPU (and the transport lock,
// which a pause needs) forever. A driver that adds chains only under the
// lock it notifies with (Linux: the TX queue lock) never reaches the bound:
// at most a ring's worth is available when it notifies. Chains left over
// are served by the next notify on either queue; with EVENT_IDX such a
// driver may not notify again soon (tx_budget_exhausted counts it).
//
// Receive: deliver() runs on the data plane's thread. A frame goes straight
// into the next rx chain when one is posted, otherwise into a bounded
// pending queue (kRxPendingFrames) that on_notify(receiveq) drains when the
// driver posts buffers. An rx chain that cannot take the frame (readable
// descriptors, or fewer than 12 + frame bytes writable) is returned with
// used length 0 and that frame is dropped: the driver gets its buffer back
// (Linux counts a length error and reposts it), the device cannot stall on a
// bad buffer, and each frame costs at most one chain. While paused, frames
// wait in the pending queue and the rings are not touched; before DRIVER_OK,
// after a queue error (DEVICE_NEEDS_RESET), with the link set down, and
// after halt, frames are dropped. Every drop is counted by cause.
//
// Locks (inside the transport's ctrl_mutex_ when called from hooks, see
// virtio_mmio.hpp): tx_mutex_ -> rx_mutex_ -> Virtqueue -> irq_mutex_.
// transmit() is called with tx_mutex_ held and rx_mutex_ free, so a
// loopback backend may deliver() back into this device from inside it;
// connect() is called with neither held, so a backend may wait in connect()
// for a deliver() that is waiting for rx_mutex_.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "devices/net_backend.hpp"
#include "devices/virtio_mmio.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::devices {

namespace virtio_net {
// Feature bits (§5.1.3).
inline constexpr unsigned kFMtu = 3, kFMac = 5, kFStatus = 16;
// The status field of the configuration space.
inline constexpr uint16_t kSLinkUp = 1;
// Configuration space (struct virtio_net_config) offsets, up to and
// including mtu (speed and duplex belong to a feature not offered).
inline constexpr uint32_t kCfgMac = 0, kCfgStatus = 6, kCfgMaxVirtqueuePairs = 8, kCfgMtu = 10, kCfgSize = 12;
inline constexpr uint16_t kMaxVirtqueuePairs = 1;
inline constexpr uint16_t kRxQueue = 0, kTxQueue = 1, kNumQueues = 2;
// Large enough for Linux's default rings (256), small enough that the
// per-notify bound below stays a short exit.
inline constexpr uint16_t kQueueSize = 256;
// struct virtio_net_hdr with VERSION_1 (num_buffers always present).
inline constexpr uint32_t kHdrBytes = 12;
inline constexpr uint32_t kHdrNumBuffers = 10;  // offset of num_buffers (le16)
// Frames accepted either way: an Ethernet header at least, the NIC's
// largest frame at most.
inline constexpr uint32_t kMinFrameBytes = layout::kEthernetHeaderBytes;
inline constexpr uint32_t kMaxFrameBytes = layout::kNetMaxFrameBytes;
// Frames waiting for rx buffers (about 375 KiB at most per NIC): a queue's
// worth, enough to ride out a driver refilling its ring in batches.
inline constexpr size_t kRxPendingFrames = 256;
// Transmit chains served per notify.
inline constexpr uint32_t kTxChainsPerNotify = kQueueSize;
// First octet of default_mac(): locally administered (bit 1), unicast
// (bit 0 clear), no vendor OUI.
inline constexpr uint8_t kDefaultMacFirstOctet = 0x02;
}  // namespace virtio_net

// A deterministic MAC for NIC `index` of instance `instance_id`: first
// octet kDefaultMacFirstOctet, the other five from a 64-bit FNV-1a hash of
// the id and the index. Stable across runs and hosts, so an instance keeps
// its address through reboots and moves.
std::array<uint8_t, 6> default_mac(std::string_view instance_id, unsigned index);

struct VirtioNetConfig {
  std::array<uint8_t, 6> mac{};
  std::shared_ptr<NetBackend> backend;  // null: link down, every frame dropped
};

class VirtioNet final : public VirtioDevice, public NetPort {
 public:
  explicit VirtioNet(VirtioNetConfig config);
  // Disconnects from the backend if halt() has not.
  ~VirtioNet() override;
  VirtioNet(const VirtioNet&) = delete;
  VirtioNet& operator=(const VirtioNet&) = delete;

  struct Counters {
    uint64_t tx_frames, tx_bytes;
    uint64_t tx_dropped_malformed;  // writable descriptor, or shorter than header + Ethernet header
    uint64_t tx_dropped_oversized;  // more than header + kMaxFrameBytes
    uint64_t tx_dropped_link_down;  // no backend, link set down
    uint64_t tx_dropped_backend;    // the backend refused it (and counts why)
    uint64_t tx_budget_exhausted;   // notifies that stopped at kTxChainsPerNotify
    uint64_t rx_frames, rx_bytes;
    uint64_t rx_dropped_bad_length;  // runt or oversized
    uint64_t rx_dropped_no_buffer;   // pending queue full
    uint64_t rx_dropped_not_ready;   // not DRIVER_OK, needs reset, link down, reset, halted
    uint64_t rx_dropped_bad_chain;   // rx chain with readable descriptors or too small
    uint64_t rx_pending;             // frames waiting for rx buffers now
    uint64_t tx_dropped() const {
      return tx_dropped_malformed + tx_dropped_oversized + tx_dropped_link_down + tx_dropped_backend;
    }
    uint64_t rx_dropped() const {
      return rx_dropped_bad_length + rx_dropped_no_buffer + rx_dropped_not_ready + rx_dropped_bad_chain;
    }
  };
  Counters counters() const;

  const std::array<uint8_t, 6>& mac() const noexcept { return config_.mac; }
  // The administrative link state (default up). The guest sees the link up
  // while this is up, a backend is connected and the device is not halted;
  // a change raises a configuration interrupt. Any thread.
  void set_link(bool up);
  bool link_up() const;

  // NetPort. Any thread; copies the frame or drops it (see the top).
  bool deliver(std::span<const uint8_t> frame) noexcept override;

  // VirtioDevice
  const char* kind() const noexcept override { return "virtio-net"; }
  uint32_t device_id() const noexcept override { return virtio::kDeviceIdNet; }
  uint64_t device_features() const noexcept override;
  uint16_t num_queues() const noexcept override { return virtio_net::kNumQueues; }
  uint16_t queue_max_size(uint16_t) const noexcept override { return virtio_net::kQueueSize; }
  uint32_t config_size() const noexcept override { return virtio_net::kCfgSize; }
  void read_config(uint32_t offset, std::span<uint8_t> out) const noexcept override;
  // Connects to the backend: frames may arrive from now on.
  void attach(VirtioContext& ctx) override;
  void activate(uint64_t features) noexcept override;
  void on_notify(uint16_t queue) noexcept override;
  // Drops the pending frames (counted as not_ready); back to not activated.
  void reset() noexcept override;
  // Afterwards the rings are not touched; frames wait in the pending queue.
  void pause() override;
  // Serves what was notified meanwhile and places pending frames.
  void resume() override;
  // Drops the pending frames and disconnects from the backend; once it
  // returns deliver() is not running and drops whatever it is given.
  void halt() override;
  void export_state(v1::DeviceState& state) const override;
  // The administrative link state (set_link); the backend's connection is
  // the node's and is made anew.
  void import_state(const StateReader& state) override;

 private:
  using Frame = std::vector<uint8_t>;
  void serve_tx();                   // with tx_mutex_ held
  void drain_rx();                   // with rx_mutex_ held
  bool place(const VirtqChain& chain, std::span<const uint8_t> frame);  // with rx_mutex_ held
  bool rx_ready() const;             // with rx_mutex_ held
  void queue_failed(uint16_t queue, QueueError error);
  void drop_pending();               // with rx_mutex_ held
  uint16_t config_status() const;
  void disconnect();

  const VirtioNetConfig config_;
  VirtioContext* ctx_ = nullptr;
  std::atomic<bool> connected_{false};  // to the backend; written by attach and disconnect
  std::atomic<bool> admin_up_{true};
  // A queue broke: DEVICE_NEEDS_RESET until the driver resets the device.
  std::atomic<bool> needs_reset_{false};

  std::mutex tx_mutex_;
  bool tx_paused_ = false, tx_halted_ = false, tx_notify_pending_ = false;
  bool tx_backlog_ = false;  // chains left over after kTxChainsPerNotify
  std::array<uint8_t, virtio_net::kMaxFrameBytes> tx_frame_{};

  mutable std::mutex rx_mutex_;
  bool activated_ = false, rx_paused_ = false, rx_halted_ = false;
  std::deque<Frame> pending_;

  std::atomic<uint64_t> tx_frames_{0}, tx_bytes_{0}, tx_malformed_{0}, tx_oversized_{0}, tx_link_down_{0},
      tx_backend_{0}, tx_budget_{0}, rx_frames_{0}, rx_bytes_{0}, rx_bad_length_{0}, rx_no_buffer_{0},
      rx_not_ready_{0}, rx_bad_chain_{0}, rx_pending_{0};
};

}  // namespace apiary::devices
