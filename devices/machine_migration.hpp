// Live migration of a running Machine from one process to another over one
// TCP stream, with Propolis' phases as the model: the source sends the
// machine's shape, pre-copies guest RAM while the guest runs (rounds of the
// pages written since the previous round: KVM's dirty log for vCPU writes,
// GuestMemory's write log for device DMA), then, with every vCPU held and
// every device paused, sends the last dirty pages and the whole state
// (devices/machine_snapshot.hpp's capture); the destination applies it and
// says ready; the source commits; the destination runs and says so. Until
// the commit, either side failing leaves the source intact (its owner
// resumes it); after it, the destination owns the guest.
//
// Stream (all integers little-endian): a preface "APIARYMG" + u32 protocol
// version from each side, then frames of u32 kind, u32 reserved (0),
// u64 payload length, payload:
//   hello    src->dst  apiary.v1.MachineSnapshot: board and machine only
//   built    dst->src  the destination's machine exists; send RAM
//            (payload: u32 indices of the disks whose path the
//            destination does not see: it created them, empty and as large
//            as the source's; they are copied, all else is shared storage)
//   pages    src->dst  records of u64 guest-physical address, u32 page
//                      count, u32 flags (1 = the pages are zero, no bytes
//                      follow), then count * 4 KiB bytes
//   disk     src->dst  u32 disk index, u32 reserved, u64 offset, bytes
//                      (stop-and-copy only: a copied disk's non-zero 1 MiB
//                      chunks; no block dirty tracking, so a large local
//                      disk lengthens the downtime)
//   state    src->dst  apiary.v1.MachineSnapshot: vCPUs, VM, devices
//                      (kernel and initrd left out: hello had them)
//   ready    dst->src  the state is applied; waiting for commit
//   commit   src->dst  run
//   running  dst->src  the guest runs on the destination
//   error    either    UTF-8 reason; the stream ends
// Every frame kind has a size bound, every page record is checked against
// the destination's RAM, and every wait has a deadline: a peer that sends
// garbage, stops, or goes away gets a named error (vmm::Errc migration_*),
// never a hang or a write outside guest RAM.
//
// Why pre-copy ends when it does: like QEMU, when the pages still dirty
// would take less than the downtime target to send at the bandwidth
// measured so far; a guest that dirties memory faster than the stream
// carries it is stopped after max_rounds anyway (converged by
// stop-and-copy, with a longer downtime, reported).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/apiary/v1/snapshot.pb.h"
#include "vmm-core/guest_memory.hpp"

namespace apiary::devices {

class Machine;
struct MachineConfig;

namespace migration {

inline constexpr uint32_t kProtocolVersion = 1;
inline constexpr uint32_t kPagesPerFrame = 256;  // 1 MiB of page data

struct Policy {
  std::chrono::milliseconds downtime_target{300};
  uint32_t max_rounds = 30;
  // The longest any one step may wait for the other side (connect, a frame,
  // the destination building its machine or applying the state).
  std::chrono::milliseconds io_deadline{30000};
  // Page data per second at most (0: as fast as the stream takes it), as
  // QEMU's max-bandwidth: a migration need not starve the host's network.
  uint64_t max_bytes_per_second = 0;
  // Destination: the machine it agreed to receive (a node: the instance's
  // spec). A hello of another shape, or naming other disks, is refused
  // (snapshot_board) before anything is built or created; only these disk
  // paths may be created. Unset (`apiary run --incoming`): whatever the
  // source sends.
  struct Shape {
    uint32_t vcpus = 0;
    uint64_t memory_mib = 0;
    std::vector<std::string> disk_paths;
  };
  std::optional<Shape> expect;
};

struct Stats {
  uint32_t rounds = 0;        // pre-copy rounds, the first (all touched RAM) included
  uint64_t pages = 0;         // pages sent, zero pages included
  uint64_t bytes = 0;         // bytes on the stream
  uint64_t final_pages = 0;   // pages sent while the guest was stopped
  uint64_t disk_bytes = 0;    // disk contents copied (disks the destination did not see)
  bool converged = false;     // false: stopped after max_rounds
  double precopy_ms = 0;
  double total_ms = 0;        // connect to running on the destination
  double downtime_ms = 0;     // vCPUs held on the source to running on the destination
};

// A pages frame's records written into `memory` (the destination's RAM).
// A record outside RAM, torn, or of unknown flags is migration_protocol;
// records before it have been written.
void apply_page_records(vmm::GuestMemory& memory, std::string_view payload, const std::string& peer);

// The destination's listening socket. Port 0 picks a free port.
class Listener {
 public:
  Listener(const std::string& host, uint16_t port);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  uint16_t port() const noexcept { return port_; }
  const std::string& host() const noexcept { return host_; }
  // One connection, within `deadline` (migration_unreachable otherwise);
  // `cancelled` is polled while waiting.
  int accept(std::chrono::milliseconds deadline, const std::atomic<bool>* cancelled = nullptr);

 private:
  std::string host_;
  uint16_t port_ = 0;
  int fd_ = -1;
};

// The source side. Driven by one thread; the owner holds the vCPUs and
// pauses the devices between precopy() and stop_and_copy().
class Outgoing {
 public:
  // Connects, sends hello, and waits until the destination has built its
  // machine. `cancelled`, when set by the owner, ends any wait with
  // migration_cancelled (the destination is told).
  Outgoing(Machine& machine, const std::string& host, uint16_t port, const std::string& instance_name, Policy policy,
           const std::atomic<bool>* cancelled);
  ~Outgoing();  // the dirty logs are stopped; the stream is closed
  Outgoing(const Outgoing&) = delete;
  Outgoing& operator=(const Outgoing&) = delete;

  // Pre-copy rounds while the guest runs.
  void precopy();
  // With the guest stopped: the last dirty pages and the whole state; returns
  // once the destination has applied it. `stopped_at` is when the vCPUs were
  // held (the start of the downtime).
  void stop_and_copy(std::chrono::steady_clock::time_point stopped_at);
  // Tells the destination to run and waits until it does. After a failure
  // here the outcome is unknown (committed() says whether commit went out).
  void commit();
  bool committed() const noexcept { return committed_; }
  const Stats& stats() const noexcept { return stats_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Stats stats_;
  bool committed_ = false;
};

// The destination side, on one accepted connection.
class Incoming {
 public:
  // Reads the source's preface and hello (migration_* errors).
  Incoming(int connected_fd, Policy policy, const std::atomic<bool>* cancelled);
  ~Incoming();
  Incoming(const Incoming&) = delete;
  Incoming& operator=(const Incoming&) = delete;

  // The machine to build: the source's (snapshot::restore_config of a
  // Header marked incoming).
  MachineConfig machine_config() const;
  const std::string& peer() const noexcept;
  // Tells the source the machine is built, receives RAM into it and then
  // the state, applies it (no vCPU may be running), says ready, and waits
  // for commit. Refusals (another board, a bad page record) are sent to the
  // source before they are thrown.
  void receive(Machine& machine);
  // After commit, once the guest runs.
  void report_running();
  // Best effort: tells the source why this side gives up.
  void report_failure(const std::string& why) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace migration
}  // namespace apiary::devices
