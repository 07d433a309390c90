// The ELF parser and the PVH loader.
//
// PVH is the simplest way to boot an ELF kernel (Linux vmlinux, many hobby
// kernels): load the PT_LOAD segments at their physical addresses, hand over
// an hvm_start_info and jump to the address in the XEN_ELFNOTE_PHYS32_ENTRY
// note in 32-bit protected mode. The ELF parser here is also used by the
// multiboot loader, so it validates everything an image can lie about before
// any byte reaches guest memory: ident, header, program header table, every
// segment's file and memory range, and every note it walks.
//
// References: the System V gABI (ELF), Xen's public/elfnote.h and
// public/arch-x86/hvm/start_info.h.
#include <elf.h>

#include <algorithm>

#include "vmm-core/boot.hpp"
#include "vmm-core/boot_protocols.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/loader_internal.hpp"

namespace apiary::vmm {
namespace loader {

namespace {

constexpr char kXenNoteName[] = "Xen";   // n_namesz counts the NUL
constexpr uint64_t kNoteAlign = 4;       // gABI: notes are 4-byte aligned ...
constexpr uint64_t kNoteAlignWide = 8;   // ... unless the area says 8

[[noreturn]] void corrupt(const std::string& why) { throw Error(Errc::image_corrupt, why); }

// ------------------------------------------------------------ header --

void check_ident(Bytes image) {
  if (image.size() < SELFMAG) throw Error(Errc::image_truncated, "ELF magic is cut short");
  if (!has_elf_magic(image)) throw Error(Errc::image_bad_magic, "not an ELF image");
  if (image.size() < EI_NIDENT) throw Error(Errc::image_truncated, "ELF ident is cut short");
  const uint8_t cls = image[EI_CLASS];
  if (cls != ELFCLASS32 && cls != ELFCLASS64) corrupt("ELF class " + std::to_string(cls));
  const uint8_t data = image[EI_DATA];
  if (data == ELFDATA2MSB) throw Error(Errc::image_unsupported, "big-endian ELF");
  if (data != ELFDATA2LSB) corrupt("ELF data encoding " + std::to_string(data));
  if (image[EI_VERSION] != EV_CURRENT) corrupt("ELF ident version " + std::to_string(image[EI_VERSION]));
}

template <class Ehdr, class Phdr>
void check_header(const Ehdr& eh) {
  if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN)
    throw Error(Errc::image_unsupported, "ELF type " + std::to_string(eh.e_type) +
                                             " is not an executable");
  if (eh.e_machine != EM_X86_64 && eh.e_machine != EM_386)
    throw Error(Errc::image_unsupported, "ELF machine " + std::to_string(eh.e_machine) +
                                             " is not x86");
  if (eh.e_version != EV_CURRENT) corrupt("ELF version " + std::to_string(eh.e_version));
  if (eh.e_phnum == PN_XNUM)
    throw Error(Errc::image_unsupported, "extended program header numbering");
  if (eh.e_phnum == 0) corrupt("ELF has no program headers");
  if (eh.e_phentsize != sizeof(Phdr))
    corrupt("ELF program header size " + std::to_string(eh.e_phentsize));
  if (eh.e_phoff < sizeof(Ehdr)) corrupt("ELF program headers overlap the ELF header");
}

// Both classes are handled as ELF64 once read; the fields widen losslessly.
Elf64_Phdr widen(const Elf64_Phdr& ph) { return ph; }
Elf64_Phdr widen(const Elf32_Phdr& ph) {
  return {ph.p_type, ph.p_flags, ph.p_offset, ph.p_vaddr,
          ph.p_paddr, ph.p_filesz, ph.p_memsz, ph.p_align};
}
Elf64_Shdr widen(const Elf64_Shdr& sh) { return sh; }
Elf64_Shdr widen(const Elf32_Shdr& sh) {
  return {sh.sh_name, sh.sh_type, sh.sh_flags, sh.sh_addr, sh.sh_offset,
          sh.sh_size, sh.sh_link, sh.sh_info, sh.sh_addralign, sh.sh_entsize};
}

uint64_t note_align(uint64_t declared) { return declared == kNoteAlignWide ? kNoteAlignWide : kNoteAlign; }

// ---------------------------------------------------- program headers --

void add_load(Bytes image, ElfImage& elf, const Elf64_Phdr& ph, const std::string& what) {
  if (ph.p_filesz > ph.p_memsz)
    corrupt(what + ": p_filesz " + hex(ph.p_filesz) + " > p_memsz " + hex(ph.p_memsz));
  if (ph.p_paddr > UINT64_MAX - ph.p_memsz) corrupt(what + ": p_paddr + p_memsz overflows");
  if (ph.p_filesz > 0) file_range(image, ph.p_offset, ph.p_filesz, what);
  if (ph.p_memsz == 0) return;
  elf.loads.push_back({ph.p_offset, ph.p_filesz, ph.p_vaddr, ph.p_paddr, ph.p_memsz});
}

void add_phdr(Bytes image, ElfImage& elf, const Elf64_Phdr& ph, size_t index) {
  const std::string what = "program header " + std::to_string(index);
  if (ph.p_type == PT_LOAD) add_load(image, elf, ph, what);
  if (ph.p_type == PT_NOTE && ph.p_filesz > 0) {
    file_range(image, ph.p_offset, ph.p_filesz, what);
    elf.notes.push_back({ph.p_offset, ph.p_filesz, note_align(ph.p_align)});
  }
}

// Sorts the loads and refuses overlapping ones: two segments claiming the
// same physical bytes cannot both be honoured.
void finish_loads(ElfImage& elf) {
  if (elf.loads.empty()) corrupt("ELF has no loadable segment");
  std::sort(elf.loads.begin(), elf.loads.end(),
            [](const ElfSegment& a, const ElfSegment& b) { return a.paddr < b.paddr; });
  for (size_t i = 1; i < elf.loads.size(); ++i) {
    const ElfSegment& prev = elf.loads[i - 1];
    if (elf.loads[i].paddr < prev.paddr + prev.memsz)
      corrupt("PT_LOAD segments overlap at " + hex(elf.loads[i].paddr));
  }
  elf.start = elf.loads.front().paddr;
  elf.end = 0;
  for (const ElfSegment& s : elf.loads) elf.end = std::max(elf.end, s.paddr + s.memsz);
}

template <class Ehdr, class Phdr>
ElfImage parse_as(Bytes image, bool is64) {
  const auto eh = read_struct<Ehdr>(image, 0, "ELF header");
  check_header<Ehdr, Phdr>(eh);
  ElfImage elf;
  elf.is64 = is64;
  elf.entry = eh.e_entry;
  elf.shoff = eh.e_shoff;
  elf.shnum = eh.e_shnum;
  elf.shentsize = eh.e_shentsize;
  const Bytes table = file_range(image, eh.e_phoff, uint64_t{eh.e_phnum} * sizeof(Phdr),
                                 "ELF program header table");
  for (size_t i = 0; i < eh.e_phnum; ++i) {
    Phdr ph;
    std::memcpy(&ph, table.data() + i * sizeof(Phdr), sizeof ph);
    add_phdr(image, elf, widen(ph), i);
  }
  finish_loads(elf);
  return elf;
}

// ------------------------------------------------------------- notes --

template <class Shdr>
std::vector<ElfNoteArea> note_sections_as(Bytes image, const ElfImage& elf) {
  std::vector<ElfNoteArea> areas;
  if (elf.shoff == 0 || elf.shnum == 0) return areas;
  if (elf.shentsize != sizeof(Shdr)) corrupt("ELF section header size " + std::to_string(elf.shentsize));
  const Bytes table = file_range(image, elf.shoff, elf.shnum * sizeof(Shdr), "ELF section header table");
  for (size_t i = 0; i < elf.shnum; ++i) {
    Shdr raw;
    std::memcpy(&raw, table.data() + i * sizeof(Shdr), sizeof raw);
    const Elf64_Shdr sh = widen(raw);
    if (sh.sh_type != SHT_NOTE || sh.sh_size == 0) continue;
    file_range(image, sh.sh_offset, sh.sh_size, "note section " + std::to_string(i));
    areas.push_back({sh.sh_offset, sh.sh_size, note_align(sh.sh_addralign)});
  }
  return areas;
}

std::vector<ElfNoteArea> note_sections(Bytes image, const ElfImage& elf) {
  return elf.is64 ? note_sections_as<Elf64_Shdr>(image, elf) : note_sections_as<Elf32_Shdr>(image, elf);
}

bool is_pvh_note(const Elf64_Nhdr& nh, Bytes name) {
  return nh.n_type == bootproto::kXenElfNotePhys32Entry && nh.n_namesz == sizeof kXenNoteName &&
         std::memcmp(name.data(), kXenNoteName, sizeof kXenNoteName) == 0;
}

// The entry is a 32-bit physical address; Linux emits it as a 4-byte value,
// other kernels as 8 bytes.
uint32_t pvh_entry_value(Bytes desc) {
  if (desc.size() == sizeof(uint32_t)) {
    uint32_t v;
    std::memcpy(&v, desc.data(), sizeof v);
    return v;
  }
  if (desc.size() != sizeof(uint64_t))
    corrupt("XEN_ELFNOTE_PHYS32_ENTRY has a " + std::to_string(desc.size()) + "-byte value");
  uint64_t v;
  std::memcpy(&v, desc.data(), sizeof v);
  if (v > UINT32_MAX) corrupt("XEN_ELFNOTE_PHYS32_ENTRY " + hex(v) + " is not a 32-bit address");
  return static_cast<uint32_t>(v);
}

std::optional<uint32_t> scan_notes(Bytes image, const ElfNoteArea& area) {
  const Bytes notes = image.subspan(area.offset, area.size);  // checked by the parser
  uint64_t pos = 0;
  while (notes.size() - pos >= sizeof(Elf64_Nhdr)) {
    Elf64_Nhdr nh;
    std::memcpy(&nh, notes.data() + pos, sizeof nh);
    const uint64_t name_at = pos + sizeof nh;
    const uint64_t desc_at = name_at + *align_up(nh.n_namesz, area.align);
    if (desc_at > notes.size() || nh.n_descsz > notes.size() - desc_at)
      corrupt("ELF note at offset " + hex(area.offset + pos) + " runs past its note area");
    if (is_pvh_note(nh, notes.subspan(name_at, nh.n_namesz)))
      return pvh_entry_value(notes.subspan(desc_at, nh.n_descsz));
    pos = desc_at + *align_up(nh.n_descsz, area.align);
    if (pos > notes.size()) break;
  }
  return std::nullopt;
}

}  // namespace

// ------------------------------------------------------ shared ELF API --

ElfImage parse_elf(Bytes image) {
  check_ident(image);
  if (image[EI_CLASS] == ELFCLASS64) return parse_as<Elf64_Ehdr, Elf64_Phdr>(image, true);
  return parse_as<Elf32_Ehdr, Elf32_Phdr>(image, false);
}

std::optional<uint32_t> find_pvh_entry(Bytes image, const ElfImage& elf) {
  for (const ElfNoteArea& area : elf.notes)
    if (auto entry = scan_notes(image, area)) return entry;
  for (const ElfNoteArea& area : note_sections(image, elf))
    if (auto entry = scan_notes(image, area)) return entry;
  return std::nullopt;
}

bool elf_contains_paddr(const ElfImage& elf, uint64_t paddr) noexcept {
  return std::any_of(elf.loads.begin(), elf.loads.end(), [paddr](const ElfSegment& s) {
    return paddr >= s.paddr && paddr - s.paddr < s.memsz;
  });
}

void check_elf_placement(const GuestMemory& mem, const ElfImage& elf,
                         std::span<const BootArea> areas) {
  for (const ElfSegment& s : elf.loads)
    check_kernel_range(mem, s.paddr, s.memsz, "ELF segment", areas);
}

void write_elf_segments(GuestMemory& mem, Bytes image, const ElfImage& elf) {
  for (const ElfSegment& s : elf.loads) {
    mem.write(s.paddr, image.subspan(s.offset, s.filesz));
    mem.fill(s.paddr + s.filesz, s.memsz - s.filesz, 0);
  }
}

}  // namespace loader

