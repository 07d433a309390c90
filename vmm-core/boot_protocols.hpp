// Wire structures of the three boot protocols Apiary speaks, exactly as the
// protocol documents lay them out:
//   - Xen PVH:      xen/include/public/arch-x86/hvm/start_info.h
//   - Multiboot v1: the Multiboot Specification 0.6.96, sections 3.1 and 3.3
//   - Linux x86:    Documentation/arch/x86/boot.rst and zero-page.rst
// Shared by the VMM loaders and the freestanding in-tree guests, so it needs
// only <stdint.h>. Offsets are pinned with static_asserts.
#pragma once

#include <stdint.h>

namespace apiary::bootproto {

// ------------------------------------------------------------------ PVH --
inline constexpr uint32_t kXenElfNotePhys32Entry = 18;  // XEN_ELFNOTE_PHYS32_ENTRY
inline constexpr uint32_t kHvmStartMagic = 0x336ec578;
inline constexpr uint32_t kHvmMemmapTypeRam = 1;
inline constexpr uint32_t kHvmMemmapTypeReserved = 2;

struct __attribute__((packed)) HvmStartInfo {
  uint32_t magic;
  uint32_t version;  // 1: memmap fields valid
  uint32_t flags;
  uint32_t nr_modules;
  uint64_t modlist_paddr;
  uint64_t cmdline_paddr;
  uint64_t rsdp_paddr;
  uint64_t memmap_paddr;
  uint32_t memmap_entries;
  uint32_t reserved;
};
static_assert(sizeof(HvmStartInfo) == 56);

struct __attribute__((packed)) HvmModlistEntry {
  uint64_t paddr;
  uint64_t size;
  uint64_t cmdline_paddr;
  uint64_t reserved;
};
static_assert(sizeof(HvmModlistEntry) == 32);

struct __attribute__((packed)) HvmMemmapEntry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
  uint32_t reserved;
};
static_assert(sizeof(HvmMemmapEntry) == 24);

// ------------------------------------------------------------ Multiboot --
inline constexpr uint32_t kMultibootHeaderMagic = 0x1BADB002;
inline constexpr uint32_t kMultibootBootloaderMagic = 0x2BADB002;
inline constexpr uint32_t kMultibootSearch = 8192;     // header within first 8 KiB
inline constexpr uint32_t kMultibootHeaderAlign = 4;
// Header flags
inline constexpr uint32_t kMbHeaderPageAlign = 1u << 0;
inline constexpr uint32_t kMbHeaderMemoryInfo = 1u << 1;
inline constexpr uint32_t kMbHeaderVideoMode = 1u << 2;
inline constexpr uint32_t kMbHeaderAoutKludge = 1u << 16;
// Info flags
inline constexpr uint32_t kMbInfoMemory = 1u << 0;
inline constexpr uint32_t kMbInfoBootDevice = 1u << 1;
inline constexpr uint32_t kMbInfoCmdline = 1u << 2;
inline constexpr uint32_t kMbInfoMods = 1u << 3;
inline constexpr uint32_t kMbInfoMemMap = 1u << 6;
inline constexpr uint32_t kMbInfoBootLoaderName = 1u << 9;

struct __attribute__((packed)) MultibootHeader {
  uint32_t magic;
  uint32_t flags;
  uint32_t checksum;  // magic + flags + checksum == 0 (mod 2^32)
  // valid when flags & kMbHeaderAoutKludge
  uint32_t header_addr;
  uint32_t load_addr;
  uint32_t load_end_addr;  // 0: load to the end of the file
  uint32_t bss_end_addr;   // 0: no bss
  uint32_t entry_addr;
};
static_assert(sizeof(MultibootHeader) == 32);

struct __attribute__((packed)) MultibootInfo {
  uint32_t flags;             // 0
  uint32_t mem_lower;         // 4   KiB below 1 MiB
  uint32_t mem_upper;         // 8   KiB above 1 MiB (contiguous)
  uint32_t boot_device;       // 12
  uint32_t cmdline;           // 16
  uint32_t mods_count;        // 20
  uint32_t mods_addr;         // 24
  uint32_t syms[4];           // 28
  uint32_t mmap_length;       // 44
  uint32_t mmap_addr;         // 48
  uint32_t drives_length;     // 52
  uint32_t drives_addr;       // 56
  uint32_t config_table;      // 60
  uint32_t boot_loader_name;  // 64
  uint32_t apm_table;         // 68
  uint32_t vbe_control_info;  // 72
  uint32_t vbe_mode_info;     // 76
  uint16_t vbe_mode;          // 80
  uint16_t vbe_interface_seg; // 82
  uint16_t vbe_interface_off; // 84
  uint16_t vbe_interface_len; // 86
};
static_assert(sizeof(MultibootInfo) == 88);

struct __attribute__((packed)) MultibootMmapEntry {
  uint32_t size;  // of the rest of the entry: 20
  uint64_t addr;
  uint64_t len;
  uint32_t type;  // 1 = RAM
};
static_assert(sizeof(MultibootMmapEntry) == 24);

struct __attribute__((packed)) MultibootModule {
  uint32_t mod_start;
  uint32_t mod_end;  // exclusive
  uint32_t string;
  uint32_t reserved;
};
static_assert(sizeof(MultibootModule) == 16);

