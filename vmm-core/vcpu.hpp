// A vCPU as its owner sees it: run until something that is not port or
// memory-mapped I/O happens, be kicked out of the guest from another thread,
// dump registers, be reset.
//
// Two backends implement it:
//   - KvmVcpuBackend: KVM_RUN with PIO/MMIO dispatched inline through the Bus
//     on the calling thread (no allocation, no lock, no message per exit).
//   - SimVcpuBackend (sim_vcpu.hpp): runs no guest code; replays a scripted
//     program of I/O and exits, for simulation and tests without /dev/kvm.
//
// The kick: kick() sets kvm_run->immediate_exit and signals the thread bound
// to the vCPU. Whether the thread is inside KVM_RUN (the signal interrupts
// it), about to enter it (immediate_exit makes it return at once) or outside
// it (the flag is still set for the next entry), run() returns
// ExitInterrupted promptly. The loop clears the flag before it returns, so the
// owner must check its control queue after every ExitInterrupted.
#pragma once

#include <linux/kvm.h>
#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>

#include "vmm-core/boot.hpp"
#include "vmm-core/bus.hpp"
#include "vmm-core/exit.hpp"
#include "vmm-core/kvm.hpp"

namespace apiary::vmm {

struct VcpuDump {
  uint32_t id = 0;
  kvm_regs regs{};
  kvm_sregs sregs{};
  uint32_t mp_state = 0;  // KVM_MP_STATE_*
};

struct VcpuCounters {
  uint64_t runs = 0;       // KVM_RUN calls (or simulated steps)
  uint64_t pio_exits = 0;
  uint64_t mmio_exits = 0;
  uint64_t kicks = 0;
};

class VcpuBackend {
 public:
  virtual ~VcpuBackend() = default;
  virtual uint32_t id() const noexcept = 0;
  // Must be called on the thread that will call run(), before kick() can
  // interrupt it; unbind_thread() when that thread stops running the vCPU.
  virtual void bind_thread() = 0;
  virtual void unbind_thread() = 0;
  // Runs the guest until a non-I/O exit and returns it. Never throws.
  virtual Exit run() noexcept = 0;
  // Thread-safe: makes the current or next run() return ExitInterrupted.
  virtual void kick() noexcept = 0;
  virtual VcpuDump dump() const = 0;
  // Architectural state for (re)boot: the BSP gets the plan's entry state,
  // APs (plan == nullptr) wait for INIT/SIPI.
  virtual void reset(const BootPlan* plan) = 0;
  virtual VcpuCounters counters() const noexcept = 0;
};

// Installs the (empty) handler for the kick signal, once per process.
// Called by KvmVcpuBackend's constructor; exposed for tests.
void install_kick_handler();
int kick_signal() noexcept;

class KvmVcpuBackend final : public VcpuBackend {
 public:
  KvmVcpuBackend(const kvm::Vm& vm, uint32_t id, uint32_t vcpu_count, Bus& bus);
  uint32_t id() const noexcept override { return vcpu_.id(); }
  void bind_thread() override;
  void unbind_thread() override;
  Exit run() noexcept override;
  void kick() noexcept override;
  VcpuDump dump() const override;
  void reset(const BootPlan* plan) override;
  VcpuCounters counters() const noexcept override;
  kvm::Vcpu& raw() noexcept { return vcpu_; }

 private:
  void dispatch_pio(const ExitPio& pio) noexcept;
  void dispatch_mmio() noexcept;

  kvm::Vcpu vcpu_;
  Bus& bus_;
  std::mutex bind_mutex_;
  pthread_t thread_{};
  bool bound_ = false;
  std::atomic<uint64_t> runs_{0}, pio_{0}, mmio_{0}, kicks_{0};
};

}  // namespace apiary::vmm