// ---------------------------------------------------------- PVH loader --
namespace {

uint32_t hvm_memmap_type(uint32_t type) {
  return type == kMemRam ? bootproto::kHvmMemmapTypeRam : bootproto::kHvmMemmapTypeReserved;
}

uint32_t write_pvh_memmap(GuestMemory& mem) {
  constexpr uint64_t kCapacity =
      (layout::kZeroPage - layout::kPvhMemmap) / sizeof(bootproto::HvmMemmapEntry);
  const std::vector<MemoryMapEntry> map = memory_map(mem);
  if (map.size() > kCapacity) throw Error(Errc::invalid_argument, "PVH memory map too long");
  for (size_t i = 0; i < map.size(); ++i) {
    const bootproto::HvmMemmapEntry e{map[i].addr, map[i].size, hvm_memmap_type(map[i].type), 0};
    mem.write_obj(layout::kPvhMemmap + i * sizeof e, e);
  }
  return static_cast<uint32_t>(map.size());
}

void write_start_info(GuestMemory& mem, uint64_t initrd, uint64_t initrd_size, uint64_t acpi_rsdp) {
  bootproto::HvmStartInfo info{};
  info.magic = bootproto::kHvmStartMagic;
  info.version = 1;
  info.cmdline_paddr = layout::kCmdline;
  info.memmap_paddr = layout::kPvhMemmap;
  info.memmap_entries = write_pvh_memmap(mem);
  info.rsdp_paddr = acpi_rsdp;
  if (initrd_size > 0) {
    const bootproto::HvmModlistEntry module{initrd, initrd_size, 0, 0};
    mem.write_obj(layout::kPvhModlist, module);
    info.nr_modules = 1;
    info.modlist_paddr = layout::kPvhModlist;
  }
  mem.write_obj(layout::kPvhStartInfo, info);
}

}  // namespace

