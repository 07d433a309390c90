// RAII wrappers over the KVM ioctl API: the system (/dev/kvm), one VM, and
// one vCPU with its mmapped kvm_run page.
//
// Every failed ioctl is turned into Errc::ioctl_failed naming the ioctl and
// errno, so an operator sees "KVM_CREATE_VCPU: Invalid argument" instead of a
// bare -1. KVM_RUN itself never throws: it is the hot path and its EINTR is
// the normal way a kicked vCPU leaves the guest.
#pragma once

#include <linux/kvm.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "vmm-core/error.hpp"
#include "vmm-core/guest_memory.hpp"

namespace apiary::vmm::kvm {

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd();
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }
  int release() noexcept { int f = fd_; fd_ = -1; return f; }
  explicit operator bool() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// ioctl that throws Errc::ioctl_failed("NAME: strerror") on failure.
long checked_ioctl(int fd, unsigned long request, const char* name, unsigned long arg = 0);
template <class T>
long checked_ioctl(int fd, unsigned long request, const char* name, T* arg) {
  return checked_ioctl(fd, request, name, reinterpret_cast<unsigned long>(arg));
}
#define APIARY_KVM_IOCTL(fd, req, ...) ::apiary::vmm::kvm::checked_ioctl(fd, req, #req, ##__VA_ARGS__)

// Throws Errc::kvm_unavailable unless `supported` (KVM_GET_SUPPORTED_CPUID
// of the KVM at `path`) offers SSE3. Every CPU with VT-x or AMD-V has SSE3,
// and KVM on one offers it: a KVM that does not is emulated in software
// (some machines of this project's CI kind have one), cannot execute every
// SSE instruction and does not boot a stock Linux kernel. scripts/kvm-vm
// applies the same test. System's constructor calls it.
void require_hardware_cpuid(const std::vector<kvm_cpuid_entry2>& supported, const std::string& path);

class System {
 public:
  // Opens the KVM device. Errc::kvm_unavailable if it does not exist,
  // kvm_permission if it cannot be opened, kvm_api_version if the API is not 12.
  explicit System(const std::string& path = "/dev/kvm");

  int fd() const noexcept { return fd_.get(); }
  int check_extension(long cap) const;  // 0 when absent
  int max_vcpus() const;
  size_t vcpu_mmap_size() const noexcept { return vcpu_mmap_size_; }
  const std::vector<kvm_cpuid_entry2>& supported_cpuid() const noexcept { return cpuid_; }
  // KVM_GET_MSR_INDEX_LIST: the MSRs KVM can save and restore.
  const std::vector<uint32_t>& msr_index_list() const noexcept { return msr_list_; }

 private:
  Fd fd_;
  size_t vcpu_mmap_size_ = 0;
  std::vector<kvm_cpuid_entry2> cpuid_;
  std::vector<uint32_t> msr_list_;
};

// Empty when the KVM device at `path` opens and speaks API 12; otherwise
// the named error that opening it gives (e.g. "kvm_unavailable: /dev/kvm: No
// such file or directory"). Nodes report it so that the scheduler knows.
std::string why_unusable(const std::string& path = "/dev/kvm");

// A vCPU's whole architectural state as KVM holds it: what a snapshot saves
// and a restore puts back. Captured and restored only while the vCPU is out
// of KVM_RUN (held by its owner).
struct VcpuState {
  kvm_regs regs{};
  kvm_sregs sregs{};
  std::array<uint8_t, 4096> xsave{};  // KVM_GET_XSAVE's 4 KiB layout
  kvm_xcrs xcrs{};
  kvm_lapic_state lapic{};
  std::vector<kvm_msr_entry> msrs;  // every listed MSR this vCPU can read
  kvm_vcpu_events events{};
  kvm_mp_state mp_state{};
  kvm_debugregs debugregs{};
};

