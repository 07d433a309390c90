// Boot CPU state checked field by field against the SDM: GDT descriptors,
// identity page tables, segment and control registers per entry mode, CPUID
// and MSR setup.
#define BOOST_TEST_MODULE x86_setup
#include <boost/test/unit_test.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "vmm-core/kvm.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/x86.hpp"
#include "vmm-core/x86_setup.hpp"

using namespace apiary;
using namespace apiary::vmm;

BOOST_AUTO_TEST_CASE(gdt_descriptors_match_the_sdm_encoding) {
  auto gdt = x86::boot_gdt();
  BOOST_REQUIRE(gdt.size() == x86::kBootGdtEntries);
  BOOST_TEST(gdt[0] == 0u);
  // Flat 4 GiB 32-bit code: base 0, limit 0xfffff, G=1 D=1 P=1 S=1 type=0xb.
  BOOST_TEST(gdt[x86::kSelCode32 / 8] == 0x00cf9b000000ffffull);
  // 64-bit code: L=1, D=0.
  BOOST_TEST(gdt[x86::kSelCode64 / 8] == 0x00af9b000000ffffull);
  // Flat data: type 3 (read/write, accessed).
  BOOST_TEST(gdt[x86::kSelData / 8] == 0x00cf93000000ffffull);
  // TSS: present, type 0xb (busy), limit 0x67, byte granular.
  BOOST_TEST(gdt[x86::kSelTss / 8] == 0x00008b0000000067ull);
  // Base split across the descriptor.
  BOOST_TEST(x86::gdt_entry(0x0093, 0x12345678, 0xabcde) == 0x120a93345678bcdeull);
}

BOOST_AUTO_TEST_CASE(page_tables_identity_map_four_gib_with_2mib_pages) {
  GuestMemory mem(16 << 20);
  x86::write_boot_tables(mem);
  const uint64_t pml4e = mem.read_obj<uint64_t>(layout::kPml4);
  BOOST_TEST(pml4e == (layout::kPdpt | x86::kPtePresent | x86::kPteWritable));
  BOOST_TEST(mem.read_obj<uint64_t>(layout::kPml4 + 8) == 0u);
  for (uint64_t i = 0; i < layout::kPdCount; ++i) {
    const uint64_t pdpte = mem.read_obj<uint64_t>(layout::kPdpt + i * 8);
    BOOST_TEST(pdpte == ((layout::kPd + i * 0x1000) | 3u));
  }
  BOOST_TEST(mem.read_obj<uint64_t>(layout::kPdpt + layout::kPdCount * 8) == 0u);
  // Spot-check: first, second, last entry of the first PD; an entry in the
  // MMIO hole; the very last 2 MiB page below 4 GiB.
  BOOST_TEST(mem.read_obj<uint64_t>(layout::kPd) == 0x83u);
  BOOST_TEST(mem.read_obj<uint64_t>(layout::kPd + 8) == 0x200083u);
  BOOST_TEST(mem.read_obj<uint64_t>(layout::kPd + 511 * 8) == ((511ull << 21) | 0x83));
  const uint64_t hole_index = layout::kVirtioMmioBase >> 21;
  BOOST_TEST(mem.read_obj<uint64_t>(layout::kPd + hole_index * 8) == (layout::kVirtioMmioBase | 0x83));
  BOOST_TEST(mem.read_obj<uint64_t>(layout::kPd + (4 * 512 - 1) * 8) == (0xffe00000ull | 0x83));
  // Every entry in between follows the same rule.
  for (uint64_t i = 0; i < 4 * 512; ++i)
    BOOST_REQUIRE(mem.read_obj<uint64_t>(layout::kPd + i * 8) == ((i << 21) | 0x83));
  // GDT in memory equals boot_gdt().
  auto gdt = x86::boot_gdt();
  for (size_t i = 0; i < gdt.size(); ++i) BOOST_TEST(mem.read_obj<uint64_t>(layout::kBootGdt + i * 8) == gdt[i]);
}

