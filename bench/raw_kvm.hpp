// The baseline VMM of the KVM benchmarks: a VM built with plain ioctls
// (/dev/kvm, KVM_CREATE_VM, in-kernel irqchip and PIT as Apiary has them,
// one memslot, one vCPU) and the same entry state devices::Machine gives the
// BSP, with none of Apiary's machinery. bench_exit_dispatch runs a noop-port
// loop on it, bench_instance its create/run/destroy cycle.
#pragma once

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "vmm-core/boot.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/kvm.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/x86.hpp"
#include "vmm-core/x86_setup.hpp"

namespace apiary::bench {

[[noreturn]] inline void fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

inline int xioctl(int fd, unsigned long request, const char* name, unsigned long arg = 0) {
  int r = ::ioctl(fd, request, arg);
  if (r < 0) fail(name);
  return r;
}
template <class T>
int xioctl(int fd, unsigned long request, const char* name, T* arg) {
  return xioctl(fd, request, name, reinterpret_cast<unsigned long>(arg));
}

// <linux/kvm.h> gives kvm_cpuid2 / kvm_msrs a flexible array member whose
// C++ size is wrong for the ioctl number, so these use an explicit 8-byte
// header followed by the entries (the kernel ABI).
template <class Entry, size_t N>
struct VarBuf {
  uint32_t count = 0;
  uint32_t padding = 0;
  Entry entries[N];
};
struct VarHeader {
  uint32_t count;
  uint32_t padding;
};
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, VarHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, VarHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, VarHeader);

// A VM built with plain ioctls, owning its descriptors and mappings.
struct RawVm {
  int kvm = -1, vm = -1, vcpu = -1;
  kvm_run* run = nullptr;
  size_t run_size = 0;
  std::unique_ptr<vmm::GuestMemory> memory;

  RawVm() = default;
  RawVm(const RawVm&) = delete;
  RawVm& operator=(const RawVm&) = delete;
  ~RawVm() {
    if (run) ::munmap(run, run_size);
    for (int fd : {vcpu, vm, kvm})
      if (fd >= 0) ::close(fd);
  }
};

// The XCR0 the raw VM's vCPU starts with.
enum class RawXcr0 {
  boot,   // what devices::Machine gives a vCPU (x86::boot_xcr0): the same guest state
  reset,  // KVM's reset value, x87 alone: what that state itself costs per exit
};

