// A host tap device as one port of a network's switch: the way the host
// (or the network namespace the node runs in) reaches the guests of a
// network, e.g. to give them a gateway or to reach a service in them.
//
// Why a tap and not a bridge or a veth: a tap is a file descriptor, so its
// frames enter the same bounded per-port queue as a guest's and the switch
// keeps its rules (learning, flooding, isolation) without the kernel's
// bridge in the path; nothing is configured on the host beyond the device.
//
// What Apiary does to the host, and no more: it creates the device with
// the name it is given (not persistent: it vanishes when the port goes or
// the node dies), sets its MTU to the overlay's (layout::kNetMtu) and brings
// it up. It assigns no address and adds no route: which address the host
// takes on a tenant's network is the operator's choice (`ip addr add`).
//
// What it needs and refuses (std::system_error, the message starting with
// the name of the failure):
//   tap_bad_name       empty, longer than 15 bytes, or '/', ':', whitespace
//   tap_name_in_use    an interface of that name exists (it is not ours to
//                      take over, even if it is a tap)
//   tap_not_permitted  no CAP_NET_ADMIN in the node's network namespace
//   tap_unavailable    no /dev/net/tun (module tun not loaded)
//   tap_failed         anything else the kernel refuses
// Frames from the host larger than layout::kNetMaxFrameBytes (the host
// raised the MTU) are dropped and counted on the port (bad_frame), like a
// guest's.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "net/switch.hpp"

namespace apiary::net {

// The tap a node makes for a network: "apiary-" and the VNI in 6 hex digits.
std::string tap_name(uint32_t vni);

class TapPort {
 public:
  // Creates `ifname`, adds it to `sw` (kind "tap", named after the device)
  // and starts its reader thread. Throws as described above; on a throw
  // nothing is left behind.
  TapPort(std::shared_ptr<Switch> sw, std::string ifname);
  ~TapPort();
  TapPort(const TapPort&) = delete;
  TapPort& operator=(const TapPort&) = delete;

  const std::string& ifname() const noexcept { return ifname_; }
  PortId port() const noexcept { return port_; }
  // read() failures other than "nothing to read" (the port stays up).
  uint64_t read_errors() const noexcept { return read_errors_.load(std::memory_order_relaxed); }

 private:
  struct Sink;
  void read_loop();

  std::shared_ptr<Switch> sw_;
  std::string ifname_;
  int stop_fd_ = -1;  // eventfd: wakes the reader for shutdown
  std::shared_ptr<Sink> sink_;  // owns the device's descriptor
  PortId port_ = 0;
  std::atomic<uint64_t> read_errors_{0};
  std::thread thread_;
};

}  // namespace apiary::net