BOOST_AUTO_TEST_CASE(protected_mode_entry_leaves_page_table_memory_to_the_kernel) {
  // A 32-bit entry runs with paging off: a kernel segment may sit where the
  // long-mode page tables would go (loader::boot_areas allows it), so they
  // must not be written over it.
  GuestMemory mem(16 << 20);
  mem.fill(layout::kPml4, layout::kPd + layout::kPdCount * 0x1000 - layout::kPml4, 0xaa);
  x86::write_boot_tables(mem, EntryMode::protected32);
  BOOST_TEST(mem.read_obj<uint64_t>(layout::kPml4) == 0xaaaaaaaaaaaaaaaaull);
  BOOST_TEST(mem.read_obj<uint64_t>(layout::kPd + layout::kPdCount * 0x1000 - 8) == 0xaaaaaaaaaaaaaaaaull);
  auto gdt = x86::boot_gdt();
  for (size_t i = 0; i < gdt.size(); ++i) BOOST_TEST(mem.read_obj<uint64_t>(layout::kBootGdt + i * 8) == gdt[i]);
}

BOOST_AUTO_TEST_CASE(protected_mode_sregs_for_pvh_and_multiboot) {
  kvm_sregs s = x86::boot_sregs(kvm_sregs{}, EntryMode::protected32);
  BOOST_TEST(s.cs.selector == x86::kSelCode32);
  BOOST_TEST(s.cs.base == 0u);
  BOOST_TEST(s.cs.limit == 0xffffffffu);
  BOOST_TEST(s.cs.type == 0xb);
  BOOST_TEST(s.cs.db == 1);
  BOOST_TEST(s.cs.l == 0);
  BOOST_TEST(s.cs.g == 1);
  BOOST_TEST(s.cs.present == 1);
  BOOST_TEST(s.ds.selector == x86::kSelData);
  BOOST_TEST(s.ss.type == 0x3);
  BOOST_TEST(s.ds.limit == 0xffffffffu);
  BOOST_TEST(s.cr0 == (x86::kCr0Pe | x86::kCr0Et | x86::kCr0Ne));
  BOOST_TEST(!(s.cr0 & x86::kCr0Pg));
  BOOST_TEST(s.efer == 0u);
  BOOST_TEST(s.cr4 == 0u);
  BOOST_TEST(s.gdt.base == layout::kBootGdt);
  BOOST_TEST(s.gdt.limit == x86::kBootGdtEntries * 8 - 1);
  BOOST_TEST(s.tr.selector == x86::kSelTss);
  BOOST_TEST(s.tr.type == 0xb);
}

BOOST_AUTO_TEST_CASE(long_mode_sregs_for_linux64) {
  kvm_sregs s = x86::boot_sregs(kvm_sregs{}, EntryMode::long64);
  BOOST_TEST(s.cs.selector == 0x10);  // __BOOT_CS
  BOOST_TEST(s.cs.l == 1);
  BOOST_TEST(s.cs.db == 0);
  BOOST_TEST(s.ds.selector == 0x18);  // __BOOT_DS
  BOOST_TEST(s.es.selector == 0x18);
  BOOST_TEST(s.ss.selector == 0x18);
  BOOST_TEST((s.cr0 & (x86::kCr0Pe | x86::kCr0Pg)) == (x86::kCr0Pe | x86::kCr0Pg));
  BOOST_TEST(s.cr4 & x86::kCr4Pae);
  BOOST_TEST(s.efer == (x86::kEferLme | x86::kEferLma));
  BOOST_TEST(s.cr3 == layout::kPml4);
}

