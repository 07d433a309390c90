// The multiboot v1 loader.
//
// Multiboot is how most hobby and teaching kernels (and the in-tree test
// guests) expect to be started, so Apiary can run them without GRUB. The image
// carries a small header in its first 8 KiB; it is either an ELF (loaded by
// its PT_LOAD segments, via the shared ELF parser) or, with header flag 16,
// a flat binary described by the header's address fields. The kernel gets a
// multiboot_info with memory sizes, a memory map, the command line, the boot
// loader name and the initrd as module 0.
//
// Segments below 1 MiB are loaded (kvm-unit-tests' real-mode tests link at
// 16 KiB; SMP trampolines live low), as QEMU does, wherever they miss the
// data Apiary writes for the boot (loader::boot_areas). The info block has a
// home at layout::kMultibootInfo; a kernel that occupies it gets the block on
// the first page after its end instead (where QEMU always puts it), so only
// the fixed structures can make such an image fail.
//
// Reference: the Multiboot Specification 0.6.96, sections 3.1 - 3.3.
#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "vmm-core/boot.hpp"
#include "vmm-core/boot_protocols.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/loader_internal.hpp"

namespace apiary::vmm {

using bootproto::MultibootHeader;

namespace {
constexpr uint64_t kMandatoryHeader = 3 * sizeof(uint32_t);  // magic, flags, checksum

// The next 4-byte aligned magic at or after `from` whose mandatory header
// part would end within the first 8 KiB (it may still run past the file).
std::optional<uint64_t> next_magic(loader::Bytes image, uint64_t from) {
  const uint64_t window = std::min<uint64_t>(image.size(), bootproto::kMultibootSearch);
  for (uint64_t off = from; off + sizeof(uint32_t) <= window;
       off += bootproto::kMultibootHeaderAlign) {
    if (off + kMandatoryHeader > bootproto::kMultibootSearch) break;
    uint32_t magic;
    std::memcpy(&magic, image.data() + off, sizeof magic);
    if (magic == bootproto::kMultibootHeaderMagic) return off;
  }
  return std::nullopt;
}
}  // namespace

namespace loader {
std::optional<uint64_t> find_multiboot_magic(Bytes image) noexcept { return next_magic(image, 0); }
}  // namespace loader

namespace {

using loader::Bytes;
using loader::hex;

// Spec 3.1.2: flag bits 0-15 are requirements a loader must fulfil or refuse.
constexpr uint32_t kRequiredFlagsMask = 0x0000ffff;
// Page-aligned modules (ours always are) and memory info (always given). The
// video mode request is only a preference; we run headless and ignore it.
constexpr uint32_t kSupportedRequiredFlags = bootproto::kMbHeaderPageAlign |
                                             bootproto::kMbHeaderMemoryInfo |
                                             bootproto::kMbHeaderVideoMode;
constexpr char kBootLoaderName[] = "apiary";
constexpr char kInitrdModuleString[] = "initrd";

[[noreturn]] void corrupt(const std::string& why) { throw Error(Errc::image_corrupt, why); }

struct FoundHeader {
  uint64_t offset;     // of the header in the file
  MultibootHeader hdr; // address fields only meaningful with the a.out kludge
};

bool checksum_ok(Bytes image, uint64_t off) {
  uint32_t words[3];
  std::memcpy(words, image.data() + off, sizeof words);
  return static_cast<uint32_t>(words[0] + words[1] + words[2]) == 0;
}

// The first header with a valid checksum. A magic whose header is cut off by
// the end of the file is image_truncated; magics that all fail the checksum
// are multiboot_bad_checksum.
FoundHeader find_header(Bytes image) {
  bool saw_magic = false;
  for (auto off = next_magic(image, 0); off;
       off = next_magic(image, *off + bootproto::kMultibootHeaderAlign)) {
    saw_magic = true;
    loader::file_range(image, *off, kMandatoryHeader, "multiboot header");
    if (!checksum_ok(image, *off)) continue;
    FoundHeader found{*off, {}};
    std::memcpy(&found.hdr, image.data() + *off, kMandatoryHeader);
    return found;
  }
  if (saw_magic)
    throw Error(Errc::multiboot_bad_checksum, "multiboot header checksum does not add up to 0");
  throw Error(Errc::multiboot_no_header, "no multiboot header in the first 8 KiB");
}

void check_flags(uint32_t flags) {
  const uint32_t unknown = flags & kRequiredFlagsMask & ~kSupportedRequiredFlags;
  if (unknown != 0)
    throw Error(Errc::image_unsupported, "multiboot header requires unsupported features " +
                                             hex(unknown));
}

// ------------------------------------------------ a.out kludge images --

struct AoutImage {
  uint64_t file_offset;  // where load_addr's byte is in the file
  uint64_t load_addr;
  uint64_t load_size;    // bytes copied from the file
  uint64_t bss_end;      // end of the zeroed part (== load end when no bss)
  uint64_t entry;
};

void read_address_fields(Bytes image, FoundHeader& found) {
  loader::file_range(image, found.offset, sizeof(MultibootHeader), "multiboot address fields");
  if (found.offset + sizeof(MultibootHeader) > bootproto::kMultibootSearch)
    corrupt("multiboot address fields extend beyond the first 8 KiB");
  std::memcpy(&found.hdr, image.data() + found.offset, sizeof(MultibootHeader));
}

uint64_t aout_load_end(Bytes image, const MultibootHeader& h, uint64_t file_offset) {
  if (h.load_end_addr == 0) return h.load_addr + (image.size() - file_offset);
  if (h.load_end_addr < uint64_t{h.header_addr} + sizeof(MultibootHeader))
    corrupt("multiboot load_end_addr " + hex(h.load_end_addr) + " cuts off the header at " +
            hex(h.header_addr));
  return h.load_end_addr;
}

// Validates the address fields against each other and against the file.
AoutImage aout_image(Bytes image, const FoundHeader& found) {
  const MultibootHeader& h = found.hdr;
  if (h.header_addr < h.load_addr)
    corrupt("multiboot header_addr " + hex(h.header_addr) + " < load_addr " + hex(h.load_addr));
  const uint64_t lead = h.header_addr - h.load_addr;
  if (lead > found.offset)
    corrupt("multiboot load_addr " + hex(h.load_addr) + " lies before the start of the file");
  AoutImage a{};
  a.file_offset = found.offset - lead;
  a.load_addr = h.load_addr;
  const uint64_t load_end = aout_load_end(image, h, a.file_offset);
  a.load_size = load_end - a.load_addr;
  loader::file_range(image, a.file_offset, a.load_size, "multiboot load range");
  if (h.bss_end_addr != 0 && h.bss_end_addr < load_end)
    corrupt("multiboot bss_end_addr " + hex(h.bss_end_addr) + " < load_end_addr " + hex(load_end));
  a.bss_end = h.bss_end_addr != 0 ? h.bss_end_addr : load_end;
  if (h.entry_addr < a.load_addr || h.entry_addr >= load_end)
    corrupt("multiboot entry_addr " + hex(h.entry_addr) + " is outside the loaded image");
  a.entry = h.entry_addr;
  return a;
}

// --------------------------------------------------------- ELF images --

// GRUB's rule: an e_entry inside a segment's virtual range is translated to
// the physical address, so higher-half kernels work; otherwise it must
// already be a loaded physical address.
uint64_t elf_entry(const loader::ElfImage& elf) {
  for (const loader::ElfSegment& s : elf.loads)
    if (elf.entry >= s.vaddr && elf.entry - s.vaddr < s.memsz) return elf.entry - s.vaddr + s.paddr;
  if (!loader::elf_contains_paddr(elf, elf.entry))
    corrupt("ELF entry " + hex(elf.entry) + " is outside every segment");
  return elf.entry;
}

loader::ElfImage parse_multiboot_elf(Bytes image) {
  if (!loader::has_elf_magic(image))
    throw Error(Errc::image_bad_magic,
                "multiboot image without address fields (flag 16) must be an ELF");
  return loader::parse_elf(image);
}

// -------------------------------------------------------- the kernel --

// The kernel, validated and placed but not yet written; either kind.
struct Kernel {
  bool aout = false;
  AoutImage a{};
  loader::ElfImage elf;
  uint64_t start = 0;
  uint64_t end = 0;  // including bss
  uint64_t entry = 0;
};

Kernel plan_kernel(const GuestMemory& mem, Bytes image, const FoundHeader& found) {
  Kernel k;
  k.aout = (found.hdr.flags & bootproto::kMbHeaderAoutKludge) != 0;
  if (k.aout) {
    k.a = aout_image(image, found);
    loader::check_kernel_range(mem, k.a.load_addr, k.a.bss_end - k.a.load_addr, "multiboot image",
                               loader::boot_areas(BootProtocol::multiboot));
    k.start = k.a.load_addr;
    k.end = k.a.bss_end;
    k.entry = k.a.entry;
  } else {
    k.elf = parse_multiboot_elf(image);
    k.entry = elf_entry(k.elf);
    loader::check_elf_placement(mem, k.elf, loader::boot_areas(BootProtocol::multiboot));
    k.start = k.elf.start;
    k.end = k.elf.end;
  }
  return k;
}

void write_kernel(GuestMemory& mem, Bytes image, const Kernel& k) {
  if (!k.aout) return loader::write_elf_segments(mem, image, k.elf);
  mem.write(k.a.load_addr, image.subspan(k.a.file_offset, k.a.load_size));
  const uint64_t load_end = k.a.load_addr + k.a.load_size;
  mem.fill(load_end, k.a.bss_end - load_end, 0);
}

// ------------------------------------------------------ multiboot_info --

// Every byte the kernel occupies, as [start, end) ranges.
std::vector<std::pair<uint64_t, uint64_t>> kernel_ranges(const Kernel& k) {
  if (k.aout) return {{k.start, k.end}};
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (const loader::ElfSegment& s : k.elf.loads) ranges.emplace_back(s.paddr, s.paddr + s.memsz);
  return ranges;
}

// Why the info block cannot go at `at`, or "" when it can.
std::string info_block_obstacle(const GuestMemory& mem, const Kernel& k, uint64_t at) {
  const uint64_t end = at + layout::kMultibootBlockSize;
  if (end > mem.low_end()) return "it would end beyond guest RAM at " + hex(mem.low_end());
  for (const auto& [start, stop] : kernel_ranges(k))
    if (at < stop && start < end) return "the kernel occupies [" + hex(start) + ", " + hex(stop) + ")";
  const std::vector<loader::BootArea> areas = loader::boot_areas(BootProtocol::multiboot);
  const std::string hit = loader::overlapped_areas(at, end, areas);
  return hit.empty() ? "" : "it would overlap " + hit;
}

// layout::kMultibootInfo, or the first page after the kernel when the kernel
// has a segment there; image_overlaps_boot_data when neither is free.
uint64_t place_info_block(const GuestMemory& mem, const Kernel& k) {
  const std::string home = info_block_obstacle(mem, k, layout::kMultibootInfo);
  if (home.empty()) return layout::kMultibootInfo;
  const std::optional<uint64_t> after = loader::align_up(k.end, loader::kPageSize);
  const std::string next = after ? info_block_obstacle(mem, k, *after) : "the kernel ends at 2^64";
  if (next.empty()) return *after;
  throw Error(Errc::image_overlaps_boot_data,
              "no room for the multiboot info block: at " + hex(layout::kMultibootInfo) + " " +
                  home + "; after the kernel " + next);
}

// The block at `base` keeps layout's internal arrangement: info, memory map,
// module list, strings at the same offsets from its start.
constexpr uint64_t kMmapOffset = layout::kMultibootMmap - layout::kMultibootInfo;
constexpr uint64_t kModsOffset = layout::kMultibootMods - layout::kMultibootInfo;
constexpr uint64_t kStringsOffset = layout::kMultibootStrings - layout::kMultibootInfo;
static_assert(sizeof(bootproto::MultibootInfo) <= kMmapOffset && kMmapOffset < kModsOffset &&
              kModsOffset < kStringsOffset && kStringsOffset < layout::kMultibootBlockSize);

uint32_t write_mmap(GuestMemory& mem, uint64_t at, const std::vector<MemoryMapEntry>& map) {
  constexpr uint64_t kCapacity = (kModsOffset - kMmapOffset) / sizeof(bootproto::MultibootMmapEntry);
  if (map.size() > kCapacity) throw Error(Errc::invalid_argument, "multiboot memory map too long");
  for (size_t i = 0; i < map.size(); ++i) {
    bootproto::MultibootMmapEntry e{};
    e.size = sizeof e - sizeof e.size;
    e.addr = map[i].addr;
    e.len = map[i].size;
    e.type = map[i].type;
    mem.write_obj(at + i * sizeof e, e);
  }
  return static_cast<uint32_t>(map.size() * sizeof(bootproto::MultibootMmapEntry));
}

// mem_lower / mem_upper: the RAM ranges starting at 0 and at 1 MiB, in KiB.
void set_memory_sizes(bootproto::MultibootInfo& info, const std::vector<MemoryMapEntry>& map) {
  for (const MemoryMapEntry& e : map) {
    if (e.type != kMemRam) continue;
    if (e.addr == 0) info.mem_lower = static_cast<uint32_t>(e.size / loader::kKiB);
    if (e.addr == layout::kHighMemory) info.mem_upper = static_cast<uint32_t>(e.size / loader::kKiB);
  }
}

void write_module(GuestMemory& mem, bootproto::MultibootInfo& info, uint64_t mods_at, uint64_t initrd,
                  uint64_t initrd_size, uint64_t string_addr) {
  loader::write_cstring(mem, string_addr, kInitrdModuleString);
  bootproto::MultibootModule module{};
  module.mod_start = static_cast<uint32_t>(initrd);
  module.mod_end = static_cast<uint32_t>(initrd + initrd_size);
  module.string = static_cast<uint32_t>(string_addr);
  mem.write_obj(mods_at, module);
  info.flags |= bootproto::kMbInfoMods;
  info.mods_count = 1;
  info.mods_addr = static_cast<uint32_t>(mods_at);
}

void write_info(GuestMemory& mem, uint64_t base, uint64_t initrd, uint64_t initrd_size) {
  const std::vector<MemoryMapEntry> map = memory_map(mem);
  bootproto::MultibootInfo info{};
  info.flags = bootproto::kMbInfoMemory | bootproto::kMbInfoCmdline | bootproto::kMbInfoMemMap |
               bootproto::kMbInfoBootLoaderName;
  set_memory_sizes(info, map);
  info.cmdline = static_cast<uint32_t>(layout::kCmdline);
  info.mmap_length = write_mmap(mem, base + kMmapOffset, map);
  info.mmap_addr = static_cast<uint32_t>(base + kMmapOffset);
  loader::write_cstring(mem, base + kStringsOffset, kBootLoaderName);
  info.boot_loader_name = static_cast<uint32_t>(base + kStringsOffset);
  if (initrd_size > 0)
    write_module(mem, info, base + kModsOffset, initrd, initrd_size,
                 base + kStringsOffset + sizeof kBootLoaderName);
  mem.write_obj(base, info);
}

}  // namespace

BootPlan load_multiboot(GuestMemory& mem, const BootInputs& in) {
  FoundHeader found = find_header(in.kernel);
  check_flags(found.hdr.flags);
  if (found.hdr.flags & bootproto::kMbHeaderAoutKludge) read_address_fields(in.kernel, found);
  const Kernel kernel = plan_kernel(mem, in.kernel, found);
  loader::check_cmdline(in.cmdline);
  const uint64_t info = place_info_block(mem, kernel);
  const uint64_t taken_end = std::max(kernel.end, info + layout::kMultibootBlockSize);
  const uint64_t initrd =
      loader::place_initrd(mem, in.initrd.size(), kernel.start, taken_end, layout::kInitrdMax);

  write_kernel(mem, in.kernel, kernel);
  loader::write_cmdline(mem, in.cmdline);
  if (initrd != 0) mem.write(initrd, in.initrd);
  write_info(mem, info, initrd, in.initrd.size());

  BootPlan plan{BootProtocol::multiboot, EntryMode::protected32};
  plan.entry = kernel.entry;
  plan.eax = bootproto::kMultibootBootloaderMagic;
  plan.ebx = static_cast<uint32_t>(info);
  plan.kernel_start = kernel.start;
  plan.kernel_end = kernel.end;
  plan.initrd_start = initrd;
  plan.initrd_size = in.initrd.size();
  return plan;
}

}  // namespace apiary::vmm