// Same guest state as devices::Machine gives the BSP: the kernel image and
// boot tables (Machine also writes ACPI tables, which this guest never
// reads), CPUID (the TSC-deadline bit included), MSRs, FPU, LAPIC LINT
// wiring, XCR0 (unless `xcr0` says reset), segment and general registers.
// Why XCR0 matters: with PKRU in it KVM switches the PKRU register on every
// entry and exit, which the nested-KVM VM makes about 9 us per exit dearer
// (x86_setup.hpp, boot_xcr0). Until 2026-12-06 this baseline kept KVM's
// reset XCR0, and that difference, not Apiary's dispatch, was most of its
// gap to devices::Machine (docs/benchmarks.md).
inline void build_raw_vm(RawVm& r, const std::vector<uint8_t>& image, const std::string& cmdline,
                         uint64_t memory_mib, RawXcr0 xcr0 = RawXcr0::boot) {
  r.kvm = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (r.kvm < 0) fail("open /dev/kvm");
  r.vm = xioctl(r.kvm, KVM_CREATE_VM, "KVM_CREATE_VM");
  xioctl(r.vm, KVM_SET_TSS_ADDR, "KVM_SET_TSS_ADDR", static_cast<unsigned long>(layout::kKvmTss));
  uint64_t identity = layout::kKvmIdentityMap;
  xioctl(r.vm, KVM_SET_IDENTITY_MAP_ADDR, "KVM_SET_IDENTITY_MAP_ADDR", &identity);
  xioctl(r.vm, KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP");
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  xioctl(r.vm, KVM_CREATE_PIT2, "KVM_CREATE_PIT2", &pit);

  r.memory = std::make_unique<vmm::GuestMemory>(memory_mib << 20);
  if (r.memory->regions().size() != 1) throw std::runtime_error("expected one RAM region");
  const auto& region = r.memory->regions().front();
  kvm_userspace_memory_region slot{};
  slot.slot = 0;
  slot.guest_phys_addr = region.gpa;
  slot.memory_size = region.size;
  slot.userspace_addr = reinterpret_cast<uint64_t>(region.host);
  xioctl(r.vm, KVM_SET_USER_MEMORY_REGION, "KVM_SET_USER_MEMORY_REGION", &slot);

  const vmm::BootPlan plan = vmm::load_kernel(*r.memory, vmm::BootInputs{image, cmdline, {}});
  vmm::x86::write_boot_tables(*r.memory, plan.mode);

  r.vcpu = xioctl(r.vm, KVM_CREATE_VCPU, "KVM_CREATE_VCPU", 0ul);
  r.run_size = static_cast<size_t>(xioctl(r.kvm, KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE"));
  void* page = ::mmap(nullptr, r.run_size, PROT_READ | PROT_WRITE, MAP_SHARED, r.vcpu, 0);
  if (page == MAP_FAILED) fail("mmap kvm_run");
  r.run = static_cast<kvm_run*>(page);

  auto supported = std::make_unique<VarBuf<kvm_cpuid_entry2, 256>>();
  supported->count = 256;
  xioctl(r.kvm, kGetSupportedCpuid, "KVM_GET_SUPPORTED_CPUID", supported.get());
  const bool tsc_deadline = ::ioctl(r.kvm, KVM_CHECK_EXTENSION, KVM_CAP_TSC_DEADLINE_TIMER) > 0;
  const auto cpuid = vmm::x86::vcpu_cpuid(
      std::vector<kvm_cpuid_entry2>(supported->entries, supported->entries + supported->count), 0, 1, tsc_deadline);
  auto cpuid_buf = std::make_unique<VarBuf<kvm_cpuid_entry2, 256>>();
  cpuid_buf->count = static_cast<uint32_t>(std::min<size_t>(cpuid.size(), 256));
  std::copy_n(cpuid.begin(), cpuid_buf->count, cpuid_buf->entries);
  xioctl(r.vcpu, kSetCpuid2, "KVM_SET_CPUID2", cpuid_buf.get());

  const auto msrs = vmm::x86::boot_msrs();
  VarBuf<kvm_msr_entry, 64> msr_buf{};
  msr_buf.count = static_cast<uint32_t>(std::min<size_t>(msrs.size(), 64));
  std::copy_n(msrs.begin(), msr_buf.count, msr_buf.entries);
  if (xioctl(r.vcpu, kSetMsrs, "KVM_SET_MSRS", &msr_buf) != static_cast<int>(msr_buf.count))
    throw std::runtime_error("KVM_SET_MSRS: not every MSR was accepted");
  kvm_fpu fpu = vmm::x86::boot_fpu();
  xioctl(r.vcpu, KVM_SET_FPU, "KVM_SET_FPU", &fpu);
  kvm_lapic_state lapic{};
  xioctl(r.vcpu, KVM_GET_LAPIC, "KVM_GET_LAPIC", &lapic);
  vmm::x86::wire_lints(lapic);
  xioctl(r.vcpu, KVM_SET_LAPIC, "KVM_SET_LAPIC", &lapic);
  if (const uint64_t value = vmm::x86::boot_xcr0(vmm::kvm::cpuid_xcr0(cpuid));
      xcr0 == RawXcr0::boot && value != vmm::x86::kXcr0X87) {
    kvm_xcrs xcrs{};
    xcrs.nr_xcrs = 1;
    xcrs.xcrs[0].xcr = 0;
    xcrs.xcrs[0].value = value;
    xioctl(r.vcpu, KVM_SET_XCRS, "KVM_SET_XCRS", &xcrs);
  }

  kvm_sregs sregs{};
  xioctl(r.vcpu, KVM_GET_SREGS, "KVM_GET_SREGS", &sregs);
  sregs = vmm::x86::boot_sregs(sregs, plan.mode);
  xioctl(r.vcpu, KVM_SET_SREGS, "KVM_SET_SREGS", &sregs);
  kvm_regs regs = vmm::x86::boot_regs(plan);
  xioctl(r.vcpu, KVM_SET_REGS, "KVM_SET_REGS", &regs);
}

}  // namespace apiary::bench
