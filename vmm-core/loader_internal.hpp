// Internals shared by the kernel loaders (loader_*.cpp), not part of boot.hpp.
//
// Every loader has to do the same few risky things: read structures out of an
// untrusted image at offsets the image itself supplies, decide where kernel
// bytes may go, and place the command line and the initrd. Doing those once,
// here, keeps the range and overflow checks in one audited place instead of
// three slightly different copies. The ELF parser lives in loader_pvh.cpp and
// is reused by the multiboot loader for ELF images.
//
// Convention: all checks happen before the first byte is written to guest
// memory, so a refused image leaves guest RAM untouched.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vmm-core/boot.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/guest_memory.hpp"

namespace apiary::vmm::loader {

// Images and boot structures are little-endian; we copy them byte for byte.
static_assert(std::endian::native == std::endian::little);

using Bytes = std::span<const uint8_t>;

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kKiB = 1024;

// ------------------------------------------------------ image reading --

// The bytes [offset, offset + len) of the image. A range that wraps around
// 2^64 is image_corrupt (no file could satisfy it); one that merely runs past
// the end of the file is image_truncated, since the header cannot tell a cut
// file from a wrong offset and cut files are the common case.
Bytes file_range(Bytes image, uint64_t offset, uint64_t len, std::string_view what);

template <class T>
T read_struct(Bytes image, uint64_t offset, std::string_view what) {
  static_assert(std::is_trivially_copyable_v<T>);
  const Bytes b = file_range(image, offset, sizeof(T), what);
  T v;
  std::memcpy(&v, b.data(), sizeof v);
  return v;
}

// x rounded down / up to a power-of-two alignment (up: nullopt on overflow).
constexpr uint64_t align_down(uint64_t x, uint64_t align) { return x & ~(align - 1); }
std::optional<uint64_t> align_up(uint64_t x, uint64_t align);

// "0x1234" for error messages.
std::string hex(uint64_t v);

// ---------------------------------------------------------- placement --

// A range of guest memory Apiary fills itself for a boot (boot tables, boot
// information, command line, ACPI tables, the reserved BIOS area). A kernel
// segment may lie anywhere in RAM, below 1 MiB too (real-mode trampolines
// linked low, as QEMU loads them), but never on one of these: the loader or
// the Machine would write over it after the kernel, or the memory map tells
// the guest it is not RAM.
struct BootArea {
  uint64_t start;
  uint64_t end;      // exclusive
  const char* what;  // "the zero page", for error messages
};

// The fixed areas a boot through `protocol` occupies. The multiboot info
// block is not among them: the multiboot loader moves it out of a kernel's
// way (place_multiboot_info in loader_multiboot.cpp).
std::vector<BootArea> boot_areas(BootProtocol protocol);

// Refuses a kernel destination [start, start + size) unless it lies in low
// guest RAM (below the MMIO hole, so reachable from 32-bit code) and clear of
// every area in `areas`: image_too_large when it does not fit in RAM,
// image_overlaps_boot_data (naming each area it overlaps) otherwise.
void check_kernel_range(const GuestMemory& mem, uint64_t start, uint64_t size,
                        std::string_view what, std::span<const BootArea> areas);

// The areas of `areas` that [start, end) overlaps, as "the zero page [0x7000,
// 0x8000) and ..."; empty when none.
std::string overlapped_areas(uint64_t start, uint64_t end, std::span<const BootArea> areas);

// cmdline_too_long unless cmdline + NUL fits in layout::kCmdlineMax;
// invalid_argument when it contains a NUL byte.
void check_cmdline(std::string_view cmdline);
// Writes cmdline + NUL at layout::kCmdline and returns that address.
uint64_t write_cmdline(GuestMemory& mem, std::string_view cmdline);

// Writes text + NUL at gpa.
void write_cstring(GuestMemory& mem, uint64_t gpa, std::string_view text);

// Where an initrd / module of `size` bytes goes: page aligned, as high as
// possible with its last byte at or below min(low_end - 1, max_addr), at or
// above kHighMemory, never overlapping [kernel_start, kernel_end) (of which
// only the part above kHighMemory matters: a kernel's low segments cannot
// meet an initrd). Returns 0
// for size 0; throws initrd_too_large when there is no such place.
uint64_t place_initrd(const GuestMemory& mem, uint64_t size, uint64_t kernel_start,
                      uint64_t kernel_end, uint64_t max_addr);

// ---------------------------------------------------------------- ELF --

struct ElfSegment {  // one PT_LOAD with p_memsz > 0
  uint64_t offset;
  uint64_t filesz;
  uint64_t vaddr;
  uint64_t paddr;
  uint64_t memsz;
};

struct ElfNoteArea {  // a PT_NOTE segment or SHT_NOTE section, inside the file
  uint64_t offset;
  uint64_t size;
  uint64_t align;
};

struct ElfImage {
  bool is64 = false;
  uint64_t entry = 0;                // e_entry, as written (a virtual address)
  std::vector<ElfSegment> loads;     // sorted by paddr, non-overlapping, >= 1
  std::vector<ElfNoteArea> notes;    // PT_NOTE segments
  uint64_t shoff = 0;                // section header table, for SHT_NOTE
  uint64_t shnum = 0;
  uint64_t shentsize = 0;
  uint64_t start = 0;                // physical extent of the loads
  uint64_t end = 0;
};

bool has_elf_magic(Bytes image) noexcept;

// Parses and validates an ELF32/ELF64 little-endian x86 executable: ident,
// header, program header table and every PT_LOAD / PT_NOTE range. Throws
// image_truncated, image_bad_magic, image_corrupt or image_unsupported.
ElfImage parse_elf(Bytes image);

// The XEN_ELFNOTE_PHYS32_ENTRY value from a PT_NOTE, or failing that an
// SHT_NOTE section; nullopt when there is none. image_corrupt on bad notes.
std::optional<uint32_t> find_pvh_entry(Bytes image, const ElfImage& elf);

// True iff paddr lies inside the memory image of some PT_LOAD.
bool elf_contains_paddr(const ElfImage& elf, uint64_t paddr) noexcept;

// check_kernel_range for every PT_LOAD.
void check_elf_placement(const GuestMemory& mem, const ElfImage& elf,
                         std::span<const BootArea> areas);
// Copies every PT_LOAD to p_paddr and zeroes its bss. Placement must have
// been checked.
void write_elf_segments(GuestMemory& mem, Bytes image, const ElfImage& elf);

// ---------------------------------------------------------- detection --

// Offset of the first 4-byte aligned multiboot v1 magic whose 12-byte header
// would lie within the first 8 KiB, whatever its checksum.
std::optional<uint64_t> find_multiboot_magic(Bytes image) noexcept;

// "HdrS" at 0x202.
bool has_bzimage_magic(Bytes image) noexcept;

}  // namespace apiary::vmm::loader
