// Architectural x86 constants (Intel SDM vol. 3): control-register bits,
// MSR indices, descriptor encodings. These are facts of the CPU, not choices
// of Apiary's board; the board's addresses live in layout.hpp.
#pragma once

#include <cstdint>

namespace apiary::vmm::x86 {

inline constexpr uint64_t kCr0Pe = 1ull << 0;
inline constexpr uint64_t kCr0Mp = 1ull << 1;
inline constexpr uint64_t kCr0Et = 1ull << 4;
inline constexpr uint64_t kCr0Ne = 1ull << 5;
inline constexpr uint64_t kCr0Wp = 1ull << 16;
inline constexpr uint64_t kCr0Am = 1ull << 18;
inline constexpr uint64_t kCr0Pg = 1ull << 31;
inline constexpr uint64_t kCr4Pae = 1ull << 5;
inline constexpr uint64_t kEferLme = 1ull << 8;
inline constexpr uint64_t kEferLma = 1ull << 10;

// Page-table entry bits.
inline constexpr uint64_t kPtePresent = 1ull << 0;
inline constexpr uint64_t kPteWritable = 1ull << 1;
inline constexpr uint64_t kPtePageSize = 1ull << 7;  // 2 MiB page in a PD entry
inline constexpr uint64_t kLargePageSize = 2ull << 20;
inline constexpr uint64_t kPageTableEntries = 512;

// RFLAGS bit 1 is reserved and always set.
inline constexpr uint64_t kRflagsReserved = 1ull << 1;

// MSRs
inline constexpr uint32_t kMsrSysenterCs = 0x174;
inline constexpr uint32_t kMsrSysenterEsp = 0x175;
inline constexpr uint32_t kMsrSysenterEip = 0x176;
inline constexpr uint32_t kMsrMiscEnable = 0x1a0;
inline constexpr uint64_t kMiscEnableFastStrings = 1ull << 0;
inline constexpr uint32_t kMsrMtrrDefType = 0x2ff;
inline constexpr uint64_t kMtrrEnableWriteBack = (1ull << 11) | 6;  // E=1, default type WB
inline constexpr uint32_t kMsrStar = 0xc0000081;
inline constexpr uint32_t kMsrLstar = 0xc0000082;
inline constexpr uint32_t kMsrCstar = 0xc0000083;
inline constexpr uint32_t kMsrSyscallMask = 0xc0000084;
inline constexpr uint32_t kMsrKernelGsBase = 0xc0000102;
inline constexpr uint32_t kMsrTsc = 0x10;

// FPU reset state.
inline constexpr uint16_t kFpuControlWord = 0x37f;
inline constexpr uint32_t kMxcsrDefault = 0x1f80;

// CPUID
inline constexpr uint32_t kCpuidFeatures = 0x1;
inline constexpr uint32_t kCpuidTopology = 0xb;
inline constexpr uint32_t kCpuidEcxHypervisor = 1u << 31;
inline constexpr uint32_t kCpuidEcxSse3 = 1u << 0;
inline constexpr uint32_t kCpuidEcxTscDeadline = 1u << 24;
// XCR0 state components Apiary may start guests with: x87, SSE, AVX,
// AVX-512 (opmask, ZMM_Hi256, Hi16_ZMM) and PKRU. Not MPX (deprecated) nor
// AMX (KVM offers it only to a VMM that asked the host for permission).
inline constexpr uint64_t kXcr0X87 = 1u << 0;
inline constexpr uint64_t kXcr0Supported = 0x7ull | (0x7ull << 5) | (1ull << 9);
inline constexpr uint32_t kCpuidEdxHtt = 1u << 28;

// Local APIC register offsets and LVT delivery modes.
inline constexpr uint32_t kApicLvtLint0 = 0x350;
inline constexpr uint32_t kApicLvtLint1 = 0x360;
inline constexpr uint32_t kApicDeliveryExtInt = 0x7 << 8;
inline constexpr uint32_t kApicDeliveryNmi = 0x4 << 8;
inline constexpr uint32_t kApicDeliveryModeMask = 0x7 << 8;
inline constexpr uint32_t kApicLvtMasked = 1u << 16;

// Segment descriptor types.
inline constexpr uint8_t kSegCodeExecReadAccessed = 0xb;
inline constexpr uint8_t kSegDataReadWriteAccessed = 0x3;
inline constexpr uint8_t kSegTssBusy = 0xb;

}  // namespace apiary::vmm::x86