BOOST_AUTO_TEST_CASE(registers_carry_the_protocol_arguments) {
  BootPlan linux_plan{BootProtocol::linux64, EntryMode::long64, 0x100200, layout::kZeroPage};
  kvm_regs r = x86::boot_regs(linux_plan);
  BOOST_TEST(r.rip == 0x100200u);
  BOOST_TEST(r.rsi == layout::kZeroPage);
  BOOST_TEST(r.rflags == 2u);
  BootPlan mb{BootProtocol::multiboot, EntryMode::protected32, 0x100010};
  mb.eax = 0x2BADB002;
  mb.ebx = layout::kMultibootInfo;
  r = x86::boot_regs(mb);
  BOOST_TEST(r.rax == 0x2BADB002u);
  BOOST_TEST(r.rbx == layout::kMultibootInfo);
}

BOOST_AUTO_TEST_CASE(cpuid_reports_apic_id_and_vcpu_count) {
  std::vector<kvm_cpuid_entry2> supported(2);
  supported[0].function = 1;
  supported[0].ebx = 0xff00ffff;  // stale APIC id and count must be replaced
  supported[1].function = 0xb;
  auto out = x86::vcpu_cpuid(supported, 3, 4);
  BOOST_TEST((out[0].ebx >> 24) == 3u);
  BOOST_TEST(((out[0].ebx >> 16) & 0xff) == 4u);
  BOOST_TEST((out[0].ebx & 0xffff) == 0xffffu);
  BOOST_TEST((out[0].ecx & x86::kCpuidEcxHypervisor) != 0u);
  BOOST_TEST((out[0].edx & x86::kCpuidEdxHtt) != 0u);
  BOOST_TEST(out[1].edx == 3u);
  BOOST_TEST((out[0].ecx & x86::kCpuidEcxTscDeadline) == 0u);
  BOOST_TEST((x86::vcpu_cpuid(supported, 0, 1, true)[0].ecx & x86::kCpuidEcxTscDeadline) != 0u);
  auto msrs = x86::boot_msrs();
  bool misc = false;
  for (auto& m : msrs)
    if (m.index == x86::kMsrMiscEnable) misc = m.data == x86::kMiscEnableFastStrings;
  BOOST_TEST(misc);
  BOOST_TEST(x86::boot_fpu().fcw == 0x37f);
  BOOST_TEST(x86::boot_fpu().mxcsr == 0x1f80u);
}

// Fidelity with QEMU's -cpu max on the same KVM: every feature KVM supports
// reaches the guest (nothing masked), e.g. INVPCID (leaf 7 EBX bit 10), the
// extended leaves and KVM's paravirtual features; only the per-vCPU topology
// fields are rewritten.
BOOST_AUTO_TEST_CASE(every_feature_kvm_supports_reaches_the_guest) {
  auto leaf = [](uint32_t function, uint32_t index, uint32_t v) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.eax = e.ebx = e.ecx = e.edx = v;
    return e;
  };
  const std::vector<kvm_cpuid_entry2> supported = {
      leaf(7, 0, 0xffffffff), leaf(7, 1, 0x12345678), leaf(0xd, 1, 0xf), leaf(0x80000001, 0, 0xffffffff),
      leaf(0x80000008, 0, 0x3030), leaf(0x40000001, 0, 0x01fff7ff)};
  const auto out = x86::vcpu_cpuid(supported, 1, 2);
  BOOST_REQUIRE(out.size() == supported.size());
  for (size_t i = 0; i < out.size(); ++i) {
    BOOST_TEST(out[i].function == supported[i].function);
    BOOST_TEST(out[i].eax == supported[i].eax);
    BOOST_TEST(out[i].ebx == supported[i].ebx);
    BOOST_TEST(out[i].ecx == supported[i].ecx);
    BOOST_TEST(out[i].edx == supported[i].edx);
  }
  BOOST_TEST((out[0].ebx & (1u << 10)) != 0u);  // INVPCID
}

