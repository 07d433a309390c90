// Compile-time proof that asm_abi.hpp (the numbers entry.S and bzimage.S
// use) agrees with vmm-core, which owns them. Generates no code.
#include "guest/lib/asm_abi.hpp"
#include "guest/lib/interrupts.hpp"
#include "vmm-core/boot_protocols.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib {

namespace bp = apiary::bootproto;

static_assert(APIARY_KERNEL_LOAD == layout::kKernelLoad);
static_assert(APIARY_INITRD_MAX == layout::kInitrdMax);
static_assert(APIARY_CMDLINE_MAX == layout::kCmdlineMax);
static_assert(APIARY_DEBUG_EXIT_PORT == layout::kDebugExitPort);
static_assert(APIARY_AP_TRAMPOLINE == layout::kApTrampoline);
static_assert(APIARY_MAX_VCPUS == layout::kMaxVcpus);
static_assert(APIARY_PIC1_COMMAND == layout::kPic1Base);
static_assert(APIARY_PIC_EOI == kPicEoi);
static_assert(APIARY_XEN_ELFNOTE_PHYS32_ENTRY == bp::kXenElfNotePhys32Entry);
static_assert(APIARY_MB_HEADER_MAGIC == bp::kMultibootHeaderMagic);
static_assert(APIARY_MB_BOOTLOADER_MAGIC == bp::kMultibootBootloaderMagic);
static_assert(APIARY_MB_HEADER_MEMORY_INFO == bp::kMbHeaderMemoryInfo);
static_assert(APIARY_MB_HEADER_AOUT_KLUDGE == bp::kMbHeaderAoutKludge);
static_assert(APIARY_LINUX_BOOT_FLAG == bp::kLinuxBootFlag);
static_assert(APIARY_LINUX_HEADER_MAGIC == bp::kLinuxHeaderMagic);
static_assert(APIARY_LINUX_SETUP_HEADER_OFFSET == bp::kLinuxSetupHeaderOffset);
static_assert(APIARY_LINUX_64_ENTRY_OFFSET == bp::kLinux64EntryOffset);
static_assert(APIARY_LINUX_LOADED_HIGH == bp::kLinuxLoadedHigh);
static_assert(APIARY_LINUX_XLF_KERNEL_64 == bp::kLinuxXlfKernel64);
static_assert(APIARY_LINUX_BOOT_VERSION >= bp::kLinuxMinVersion64);

// bzimage.S writes the setup header field by field; these are the offsets it
// checks itself against (see the .if checks there).
static_assert(__builtin_offsetof(bp::LinuxBootParams, hdr.header) == 0x202);
static_assert(__builtin_offsetof(bp::LinuxBootParams, hdr.code32_start) == 0x214);
static_assert(__builtin_offsetof(bp::LinuxBootParams, hdr.xloadflags) == 0x236);
static_assert(__builtin_offsetof(bp::LinuxBootParams, hdr.pref_address) == 0x258);
static_assert(__builtin_offsetof(bp::LinuxBootParams, hdr.init_size) == 0x260);

}  // namespace apiary::guestlib
