// Kernel loaders: put an image, its command line and its initrd/modules
// into guest memory following one boot protocol, and say how to enter it.
//
// Three protocols, one result type:
//   - PVH:       ELF64 (or ELF32) with a XEN_ELFNOTE_PHYS32_ENTRY note; entered in
//                32-bit protected mode, paging off, %ebx = hvm_start_info.
//   - multiboot: v1 header in the first 8 KiB, ELF or address-field image;
//                32-bit protected mode, %eax = 0x2BADB002, %ebx = multiboot_info.
//   - linux:     bzImage through the 64-bit boot protocol; entered in long mode
//                at code32_start + 0x200 with %rsi = boot_params.
// The loaders write memory only; CPU state comes from x86_setup using the
// returned BootPlan. Every malformed input is refused with a named Errc.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "vmm-core/guest_memory.hpp"

namespace apiary::vmm {

enum class BootProtocol { pvh, multiboot, linux64 };
const char* to_string(BootProtocol p) noexcept;

enum class EntryMode {
  protected32,  // flat 4 GiB segments, CR0.PE, no paging
  long64,       // identity-mapped 0..4 GiB, EFER.LME/LMA, CS.L
};

struct BootInputs {
  std::span<const uint8_t> kernel;
  std::string cmdline;
  std::span<const uint8_t> initrd;  // may be empty
  uint64_t acpi_rsdp = 0;  // where the ACPI RSDP is (handed to PVH and Linux kernels); 0: none
};

struct BootPlan {
  BootProtocol protocol;
  EntryMode mode;
  uint64_t entry = 0;  // initial RIP
  uint64_t rsi = 0;    // linux64: boot_params address
  uint32_t eax = 0;    // multiboot: bootloader magic
  uint32_t ebx = 0;    // multiboot: multiboot_info; pvh: hvm_start_info
  uint64_t kernel_start = 0;  // guest-physical extent the image occupies
  uint64_t kernel_end = 0;
  uint64_t initrd_start = 0;  // 0 when none
  uint64_t initrd_size = 0;
};

// The e820-style RAM map every protocol reports (type 1 = RAM, 2 = reserved).
struct MemoryMapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
};
inline constexpr uint32_t kMemRam = 1;
inline constexpr uint32_t kMemReserved = 2;
std::vector<MemoryMapEntry> memory_map(const GuestMemory& mem);

// Looks at magic numbers only: ELF with a PVH note, bzImage ("HdrS" at 0x202),
// or a multiboot header. Throws image_bad_magic / image_truncated when none fits.
BootProtocol detect_protocol(std::span<const uint8_t> image);

BootPlan load_pvh(GuestMemory& mem, const BootInputs& in);
BootPlan load_multiboot(GuestMemory& mem, const BootInputs& in);
BootPlan load_linux(GuestMemory& mem, const BootInputs& in);
// detect_protocol + the matching loader.
BootPlan load_kernel(GuestMemory& mem, const BootInputs& in);

// Reads a whole file; throws file_not_found / file_unreadable.
std::vector<uint8_t> read_file(const std::string& path);

}  // namespace apiary::vmm