// The boot XCR0 (reset_vcpu, and the benchmarks' raw baseline, which must
// give its vCPU the same state): what the CPUID's leaf 0xD offers and Apiary
// supports, x87 always; a CPUID without the leaf leaves x87 alone.
BOOST_AUTO_TEST_CASE(boot_xcr0_is_what_the_cpuid_offers_and_apiary_supports) {
  kvm_cpuid_entry2 d{};
  d.function = 0xd;
  d.index = 0;
  d.eax = 0x3e7;  // x87 SSE AVX, AVX-512 (3 bits), bit 8 (PT: not supported), PKRU
  d.edx = 0x1;    // bit 32: not supported
  kvm_cpuid_entry2 other = d;
  other.index = 1;
  other.eax = 0xffffffff;
  BOOST_TEST(vmm::kvm::cpuid_xcr0({other, d}) == 0x1000003e7ull);
  BOOST_TEST(vmm::kvm::cpuid_xcr0({other}) == 0u);
  BOOST_TEST(x86::boot_xcr0(0x1000003e7ull) == 0x2e7u);
  BOOST_TEST(x86::boot_xcr0(0) == x86::kXcr0X87);
  BOOST_TEST(x86::boot_xcr0(0x6) == 0x7u);  // x87 even when not offered
}

// A KVM emulated in software offers no SSE3 (leaf 1, ECX bit 0), and Apiary
// refuses it by name rather than take instances whose Linux never boots. The
// check reads leaf 1, subleaf 0 only: SSE3 found elsewhere does not count.
BOOST_AUTO_TEST_CASE(a_kvm_that_offers_no_sse3_is_unavailable_by_name) {
  auto leaf = [](uint32_t function, uint32_t index, uint32_t ecx) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.ecx = ecx;
    return e;
  };
  auto refused = [](const std::vector<kvm_cpuid_entry2>& supported) {
    try {
      vmm::kvm::require_hardware_cpuid(supported, "/dev/kvm");
    } catch (const vmm::Error& e) {
      BOOST_TEST(std::string(vmm::to_string(e.code())) == "kvm_unavailable");
      BOOST_TEST(std::string(e.what()).find("/dev/kvm: its KVM offers no SSE3") != std::string::npos, e.what());
      return true;
    }
    return false;
  };
  const uint32_t sse3 = x86::kCpuidEcxSse3;
  BOOST_TEST(!refused({leaf(0, 0, 0), leaf(x86::kCpuidFeatures, 0, sse3 | 0x80000000u)}));
  BOOST_TEST(refused({leaf(0, 0, 0), leaf(x86::kCpuidFeatures, 0, 0xfffffffeu)}));  // all but SSE3
  BOOST_TEST(refused({}));                                                           // no leaf 1 at all
  BOOST_TEST(refused({leaf(x86::kCpuidFeatures, 1, sse3), leaf(7, 0, sse3)}));       // SSE3 in other leaves
}

// LINT0 delivers the 8259 (ExtINT) and LINT1 NMIs, both unmasked; the rest of
// each LVT entry (the vector, trigger and polarity bits) is kept.
BOOST_AUTO_TEST_CASE(lints_are_wired_as_firmware_leaves_them) {
  kvm_lapic_state l{};
  const uint32_t reset = x86::kApicLvtMasked | 0x8000u | 0x31u;  // masked, level, vector 0x31
  std::memcpy(l.regs + x86::kApicLvtLint0, &reset, 4);
  std::memcpy(l.regs + x86::kApicLvtLint1, &reset, 4);
  x86::wire_lints(l);
  uint32_t lint0 = 0, lint1 = 0;
  std::memcpy(&lint0, l.regs + x86::kApicLvtLint0, 4);
  std::memcpy(&lint1, l.regs + x86::kApicLvtLint1, 4);
  BOOST_TEST(lint0 == (x86::kApicDeliveryExtInt | 0x8000u | 0x31u));
  BOOST_TEST(lint1 == (x86::kApicDeliveryNmi | 0x8000u | 0x31u));
}
