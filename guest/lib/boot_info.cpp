// Normalizes the three boot protocols into BootInfo; see boot_info.hpp.
// Structure layouts come from vmm-core/boot_protocols.hpp, which the VMM's
// loaders write with, so both sides agree by construction.
#include "guest/lib/boot_info.hpp"

#include "guest/lib/asm_abi.hpp"
#include "guest/lib/io.hpp"
#include "vmm-core/boot_protocols.hpp"

namespace apiary::guestlib {

namespace bp = apiary::bootproto;

namespace {

// e820, multiboot mmap and the PVH memmap all call RAM type 1.
constexpr uint32_t kMemoryTypeRam = 1;
static_assert(kMemoryTypeRam == bp::kHvmMemmapTypeRam);

static_assert(static_cast<uint32_t>(Protocol::pvh) == APIARY_PROTOCOL_PVH);
static_assert(static_cast<uint32_t>(Protocol::multiboot) == APIARY_PROTOCOL_MULTIBOOT);
static_assert(static_cast<uint32_t>(Protocol::linux64) == APIARY_PROTOCOL_LINUX);

template <typename T>
const T* at(uint64_t paddr) {
  return reinterpret_cast<const T*>(static_cast<uintptr_t>(paddr));
}

const char* string_at(uint64_t paddr) { return paddr ? at<char>(paddr) : ""; }

void parse_pvh(BootInfo& bi) {
  auto* si = at<bp::HvmStartInfo>(bi.boot_ptr);
  if (si->magic != bp::kHvmStartMagic) return;
  bi.valid = true;
  bi.cmdline = string_at(si->cmdline_paddr);
  if (si->version >= 1 && si->memmap_paddr) {
    auto* map = at<bp::HvmMemmapEntry>(si->memmap_paddr);
    bi.memmap_entries = si->memmap_entries;
    for (uint32_t i = 0; i < si->memmap_entries; ++i)
      if (map[i].type == kMemoryTypeRam) bi.ram_bytes += map[i].size;
  }
  if (si->nr_modules && si->modlist_paddr) {
    auto* mod = at<bp::HvmModlistEntry>(si->modlist_paddr);
    bi.module_count = si->nr_modules;
    bi.module_addr = mod->paddr;
    bi.module_size = mod->size;
  }
}

void parse_multiboot(BootInfo& bi) {
  // The entry stub passes 0 when %eax did not hold the bootloader magic.
  auto* mbi = at<bp::MultibootInfo>(bi.boot_ptr);
  bi.valid = true;
  if (mbi->flags & bp::kMbInfoCmdline) bi.cmdline = string_at(mbi->cmdline);
  if (mbi->flags & bp::kMbInfoMemMap) {
    // Entries are variable-sized: each starts with the size of the rest.
    uint64_t p = mbi->mmap_addr;
    uint64_t end = p + mbi->mmap_length;
    while (p < end) {
      auto* e = at<bp::MultibootMmapEntry>(p);
      ++bi.memmap_entries;
      if (e->type == kMemoryTypeRam) bi.ram_bytes += e->len;
      p += e->size + sizeof e->size;
    }
  } else if (mbi->flags & bp::kMbInfoMemory) {
    bi.ram_bytes = (uint64_t{mbi->mem_lower} + mbi->mem_upper) * 1024;
  }
  if ((mbi->flags & bp::kMbInfoMods) && mbi->mods_count) {
    auto* mod = at<bp::MultibootModule>(mbi->mods_addr);
    bi.module_count = mbi->mods_count;
    bi.module_addr = mod->mod_start;
    bi.module_size = mod->mod_end - mod->mod_start;
  }
}

void parse_linux(BootInfo& bi) {
  auto* params = at<bp::LinuxBootParams>(bi.boot_ptr);
  if (params->hdr.header != bp::kLinuxHeaderMagic) return;
  bi.valid = true;
  bi.cmdline = string_at(params->hdr.cmd_line_ptr | uint64_t{params->ext_cmd_line_ptr} << 32);
  uint32_t n = params->e820_entries;
  if (n > bp::kLinuxE820Max) n = bp::kLinuxE820Max;
  bi.memmap_entries = n;
  for (uint32_t i = 0; i < n; ++i)
    if (params->e820_table[i].type == kMemoryTypeRam) bi.ram_bytes += params->e820_table[i].size;
  uint64_t initrd = params->hdr.ramdisk_image | uint64_t{params->ext_ramdisk_image} << 32;
  uint64_t size = params->hdr.ramdisk_size | uint64_t{params->ext_ramdisk_size} << 32;
  if (initrd && size) {
    bi.module_count = 1;
    bi.module_addr = initrd;
    bi.module_size = size;
  }
}

}  // namespace

const char* protocol_name(Protocol p) {
  switch (p) {
    case Protocol::pvh: return "pvh";
    case Protocol::multiboot: return "multiboot";
    case Protocol::linux64: return "linux";
    default: return "unknown";
  }
}

BootInfo parse_boot_info(uint32_t protocol, uint64_t boot_ptr) {
  BootInfo bi;
  bi.protocol = static_cast<Protocol>(protocol);
  bi.protocol_name = protocol_name(bi.protocol);
  bi.boot_ptr = boot_ptr;
  if (!boot_ptr) return bi;
  switch (bi.protocol) {
    case Protocol::pvh: parse_pvh(bi); break;
    case Protocol::multiboot: parse_multiboot(bi); break;
    case Protocol::linux64: parse_linux(bi); break;
    default: break;
  }
  return bi;
}

uint32_t vcpu_count() {
  uint32_t n = (cpuid(1).ebx >> 16) & 0xff;
  return n ? n : 1;
}

uint32_t apic_id() { return cpuid(1).ebx >> 24; }

}  // namespace apiary::guestlib