BootPlan load_pvh(GuestMemory& mem, const BootInputs& in) {
  const loader::ElfImage elf = loader::parse_elf(in.kernel);
  const std::optional<uint32_t> entry = loader::find_pvh_entry(in.kernel, elf);
  if (!entry) throw Error(Errc::elf_no_pvh_note, "ELF has no XEN_ELFNOTE_PHYS32_ENTRY note");
  if (!loader::elf_contains_paddr(elf, *entry))
    throw Error(Errc::image_corrupt, "PVH entry " + loader::hex(*entry) + " is outside every segment");
  loader::check_elf_placement(mem, elf, loader::boot_areas(BootProtocol::pvh));
  loader::check_cmdline(in.cmdline);
  const uint64_t initrd =
      loader::place_initrd(mem, in.initrd.size(), elf.start, elf.end, layout::kInitrdMax);

  loader::write_elf_segments(mem, in.kernel, elf);
  loader::write_cmdline(mem, in.cmdline);
  if (initrd != 0) mem.write(initrd, in.initrd);
  write_start_info(mem, initrd, in.initrd.size(), in.acpi_rsdp);

  BootPlan plan{BootProtocol::pvh, EntryMode::protected32};
  plan.entry = *entry;
  plan.ebx = static_cast<uint32_t>(layout::kPvhStartInfo);
  plan.kernel_start = elf.start;
  plan.kernel_end = elf.end;
  plan.initrd_start = initrd;
  plan.initrd_size = in.initrd.size();
  return plan;
}

}  // namespace apiary::vmm
