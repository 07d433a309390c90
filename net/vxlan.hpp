// VXLAN (RFC 7348): the overlay that joins one network's switches on
// different nodes. Each network has a 24-bit VNI; a frame for a guest on
// another node travels as a UDP datagram to that node's VTEP:
//
//   outer IPv4 | outer UDP (dst port layout::kVxlanUdpPort) | VXLAN | frame
//   VXLAN header (8 bytes): flags (I = 0x08) | 24 reserved | VNI (24) | 8 reserved
//
// Why one socket per node and a port per switch: the node has one VTEP
// address; the tunnel demultiplexes received datagrams by VNI to the
// network's switch, where the tunnel is just another port (the uplink).
// The uplink remembers which VTEP each remote source MAC came from (aged
// like the switch's table) and sends unicast there; group and unknown
// destinations are replicated to every peer VTEP of the network (head-end
// replication, no multicast underlay needed).
//
// Who may send: only the peers the control plane named for that VNI
// (set_peers). Datagrams from anyone else, with a bad header, an unknown
// VNI or a runt/oversized inner frame are dropped and counted; nothing a
// peer sends can do more than that.
//
// IPv4 underlay only.
#pragma once

#include <netinet/in.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "net/switch.hpp"

namespace apiary::net {

namespace vxlan {
inline constexpr size_t kHeaderBytes = 8;
inline constexpr uint8_t kFlagVniValid = 0x08;  // the I flag
inline constexpr uint32_t kMaxVni = 0xffffff;
// Largest datagram the tunnel reads: a header and the largest frame, with
// room to tell "oversized" from "just fits".
inline constexpr size_t kMaxDatagram = kHeaderBytes + layout::kNetMaxFrameBytes + 1;
// Datagrams taken per wake-up of the receive thread before it polls again
// (and sees a stop request).
inline constexpr size_t kReceiveBatch = 64;
// SO_RCVBUF / SO_SNDBUF of the tunnel's socket: about 2,700 full frames,
// room for bursts while the receive thread is descheduled.
inline constexpr int kSocketBufferBytes = 4 << 20;
}  // namespace vxlan

enum class VxlanError { too_short, no_vni_flag, bad_inner_frame };
const char* to_string(VxlanError e) noexcept;

// The 8-byte header for `vni` (<= vxlan::kMaxVni).
std::array<uint8_t, vxlan::kHeaderBytes> vxlan_header(uint32_t vni) noexcept;

struct VxlanFrame {
  uint32_t vni;
  std::span<const uint8_t> frame;
};
// Reads a datagram's payload. Reserved bits are ignored, as the RFC asks.
std::variant<VxlanFrame, VxlanError> parse_vxlan(std::span<const uint8_t> datagram) noexcept;

// An IPv4 VTEP address, "a.b.c.d:port" (port defaults to kVxlanUdpPort).
struct Endpoint {
  uint32_t addr = 0;  // network byte order
  uint16_t port = 0;  // host byte order
  auto operator<=>(const Endpoint&) const = default;
};
std::optional<Endpoint> parse_endpoint(const std::string& text);
std::string to_string(const Endpoint& e);

// A network's VNI, derived from its id so every node agrees without asking:
// 1..kMaxVni-1. The controller refuses to create a network whose VNI a
// live network already has (it draws another id).
uint32_t vni_of(const std::string& network_id) noexcept;

struct TunnelStats {
  uint64_t rx_datagrams = 0, tx_datagrams = 0, tx_errors = 0;
  uint64_t rx_garbage = 0;       // bad header or inner frame
  uint64_t rx_unknown_vni = 0;   // no network here with that VNI
  uint64_t rx_unknown_peer = 0;  // not a peer of that VNI
};

class VxlanTunnel {
 public:
  // Binds the UDP socket to `local` (port 0: one the kernel picks; local()
  // then tells which) and starts the receive thread. Throws
  // std::system_error (bind_failed: address in use, not an address here).
  explicit VxlanTunnel(Endpoint local);
  ~VxlanTunnel();
  VxlanTunnel(const VxlanTunnel&) = delete;
  VxlanTunnel& operator=(const VxlanTunnel&) = delete;

  Endpoint local() const noexcept { return local_; }

  // Joins `sw` to the overlay as `vni`: adds the uplink port. One switch
  // per VNI; attaching again replaces nothing and returns false.
  bool attach(uint32_t vni, std::shared_ptr<Switch> sw);
  // Removes the uplink port of `vni` (its peers are forgotten); with
  // `owner`, only if that switch is the one attached (a network actor
  // ending late must not take the uplink of its successor).
  void detach(uint32_t vni, const Switch* owner = nullptr);
  // The VTEPs of the other nodes hosting `vni` (our own address is ignored).
  void set_peers(uint32_t vni, const std::vector<Endpoint>& peers);
  std::vector<Endpoint> peers(uint32_t vni) const;

  TunnelStats stats() const;

 private:
  struct Uplink;
  void receive_loop();
  bool send(const Uplink& up, std::span<const uint8_t> frame, const Endpoint& to) noexcept;

  Endpoint local_;
  int fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes the receive thread for shutdown
  mutable std::mutex mutex_;
  std::map<uint32_t, std::shared_ptr<Uplink>> uplinks_;
  std::atomic<uint64_t> rx_datagrams_{0}, tx_datagrams_{0}, tx_errors_{0}, rx_garbage_{0}, rx_unknown_vni_{0},
      rx_unknown_peer_{0};
  std::thread thread_;
};

}  // namespace apiary::net
