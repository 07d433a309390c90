#include "vmm-core/sim_vcpu.hpp"

namespace apiary::vmm {

SimVcpuBackend::SimVcpuBackend(uint32_t id, Bus& bus, std::vector<SimStep> program)
    : id_(id), bus_(bus), program_(std::move(program)) {}

void SimVcpuBackend::load_program(std::vector<SimStep> program) {
  std::lock_guard lock(mutex_);
  program_ = std::move(program);
  pc_ = 0;
}

std::vector<uint64_t> SimVcpuBackend::reads() const {
  std::lock_guard lock(mutex_);
  return reads_;
}

void SimVcpuBackend::kick() noexcept {
  kicks_.fetch_add(1, std::memory_order_relaxed);
  kicked_.store(true);
}

Exit SimVcpuBackend::run() noexcept {
  runs_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  for (;;) {
    if (kicked_.exchange(false) && !ignore_kicks_) return ExitInterrupted{};
    if (pc_ >= program_.size()) return ExitHlt{};
    const SimStep step = program_[pc_++];
    rip_ = pc_;
    uint64_t value = 0;
    switch (step.kind) {
      case SimStep::Kind::pio_write:
        pio_.fetch_add(1, std::memory_order_relaxed);
        bus_.write(AddressSpace::pio, step.addr, step.size, step.value);
        break;
      case SimStep::Kind::pio_read:
        pio_.fetch_add(1, std::memory_order_relaxed);
        bus_.read(AddressSpace::pio, step.addr, step.size, value);
        reads_.push_back(value);
        break;
      case SimStep::Kind::mmio_write:
        mmio_.fetch_add(1, std::memory_order_relaxed);
        bus_.write(AddressSpace::mmio, step.addr, step.size, step.value);
        break;
      case SimStep::Kind::mmio_read:
        mmio_.fetch_add(1, std::memory_order_relaxed);
        bus_.read(AddressSpace::mmio, step.addr, step.size, value);
        reads_.push_back(value);
        break;
      case SimStep::Kind::hlt:
        return ExitHlt{};
      case SimStep::Kind::shutdown:
        return ExitShutdown{};
      case SimStep::Kind::internal_error:
        return ExitInternalError{KVM_INTERNAL_ERROR_EMULATION, 0, {}};
    }
  }
}

VcpuDump SimVcpuBackend::dump() const {
  std::lock_guard lock(mutex_);
  VcpuDump d;
  d.id = id_;
  d.regs.rip = rip_;
  d.mp_state = mp_state_;
  return d;
}

void SimVcpuBackend::reset(const BootPlan* plan) {
  std::lock_guard lock(mutex_);
  pc_ = 0;
  rip_ = plan ? plan->entry : 0;
  mp_state_ = plan || id_ == 0 ? KVM_MP_STATE_RUNNABLE : KVM_MP_STATE_UNINITIALIZED;
  kicked_ = false;
}

VcpuCounters SimVcpuBackend::counters() const noexcept {
  return {runs_.load(std::memory_order_relaxed), pio_.load(std::memory_order_relaxed),
          mmio_.load(std::memory_order_relaxed), kicks_.load(std::memory_order_relaxed)};
}

}  // namespace apiary::vmm