// The VM-wide in-kernel devices: both PICs, the IOAPIC, the PIT, kvmclock.
struct VmState {
  kvm_irqchip pic_master{};
  kvm_irqchip pic_slave{};
  kvm_irqchip ioapic{};
  kvm_pit_state2 pit{};
  kvm_clock_data clock{};
};

class Vm {
 public:
  // Creates the VM, sets the TSS and identity-map addresses, and creates the
  // in-kernel irqchip (PIC, IOAPIC, LAPIC) and PIT.
  explicit Vm(const System& sys);

  int fd() const noexcept { return fd_.get(); }
  const System& system() const noexcept { return *sys_; }
  // Registers every region of `mem` as a memslot (slot i = region i).
  void map_memory(const GuestMemory& mem);
  // KVM's dirty page log on every memslot (KVM_MEM_LOG_DIRTY_PAGES), for
  // live migration's pre-copy. take_dirty_log returns the pages vCPUs wrote
  // in slot `slot` since the last call (bit i = page i of the region) and
  // clears them (KVM_GET_DIRTY_LOG).
  void set_dirty_logging(bool on);
  std::vector<uint64_t> take_dirty_log(uint32_t slot);
  size_t slots() const noexcept { return slots_.size(); }
  // Drives an irqchip input line (IRQ 0-23 of PIC/IOAPIC).
  void set_irq_line(uint32_t irq, bool level);
  // Registers an eventfd that raises `gsi` when signalled.
  void add_irqfd(int eventfd, uint32_t gsi);
  // irqchip, PIT and clock; restore_state writes them back (clock last).
  VmState capture_state() const;
  void restore_state(const VmState& s);

 private:
  const System* sys_;
  Fd fd_;
  std::vector<kvm_userspace_memory_region> slots_;
};

// The state components (XCR0 bits) a CPUID offers: leaf 0xD, subleaf 0,
// EDX:EAX; 0 when it has no such leaf.
uint64_t cpuid_xcr0(const std::vector<kvm_cpuid_entry2>& entries) noexcept;

class Vcpu {
 public:
  Vcpu(const Vm& vm, uint32_t id);
  ~Vcpu();
  Vcpu(const Vcpu&) = delete;
  Vcpu& operator=(const Vcpu&) = delete;

  uint32_t id() const noexcept { return id_; }
  int fd() const noexcept { return fd_.get(); }
  kvm_run* run_page() const noexcept { return run_; }
  // KVM_RUN: 0 on an exit, -errno otherwise (-EINTR after a kick). Never throws.
  int run() noexcept;

  kvm_regs get_regs() const;
  void set_regs(const kvm_regs& r);
  kvm_sregs get_sregs() const;
  void set_sregs(const kvm_sregs& s);
  kvm_mp_state get_mp_state() const;
  void set_mp_state(uint32_t state);
  void set_fpu(const kvm_fpu& f);
  void set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
  void set_msrs(const std::vector<kvm_msr_entry>& msrs);
  kvm_lapic_state get_lapic() const;
  void set_lapic(const kvm_lapic_state& l);
  void set_xcr0(uint64_t xcr0);  // KVM_SET_XCRS, XCR0 only
  // Everything KVM holds for this vCPU (see VcpuState). restore_state puts
  // it back in the order KVM needs (sregs before the LAPIC, MSRs after the
  // CPUID, events and MP state last) and names the part that was refused.
  VcpuState capture_state() const;
  void restore_state(const VcpuState& s);
  // The state components (XCR0 bits) the CPUID given to set_cpuid offers.
  uint64_t cpuid_xcr0() const noexcept { return cpuid_xcr0_; }

 private:
  std::vector<uint32_t> readable_msrs() const;

  uint64_t cpuid_xcr0_ = 0;
  const System* sys_;
  uint32_t id_;
  Fd fd_;
  kvm_run* run_ = nullptr;
  size_t run_size_ = 0;
};

}  // namespace apiary::vmm::kvm
