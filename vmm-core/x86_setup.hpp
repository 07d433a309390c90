// CPU state at the first instruction: the boot GDT and identity page tables
// in guest memory, segment/control registers for 32-bit protected mode (PVH,
// multiboot) or 64-bit long mode (Linux 64-bit boot protocol), CPUID, MSRs,
// FPU and local-APIC LINT wiring.
//
// The boot GDT follows the Linux boot protocol's selectors so one table serves
// every protocol: 0x08 flat 32-bit code, 0x10 64-bit code (__BOOT_CS),
// 0x18 flat data (__BOOT_DS), 0x20 a 64-bit TSS (two slots).
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "vmm-core/boot.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/kvm.hpp"

namespace apiary::vmm::x86 {

inline constexpr uint16_t kSelCode32 = 0x08;
inline constexpr uint16_t kSelCode64 = 0x10;
inline constexpr uint16_t kSelData = 0x18;
inline constexpr uint16_t kSelTss = 0x20;
inline constexpr unsigned kBootGdtEntries = 6;

// Encodes a segment descriptor (SDM 3.4.5) for the GDT.
uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit);
// The boot GDT as written to layout::kBootGdt.
std::vector<uint64_t> boot_gdt();
// Writes the GDT, an empty IDT and, for a long-mode entry, page tables
// identity-mapping 0..4 GiB. A 32-bit entry runs with paging off, so its
// kernel may use that memory (loader::boot_areas leaves it free).
void write_boot_tables(GuestMemory& mem, EntryMode mode = EntryMode::long64);

// Segment/control registers for the plan's entry mode, applied to `base`
// (as read from the vCPU, so KVM's other fields are preserved).
kvm_sregs boot_sregs(const kvm_sregs& base, EntryMode mode);
// General registers for the plan (rip, rsi / eax, ebx, rflags).
kvm_regs boot_regs(const BootPlan& plan);

// KVM's supported CPUID with this vCPU's APIC id and the vCPU count in leaf 1
// EBX[31:24] / EBX[23:16], the hypervisor bit, and leaf 0xB's x2APIC id.
// `tsc_deadline`: KVM emulates the LAPIC's TSC-deadline mode
// (KVM_CAP_TSC_DEADLINE_TIMER) but leaves its CPUID bit to the VMM; with it
// Linux needs no LAPIC timer calibration against the PIT, which under
// nested emulation fails ("APIC timer disabled due to verification failure")
// and costs seconds of boot.
// Nothing KVM supports is masked: every feature KVM_GET_SUPPORTED_CPUID
// offers is backed by KVM itself (the irqchip, the PMU, kvmclock and the
// other paravirtual features are in-kernel with KVM_CREATE_IRQCHIP), so the
// guest sees what QEMU's -cpu max gives it on the same KVM (INVPCID, AVX,
// XSAVE, ...). Compared inside scripts/kvm-vm on 2026-12-03 with Debian's
// 6.1 kernel: Apiary's guest listed every /proc/cpuinfo flag QEMU's
// -cpu host guest did, plus avx, avx2, fma, pku, vaes, xsave, xsaveopt and
// xgetbv1, which QEMU 7.2 drops there.
std::vector<kvm_cpuid_entry2> vcpu_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                         uint32_t apic_id, uint32_t vcpu_count, bool tsc_deadline = false);
std::vector<kvm_msr_entry> boot_msrs();
kvm_fpu boot_fpu();

// The XCR0 a vCPU boots with, given the components its CPUID offers
// (kvm::cpuid_xcr0): every one of them Apiary supports (x87, SSE, AVX,
// AVX-512, PKRU), and x87 always. Why not KVM's reset value (x87 alone): see
// reset_vcpu. Not free: with PKRU enabled KVM switches the PKRU register on
// every guest entry and exit, which under the nested-KVM VM (QEMU's TCG
// flushes its TLB on every PKRU write) costs about 9 us per exit
// (bench_exit_dispatch's raw loop, 2026-12-06); on hardware a WRPKRU is
// some tens of cycles.
uint64_t boot_xcr0(uint64_t cpuid_xcr0) noexcept;
// LAPIC LINT0 delivers the 8259's interrupts (ExtINT) and LINT1 NMIs, as
// firmware leaves them for a PC guest.
void wire_lints(kvm_lapic_state& lapic) noexcept;

// CPUID, once per vCPU before it first runs (KVM refuses changes after that).
void set_vcpu_cpuid(kvm::Vcpu& vcpu, const kvm::System& sys, uint32_t vcpu_count);
// Programs a vCPU for (re)boot: MSRs, FPU, LAPIC LINT0=ExtINT/LINT1=NMI,
// XCR0 (boot_xcr0), and — for the bootstrap processor — the plan's registers. Application
// processors are left for INIT/SIPI by the caller.
void reset_vcpu(kvm::Vcpu& vcpu, const BootPlan* plan);

}  // namespace apiary::vmm::x86
