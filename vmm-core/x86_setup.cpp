#include "vmm-core/x86_setup.hpp"

#include <cstring>

#include "vmm-core/layout.hpp"
#include "vmm-core/x86.hpp"

namespace apiary::vmm::x86 {

namespace {
// Descriptor flag words (type/S/DPL/P in bits 0-7, AVL/L/D/G in bits 12-15).
constexpr uint16_t kFlagsCode32 = 0xc09b;  // G, D/B, P, S, code exec/read accessed
constexpr uint16_t kFlagsCode64 = 0xa09b;  // G, L, P, S, code exec/read accessed
constexpr uint16_t kFlagsData = 0xc093;    // G, D/B, P, S, data read/write accessed
constexpr uint16_t kFlagsTss = 0x008b;     // P, 64-bit busy TSS
constexpr uint32_t kFlatLimit = 0xfffff;   // with G: 4 GiB
constexpr uint32_t kTssLimit = 0x67;

kvm_segment segment_from(uint16_t selector, uint64_t descriptor) {
  kvm_segment s{};
  s.selector = selector;
  s.base = ((descriptor >> 16) & 0xffffff) | (((descriptor >> 56) & 0xff) << 24);
  uint32_t limit = static_cast<uint32_t>((descriptor & 0xffff) | (((descriptor >> 48) & 0xf) << 16));
  s.g = (descriptor >> 55) & 1;
  s.limit = s.g ? (limit << 12) | 0xfff : limit;
  s.type = (descriptor >> 40) & 0xf;
  s.s = (descriptor >> 44) & 1;
  s.dpl = (descriptor >> 45) & 3;
  s.present = (descriptor >> 47) & 1;
  s.avl = (descriptor >> 52) & 1;
  s.l = (descriptor >> 53) & 1;
  s.db = (descriptor >> 54) & 1;
  return s;
}
}  // namespace

uint64_t gdt_entry(uint16_t flags, uint32_t base, uint32_t limit) {
  return ((static_cast<uint64_t>(base) & 0xff000000ull) << 32) |
         ((static_cast<uint64_t>(flags) & 0xf0ffull) << 40) |
         ((static_cast<uint64_t>(limit) & 0xf0000ull) << 32) |
         ((static_cast<uint64_t>(base) & 0x00ffffffull) << 16) | (static_cast<uint64_t>(limit) & 0xffffull);
}

std::vector<uint64_t> boot_gdt() {
  return {
      0,                                       // null
      gdt_entry(kFlagsCode32, 0, kFlatLimit),  // 0x08
      gdt_entry(kFlagsCode64, 0, kFlatLimit),  // 0x10 __BOOT_CS
      gdt_entry(kFlagsData, 0, kFlatLimit),    // 0x18 __BOOT_DS
      gdt_entry(kFlagsTss, 0, kTssLimit),      // 0x20 TSS (low half)
      0,                                       //      TSS (high half: base 63:32)
  };
}

static_assert(layout::kBootGdt + kBootGdtEntries * 8 <= layout::kBootIdt, "boot GDT overlaps the IDT");

void write_boot_tables(GuestMemory& mem, EntryMode mode) {
  const auto gdt = boot_gdt();
  for (size_t i = 0; i < gdt.size(); ++i) mem.write_obj(layout::kBootGdt + i * 8, gdt[i]);
  mem.write_obj<uint64_t>(layout::kBootIdt, 0);
  if (mode != EntryMode::long64) return;

  mem.fill(layout::kPml4, 0x1000, 0);
  mem.write_obj<uint64_t>(layout::kPml4, layout::kPdpt | kPtePresent | kPteWritable);
  mem.fill(layout::kPdpt, 0x1000, 0);
  for (uint64_t pd = 0; pd < layout::kPdCount; ++pd) {
    const uint64_t pd_addr = layout::kPd + pd * 0x1000;
    mem.write_obj<uint64_t>(layout::kPdpt + pd * 8, pd_addr | kPtePresent | kPteWritable);
    for (uint64_t i = 0; i < kPageTableEntries; ++i) {
      const uint64_t phys = (pd * kPageTableEntries + i) * kLargePageSize;
      mem.write_obj<uint64_t>(pd_addr + i * 8, phys | kPtePresent | kPteWritable | kPtePageSize);
    }
  }
}

kvm_sregs boot_sregs(const kvm_sregs& base, EntryMode mode) {
  kvm_sregs s = base;
  const auto gdt = boot_gdt();
  const bool long_mode = mode == EntryMode::long64;
  const uint16_t cs_sel = long_mode ? kSelCode64 : kSelCode32;
  s.cs = segment_from(cs_sel, gdt[cs_sel / 8]);
  kvm_segment data = segment_from(kSelData, gdt[kSelData / 8]);
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.tr = segment_from(kSelTss, gdt[kSelTss / 8]);
  s.ldt = kvm_segment{};
  s.ldt.unusable = 1;
  s.gdt.base = layout::kBootGdt;
  s.gdt.limit = static_cast<uint16_t>(gdt.size() * 8 - 1);
  s.idt.base = layout::kBootIdt;
  s.idt.limit = 0;
  s.cr0 = kCr0Pe | kCr0Et | kCr0Ne;
  s.cr4 = 0;
  s.efer = 0;
  s.cr3 = 0;
  if (long_mode) {
    s.cr3 = layout::kPml4;
    s.cr4 |= kCr4Pae;
    s.cr0 |= kCr0Pg;
    s.efer |= kEferLme | kEferLma;
  }
  return s;
}

kvm_regs boot_regs(const BootPlan& plan) {
  kvm_regs r{};
  r.rflags = kRflagsReserved;
  r.rip = plan.entry;
  r.rsi = plan.rsi;
  r.rax = plan.eax;
  r.rbx = plan.ebx;
  return r;
}

std::vector<kvm_cpuid_entry2> vcpu_cpuid(const std::vector<kvm_cpuid_entry2>& supported,
                                         uint32_t apic_id, uint32_t vcpu_count, bool tsc_deadline) {
  std::vector<kvm_cpuid_entry2> out = supported;
  for (auto& e : out) {
    if (e.function == kCpuidFeatures) {
      e.ebx = (e.ebx & 0x0000ffff) | (apic_id << 24) | ((vcpu_count & 0xff) << 16);
      e.ecx |= kCpuidEcxHypervisor;
      if (tsc_deadline) e.ecx |= kCpuidEcxTscDeadline;
      if (vcpu_count > 1) e.edx |= kCpuidEdxHtt;
    } else if (e.function == kCpuidTopology) {
      e.edx = apic_id;
    }
  }
  return out;
}

std::vector<kvm_msr_entry> boot_msrs() {
  auto msr = [](uint32_t index, uint64_t value) {
    kvm_msr_entry e{};
    e.index = index;
    e.data = value;
    return e;
  };
  return {
      msr(kMsrSysenterCs, 0),   msr(kMsrSysenterEsp, 0),        msr(kMsrSysenterEip, 0),
      msr(kMsrStar, 0),         msr(kMsrLstar, 0),              msr(kMsrCstar, 0),
      msr(kMsrSyscallMask, 0),  msr(kMsrKernelGsBase, 0),       msr(kMsrTsc, 0),
      msr(kMsrMiscEnable, kMiscEnableFastStrings), msr(kMsrMtrrDefType, kMtrrEnableWriteBack),
  };
}

kvm_fpu boot_fpu() {
  kvm_fpu f{};
  f.fcw = kFpuControlWord;
  f.mxcsr = kMxcsrDefault;
  return f;
}

namespace {
void set_lvt(kvm_lapic_state& l, uint32_t reg, uint32_t mode) {
  uint32_t v;
  std::memcpy(&v, l.regs + reg, sizeof v);
  v = (v & ~(kApicDeliveryModeMask | kApicLvtMasked)) | mode;
  std::memcpy(l.regs + reg, &v, sizeof v);
}
}  // namespace

uint64_t boot_xcr0(uint64_t cpuid_xcr0) noexcept { return (cpuid_xcr0 & kXcr0Supported) | kXcr0X87; }

void wire_lints(kvm_lapic_state& lapic) noexcept {
  set_lvt(lapic, kApicLvtLint0, kApicDeliveryExtInt);
  set_lvt(lapic, kApicLvtLint1, kApicDeliveryNmi);
}

void set_vcpu_cpuid(kvm::Vcpu& vcpu, const kvm::System& sys, uint32_t vcpu_count) {
  vcpu.set_cpuid(vcpu_cpuid(sys.supported_cpuid(), vcpu.id(), vcpu_count,
                            sys.check_extension(KVM_CAP_TSC_DEADLINE_TIMER) > 0));
}

void reset_vcpu(kvm::Vcpu& vcpu, const BootPlan* plan) {
  vcpu.set_msrs(boot_msrs());
  vcpu.set_fpu(boot_fpu());
  kvm_lapic_state lapic = vcpu.get_lapic();
  wire_lints(lapic);
  vcpu.set_lapic(lapic);
  // XCR0 starts with every state component the CPUID offers instead of x87
  // alone. Why: under SVM emulated by QEMU's TCG (scripts/kvm-vm) a guest's
  // XSETBV was not seen by KVM, which then answered CPUID 0xD with sizes for
  // the reset XCR0 and Linux warned "XSAVE consistency problem" with a
  // call trace. A kernel sets XCR0 itself either way; with this start value
  // KVM's view and the guest's agree.
  // A host that refuses (no XSAVE) leaves XCR0 as KVM reset it.
  if (const uint64_t xcr0 = boot_xcr0(vcpu.cpuid_xcr0()); xcr0 != kXcr0X87) {
    try {
      vcpu.set_xcr0(xcr0);
    } catch (const Error&) {
    }
  }
  if (plan) {
    vcpu.set_sregs(boot_sregs(vcpu.get_sregs(), plan->mode));
    vcpu.set_regs(boot_regs(*plan));
  }
}

}  // namespace apiary::vmm::x86
