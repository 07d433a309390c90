// What the VMM told the guest at boot, whatever the protocol.
//
// PVH, multiboot v1 and the Linux boot protocol each hand over a different
// structure (hvm_start_info, multiboot_info, boot_params) with the same few
// facts in different places. parse_boot_info() reads the one the entry stub
// got and fills a BootInfo, so guest programs never look at protocol
// structures. The vCPU count is not part of any of them: the VMM reports it
// in CPUID leaf 1 (see vcpu_count()).
#pragma once

#include <stdint.h>

namespace apiary::guestlib {

// Values match the APIARY_PROTOCOL_* ids entry.S passes (asm_abi.hpp).
enum class Protocol : uint32_t { unknown = 0, pvh = 1, multiboot = 2, linux64 = 3 };

struct BootInfo {
  Protocol protocol = Protocol::unknown;
  const char* protocol_name = "unknown";  // "pvh", "multiboot", "linux"
  uint64_t boot_ptr = 0;      // start_info / multiboot_info / boot_params
  bool valid = false;         // the structure was there and had the right magic
  const char* cmdline = "";   // never null
  uint64_t ram_bytes = 0;     // sum of the RAM entries of the memory map
  uint32_t memmap_entries = 0;
  uint32_t module_count = 0;  // initrd (linux) or modules (pvh, multiboot)
  uint64_t module_addr = 0;   // the first one; 0 when none
  uint64_t module_size = 0;
};

const char* protocol_name(Protocol p);
BootInfo parse_boot_info(uint32_t protocol, uint64_t boot_ptr);

// vCPU count and this vCPU's APIC id, from CPUID leaf 1 EBX[23:16] and
// EBX[31:24] where the VMM puts them. At least 1.
uint32_t vcpu_count();
uint32_t apic_id();

}  // namespace apiary::guestlib
