// Runs a Machine on plain threads, one per vCPU, until something ends it: a
// debug exit, a reset or poweroff request, a triple fault, a guest fault
// (emulation failure, failed entry, unknown exit), stop() from another
// thread, or the deadline.
//
// This is the non-actor way to run a VM: tests, benchmarks and the simple
// `apiary run` path use it. The instance/vCPU actors implement the full
// lifecycle (pause, reboot, fan-outs) on the same Machine and backends.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <string>

#include "devices/machine.hpp"

namespace apiary::devices {

struct RunOutcome {
  enum class Kind {
    debug_exit,      // status = (v << 1) | 1
    poweroff,        // poweroff requested by a device
    reset,           // reset requested by a device
    triple_fault,    // KVM_EXIT_SHUTDOWN
    guest_fault,     // internal error / failed entry / unknown exit; detail says which
    halted,          // every vCPU idle with nothing to do (simulated backend)
    stopped,         // stop() was called
    timeout,         // deadline passed
  };
  Kind kind = Kind::stopped;
  int status = 0;
  std::string detail;
  uint32_t vcpu = 0;  // the vCPU that reported it, where one did
};
const char* to_string(RunOutcome::Kind k) noexcept;

class MachineRunner {
 public:
  explicit MachineRunner(Machine& m);
  ~MachineRunner();
  // Blocks until the machine stops; all vCPU threads are joined on return.
  RunOutcome run(std::optional<std::chrono::milliseconds> timeout = std::nullopt);
  // Thread-safe; makes run() return `stopped` promptly.
  void stop();

 private:
  void finish(RunOutcome outcome);  // first caller wins; kicks every vCPU
  void vcpu_thread(vmm::VcpuBackend& v);

  Machine& machine_;
  std::mutex mutex_;
  std::condition_variable done_cv_;
  std::optional<RunOutcome> outcome_;
  std::atomic<bool> stopping_{false};
  size_t halted_ = 0;
};

}  // namespace apiary::devices
