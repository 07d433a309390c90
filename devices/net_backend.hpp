// The wire side of a virtio-net device, as the device sees it.
//
// Why an interface here and not a dependency on net/: devices/ sits below
// net/ (ARCHITECTURE.md), so the device only knows "somewhere frames go"
// (NetBackend) and offers "somewhere frames arrive" (NetPort). net/'s
// switch port implements the one and calls the other; tests plug in a
// loopback or a capture.
//
// Frames are whole Ethernet frames (destination MAC onward, no FCS, no
// virtio_net_hdr), at most layout::kNetMaxFrameBytes.
//
// Threads. transmit() is called on the thread that serves the guest's TX
// queue (a vCPU thread, inside QueueNotify); deliver() on the data plane's
// thread. Neither may block for long: both copy the frame into a bounded
// queue or drop it, and count the drop.
#pragma once

#include <cstdint>
#include <span>

namespace apiary::devices {

// Implemented by the device: the data plane hands it frames for the guest.
class NetPort {
 public:
  // Copies `frame` towards the guest. false: dropped (oversized, no room in
  // the bounded receive queue, device not running); the device counts it.
  virtual bool deliver(std::span<const uint8_t> frame) noexcept = 0;

 protected:
  ~NetPort() = default;
};

// Implemented by the data plane (net/), one per NIC.
class NetBackend {
 public:
  virtual ~NetBackend() = default;
  // The device attaches itself for receive; nullptr detaches. Once
  // connect(nullptr) has returned, deliver() is not running and will not
  // be called again on the old port.
  virtual void connect(NetPort* port) noexcept = 0;
  // A frame the guest transmitted. false: dropped by the backend (queue
  // full, link down); the backend counts it.
  virtual bool transmit(std::span<const uint8_t> frame) noexcept = 0;
};

}  // namespace apiary::devices