// --------------------------------------------------------------- Linux --
inline constexpr uint32_t kLinuxHeaderMagic = 0x53726448;  // "HdrS"
inline constexpr uint16_t kLinuxBootFlag = 0xAA55;
inline constexpr uint16_t kLinuxMinVersion = 0x0206;  // need cmdline_size, xloadflags >= 2.12
inline constexpr uint16_t kLinuxMinVersion64 = 0x020c;
inline constexpr uint32_t kLinuxSetupHeaderOffset = 0x1f1;
inline constexpr uint32_t kLinuxDefaultSetupSects = 4;  // setup_sects == 0 means 4
inline constexpr uint32_t kLinux64EntryOffset = 0x200;  // startup_64 = code32_start + 0x200
inline constexpr uint8_t kLinuxLoaderTypeUndefined = 0xff;
// loadflags
inline constexpr uint8_t kLinuxLoadedHigh = 0x01;
inline constexpr uint8_t kLinuxKeepSegments = 0x40;
inline constexpr uint8_t kLinuxCanUseHeap = 0x80;
// xloadflags
inline constexpr uint16_t kLinuxXlfKernel64 = 0x0001;
inline constexpr uint16_t kLinuxXlfCanBeLoadedAbove4G = 0x0002;
inline constexpr uint32_t kLinuxE820Max = 128;

struct __attribute__((packed)) LinuxSetupHeader {
  uint8_t setup_sects;          // 0x1f1
  uint16_t root_flags;          // 0x1f2
  uint32_t syssize;             // 0x1f4
  uint16_t ram_size;            // 0x1f8
  uint16_t vid_mode;            // 0x1fa
  uint16_t root_dev;            // 0x1fc
  uint16_t boot_flag;           // 0x1fe
  uint16_t jump;                // 0x200
  uint32_t header;              // 0x202
  uint16_t version;             // 0x206
  uint32_t realmode_swtch;      // 0x208
  uint16_t start_sys_seg;       // 0x20c
  uint16_t kernel_version;      // 0x20e
  uint8_t type_of_loader;       // 0x210
  uint8_t loadflags;            // 0x211
  uint16_t setup_move_size;     // 0x212
  uint32_t code32_start;        // 0x214
  uint32_t ramdisk_image;       // 0x218
  uint32_t ramdisk_size;        // 0x21c
  uint32_t bootsect_kludge;     // 0x220
  uint16_t heap_end_ptr;        // 0x224
  uint8_t ext_loader_ver;       // 0x226
  uint8_t ext_loader_type;      // 0x227
  uint32_t cmd_line_ptr;        // 0x228
  uint32_t initrd_addr_max;     // 0x22c
  uint32_t kernel_alignment;    // 0x230
  uint8_t relocatable_kernel;   // 0x234
  uint8_t min_alignment;        // 0x235
  uint16_t xloadflags;          // 0x236
  uint32_t cmdline_size;        // 0x238
  uint32_t hardware_subarch;    // 0x23c
  uint64_t hardware_subarch_data;  // 0x240
  uint32_t payload_offset;      // 0x248
  uint32_t payload_length;      // 0x24c
  uint64_t setup_data;          // 0x250
  uint64_t pref_address;        // 0x258
  uint32_t init_size;           // 0x260
  uint32_t handover_offset;     // 0x264
  uint32_t kernel_info_offset;  // 0x268
};
static_assert(sizeof(LinuxSetupHeader) == 0x26c - 0x1f1);

struct __attribute__((packed)) LinuxE820Entry {
  uint64_t addr;
  uint64_t size;
  uint32_t type;
};
static_assert(sizeof(LinuxE820Entry) == 20);

// struct boot_params, the "zero page". Only the fields a loader sets are
// named; the rest is padding at the documented offsets.
struct __attribute__((packed)) LinuxBootParams {
  uint8_t screen_info[0x40];       // 0x000
  uint8_t apm_bios_info[0x14];     // 0x040
  uint8_t pad0[4];                 // 0x054
  uint64_t tboot_addr;             // 0x058
  uint8_t ist_info[0x10];          // 0x060
  uint64_t acpi_rsdp_addr;         // 0x070
  uint8_t pad1[8];                 // 0x078
  uint8_t hd0_info[16];            // 0x080
  uint8_t hd1_info[16];            // 0x090
  uint8_t sys_desc_table[0x10];    // 0x0a0
  uint8_t olpc_ofw_header[0x10];   // 0x0b0
  uint32_t ext_ramdisk_image;      // 0x0c0
  uint32_t ext_ramdisk_size;       // 0x0c4
  uint32_t ext_cmd_line_ptr;       // 0x0c8
  uint8_t pad2[0x1e8 - 0x0cc];     // 0x0cc .. edid/efi/alt_mem_k/scratch
  uint8_t e820_entries;            // 0x1e8
  uint8_t eddbuf_entries;          // 0x1e9
  uint8_t edd_mbr_sig_buf_entries; // 0x1ea
  uint8_t kbd_status;              // 0x1eb
  uint8_t secure_boot;             // 0x1ec
  uint8_t pad3[2];                 // 0x1ed
  uint8_t sentinel;                // 0x1ef
  uint8_t pad4[1];                 // 0x1f0
  LinuxSetupHeader hdr;            // 0x1f1
  uint8_t pad5[0x290 - 0x26c];     // 0x26c
  uint32_t edd_mbr_sig_buffer[16]; // 0x290
  LinuxE820Entry e820_table[kLinuxE820Max];  // 0x2d0
  uint8_t pad6[0x1000 - 0xcd0];    // 0xcd0 .. eddbuf, padding
};
static_assert(sizeof(LinuxBootParams) == 4096);
static_assert(__builtin_offsetof(LinuxBootParams, hdr) == 0x1f1);
static_assert(__builtin_offsetof(LinuxBootParams, e820_entries) == 0x1e8);
static_assert(__builtin_offsetof(LinuxBootParams, e820_table) == 0x2d0);
static_assert(__builtin_offsetof(LinuxBootParams, ext_cmd_line_ptr) == 0x0c8);

}  // namespace apiary::bootproto
