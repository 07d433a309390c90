// A vCPU backend that runs no guest code.
//
// It replays a program of steps — port/MMIO accesses dispatched through the
// same Bus as a real vCPU, then an exit such as HLT, a triple fault or an
// emulation failure — so devices, the vCPU control protocol and the instance
// state machine can be exercised without /dev/kvm, and deterministically
// (run() never blocks and never looks at the clock).
#pragma once

#include <atomic>
#include <mutex>
#include <vector>

#include "vmm-core/vcpu.hpp"

namespace apiary::vmm {

struct SimStep {
  enum class Kind { pio_write, pio_read, mmio_write, mmio_read, hlt, shutdown, internal_error };
  Kind kind;
  uint64_t addr = 0;
  unsigned size = 1;
  uint64_t value = 0;
};

class SimVcpuBackend final : public VcpuBackend {
 public:
  // When the program is exhausted run() returns ExitHlt (an idle guest).
  SimVcpuBackend(uint32_t id, Bus& bus, std::vector<SimStep> program = {});
  uint32_t id() const noexcept override { return id_; }
  void bind_thread() override {}
  void unbind_thread() override {}
  Exit run() noexcept override;
  void kick() noexcept override;
  VcpuDump dump() const override;
  void reset(const BootPlan* plan) override;
  VcpuCounters counters() const noexcept override;

  // Fault injection: a vCPU that ignores kicks (run() keeps running its program).
  void set_ignore_kicks(bool on) noexcept { ignore_kicks_ = on; }
  // Replaces the program and rewinds.
  void load_program(std::vector<SimStep> program);
  // Values read by pio_read/mmio_read steps, in order.
  std::vector<uint64_t> reads() const;

 private:
  uint32_t id_;
  Bus& bus_;
  mutable std::mutex mutex_;
  std::vector<SimStep> program_;
  size_t pc_ = 0;
  std::vector<uint64_t> reads_;
  uint64_t rip_ = 0;
  uint32_t mp_state_ = 0;
  std::atomic<bool> kicked_{false};
  std::atomic<bool> ignore_kicks_{false};
  std::atomic<uint64_t> runs_{0}, pio_{0}, mmio_{0}, kicks_{0};
};

}  // namespace apiary::vmm
