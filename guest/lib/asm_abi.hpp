// Numbers the guest's assembly files need, as plain #defines.
//
// Why this exists: entry.S and bzimage.S are preprocessed as assembler, so
// they cannot include the C++ headers (vmm-core/layout.hpp,
// vmm-core/boot_protocols.hpp) that own every guest-visible number. This
// header restates the few they use as macros, and guest/lib/abi_check.cpp
// static_asserts each one against its owner, so a change in vmm-core that is
// not mirrored here breaks the guest build instead of the boot.
//
// Also here: purely guest-internal constants the entry code needs (x86
// control-register bits, the guest's own GDT selectors, the protocol ids
// passed to guest_entry). Macros only, so it is safe from .S and C++ alike.
#pragma once

// ----------------------------------------- protocol ids for guest_entry --
#define APIARY_PROTOCOL_PVH 1
#define APIARY_PROTOCOL_MULTIBOOT 2
#define APIARY_PROTOCOL_LINUX 3

// ------------------------------------- mirrored from vmm-core (checked) --
#define APIARY_KERNEL_LOAD 0x100000              // layout::kKernelLoad
#define APIARY_INITRD_MAX 0x37ffffff             // layout::kInitrdMax
#define APIARY_CMDLINE_MAX 4096                  // layout::kCmdlineMax
#define APIARY_XEN_ELFNOTE_PHYS32_ENTRY 18       // bootproto::kXenElfNotePhys32Entry
#define APIARY_MB_HEADER_MAGIC 0x1BADB002        // bootproto::kMultibootHeaderMagic
#define APIARY_MB_BOOTLOADER_MAGIC 0x2BADB002    // bootproto::kMultibootBootloaderMagic
#define APIARY_MB_HEADER_MEMORY_INFO 0x00000002  // bootproto::kMbHeaderMemoryInfo
#define APIARY_MB_HEADER_AOUT_KLUDGE 0x00010000  // bootproto::kMbHeaderAoutKludge
#define APIARY_LINUX_BOOT_FLAG 0xAA55            // bootproto::kLinuxBootFlag
#define APIARY_LINUX_HEADER_MAGIC 0x53726448     // bootproto::kLinuxHeaderMagic ("HdrS")
#define APIARY_LINUX_SETUP_HEADER_OFFSET 0x1f1   // bootproto::kLinuxSetupHeaderOffset
#define APIARY_LINUX_64_ENTRY_OFFSET 0x200       // bootproto::kLinux64EntryOffset
#define APIARY_LINUX_LOADED_HIGH 0x01            // bootproto::kLinuxLoadedHigh
#define APIARY_LINUX_XLF_KERNEL_64 0x0001        // bootproto::kLinuxXlfKernel64
#define APIARY_DEBUG_EXIT_PORT 0xf4              // layout::kDebugExitPort
#define APIARY_AP_TRAMPOLINE 0x10000             // layout::kApTrampoline (smp guest)
#define APIARY_MAX_VCPUS 64                      // layout::kMaxVcpus
#define APIARY_PIC1_COMMAND 0x20                 // layout::kPic1Base (interrupt stubs' EOI)
#define APIARY_PIC_EOI 0x20                      // guestlib::kPicEoi (OCW2 non-specific EOI)

// ------------------------------------------- the bzImage header we emit --
#define APIARY_LINUX_BOOT_VERSION 0x020f   // protocol 2.15
#define APIARY_LINUX_SETUP_SECTS 1         // + the boot sector = 1024 bytes
#define APIARY_LINUX_KERNEL_ALIGNMENT 0x200000
#define APIARY_LINUX_CMDLINE_SIZE (APIARY_CMDLINE_MAX - 1)

// ---------------------------------------------- x86 architectural bits --
#define X86_CR0_PE (1 << 0)
#define X86_CR0_PG (1 << 31)
#define X86_CR4_PAE (1 << 5)
#define X86_MSR_EFER 0xC0000080
#define X86_EFER_LME (1 << 8)
#define X86_PTE_PRESENT (1 << 0)
#define X86_PTE_WRITABLE (1 << 1)
#define X86_PTE_HUGE (1 << 7)  // PS: a 2 MiB page in a page directory
#define X86_PAGE_2M 0x200000

// ----------------------------------------------- the guest's own GDT --
#define APIARY_GDT_CODE64 0x08
#define APIARY_GDT_DATA 0x10

// Written to the debug-exit port if guest_entry ever returns (it should not):
// the VM ends with status (0x7e << 1) | 1 = 253.
#define APIARY_EXIT_ENTRY_RETURNED 0x7e
