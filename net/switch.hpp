// One network's switch on one node: the L2 data plane between the guest
// NICs of that network on this node, its overlay uplink and (optionally) a
// host tap.
//
// Why a thread per switch and bounded queues per port: a guest's transmit
// runs on its vCPU thread inside a QueueNotify exit, and must never wait
// for another guest (a slow or paused receiver, a full socket). So a port's
// ingress only copies the frame into that port's own bounded queue (full:
// dropped and counted against that port alone) and wakes the forwarding
// thread; the thread learns the source, looks up the destination and hands
// the frame to the egress port's sink, which again only copies or drops. A
// guest flooding its queue fills its own queue, not anyone else's.
//
// Forwarding: a group destination (broadcast, multicast) or an unknown one
// is flooded to every port but the one it came in on; a known unicast goes
// to its port (or is dropped if that is where it came from). Sources are
// learned (MacTable, bounded, aged). Nothing in a frame beyond the two
// addresses is read.
//
// Lifetimes: a port's sink may be called once more by a forwarding pass
// that began before remove_port() returned; a sink must tolerate that (the
// guest sink does: it checks its device under its own lock). The switch
// never calls a sink after its own destructor has returned.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "devices/net_backend.hpp"
#include "net/mac_table.hpp"

namespace apiary::net {

namespace switch_defaults {
inline constexpr size_t kQueueFrames = 256;          // per port ingress queue
inline constexpr size_t kMacCapacity = 4096;         // MAC table entries
inline constexpr std::chrono::milliseconds kMacAgeing{300000};  // 802.1D default
inline constexpr size_t kBatchFrames = 32;           // frames taken from one port per pass
}  // namespace switch_defaults

// Where the switch hands a port's outgoing frames.
class PortSink {
 public:
  virtual ~PortSink() = default;
  // Copies the frame out (to a guest, a socket, a tap). false: dropped.
  virtual bool emit(std::span<const uint8_t> frame) noexcept = 0;
};

struct PortStats {
  PortId id = 0;
  std::string name;  // e.g. the instance id and NIC index, "uplink", "tap"
  std::string kind;  // guest, uplink, tap
  uint64_t rx_frames = 0, rx_bytes = 0;  // into the switch from this port
  uint64_t tx_frames = 0, tx_bytes = 0;  // out of the switch to this port
  uint64_t rx_dropped_queue_full = 0;    // its ingress queue was full
  uint64_t rx_dropped_bad_frame = 0;     // runt or oversized
  uint64_t tx_dropped = 0;               // its sink refused (no room, not ready)
};

struct SwitchStats {
  std::vector<PortStats> ports;
  size_t mac_entries = 0;
  uint64_t mac_moves = 0, mac_not_learned = 0;
  uint64_t flooded = 0;        // frames sent to more than one port
  uint64_t hairpin_drops = 0;  // known destination on the ingress port
  uint64_t bad_peers = 0;      // filled in by the network actor: unparsable VTEP peers it was given
};

class Switch {
 public:
  struct Config {
    std::string name;
    size_t queue_frames = switch_defaults::kQueueFrames;
    std::chrono::milliseconds mac_ageing = switch_defaults::kMacAgeing;
    size_t mac_capacity = switch_defaults::kMacCapacity;
  };
  explicit Switch(Config config);
  ~Switch();
  Switch(const Switch&) = delete;
  Switch& operator=(const Switch&) = delete;

  const std::string& name() const noexcept { return config_.name; }

  // A port whose frames enter through ingress() and leave through `sink`.
  PortId add_port(std::string name, std::string kind, std::shared_ptr<PortSink> sink);
  // The port leaves: its queue is dropped and its MACs forgotten.
  void remove_port(PortId id);
  // Copies `frame` into the port's ingress queue. false: dropped (unknown
  // port, bad size, queue full), counted on the port.
  bool ingress(PortId id, std::span<const uint8_t> frame) noexcept;

  SwitchStats stats() const;
  size_t port_count() const;
  // Tests: returns once every queue is empty and the thread is idle, or
  // false after `timeout`.
  bool wait_idle(std::chrono::milliseconds timeout) const;

 private:
  struct Port {
    PortId id;
    std::string name, kind;
    std::shared_ptr<PortSink> sink;
    std::mutex q_mutex;
    std::deque<std::vector<uint8_t>> queue;
    std::atomic<uint64_t> rx_frames{0}, rx_bytes{0}, tx_frames{0}, tx_bytes{0}, rx_queue_full{0}, rx_bad{0},
        tx_dropped{0};
  };
  void run();
  void forward(const std::vector<std::shared_ptr<Port>>& ports, const Port& in, std::span<const uint8_t> frame);
  static void emit(Port& out, std::span<const uint8_t> frame);

  const Config config_;
  mutable std::shared_mutex ports_mutex_;
  std::map<PortId, std::shared_ptr<Port>> ports_;
  PortId next_id_ = 1;
  uint64_t generation_ = 0;  // bumped on add/remove, under ports_mutex_

  mutable std::mutex wake_mutex_;
  mutable std::condition_variable wake_cv_, idle_cv_;
  size_t pending_ = 0;  // frames queued in all ports, under wake_mutex_
  bool busy_ = false, stop_ = false;

  mutable std::mutex table_mutex_;  // MacTable and the switch counters (thread writes, stats reads)
  MacTable table_;
  uint64_t flooded_ = 0, hairpin_ = 0;
  std::thread thread_;  // last: started after everything above exists
};

// A guest NIC's backend on a switch: what a virtio-net device transmits
// enters the switch, what the switch sends the port is delivered to the
// device. Destroying it removes the port.
std::shared_ptr<devices::NetBackend> make_guest_port(std::shared_ptr<Switch> sw, std::string name);

}  // namespace apiary::net
