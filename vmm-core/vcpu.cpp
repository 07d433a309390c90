#include "vmm-core/vcpu.hpp"

#include <signal.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "vmm-core/x86_setup.hpp"

namespace apiary::vmm {

namespace {
void on_kick(int) {}
std::once_flag kick_once;
}  // namespace

int kick_signal() noexcept { return SIGRTMIN; }

void install_kick_handler() {
  std::call_once(kick_once, [] {
    struct sigaction sa {};
    sa.sa_handler = on_kick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    if (sigaction(kick_signal(), &sa, nullptr) != 0)
      throw Error(Errc::invalid_argument, std::string("sigaction(kick signal): ") + std::strerror(errno));
  });
}

KvmVcpuBackend::KvmVcpuBackend(const kvm::Vm& vm, uint32_t id, uint32_t vcpu_count, Bus& bus)
    : vcpu_(vm, id), bus_(bus) {
  install_kick_handler();
  x86::set_vcpu_cpuid(vcpu_, vm.system(), vcpu_count);
}

void KvmVcpuBackend::bind_thread() {
  std::lock_guard lock(bind_mutex_);
  thread_ = pthread_self();
  bound_ = true;
  // The kick signal must be deliverable on this thread.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, kick_signal());
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

void KvmVcpuBackend::unbind_thread() {
  std::lock_guard lock(bind_mutex_);
  bound_ = false;
}

void KvmVcpuBackend::kick() noexcept {
  kicks_.fetch_add(1, std::memory_order_relaxed);
  __atomic_store_n(&vcpu_.run_page()->immediate_exit, 1, __ATOMIC_SEQ_CST);
  std::lock_guard lock(bind_mutex_);
  if (bound_) pthread_kill(thread_, kick_signal());
}

void KvmVcpuBackend::dispatch_pio(const ExitPio& pio) noexcept {
  uint8_t* data = reinterpret_cast<uint8_t*>(vcpu_.run_page()) + pio.data_offset;
  for (uint32_t i = 0; i < pio.count; ++i, data += pio.size) {
    uint64_t value = 0;
    if (pio.write) {
      std::memcpy(&value, data, pio.size);
      bus_.write(AddressSpace::pio, pio.port, pio.size, value);
    } else {
      bus_.read(AddressSpace::pio, pio.port, pio.size, value);
      std::memcpy(data, &value, pio.size);
    }
  }
}

void KvmVcpuBackend::dispatch_mmio() noexcept {
  auto& m = vcpu_.run_page()->mmio;
  const unsigned len = m.len <= 8 ? m.len : 8;
  uint64_t value = 0;
  if (m.is_write) {
    std::memcpy(&value, m.data, len);
    bus_.write(AddressSpace::mmio, m.phys_addr, len, value);
  } else {
    bus_.read(AddressSpace::mmio, m.phys_addr, len, value);
    std::memcpy(m.data, &value, len);
  }
}

Exit KvmVcpuBackend::run() noexcept {
  kvm_run* page = vcpu_.run_page();
  for (;;) {
    runs_.fetch_add(1, std::memory_order_relaxed);
    const int r = vcpu_.run();
    if (r == -EINTR || r == -EAGAIN) {
      __atomic_store_n(&page->immediate_exit, 0, __ATOMIC_SEQ_CST);
      return ExitInterrupted{};
    }
    if (r < 0) return ExitRunFailed{-r};
    if (page->exit_reason == KVM_EXIT_IO) {
      pio_.fetch_add(1, std::memory_order_relaxed);
      dispatch_pio(std::get<ExitPio>(decode_exit(*page)));
      continue;
    }
    if (page->exit_reason == KVM_EXIT_MMIO) {
      mmio_.fetch_add(1, std::memory_order_relaxed);
      dispatch_mmio();
      continue;
    }
    Exit e = decode_exit(*page);
    if (std::holds_alternative<ExitInterrupted>(e))
      __atomic_store_n(&page->immediate_exit, 0, __ATOMIC_SEQ_CST);
    return e;
  }
}

VcpuDump KvmVcpuBackend::dump() const {
  VcpuDump d;
  d.id = vcpu_.id();
  d.regs = vcpu_.get_regs();
  d.sregs = vcpu_.get_sregs();
  d.mp_state = vcpu_.get_mp_state().mp_state;
  return d;
}

void KvmVcpuBackend::reset(const BootPlan* plan) {
  x86::reset_vcpu(vcpu_, plan);
  if (!plan && vcpu_.id() != 0) vcpu_.set_mp_state(KVM_MP_STATE_UNINITIALIZED);
  if (plan) vcpu_.set_mp_state(KVM_MP_STATE_RUNNABLE);
}

VcpuCounters KvmVcpuBackend::counters() const noexcept {
  return {runs_.load(std::memory_order_relaxed), pio_.load(std::memory_order_relaxed),
          mmio_.load(std::memory_order_relaxed), kicks_.load(std::memory_order_relaxed)};
}

}  // namespace apiary::vmm
