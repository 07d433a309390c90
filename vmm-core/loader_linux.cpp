// The Linux bzImage loader, using the 64-bit boot protocol.
//
// A bzImage is a real-mode setup part followed by the compressed,
// self-extracting protected-mode kernel. With the 64-bit protocol we skip the
// real-mode part entirely: load the protected-mode kernel, build the
// "zero page" (struct boot_params) ourselves and enter startup_64 in long
// mode at code32_start + 0x200 with %rsi pointing at boot_params. That
// needs protocol 2.12+ (xloadflags) and a kernel that declares XLF_KERNEL_64.
//
// Reference: Documentation/arch/x86/boot.rst ("64-bit Boot Protocol") and
// Documentation/arch/x86/zero-page.rst.
#include <algorithm>

#include "vmm-core/boot.hpp"
#include "vmm-core/boot_protocols.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/loader_internal.hpp"

namespace apiary::vmm {
namespace {

using bootproto::LinuxBootParams;
using bootproto::LinuxSetupHeader;
using loader::Bytes;
using loader::hex;

constexpr uint64_t kSetupHeaderAt = __builtin_offsetof(LinuxBootParams, hdr);  // 0x1f1
constexpr uint64_t kSetupHeaderEnd = kSetupHeaderAt + sizeof(LinuxSetupHeader);
// The setup header's length is encoded in the jump at 0x200: it ends at
// 0x202 + the jump's 8-bit displacement (its high byte).
constexpr uint64_t kJumpEnd =
    kSetupHeaderAt + __builtin_offsetof(LinuxSetupHeader, jump) + sizeof(uint16_t);
// Protocol 2.12 headers run through handover_offset; we read up to there.
constexpr uint64_t kMinHeaderEnd =
    kSetupHeaderAt + __builtin_offsetof(LinuxSetupHeader, kernel_info_offset);
constexpr uint64_t kSectorSize = 512;   // setup_sects unit
constexpr uint64_t kParagraph = 16;     // syssize unit
// boot.rst: heap_end_ptr is the end of the setup stack/heap relative to the
// start of the real-mode code, minus 0x200; 0xfe00 is the usual full segment.
constexpr uint16_t kHeapEndPtr = 0xfe00;

struct BzImage {
  LinuxSetupHeader hdr;  // as found in the image
  uint64_t header_len;   // bytes of it to copy into boot_params
  Bytes kernel;          // the protected-mode part
};

[[noreturn]] void bad_header(const std::string& why) {
  throw Error(Errc::bzimage_bad_header, why);
}

void check_magic(const LinuxSetupHeader& hdr) {
  if (hdr.boot_flag != bootproto::kLinuxBootFlag)
    bad_header("boot_flag is " + hex(hdr.boot_flag) + ", not 0xaa55");
  if (hdr.header != bootproto::kLinuxHeaderMagic) bad_header("no \"HdrS\" signature at 0x202");
}

void check_version(const LinuxSetupHeader& hdr) {
  if (hdr.version < bootproto::kLinuxMinVersion64)
    throw Error(Errc::bzimage_too_old, "boot protocol " + hex(hdr.version) +
                                           " predates the 64-bit protocol (2.12)");
  if (!(hdr.xloadflags & bootproto::kLinuxXlfKernel64) ||
      !(hdr.loadflags & bootproto::kLinuxLoadedHigh))
    throw Error(Errc::bzimage_not_64bit, "kernel does not support the 64-bit entry point");
}

uint64_t header_length(const LinuxSetupHeader& hdr) {
  const uint64_t end = kJumpEnd + (hdr.jump >> 8);
  if (end < kMinHeaderEnd) bad_header("setup header ends at " + hex(end) + ", too short for 2.12");
  return std::min(end, kSetupHeaderEnd) - kSetupHeaderAt;
}

// The protected-mode kernel follows (setup_sects + 1) sectors of setup code;
// syssize (reliable since 2.04) says how long it is.
Bytes kernel_part(Bytes image, const LinuxSetupHeader& hdr) {
  const uint64_t sects = hdr.setup_sects != 0 ? hdr.setup_sects : bootproto::kLinuxDefaultSetupSects;
  const uint64_t setup_size = (sects + 1) * kSectorSize;
  if (setup_size >= image.size())
    throw Error(Errc::image_truncated, "bzImage of " + hex(image.size()) +
                                           " bytes ends inside its " + hex(setup_size) +
                                           "-byte setup code");
  const Bytes kernel = image.subspan(setup_size);
  if (uint64_t{hdr.syssize} * kParagraph > kernel.size())
    throw Error(Errc::image_truncated, "bzImage kernel has " + hex(kernel.size()) +
                                           " bytes, syssize says " +
                                           hex(uint64_t{hdr.syssize} * kParagraph));
  return kernel;
}

BzImage parse_bzimage(Bytes image) {
  if (image.size() < kSetupHeaderEnd)
    throw Error(Errc::image_truncated, "bzImage of " + hex(image.size()) +
                                           " bytes ends inside the setup header");
  BzImage bz{};
  bz.hdr = loader::read_struct<LinuxSetupHeader>(image, kSetupHeaderAt, "setup header");
  check_magic(bz.hdr);
  check_version(bz.hdr);
  bz.header_len = header_length(bz.hdr);
  bz.kernel = kernel_part(image, bz.hdr);
  return bz;
}

// pref_address is where the kernel will run anyway (it relocates itself
// there); a missing or silly one means the traditional 1 MiB.
uint64_t load_address(const LinuxSetupHeader& hdr) {
  return hdr.pref_address >= layout::kHighMemory ? hdr.pref_address : layout::kKernelLoad;
}

// The decompressor needs init_size bytes from the load address.
uint64_t kernel_footprint(const BzImage& bz) {
  return std::max<uint64_t>(bz.kernel.size(), bz.hdr.init_size);
}

void check_linux_cmdline(const LinuxSetupHeader& hdr, std::string_view cmdline) {
  if (cmdline.size() > hdr.cmdline_size)
    throw Error(Errc::cmdline_too_long, "command line of " + std::to_string(cmdline.size()) +
                                            " bytes exceeds the kernel's cmdline_size " +
                                            std::to_string(hdr.cmdline_size));
  loader::check_cmdline(cmdline);
}

// initrd_addr_max is the highest address the initrd may occupy (0: the
// pre-2.03 default, which is kInitrdMax).
uint64_t initrd_limit(const LinuxSetupHeader& hdr) {
  if (hdr.initrd_addr_max == 0) return layout::kInitrdMax;
  return std::min<uint64_t>(hdr.initrd_addr_max, layout::kInitrdMax);
}

uint8_t fill_e820(GuestMemory& mem, LinuxBootParams& bp) {
  const std::vector<MemoryMapEntry> map = memory_map(mem);
  if (map.size() > bootproto::kLinuxE820Max)
    throw Error(Errc::invalid_argument, "e820 map too long");
  for (size_t i = 0; i < map.size(); ++i)
    bp.e820_table[i] = {map[i].addr, map[i].size, map[i].type};
  return static_cast<uint8_t>(map.size());
}

constexpr uint32_t low32(uint64_t v) { return static_cast<uint32_t>(v); }
constexpr uint32_t high32(uint64_t v) { return static_cast<uint32_t>(v >> 32); }

void write_boot_params(GuestMemory& mem, Bytes image, const BzImage& bz, uint64_t load,
                       uint64_t initrd, uint64_t initrd_size, uint64_t acpi_rsdp) {
  LinuxBootParams bp{};
  std::memcpy(&bp.hdr, image.data() + kSetupHeaderAt, bz.header_len);
  bp.hdr.type_of_loader = bootproto::kLinuxLoaderTypeUndefined;
  bp.hdr.loadflags |= bootproto::kLinuxCanUseHeap;
  bp.hdr.heap_end_ptr = kHeapEndPtr;
  bp.hdr.code32_start = low32(load);
  bp.hdr.cmd_line_ptr = low32(layout::kCmdline);
  bp.ext_cmd_line_ptr = high32(layout::kCmdline);
  bp.hdr.ramdisk_image = low32(initrd);
  bp.ext_ramdisk_image = high32(initrd);
  bp.hdr.ramdisk_size = low32(initrd_size);
  bp.ext_ramdisk_size = high32(initrd_size);
  bp.acpi_rsdp_addr = acpi_rsdp;  // boot protocol 2.14; a kernel without it scans for the RSDP
  bp.e820_entries = fill_e820(mem, bp);
  mem.write_obj(layout::kZeroPage, bp);
}

}  // namespace

BootPlan load_linux(GuestMemory& mem, const BootInputs& in) {
  const BzImage bz = parse_bzimage(in.kernel);
  const uint64_t load = load_address(bz.hdr);
  const uint64_t footprint = kernel_footprint(bz);
  loader::check_kernel_range(mem, load, footprint, "bzImage kernel with init_size",
                             loader::boot_areas(BootProtocol::linux64));
  check_linux_cmdline(bz.hdr, in.cmdline);
  const uint64_t initrd =
      loader::place_initrd(mem, in.initrd.size(), load, load + footprint, initrd_limit(bz.hdr));

  mem.write(load, bz.kernel);
  loader::write_cmdline(mem, in.cmdline);
  if (initrd != 0) mem.write(initrd, in.initrd);
  write_boot_params(mem, in.kernel, bz, load, initrd, in.initrd.size(), in.acpi_rsdp);

  BootPlan plan{BootProtocol::linux64, EntryMode::long64};
  plan.entry = load + bootproto::kLinux64EntryOffset;
  plan.rsi = layout::kZeroPage;
  plan.kernel_start = load;
  plan.kernel_end = load + footprint;
  plan.initrd_start = initrd;
  plan.initrd_size = in.initrd.size();
  return plan;
}

}  // namespace apiary::vmm
