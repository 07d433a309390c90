// Kernel loader tests (vmm-core/loader_*.cpp), no KVM needed.
//
// Every image here is built byte by byte in the test from the protocol
// documents (ELF gABI + Xen elfnote.h / start_info.h, Multiboot 0.6.96,
// Linux boot.rst / zero-page.rst), not taken from a toolchain, so the tests
// say exactly which bytes a loader must accept and what it must write. Each
// field a loader writes is checked on its own, and each way an image can be
// broken is checked for its exact Errc. A final sweep truncates and corrupts
// every valid image and requires that the loaders only ever answer with
// vmm::Error (run under ASan/UBSan, this also proves they stay in bounds).
#define BOOST_TEST_MODULE loaders
#include <boost/test/unit_test.hpp>

#include <elf.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "vmm-core/boot.hpp"
#include "vmm-core/boot_protocols.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/guest_memory.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/loader_internal.hpp"
#include "vmm-core/shared_bytes.hpp"

namespace vmm = apiary::vmm;
namespace bp = apiary::bootproto;
namespace layout = apiary::layout;
using vmm::Errc;
using Image = std::vector<uint8_t>;

// Packed-struct fields cannot bind to references; compare them as numbers.
#define CHECK_NUM(a, b) BOOST_CHECK_EQUAL(static_cast<uint64_t>(a), static_cast<uint64_t>(b))

namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kGuest = 64 * kMiB;      // the usual test guest
constexpr uint64_t kBigGuest = 5 * kGiB;    // spans the MMIO hole

// ------------------------------------------------------------ helpers --

auto errc_is(Errc want) {
  return [want](const vmm::Error& e) {
    if (e.code() != want)
      BOOST_ERROR("expected " << vmm::to_string(want) << ", got: " << e.what());
    return e.code() == want;
  };
}
#define CHECK_ERRC(expr, errc) BOOST_CHECK_EXCEPTION(expr, vmm::Error, errc_is(errc))

template <class T>
void put(Image& img, uint64_t off, const T& v) {
  if (img.size() < off + sizeof v) img.resize(off + sizeof v);
  std::memcpy(img.data() + off, &v, sizeof v);
}

template <class T>
T get(const Image& img, uint64_t off) {
  T v;
  std::memcpy(&v, img.data() + off, sizeof v);
  return v;
}

Image pattern(size_t n, uint8_t seed) {
  Image b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 31 + (i >> 8) + 1);
  return b;
}

Image cut(const Image& img, size_t len) { return Image(img.begin(), img.begin() + len); }

Image guest_bytes(const vmm::GuestMemory& mem, uint64_t gpa, size_t n) {
  Image out(n);
  mem.read(gpa, out);
  return out;
}

void check_guest_bytes(const vmm::GuestMemory& mem, uint64_t gpa, const Image& want) {
  const Image got = guest_bytes(mem, gpa, want.size());
  BOOST_CHECK_MESSAGE(got == want, "guest bytes at " << std::hex << gpa << " differ");
}

void check_guest_zero(const vmm::GuestMemory& mem, uint64_t gpa, size_t n) {
  const Image got = guest_bytes(mem, gpa, n);
  BOOST_CHECK_MESSAGE(std::all_of(got.begin(), got.end(), [](uint8_t b) { return b == 0; }),
                      "guest bytes at " << std::hex << gpa << " are not zero");
}

std::string guest_cstring(const vmm::GuestMemory& mem, uint64_t gpa) {
  std::string s;
  for (uint64_t a = gpa; a < gpa + layout::kCmdlineMax; ++a) {
    const auto c = mem.read_obj<char>(a);
    if (c == '\0') return s;
    s.push_back(c);
  }
  BOOST_ERROR("string at " << gpa << " is not NUL terminated");
  return s;
}

vmm::BootInputs inputs(const Image& kernel, const std::string& cmdline = "",
                       const Image& initrd = {}) {
  return {kernel, cmdline, initrd};
}

// The map every loader must report for a 64 MiB guest (RAM, EBDA/VGA/BIOS
// hole, RAM from 1 MiB), written out literally.
struct MapEntry {
  uint64_t addr, size;
  uint32_t type;
};
const std::vector<MapEntry> kMap64M = {
    {0x0, 0x9fc00, 1}, {0x9fc00, 0x60400, 2}, {0x100000, kGuest - 0x100000, 1}};
const std::vector<MapEntry> kMap5G = {{0x0, 0x9fc00, 1},
                                      {0x9fc00, 0x60400, 2},
                                      {0x100000, 0xc0000000 - 0x100000, 1},
                                      {0x100000000, 2 * kGiB, 1}};

// Expected initrd address: page aligned, ending at or below `limit`.
uint64_t top_placement(uint64_t limit, uint64_t size) { return (limit - size) & ~(kPage - 1); }

// --------------------------------------------------------- ELF builder --

constexpr uint64_t kElfPayloadOff = 0x200;  // file offset of the PT_LOAD bytes

struct ElfSpec {
  bool is64 = true;
  uint16_t machine = EM_X86_64;
  uint64_t paddr = 0x200000;
  uint64_t vaddr = 0x200000;
  Image payload = pattern(0x300, 1);
  uint64_t bss = 0x1800;
  uint64_t e_entry = 0x200000;
  std::optional<uint64_t> pvh_entry = 0x200010;
  uint32_t note_desc_size = 4;
  bool note_as_section = false;  // SHT_NOTE section instead of a PT_NOTE
  Image low_payload;             // when not empty: a second PT_LOAD (a low trampoline) ...
  uint64_t low_paddr = 0;        // ... at this physical (= virtual) address
};

struct BuiltElf {
  Image bytes;
  uint64_t phoff = 0;     // program header table
  uint64_t load_ph = 0;   // the PT_LOAD header
  uint64_t note_ph = 0;   // the PT_NOTE header (when there is one)
  uint64_t note_off = 0;  // note bytes
  uint64_t xen_note = 0;  // the Xen note's header (when there is one)
};

void add_note(Image& notes, const char (&name)[4], uint32_t type, const Image& desc) {
  const Elf64_Nhdr nh{sizeof name, static_cast<Elf64_Word>(desc.size()), type};
  put(notes, notes.size(), nh);
  notes.insert(notes.end(), name, name + sizeof name);
  notes.insert(notes.end(), desc.begin(), desc.end());
  notes.resize((notes.size() + 3) & ~size_t{3});
}

// A GNU build-id note first (to make the loader walk past it), then the Xen
// PHYS32_ENTRY note.
Image make_notes(const ElfSpec& s, uint64_t& xen_at) {
  Image notes;
  add_note(notes, "GNU", NT_GNU_BUILD_ID, pattern(20, 4));
  xen_at = notes.size();
  if (s.pvh_entry) {
    Image desc(s.note_desc_size);
    const uint64_t v = *s.pvh_entry;
    std::memcpy(desc.data(), &v, std::min<size_t>(sizeof v, desc.size()));
    add_note(notes, "Xen", bp::kXenElfNotePhys32Entry, desc);
  }
  return notes;
}

template <class Ehdr, class Phdr, class Shdr>
BuiltElf build_elf_as(const ElfSpec& s, uint8_t cls) {
  BuiltElf out;
  uint64_t xen_at = 0;
  const Image notes = make_notes(s, xen_at);
  const bool low = !s.low_payload.empty();
  const unsigned nph = (s.note_as_section ? 1 : 2) + (low ? 1 : 0);
  out.phoff = sizeof(Ehdr);
  out.load_ph = out.phoff;
  out.note_ph = out.phoff + sizeof(Phdr);
  out.note_off = out.phoff + nph * sizeof(Phdr);
  out.xen_note = out.note_off + xen_at;
  BOOST_REQUIRE(out.note_off + notes.size() <= kElfPayloadOff);

  Image& img = out.bytes;
  img.assign(kElfPayloadOff, 0);
  img.insert(img.end(), s.payload.begin(), s.payload.end());
  std::copy(notes.begin(), notes.end(), img.begin() + out.note_off);

  Ehdr eh{};
  std::memcpy(eh.e_ident, ELFMAG, SELFMAG);
  eh.e_ident[EI_CLASS] = cls;
  eh.e_ident[EI_DATA] = ELFDATA2LSB;
  eh.e_ident[EI_VERSION] = EV_CURRENT;
  eh.e_type = ET_EXEC;
  eh.e_machine = s.machine;
  eh.e_version = EV_CURRENT;
  eh.e_entry = s.e_entry;
  eh.e_phoff = out.phoff;
  eh.e_ehsize = sizeof(Ehdr);
  eh.e_phentsize = sizeof(Phdr);
  eh.e_phnum = nph;
  eh.e_shentsize = sizeof(Shdr);

  Phdr load{};
  load.p_type = PT_LOAD;
  load.p_flags = PF_R | PF_W | PF_X;
  load.p_offset = kElfPayloadOff;
  load.p_vaddr = s.vaddr;
  load.p_paddr = s.paddr;
  load.p_filesz = s.payload.size();
  load.p_memsz = s.payload.size() + s.bss;
  load.p_align = 16;
  put(img, out.load_ph, load);

  if (low) {  // the last program header, its bytes after the main payload
    Phdr seg = load;
    seg.p_offset = img.size();
    seg.p_vaddr = seg.p_paddr = s.low_paddr;
    seg.p_filesz = seg.p_memsz = s.low_payload.size();
    img.insert(img.end(), s.low_payload.begin(), s.low_payload.end());
    put(img, out.phoff + (nph - 1) * sizeof(Phdr), seg);
  }

  if (s.note_as_section) {
    Shdr sh[2]{};
    sh[1].sh_type = SHT_NOTE;
    sh[1].sh_offset = out.note_off;
    sh[1].sh_size = notes.size();
    sh[1].sh_addralign = 4;
    eh.e_shoff = img.size();
    eh.e_shnum = 2;
    put(img, img.size(), sh);
  } else {
    Phdr note{};
    note.p_type = PT_NOTE;
    note.p_offset = out.note_off;
    note.p_filesz = notes.size();
    note.p_align = 4;
    put(img, out.note_ph, note);
  }
  put(img, 0, eh);
  return out;
}

BuiltElf build_elf(const ElfSpec& s) {
  if (s.is64) return build_elf_as<Elf64_Ehdr, Elf64_Phdr, Elf64_Shdr>(s, ELFCLASS64);
  return build_elf_as<Elf32_Ehdr, Elf32_Phdr, Elf32_Shdr>(s, ELFCLASS32);
}

// ---------------------------------------------------- multiboot builder --

bp::MultibootHeader mb_header(uint32_t flags) {
  bp::MultibootHeader h{};
  h.magic = bp::kMultibootHeaderMagic;
  h.flags = flags;
  h.checksum = static_cast<uint32_t>(0u - h.magic - h.flags);
  return h;
}

constexpr uint32_t kMbFlags = bp::kMbHeaderPageAlign | bp::kMbHeaderMemoryInfo;

struct AoutSpec {
  uint64_t prefix = 0;          // file bytes before the loaded part
  uint64_t header_at = 0x40;    // header offset inside the loaded part
  uint32_t load_addr = 0x100000;
  uint64_t body = 0x400;        // loaded bytes
  uint64_t trailer = 0;         // file bytes after the loaded part (needs explicit_end)
  bool explicit_end = false;    // load_end_addr set, else 0 (= end of file)
  uint32_t bss = 0x2000;
  uint32_t entry_at = 0x80;
  uint32_t flags = kMbFlags | bp::kMbHeaderAoutKludge;
};

struct BuiltAout {
  Image bytes;
  uint64_t header_off;  // in the file
};

BuiltAout build_aout(const AoutSpec& s) {
  BuiltAout out{pattern(s.prefix + s.body + s.trailer, 7), s.prefix + s.header_at};
  bp::MultibootHeader h = mb_header(s.flags);
  h.header_addr = static_cast<uint32_t>(s.load_addr + s.header_at);
  h.load_addr = s.load_addr;
  h.load_end_addr = s.explicit_end ? static_cast<uint32_t>(s.load_addr + s.body) : 0;
  h.bss_end_addr = s.bss ? static_cast<uint32_t>(s.load_addr + s.body + s.bss) : 0;
  h.entry_addr = s.load_addr + s.entry_at;
  put(out.bytes, out.header_off, h);
  return out;
}

// A multiboot kernel in ELF form: higher-half virtual addresses, the header
// at the start of its only segment.
ElfSpec multiboot_elf_spec(bool is64) {
  ElfSpec s;
  s.is64 = is64;
  s.machine = is64 ? EM_X86_64 : EM_386;
  s.paddr = 0x200000;
  s.vaddr = 0xc0200000;
  s.e_entry = 0xc0200020;
  s.pvh_entry.reset();
  const bp::MultibootHeader h = mb_header(kMbFlags);
  std::memcpy(s.payload.data(), &h, 3 * sizeof(uint32_t));
  return s;
}

// -------------------------------------------------------- bzImage builder --

constexpr uint64_t kSetupHeaderAt = 0x1f1;
constexpr uint64_t kSentinelAt = 0x1ef;
constexpr uint8_t kJumpOpcode = 0xeb;  // jmp rel8
constexpr uint8_t kJumpFullHeader = 0x26c - 0x202;
constexpr uint8_t kJumpHeader212 = 0x268 - 0x202;

struct BzSpec {
  uint8_t setup_sects = 4;
  uint16_t version = 0x020f;
  uint8_t loadflags = bp::kLinuxLoadedHigh;
  uint16_t xloadflags = bp::kLinuxXlfKernel64 | bp::kLinuxXlfCanBeLoadedAbove4G;
  uint8_t jump_disp = kJumpFullHeader;
  uint64_t pref_address = 0x1000000;
  uint32_t init_size = 0x200000;
  uint32_t cmdline_size = 2047;
  uint32_t initrd_addr_max = 0x7fffffff;
  uint64_t kernel_len = 0x800;  // multiple of 16
};

uint64_t setup_size(const BzSpec& s) { return ((s.setup_sects ? s.setup_sects : 4) + 1) * 512ull; }

bp::LinuxSetupHeader bz_header(const BzSpec& s) {
  bp::LinuxSetupHeader h{};
  h.setup_sects = s.setup_sects;
  h.root_flags = 1;
  h.syssize = static_cast<uint32_t>(s.kernel_len / 16);
  h.vid_mode = 0xffff;
  h.boot_flag = bp::kLinuxBootFlag;
  h.jump = static_cast<uint16_t>(kJumpOpcode | (s.jump_disp << 8));
  h.header = bp::kLinuxHeaderMagic;
  h.version = s.version;
  h.start_sys_seg = 0x1000;
  h.kernel_version = 0x0200;
  h.loadflags = s.loadflags;
  h.setup_move_size = 0x8000;
  h.code32_start = 0x100000;
  h.initrd_addr_max = s.initrd_addr_max;
  h.kernel_alignment = 0x200000;
  h.relocatable_kernel = 1;
  h.min_alignment = 21;
  h.xloadflags = s.xloadflags;
  h.cmdline_size = s.cmdline_size;
  h.payload_offset = 0x3a0;
  h.payload_length = 0x400;
  h.pref_address = s.pref_address;
  h.init_size = s.init_size;
  h.handover_offset = 0x190;
  h.kernel_info_offset = 0x2c0;
  return h;
}

Image build_bzimage(const BzSpec& s = {}) {
  Image img = pattern(setup_size(s) + s.kernel_len, 3);
  img[kSentinelAt] = 0xff;  // real kernels carry 0xff here; boot_params must not
  put(img, kSetupHeaderAt, bz_header(s));
  return img;
}

bp::LinuxSetupHeader image_header(const Image& img) {
  return get<bp::LinuxSetupHeader>(img, kSetupHeaderAt);
}

// ---------------------------------------------------------- map checks --

void check_map(const std::vector<vmm::MemoryMapEntry>& got, const std::vector<MapEntry>& want) {
  BOOST_REQUIRE_EQUAL(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    BOOST_TEST_CONTEXT("map entry " << i) {
      CHECK_NUM(got[i].addr, want[i].addr);
      CHECK_NUM(got[i].size, want[i].size);
      CHECK_NUM(got[i].type, want[i].type);
    }
  }
}

void check_hvm_memmap(const vmm::GuestMemory& mem, const std::vector<MapEntry>& want) {
  for (size_t i = 0; i < want.size(); ++i) {
    const auto e = mem.read_obj<bp::HvmMemmapEntry>(layout::kPvhMemmap + i * sizeof(bp::HvmMemmapEntry));
    BOOST_TEST_CONTEXT("hvm memmap entry " << i) {
      CHECK_NUM(e.addr, want[i].addr);
      CHECK_NUM(e.size, want[i].size);
      CHECK_NUM(e.type, want[i].type);
      CHECK_NUM(e.reserved, 0);
    }
  }
}

void check_mb_mmap(const vmm::GuestMemory& mem, const std::vector<MapEntry>& want,
                   uint64_t mmap_at = layout::kMultibootMmap) {
  for (size_t i = 0; i < want.size(); ++i) {
    const auto e = mem.read_obj<bp::MultibootMmapEntry>(mmap_at + i * sizeof(bp::MultibootMmapEntry));
    BOOST_TEST_CONTEXT("multiboot mmap entry " << i) {
      CHECK_NUM(e.size, 20);
      CHECK_NUM(e.addr, want[i].addr);
      CHECK_NUM(e.len, want[i].size);
      CHECK_NUM(e.type, want[i].type);
    }
  }
}

void check_e820(const bp::LinuxBootParams& params, const std::vector<MapEntry>& want) {
  CHECK_NUM(params.e820_entries, want.size());
  for (size_t i = 0; i < bp::kLinuxE820Max; ++i) {
    const bp::LinuxE820Entry e = params.e820_table[i];
    const MapEntry w = i < want.size() ? want[i] : MapEntry{0, 0, 0};
    BOOST_TEST_CONTEXT("e820 entry " << i) {
      CHECK_NUM(e.addr, w.addr);
      CHECK_NUM(e.size, w.size);
      CHECK_NUM(e.type, w.type);
    }
  }
}

}  // namespace

// =============================================================== basics ==

BOOST_AUTO_TEST_CASE(protocol_names) {
  BOOST_CHECK_EQUAL(vmm::to_string(vmm::BootProtocol::pvh), "pvh");
  BOOST_CHECK_EQUAL(vmm::to_string(vmm::BootProtocol::multiboot), "multiboot");
  BOOST_CHECK_EQUAL(vmm::to_string(vmm::BootProtocol::linux64), "linux64");
}

BOOST_AUTO_TEST_CASE(memory_map_small_guest) {
  vmm::GuestMemory mem(kGuest);
  check_map(vmm::memory_map(mem), kMap64M);
}

BOOST_AUTO_TEST_CASE(memory_map_guest_above_4g) {
  vmm::GuestMemory mem(kBigGuest);
  check_map(vmm::memory_map(mem), kMap5G);
}

BOOST_AUTO_TEST_CASE(memory_map_guest_exactly_up_to_the_hole) {
  vmm::GuestMemory mem(3 * kGiB);
  check_map(vmm::memory_map(mem),
            {{0x0, 0x9fc00, 1}, {0x9fc00, 0x60400, 2}, {0x100000, 3 * kGiB - 0x100000, 1}});
}

BOOST_AUTO_TEST_CASE(memory_map_guest_below_1m) {
  vmm::GuestMemory mem(512 * kKiB);
  check_map(vmm::memory_map(mem), {{0x0, 512 * kKiB, 1}, {0x9fc00, 0x60400, 2}});
}

// on_first_use RAM (simulated machines): no mapping until something needs
// host memory; then it is ordinary RAM. A mapping the kernel refuses is
// host_out_of_memory on the access that needed it, and the memory stays
// unmapped.
BOOST_AUTO_TEST_CASE(first_use_memory_is_mapped_by_its_first_access) {
  vmm::GuestMemory mem(kBigGuest, vmm::GuestMemory::Backing::on_first_use);
  BOOST_TEST(!mem.mapped());
  BOOST_TEST(mem.size() == kBigGuest);
  BOOST_TEST(mem.low_end() == 3 * kGiB);
  mem.zero_all();  // nothing to drop
  mem.start_write_tracking();
  BOOST_TEST(!mem.mapped());
  BOOST_TEST(mem.read_obj<uint64_t>(4 * kGiB + 8) == 0u);
  BOOST_TEST(mem.mapped());
  mem.write_obj<uint32_t>(0x1000, 0xfeedbeef);
  BOOST_TEST(mem.read_obj<uint32_t>(0x1000) == 0xfeedbeefu);
  BOOST_TEST(mem.take_written(0)[0] == 2u);  // page 1
  BOOST_REQUIRE(mem.regions().size() == 2u);
  BOOST_TEST(mem.regions()[1].host != nullptr);
  check_map(vmm::memory_map(mem), kMap5G);

  // A region no host can map (1 PiB): refused when first used, by name.
  vmm::GuestMemory huge(uint64_t{1} << 50, vmm::GuestMemory::Backing::on_first_use);
  BOOST_TEST(huge.host_range(0, 8) == nullptr);
  try {
    (void)huge.read_obj<uint64_t>(0);
    BOOST_FAIL("no error");
  } catch (const vmm::Error& e) {
    BOOST_TEST((e.code() == vmm::Errc::host_out_of_memory), e.what());
    BOOST_TEST(std::string(e.what()).find("guest RAM failed") != std::string::npos, e.what());
  }
  BOOST_CHECK_THROW(huge.regions(), vmm::Error);
  BOOST_TEST(!huge.mapped());
  // Mapped memory that cannot be had fails at construction, as before.
  BOOST_CHECK_THROW(vmm::GuestMemory(uint64_t{1} << 50), vmm::Error);
}

BOOST_AUTO_TEST_CASE(read_file_contents_and_errors) {
  char dir[] = "/tmp/apiary-test-loaders-XXXXXX";
  BOOST_REQUIRE(::mkdtemp(dir) != nullptr);
  const std::string path = std::string(dir) + "/kernel";
  const Image data = pattern(2500000, 9);  // more than two read chunks of 1 MiB
  {
    std::FILE* f = std::fopen(path.c_str(), "wb");
    BOOST_REQUIRE(f != nullptr);
    BOOST_REQUIRE_EQUAL(std::fwrite(data.data(), 1, data.size(), f), data.size());
    std::fclose(f);
  }
  const Image read = vmm::read_file(path);
  BOOST_CHECK(read == data);
  // One buffer of the file's size: a 65 MB vmlinux is not held with slack
  // or reallocated while it is read.
  BOOST_TEST(read.capacity() == read.size());
  // Not a regular file (no size to go by): a pipe is read to its end.
  {
    std::signal(SIGPIPE, SIG_IGN);  // the writer gets EPIPE, not a signal, if the read fails
    int fds[2];
    BOOST_REQUIRE(::pipe(fds) == 0);
    std::thread writer([&] {
      size_t off = 0;
      while (off < data.size()) {
        const ssize_t n = ::write(fds[1], data.data() + off, data.size() - off);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      ::close(fds[1]);
    });
    Image piped;
    try {
      piped = vmm::read_file("/proc/self/fd/" + std::to_string(fds[0]));
    } catch (const std::exception& e) {
      BOOST_ERROR("read_file of a pipe: " << e.what());
    }
    ::close(fds[0]);  // a writer still writing gets EPIPE and ends
    writer.join();
    BOOST_CHECK(piped == data);
  }
  // A regular file whose size says 0 (procfs) is read to its end too.
  const Image status = vmm::read_file("/proc/self/status");
  BOOST_TEST(std::string(status.begin(), status.end()).find("Pid:") != std::string::npos);
  const std::string empty = std::string(dir) + "/empty";
  std::fclose(std::fopen(empty.c_str(), "wb"));
  BOOST_CHECK(vmm::read_file(empty).empty());

  CHECK_ERRC(vmm::read_file(std::string(dir) + "/missing"), Errc::file_not_found);
  CHECK_ERRC(vmm::read_file(dir), Errc::file_unreadable);

  ::unlink(path.c_str());
  ::unlink(empty.c_str());
  ::rmdir(dir);
}

BOOST_AUTO_TEST_CASE(shared_bytes_are_shared_by_copies_and_compared_by_content) {
  vmm::SharedBytes none;
  BOOST_TEST(none.empty());
  BOOST_TEST(none.span().empty());
  Image raw = pattern(10000, 3);
  const uint8_t* buffer = raw.data();
  const vmm::SharedBytes a(std::move(raw));
  BOOST_TEST(a.data() == buffer);  // moved in, not copied
  const vmm::SharedBytes b = a;    // NOLINT: the copy under test
  BOOST_TEST(b.data() == a.data());
  BOOST_TEST(b.shares_with(a));
  const vmm::SharedBytes c(pattern(10000, 3));
  BOOST_TEST(!c.shares_with(a));
  BOOST_TEST((c == a));  // same contents
  BOOST_TEST(!(vmm::SharedBytes(pattern(10000, 4)) == a));
  BOOST_TEST(!(none == a));
  BOOST_TEST((vmm::SharedBytes{} == vmm::SharedBytes(Image{})));  // empty either way
  vmm::SharedBytes d;
  d.assign(a.begin() + 1, a.begin() + 3);
  BOOST_TEST(d.size() == 2u);
  BOOST_TEST(d.vector()[0] == a.vector()[1]);
}

BOOST_AUTO_TEST_CASE(detect_protocol_by_magic) {
  BOOST_CHECK(vmm::detect_protocol(build_elf({}).bytes) == vmm::BootProtocol::pvh);
  BOOST_CHECK(vmm::detect_protocol(build_elf(multiboot_elf_spec(false)).bytes) ==
              vmm::BootProtocol::multiboot);
  BOOST_CHECK(vmm::detect_protocol(build_aout({}).bytes) == vmm::BootProtocol::multiboot);
  BOOST_CHECK(vmm::detect_protocol(build_bzimage()) == vmm::BootProtocol::linux64);

  // An ELF with both a PVH note and a multiboot header boots via PVH.
  ElfSpec both = multiboot_elf_spec(false);
  both.pvh_entry = both.paddr + 0x20;
  BOOST_CHECK(vmm::detect_protocol(build_elf(both).bytes) == vmm::BootProtocol::pvh);

  CHECK_ERRC(vmm::detect_protocol({}), Errc::image_truncated);
  CHECK_ERRC(vmm::detect_protocol(Image{0x7f, 'E', 'L'}), Errc::image_truncated);
  CHECK_ERRC(vmm::detect_protocol(Image(64, 0)), Errc::image_bad_magic);
  CHECK_ERRC(vmm::detect_protocol(pattern(16384, 2)), Errc::image_bad_magic);

  ElfSpec plain;
  plain.pvh_entry.reset();
  CHECK_ERRC(vmm::detect_protocol(build_elf(plain).bytes), Errc::elf_no_pvh_note);
  Image bad_class = build_elf({}).bytes;
  bad_class[EI_CLASS] = 7;
  CHECK_ERRC(vmm::detect_protocol(bad_class), Errc::image_corrupt);
}

BOOST_AUTO_TEST_CASE(load_kernel_dispatches) {
  vmm::GuestMemory mem(kGuest);
  BOOST_CHECK(vmm::load_kernel(mem, inputs(build_elf({}).bytes)).protocol == vmm::BootProtocol::pvh);
  BOOST_CHECK(vmm::load_kernel(mem, inputs(build_aout({}).bytes)).protocol ==
              vmm::BootProtocol::multiboot);
  BOOST_CHECK(vmm::load_kernel(mem, inputs(build_elf(multiboot_elf_spec(true)).bytes)).protocol ==
              vmm::BootProtocol::multiboot);
  BOOST_CHECK(vmm::load_kernel(mem, inputs(build_bzimage())).protocol ==
              vmm::BootProtocol::linux64);
}

// ================================================================== PVH ==

BOOST_AUTO_TEST_CASE(pvh_elf64_everything_written) {
  const ElfSpec spec;
  const BuiltElf elf = build_elf(spec);
  vmm::GuestMemory mem(kGuest);
  mem.fill(spec.paddr, 0x10000, 0xaa);  // so that bss zeroing shows
  const Image initrd = pattern(0x3000, 5);
  const std::string cmdline = "console=ttyS0 root=/dev/vda rw";
  const vmm::BootPlan plan = vmm::load_pvh(mem, inputs(elf.bytes, cmdline, initrd));

  const uint64_t initrd_at = top_placement(kGuest, initrd.size());
  BOOST_CHECK(plan.protocol == vmm::BootProtocol::pvh);
  BOOST_CHECK(plan.mode == vmm::EntryMode::protected32);
  CHECK_NUM(plan.entry, 0x200010);
  CHECK_NUM(plan.ebx, 0x6000);
  CHECK_NUM(plan.eax, 0);
  CHECK_NUM(plan.rsi, 0);
  CHECK_NUM(plan.kernel_start, spec.paddr);
  CHECK_NUM(plan.kernel_end, spec.paddr + spec.payload.size() + spec.bss);
  CHECK_NUM(plan.initrd_start, initrd_at);
  CHECK_NUM(plan.initrd_size, initrd.size());

  check_guest_bytes(mem, spec.paddr, spec.payload);
  check_guest_zero(mem, spec.paddr + spec.payload.size(), spec.bss);
  CHECK_NUM(mem.read_obj<uint8_t>(spec.paddr + spec.payload.size() + spec.bss), 0xaa);
  check_guest_bytes(mem, initrd_at, initrd);
  BOOST_CHECK_EQUAL(guest_cstring(mem, layout::kCmdline), cmdline);

  const auto si = mem.read_obj<bp::HvmStartInfo>(layout::kPvhStartInfo);
  CHECK_NUM(si.magic, 0x336ec578);
  CHECK_NUM(si.version, 1);
  CHECK_NUM(si.flags, 0);
  CHECK_NUM(si.nr_modules, 1);
  CHECK_NUM(si.modlist_paddr, 0x6200);
  CHECK_NUM(si.cmdline_paddr, 0x20000);
  CHECK_NUM(si.rsdp_paddr, 0);
  CHECK_NUM(si.memmap_paddr, 0x6400);
  CHECK_NUM(si.memmap_entries, kMap64M.size());
  CHECK_NUM(si.reserved, 0);
  check_hvm_memmap(mem, kMap64M);

  const auto mod = mem.read_obj<bp::HvmModlistEntry>(layout::kPvhModlist);
  CHECK_NUM(mod.paddr, initrd_at);
  CHECK_NUM(mod.size, initrd.size());
  CHECK_NUM(mod.cmdline_paddr, 0);
  CHECK_NUM(mod.reserved, 0);
}

BOOST_AUTO_TEST_CASE(pvh_elf32_with_8_byte_note_and_no_initrd) {
  ElfSpec spec;
  spec.is64 = false;
  spec.machine = EM_386;
  spec.paddr = spec.vaddr = 0x100000;
  spec.e_entry = 0x100000;
  spec.pvh_entry = 0x100100;
  spec.note_desc_size = 8;
  vmm::GuestMemory mem(kGuest);
  mem.fill(spec.paddr, 0x10000, 0xaa);
  const vmm::BootPlan plan = vmm::load_pvh(mem, inputs(build_elf(spec).bytes));

  CHECK_NUM(plan.entry, 0x100100);
  CHECK_NUM(plan.ebx, layout::kPvhStartInfo);
  CHECK_NUM(plan.initrd_start, 0);
  CHECK_NUM(plan.initrd_size, 0);
  check_guest_bytes(mem, spec.paddr, spec.payload);
  check_guest_zero(mem, spec.paddr + spec.payload.size(), spec.bss);
  BOOST_CHECK_EQUAL(guest_cstring(mem, layout::kCmdline), "");

  const auto si = mem.read_obj<bp::HvmStartInfo>(layout::kPvhStartInfo);
  CHECK_NUM(si.magic, bp::kHvmStartMagic);
  CHECK_NUM(si.version, 1);
  CHECK_NUM(si.nr_modules, 0);
  CHECK_NUM(si.modlist_paddr, 0);
  CHECK_NUM(si.cmdline_paddr, layout::kCmdline);
  CHECK_NUM(si.memmap_entries, kMap64M.size());
  check_hvm_memmap(mem, kMap64M);
}

BOOST_AUTO_TEST_CASE(pvh_note_in_section_headers_only) {
  ElfSpec spec;
  spec.note_as_section = true;
  vmm::GuestMemory mem(kGuest);
  CHECK_NUM(vmm::load_pvh(mem, inputs(build_elf(spec).bytes)).entry, 0x200010);
}

BOOST_AUTO_TEST_CASE(pvh_big_guest_memmap_and_initrd_below_limit) {
  vmm::GuestMemory mem(kBigGuest);
  const Image initrd = pattern(0x2800, 6);
  const vmm::BootPlan plan = vmm::load_pvh(mem, inputs(build_elf({}).bytes, "x", initrd));
  // kInitrdMax (0x37ffffff) is the last byte an initrd may occupy.
  CHECK_NUM(plan.initrd_start, top_placement(0x38000000, initrd.size()));
  check_guest_bytes(mem, plan.initrd_start, initrd);
  const auto si = mem.read_obj<bp::HvmStartInfo>(layout::kPvhStartInfo);
  CHECK_NUM(si.memmap_entries, kMap5G.size());
  check_hvm_memmap(mem, kMap5G);
}

BOOST_AUTO_TEST_CASE(initrd_goes_below_a_kernel_at_the_top) {
  ElfSpec spec;
  spec.paddr = spec.vaddr = kGuest - 0x4000;  // ends at kGuest - 0x2d00
  spec.pvh_entry = spec.paddr;
  spec.bss = 0x1000;
  vmm::GuestMemory mem(kGuest);
  const Image initrd = pattern(0x3000, 8);
  const vmm::BootPlan plan = vmm::load_pvh(mem, inputs(build_elf(spec).bytes, "", initrd));
  CHECK_NUM(plan.initrd_start, top_placement(spec.paddr, initrd.size()));
  BOOST_CHECK(plan.initrd_start + initrd.size() <= plan.kernel_start);
  check_guest_bytes(mem, plan.initrd_start, initrd);
}

BOOST_AUTO_TEST_CASE(pvh_truncated_elf) {
  const BuiltElf elf = build_elf({});
  vmm::GuestMemory mem(kGuest);
  for (size_t len : {size_t{0}, size_t{3}, size_t{10}, size_t{40}, size_t(elf.phoff + 20),
                     size_t(elf.note_off + 6), size_t(kElfPayloadOff + 0x10),
                     elf.bytes.size() - 1}) {
    BOOST_TEST_CONTEXT("cut at " << len) {
      CHECK_ERRC(vmm::load_pvh(mem, inputs(cut(elf.bytes, len))), Errc::image_truncated);
    }
  }
}

BOOST_AUTO_TEST_CASE(pvh_corrupt_elf) {
  const BuiltElf elf = build_elf({});
  vmm::GuestMemory mem(kGuest);
  auto expect = [&](auto&& mutate, Errc errc) {
    Image img = elf.bytes;
    mutate(img);
    CHECK_ERRC(vmm::load_pvh(mem, inputs(img)), errc);
  };
  const uint64_t ph = elf.load_ph;
  expect([](Image& i) { i[0] = 0x7e; }, Errc::image_bad_magic);
  expect([](Image& i) { i[EI_CLASS] = ELFCLASSNONE; }, Errc::image_corrupt);
  expect([](Image& i) { i[EI_CLASS] = 3; }, Errc::image_corrupt);
  expect([](Image& i) { i[EI_DATA] = ELFDATA2MSB; }, Errc::image_unsupported);
  expect([](Image& i) { i[EI_DATA] = 3; }, Errc::image_corrupt);
  expect([](Image& i) { i[EI_VERSION] = 2; }, Errc::image_corrupt);
  expect([](Image& i) { put<uint16_t>(i, offsetof(Elf64_Ehdr, e_type), ET_REL); },
         Errc::image_unsupported);
  expect([](Image& i) { put<uint16_t>(i, offsetof(Elf64_Ehdr, e_machine), EM_AARCH64); },
         Errc::image_unsupported);
  expect([](Image& i) { put<uint32_t>(i, offsetof(Elf64_Ehdr, e_version), 0); },
         Errc::image_corrupt);
  expect([](Image& i) { put<uint64_t>(i, offsetof(Elf64_Ehdr, e_phoff), 0xfffffffffffffff0); },
         Errc::image_corrupt);  // phoff + table size wraps
  expect([](Image& i) { put<uint64_t>(i, offsetof(Elf64_Ehdr, e_phoff), 0x100000); },
         Errc::image_truncated);  // the file would have to be longer
  expect([](Image& i) { put<uint64_t>(i, offsetof(Elf64_Ehdr, e_phoff), 8); },
         Errc::image_corrupt);
  expect([](Image& i) { put<uint16_t>(i, offsetof(Elf64_Ehdr, e_phentsize), 48); },
         Errc::image_corrupt);
  expect([](Image& i) { put<uint16_t>(i, offsetof(Elf64_Ehdr, e_phnum), 0); },
         Errc::image_corrupt);
  expect([](Image& i) { put<uint16_t>(i, offsetof(Elf64_Ehdr, e_phnum), PN_XNUM); },
         Errc::image_unsupported);
  expect([&](Image& i) { put<uint64_t>(i, ph + offsetof(Elf64_Phdr, p_filesz), 0x10000); },
         Errc::image_corrupt);  // p_filesz > p_memsz
  expect([&](Image& i) {
    put<uint64_t>(i, ph + offsetof(Elf64_Phdr, p_offset), 0xffffffffffffff00);
  }, Errc::image_corrupt);
  expect([&](Image& i) {
    put<uint64_t>(i, ph + offsetof(Elf64_Phdr, p_paddr), 0xfffffffffffff000);
  }, Errc::image_corrupt);  // p_paddr + p_memsz wraps
  expect([&](Image& i) { put<uint32_t>(i, ph + offsetof(Elf64_Phdr, p_type), PT_NULL); },
         Errc::image_corrupt);  // nothing to load
  expect([&](Image& i) {  // a second PT_LOAD overlapping the first
    Elf64_Phdr p{};
    p.p_type = PT_LOAD;
    p.p_paddr = p.p_vaddr = 0x200100;
    p.p_memsz = 0x10;
    put(i, elf.note_ph, p);
  }, Errc::image_corrupt);
  expect([&](Image& i) { put<uint32_t>(i, elf.xen_note, 0x1000); },  // namesz too long
         Errc::image_corrupt);
  expect([&](Image& i) {  // descsz of 2 bytes
    put<uint32_t>(i, elf.xen_note + 4, 2);
  }, Errc::image_corrupt);
  expect([&](Image& i) {  // entry outside the segment
    put<uint32_t>(i, elf.xen_note + sizeof(Elf64_Nhdr) + 4, 0x300000);
  }, Errc::image_corrupt);
}

BOOST_AUTO_TEST_CASE(pvh_eight_byte_note_above_4g_is_corrupt) {
  ElfSpec spec;
  spec.note_desc_size = 8;
  spec.pvh_entry = 0x100200010ull;
  vmm::GuestMemory mem(kGuest);
  CHECK_ERRC(vmm::load_pvh(mem, inputs(build_elf(spec).bytes)), Errc::image_corrupt);
}

BOOST_AUTO_TEST_CASE(pvh_missing_note) {
  ElfSpec spec;
  spec.pvh_entry.reset();
  const Image img = build_elf(spec).bytes;
  vmm::GuestMemory mem(kGuest);
  CHECK_ERRC(vmm::load_pvh(mem, inputs(img)), Errc::elf_no_pvh_note);
  CHECK_ERRC(vmm::load_kernel(mem, inputs(img)), Errc::elf_no_pvh_note);
}

BOOST_AUTO_TEST_CASE(pvh_segment_placement) {
  vmm::GuestMemory mem(kGuest);
  auto load_at = [&](uint64_t paddr, uint64_t bss) {
    ElfSpec spec;
    spec.paddr = spec.vaddr = paddr;
    spec.pvh_entry = paddr;
    spec.bss = bss;
    return vmm::load_pvh(mem, inputs(build_elf(spec).bytes));
  };
  CHECK_ERRC(load_at(0x6000, 0), Errc::image_overlaps_boot_data);     // over hvm_start_info
  CHECK_ERRC(load_at(0xff000, 0), Errc::image_overlaps_boot_data);     // reserved BIOS area
  CHECK_ERRC(load_at(0x8000000, 0), Errc::image_too_large);           // outside guest RAM
  CHECK_ERRC(load_at(kGuest - 0x100, 0), Errc::image_too_large);      // runs off the end
  CHECK_ERRC(load_at(0x200000, 128 * kMiB), Errc::image_too_large);   // bigger than the guest
  vmm::GuestMemory big(kBigGuest);
  ElfSpec hole;
  hole.paddr = hole.vaddr = 0xd0000000;  // in the MMIO hole
  hole.pvh_entry = hole.paddr;
  CHECK_ERRC(vmm::load_pvh(big, inputs(build_elf(hole).bytes)), Errc::image_too_large);
  // RAM above 4 GiB is not reachable from 32-bit entry code.
  ElfSpec above = multiboot_elf_spec(true);
  above.paddr = above.vaddr = 0x100000000;
  above.e_entry = above.paddr + 0x20;
  CHECK_ERRC(vmm::load_multiboot(big, inputs(build_elf(above).bytes)), Errc::image_too_large);
}

BOOST_AUTO_TEST_CASE(tiny_guest_refuses_every_kernel) {
  vmm::GuestMemory mem(512 * kKiB);  // below kHighMemory: no room for any kernel
  CHECK_ERRC(vmm::load_pvh(mem, inputs(build_elf({}).bytes)), Errc::image_too_large);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_aout({}).bytes)), Errc::image_too_large);
  CHECK_ERRC(vmm::load_linux(mem, inputs(build_bzimage())), Errc::image_too_large);
}

BOOST_AUTO_TEST_CASE(cmdline_limits) {
  const Image img = build_elf({}).bytes;
  vmm::GuestMemory mem(kGuest);
  const std::string longest(layout::kCmdlineMax - 1, 'a');
  vmm::load_pvh(mem, inputs(img, longest));
  BOOST_CHECK_EQUAL(guest_cstring(mem, layout::kCmdline), longest);
  CHECK_ERRC(vmm::load_pvh(mem, inputs(img, longest + "a")), Errc::cmdline_too_long);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_aout({}).bytes, longest + "a")),
             Errc::cmdline_too_long);
  CHECK_ERRC(vmm::load_pvh(mem, inputs(img, std::string("a\0b", 3))), Errc::invalid_argument);
}

BOOST_AUTO_TEST_CASE(initrd_too_large) {
  const Image img = build_elf({}).bytes;
  vmm::GuestMemory mem(kGuest);
  CHECK_ERRC(vmm::load_pvh(mem, inputs(img, "", Image(kGuest))), Errc::initrd_too_large);
  CHECK_ERRC(vmm::load_pvh(mem, inputs(img, "", Image(kGuest - 2 * kMiB))),
             Errc::initrd_too_large);  // would have to overlap the kernel
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_aout({}).bytes, "", Image(kGuest))),
             Errc::initrd_too_large);
}

// ============================================================ multiboot ==

BOOST_AUTO_TEST_CASE(multiboot_aout_everything_written) {
  const AoutSpec spec;
  const BuiltAout img = build_aout(spec);
  vmm::GuestMemory mem(kGuest);
  mem.fill(spec.load_addr, 0x10000, 0xaa);
  const Image initrd = pattern(0x1800, 2);
  const std::string cmdline = "kernel arg=1";
  const vmm::BootPlan plan = vmm::load_multiboot(mem, inputs(img.bytes, cmdline, initrd));

  const uint64_t initrd_at = top_placement(kGuest, initrd.size());
  BOOST_CHECK(plan.protocol == vmm::BootProtocol::multiboot);
  BOOST_CHECK(plan.mode == vmm::EntryMode::protected32);
  CHECK_NUM(plan.entry, 0x100080);
  CHECK_NUM(plan.eax, 0x2badb002);
  CHECK_NUM(plan.ebx, 0x8000);
  CHECK_NUM(plan.rsi, 0);
  CHECK_NUM(plan.kernel_start, 0x100000);
  CHECK_NUM(plan.kernel_end, 0x100000 + spec.body + spec.bss);
  CHECK_NUM(plan.initrd_start, initrd_at);
  CHECK_NUM(plan.initrd_size, initrd.size());

  check_guest_bytes(mem, spec.load_addr, img.bytes);  // load_end_addr 0: the whole file
  check_guest_zero(mem, spec.load_addr + spec.body, spec.bss);
  CHECK_NUM(mem.read_obj<uint8_t>(spec.load_addr + spec.body + spec.bss), 0xaa);
  check_guest_bytes(mem, initrd_at, initrd);
  BOOST_CHECK_EQUAL(guest_cstring(mem, layout::kCmdline), cmdline);

  const auto mbi = mem.read_obj<bp::MultibootInfo>(layout::kMultibootInfo);
  CHECK_NUM(mbi.flags, (1u << 0) | (1u << 2) | (1u << 3) | (1u << 6) | (1u << 9));
  CHECK_NUM(mbi.mem_lower, 639);
  CHECK_NUM(mbi.mem_upper, (kGuest - kMiB) / kKiB);
  CHECK_NUM(mbi.boot_device, 0);
  CHECK_NUM(mbi.cmdline, layout::kCmdline);
  CHECK_NUM(mbi.mods_count, 1);
  CHECK_NUM(mbi.mods_addr, 0x8800);
  for (uint32_t s : mbi.syms) CHECK_NUM(s, 0);
  CHECK_NUM(mbi.mmap_length, kMap64M.size() * 24);
  CHECK_NUM(mbi.mmap_addr, 0x8100);
  CHECK_NUM(mbi.drives_length, 0);
  CHECK_NUM(mbi.drives_addr, 0);
  CHECK_NUM(mbi.config_table, 0);
  CHECK_NUM(mbi.boot_loader_name, 0x8c00);
  CHECK_NUM(mbi.apm_table, 0);
  CHECK_NUM(mbi.vbe_control_info, 0);
  CHECK_NUM(mbi.vbe_mode_info, 0);
  CHECK_NUM(mbi.vbe_mode, 0);
  CHECK_NUM(mbi.vbe_interface_seg, 0);
  CHECK_NUM(mbi.vbe_interface_off, 0);
  CHECK_NUM(mbi.vbe_interface_len, 0);
  check_mb_mmap(mem, kMap64M);
  BOOST_CHECK_EQUAL(guest_cstring(mem, mbi.boot_loader_name), "apiary");

  const auto mod = mem.read_obj<bp::MultibootModule>(mbi.mods_addr);
  CHECK_NUM(mod.mod_start, initrd_at);
  CHECK_NUM(mod.mod_end, initrd_at + initrd.size());
  CHECK_NUM(mod.reserved, 0);
  BOOST_CHECK_EQUAL(mod.mod_start % kPage, 0u);  // header flag 0: page-aligned modules
  BOOST_CHECK(mod.string >= layout::kMultibootStrings && mod.string < layout::kPml4);
  BOOST_CHECK_EQUAL(guest_cstring(mem, mod.string), "initrd");
}

BOOST_AUTO_TEST_CASE(multiboot_aout_file_offset_load_end_and_no_initrd) {
  AoutSpec spec;
  spec.prefix = 0x100;        // not loaded: load_addr's byte is at file offset 0x100
  spec.trailer = 0x80;        // not loaded: beyond load_end_addr
  spec.explicit_end = true;
  spec.load_addr = 0x400000;
  const BuiltAout img = build_aout(spec);
  vmm::GuestMemory mem(kGuest);
  mem.fill(spec.load_addr, 0x10000, 0xaa);
  const vmm::BootPlan plan = vmm::load_multiboot(mem, inputs(img.bytes));

  CHECK_NUM(plan.entry, spec.load_addr + spec.entry_at);
  CHECK_NUM(plan.kernel_start, spec.load_addr);
  CHECK_NUM(plan.kernel_end, spec.load_addr + spec.body + spec.bss);
  CHECK_NUM(plan.initrd_start, 0);
  const Image body(img.bytes.begin() + spec.prefix, img.bytes.begin() + spec.prefix + spec.body);
  check_guest_bytes(mem, spec.load_addr, body);
  check_guest_zero(mem, spec.load_addr + spec.body, spec.bss);
  CHECK_NUM(mem.read_obj<uint8_t>(spec.load_addr - 1), 0);  // prefix not loaded before

  const auto mbi = mem.read_obj<bp::MultibootInfo>(layout::kMultibootInfo);
  CHECK_NUM(mbi.flags, bp::kMbInfoMemory | bp::kMbInfoCmdline | bp::kMbInfoMemMap |
                           bp::kMbInfoBootLoaderName);
  CHECK_NUM(mbi.mods_count, 0);
  CHECK_NUM(mbi.mods_addr, 0);
  BOOST_CHECK_EQUAL(guest_cstring(mem, mbi.cmdline), "");
}

BOOST_AUTO_TEST_CASE(multiboot_aout_without_bss) {
  AoutSpec spec;
  spec.bss = 0;
  vmm::GuestMemory mem(kGuest);
  const vmm::BootPlan plan = vmm::load_multiboot(mem, inputs(build_aout(spec).bytes));
  CHECK_NUM(plan.kernel_end, spec.load_addr + spec.body);
}

BOOST_AUTO_TEST_CASE(multiboot_elf_higher_half) {
  for (bool is64 : {false, true}) {
    BOOST_TEST_CONTEXT("ELF" << (is64 ? 64 : 32)) {
      const ElfSpec spec = multiboot_elf_spec(is64);
      vmm::GuestMemory mem(kGuest);
      mem.fill(spec.paddr, 0x10000, 0xaa);
      const vmm::BootPlan plan = vmm::load_kernel(mem, inputs(build_elf(spec).bytes, "k"));
      BOOST_CHECK(plan.protocol == vmm::BootProtocol::multiboot);
      CHECK_NUM(plan.entry, spec.paddr + 0x20);  // e_entry translated to physical
      CHECK_NUM(plan.eax, bp::kMultibootBootloaderMagic);
      CHECK_NUM(plan.ebx, layout::kMultibootInfo);
      CHECK_NUM(plan.kernel_start, spec.paddr);
      CHECK_NUM(plan.kernel_end, spec.paddr + spec.payload.size() + spec.bss);
      check_guest_bytes(mem, spec.paddr, spec.payload);
      check_guest_zero(mem, spec.paddr + spec.payload.size(), spec.bss);
      const auto mbi = mem.read_obj<bp::MultibootInfo>(layout::kMultibootInfo);
      CHECK_NUM(mbi.flags, bp::kMbInfoMemory | bp::kMbInfoCmdline | bp::kMbInfoMemMap |
                               bp::kMbInfoBootLoaderName);
      BOOST_CHECK_EQUAL(guest_cstring(mem, mbi.cmdline), "k");
      check_mb_mmap(mem, kMap64M);
    }
  }
}

BOOST_AUTO_TEST_CASE(multiboot_elf_physical_entry) {
  ElfSpec spec = multiboot_elf_spec(false);
  spec.e_entry = spec.paddr + 0x40;  // not a virtual address of any segment
  vmm::GuestMemory mem(kGuest);
  CHECK_NUM(vmm::load_multiboot(mem, inputs(build_elf(spec).bytes)).entry, spec.paddr + 0x40);
  spec.e_entry = 0x900000;
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_elf(spec).bytes)), Errc::image_corrupt);
}

BOOST_AUTO_TEST_CASE(multiboot_big_guest) {
  vmm::GuestMemory mem(kBigGuest);
  vmm::load_multiboot(mem, inputs(build_aout({}).bytes));
  const auto mbi = mem.read_obj<bp::MultibootInfo>(layout::kMultibootInfo);
  CHECK_NUM(mbi.mem_lower, 639);
  CHECK_NUM(mbi.mem_upper, (3 * kGiB - kMiB) / kKiB);  // contiguous RAM only
  CHECK_NUM(mbi.mmap_length, kMap5G.size() * 24);
  check_mb_mmap(mem, kMap5G);
}

BOOST_AUTO_TEST_CASE(multiboot_header_flags) {
  vmm::GuestMemory mem(kGuest);
  AoutSpec video;
  video.flags |= bp::kMbHeaderVideoMode;  // a preference: ignored, no video info given
  vmm::load_multiboot(mem, inputs(build_aout(video).bytes));
  const auto mbi = mem.read_obj<bp::MultibootInfo>(layout::kMultibootInfo);
  CHECK_NUM(mbi.flags & ((1u << 11) | (1u << 12)), 0);
  CHECK_NUM(mbi.vbe_mode, 0);

  AoutSpec unknown;
  unknown.flags |= 1u << 3;  // a requirement we do not know
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_aout(unknown).bytes)), Errc::image_unsupported);
  AoutSpec optional;
  optional.flags |= 1u << 20;  // an optional bit: ignored
  BOOST_CHECK_NO_THROW(vmm::load_multiboot(mem, inputs(build_aout(optional).bytes)));
}

BOOST_AUTO_TEST_CASE(multiboot_header_search) {
  vmm::GuestMemory mem(kGuest);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(Image(8192, 0))), Errc::multiboot_no_header);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(Image{})), Errc::multiboot_no_header);

  // Header beyond the first 8 KiB is not seen.
  AoutSpec far;
  far.header_at = 8192;
  far.body = 0x3000;
  far.entry_at = 0x2100;
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_aout(far).bytes)), Errc::multiboot_no_header);
  // Misaligned header is not seen.
  AoutSpec odd;
  odd.header_at = 0x42;
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_aout(odd).bytes)), Errc::multiboot_no_header);
  // A header as late as possible is seen.
  AoutSpec late;
  late.header_at = 8192 - 32;
  late.body = 0x2400;
  CHECK_NUM(vmm::load_multiboot(mem, inputs(build_aout(late).bytes)).entry,
            late.load_addr + late.entry_at);

  BuiltAout bad = build_aout({});
  put<uint32_t>(bad.bytes, bad.header_off + 8, get<uint32_t>(bad.bytes, bad.header_off + 8) + 1);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(bad.bytes)), Errc::multiboot_bad_checksum);
  CHECK_ERRC(vmm::load_kernel(mem, inputs(bad.bytes)), Errc::multiboot_bad_checksum);

  // A bad candidate followed by a good header: the good one wins.
  AoutSpec second;
  second.header_at = 0x80;
  second.entry_at = 0x100;
  BuiltAout two = build_aout(second);
  put<uint32_t>(two.bytes, 0x10, bp::kMultibootHeaderMagic);
  CHECK_NUM(vmm::load_multiboot(mem, inputs(two.bytes)).entry, 0x100100);
}

BOOST_AUTO_TEST_CASE(multiboot_truncated) {
  const BuiltAout img = build_aout({});
  vmm::GuestMemory mem(kGuest);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(cut(img.bytes, img.header_off + 6))),
             Errc::image_truncated);  // inside magic/flags/checksum
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(cut(img.bytes, img.header_off + 20))),
             Errc::image_truncated);  // inside the address fields
  AoutSpec spec;
  spec.explicit_end = true;
  const BuiltAout ended = build_aout(spec);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(cut(ended.bytes, ended.bytes.size() - 1))),
             Errc::image_truncated);  // load_end_addr beyond the file
}

BOOST_AUTO_TEST_CASE(multiboot_inconsistent_address_fields) {
  vmm::GuestMemory mem(kGuest);
  const BuiltAout base = build_aout({});
  auto with = [&](size_t field, uint32_t value) {
    Image img = base.bytes;
    put<uint32_t>(img, base.header_off + field, value);
    return img;
  };
  using H = bp::MultibootHeader;
  // header_addr below load_addr
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(with(offsetof(H, header_addr), 0xfff00))),
             Errc::image_corrupt);
  // load_addr would start before the file (header is at file offset 0x40)
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(with(offsetof(H, load_addr), 0xfff00))),
             Errc::image_corrupt);
  // load_end_addr cuts the header off
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(with(offsetof(H, load_end_addr), 0x100010))),
             Errc::image_corrupt);
  // load_end_addr below load_addr
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(with(offsetof(H, load_end_addr), 0x1000))),
             Errc::image_corrupt);
  // bss_end_addr below load_end
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(with(offsetof(H, bss_end_addr), 0x100100))),
             Errc::image_corrupt);
  // entry outside the loaded bytes
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(with(offsetof(H, entry_addr), 0x100400))),
             Errc::image_corrupt);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(with(offsetof(H, entry_addr), 0xfffff))),
             Errc::image_corrupt);
  // placement: over boot data, beyond RAM, bss bigger than the guest
  AoutSpec low;
  low.load_addr = 0x1f000;  // its bss runs into the command line at 0x20000
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_aout(low).bytes)), Errc::image_overlaps_boot_data);
  AoutSpec high;
  high.load_addr = 0x10000000;
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_aout(high).bytes)), Errc::image_too_large);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(with(offsetof(H, bss_end_addr), 0x8000000))),
             Errc::image_too_large);
}

BOOST_AUTO_TEST_CASE(multiboot_without_address_fields_needs_elf) {
  AoutSpec spec;
  spec.flags = kMbFlags;  // no flag 16, and not an ELF
  vmm::GuestMemory mem(kGuest);
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(build_aout(spec).bytes)), Errc::image_bad_magic);
  // ...and a multiboot ELF is validated like any ELF
  Image elf = build_elf(multiboot_elf_spec(false)).bytes;
  elf[EI_CLASS] = 9;
  CHECK_ERRC(vmm::load_multiboot(mem, inputs(elf)), Errc::image_corrupt);
}

// ================================================== segments below 1 MiB ==
// QEMU loads a kernel's low segments (real-mode trampolines, images linked
// low); Apiary does too, wherever they miss the data it writes for that boot,
// and names that data when they do not.

// The error's code is `want` and its message names every part of `names`.
auto errc_naming(Errc want, std::vector<std::string> names) {
  return [want, names](const vmm::Error& e) {
    bool ok = e.code() == want;
    for (const std::string& n : names) ok = ok && std::string(e.what()).find(n) != std::string::npos;
    if (!ok) BOOST_ERROR("expected " << vmm::to_string(want) << " naming the areas, got: " << e.what());
    return ok;
  };
}
#define CHECK_ERRC_NAMING(expr, errc, ...) \
  BOOST_CHECK_EXCEPTION(expr, vmm::Error, errc_naming(errc, {__VA_ARGS__}))

BOOST_AUTO_TEST_CASE(multiboot_low_aout_image_loads) {
  AoutSpec spec;
  spec.load_addr = 0x10000;  // the smp guest's trampoline page, free for a kernel
  const BuiltAout img = build_aout(spec);
  vmm::GuestMemory mem(kGuest);
  mem.fill(spec.load_addr + spec.body, spec.bss, 0xaa);
  const Image initrd = pattern(0x3000, 9);
  const vmm::BootPlan plan = vmm::load_multiboot(mem, inputs(img.bytes, "low", initrd));
  CHECK_NUM(plan.kernel_start, 0x10000);
  CHECK_NUM(plan.kernel_end, 0x10000 + spec.body + spec.bss);
  CHECK_NUM(plan.entry, 0x10000 + spec.entry_at);
  check_guest_bytes(mem, 0x10000, img.bytes);
  check_guest_zero(mem, 0x10000 + spec.body, spec.bss);
  CHECK_NUM(plan.ebx, layout::kMultibootInfo);  // not in the way: stays home
  CHECK_NUM(plan.initrd_start, top_placement(kGuest, initrd.size()));
  check_guest_bytes(mem, plan.initrd_start, initrd);
}

BOOST_AUTO_TEST_CASE(multiboot_low_elf_segment_loads) {
  // A kernel at 2 MiB with a trampoline segment at 0x1000 (the page a SIPI
  // vector 1 starts an AP in).
  ElfSpec spec = multiboot_elf_spec(false);
  spec.low_payload = pattern(0x200, 3);
  spec.low_paddr = 0x1000;
  vmm::GuestMemory mem(kGuest);
  const vmm::BootPlan plan = vmm::load_multiboot(mem, inputs(build_elf(spec).bytes, "k"));
  check_guest_bytes(mem, 0x1000, spec.low_payload);
  check_guest_bytes(mem, spec.paddr, spec.payload);
  CHECK_NUM(plan.kernel_start, 0x1000);
  CHECK_NUM(plan.entry, spec.paddr + 0x20);
  CHECK_NUM(plan.ebx, layout::kMultibootInfo);
}

BOOST_AUTO_TEST_CASE(multiboot_kernel_on_the_info_block_moves_it) {
  // A segment at 0x8000, the info block's home: the block goes to the first
  // page after the kernel, as QEMU places it, and says so in %ebx.
  for (bool is_elf : {false, true}) {
    BOOST_TEST_CONTEXT((is_elf ? "ELF" : "a.out")) {
      vmm::GuestMemory mem(kGuest);
      Image image, low_bytes;
      uint64_t info_at = 0;
      if (is_elf) {
        ElfSpec spec = multiboot_elf_spec(true);
        spec.low_payload = low_bytes = pattern(0x300, 5);
        spec.low_paddr = 0x8000;
        image = build_elf(spec).bytes;
        info_at = spec.paddr + 0x2000;  // 0x200000 + 0x300 + 0x1800 (bss), page aligned
      } else {
        AoutSpec spec;
        spec.load_addr = 0x8000;
        spec.bss = 0x400;
        image = low_bytes = build_aout(spec).bytes;
        info_at = 0x9000;  // 0x8000 + 0x400 + 0x400, page aligned
      }
      const Image initrd = pattern(0x2000, 6);
      const vmm::BootPlan plan = vmm::load_multiboot(mem, inputs(image, "moved", initrd));
      check_guest_bytes(mem, 0x8000, low_bytes);
      CHECK_NUM(plan.ebx, info_at);
      const auto mbi = mem.read_obj<bp::MultibootInfo>(info_at);
      CHECK_NUM(mbi.flags, bp::kMbInfoMemory | bp::kMbInfoCmdline | bp::kMbInfoMemMap |
                               bp::kMbInfoBootLoaderName | bp::kMbInfoMods);
      CHECK_NUM(mbi.mem_lower, 639);
      BOOST_CHECK_EQUAL(guest_cstring(mem, mbi.cmdline), "moved");
      BOOST_CHECK_EQUAL(guest_cstring(mem, mbi.boot_loader_name), "apiary");
      CHECK_NUM(mbi.mmap_addr, info_at + (layout::kMultibootMmap - layout::kMultibootInfo));
      check_mb_mmap(mem, kMap64M, mbi.mmap_addr);
      CHECK_NUM(mbi.mods_count, 1);
      const auto mod = mem.read_obj<bp::MultibootModule>(mbi.mods_addr);
      CHECK_NUM(mod.mod_start, plan.initrd_start);
      BOOST_CHECK_EQUAL(guest_cstring(mem, mod.string), "initrd");
      BOOST_CHECK(mbi.mods_addr >= info_at && mod.string < info_at + layout::kMultibootBlockSize);
      check_guest_bytes(mem, plan.initrd_start, initrd);
    }
  }
}

BOOST_AUTO_TEST_CASE(multiboot_info_block_without_room_is_refused) {
  // The kernel covers the block's home and ends where the command line
  // starts, so the page after it is taken too.
  AoutSpec spec;
  spec.load_addr = 0x8000;
  spec.bss = layout::kCmdline - 0x8000 - spec.body - 0x10;
  vmm::GuestMemory mem(kGuest);
  CHECK_ERRC_NAMING(vmm::load_multiboot(mem, inputs(build_aout(spec).bytes)),
                    Errc::image_overlaps_boot_data, "multiboot info block", "the command line");
}

BOOST_AUTO_TEST_CASE(low_segments_on_boot_data_are_refused_by_name) {
  vmm::GuestMemory mem(kGuest);
  auto aout_at = [](uint32_t addr, uint32_t bss) {
    AoutSpec spec;
    spec.load_addr = addr;
    spec.bss = bss;
    return build_aout(spec).bytes;
  };
  auto pvh_at = [](uint64_t paddr) {
    ElfSpec spec;
    spec.paddr = spec.vaddr = paddr;
    spec.pvh_entry = paddr;
    return build_elf(spec).bytes;
  };
  // Every boot: GDT/IDT, command line, ACPI tables, reserved BIOS area.
  CHECK_ERRC_NAMING(vmm::load_multiboot(mem, inputs(aout_at(0x0, 0x200))),
                    Errc::image_overlaps_boot_data, "the boot GDT [0x500, 0x540)", "the boot IDT");
  CHECK_ERRC_NAMING(vmm::load_multiboot(mem, inputs(aout_at(0x1f800, 0x1000))),
                    Errc::image_overlaps_boot_data, "the command line [0x20000, 0x21000)");
  CHECK_ERRC_NAMING(vmm::load_multiboot(mem, inputs(aout_at(0xe0000, 0))),
                    Errc::image_overlaps_boot_data, "the ACPI tables [0xe0000, 0xf0000)",
                    "the reserved BIOS area [0x9fc00, 0x100000)");
  CHECK_ERRC_NAMING(vmm::load_pvh(mem, inputs(pvh_at(0x9f000))), Errc::image_overlaps_boot_data,
                    "ELF segment [0x9f000, +0x1b00)", "the reserved BIOS area");
  // PVH's own data; the zero page and the page tables are Linux's only.
  CHECK_ERRC_NAMING(vmm::load_pvh(mem, inputs(pvh_at(0x6100))), Errc::image_overlaps_boot_data,
                    "the PVH start info", "the PVH module list", "the PVH memory map");
  BOOST_CHECK_NO_THROW(vmm::load_pvh(mem, inputs(pvh_at(0x7000))));  // zero page, page tables: free
  check_guest_bytes(mem, 0x7000, ElfSpec{}.payload);
  // Straddling 1 MiB is still refused; what RAM cannot back still is too.
  CHECK_ERRC_NAMING(vmm::load_multiboot(mem, inputs(aout_at(0xff800, 0x2000))),
                    Errc::image_overlaps_boot_data, "the reserved BIOS area");
  vmm::GuestMemory tiny(512 * kKiB);
  CHECK_ERRC(vmm::load_multiboot(tiny, inputs(aout_at(0x70000, 0x20000))), Errc::image_too_large);
  BOOST_CHECK_NO_THROW(vmm::load_multiboot(tiny, inputs(aout_at(0x30000, 0x1000))));
}

BOOST_AUTO_TEST_CASE(linux_boot_areas_name_zero_page_and_page_tables) {
  // bzImages always load at or above 1 MiB, so the Linux areas are checked
  // through the shared rule itself.
  namespace loader = vmm::loader;
  vmm::GuestMemory mem(kGuest);
  const auto areas = loader::boot_areas(vmm::BootProtocol::linux64);
  CHECK_ERRC_NAMING(loader::check_kernel_range(mem, 0x7800, 0x2000, "segment", areas),
                    Errc::image_overlaps_boot_data, "segment [0x7800, +0x2000)",
                    "the zero page [0x7000, 0x8000)", "the identity page tables [0x9000, 0xf000)");
  BOOST_CHECK_NO_THROW(loader::check_kernel_range(mem, 0x1000, 0x5000, "segment", areas));
  BOOST_CHECK_NO_THROW(loader::check_kernel_range(mem, 0x10000, 0x10000, "segment", areas));
  // Sorted by address (the ACPI tables lie inside the reserved BIOS area), and
  // a 32-bit boot leaves the zero page and page tables to its kernel.
  for (size_t i = 1; i < areas.size(); ++i) BOOST_CHECK(areas[i - 1].start <= areas[i].start);
  for (auto p : {vmm::BootProtocol::pvh, vmm::BootProtocol::multiboot})
    for (const auto& a : loader::boot_areas(p))
      BOOST_CHECK(a.end <= layout::kHighMemory && !(a.start < 0xf000 && 0x7000 < a.end));
}

// ================================================================ Linux ==

BOOST_AUTO_TEST_CASE(linux_everything_written) {
  const BzSpec spec;
  const Image img = build_bzimage(spec);
  const bp::LinuxSetupHeader src = image_header(img);
  vmm::GuestMemory mem(kGuest);
  mem.fill(layout::kZeroPage, sizeof(bp::LinuxBootParams), 0xaa);  // must be zeroed
  const Image initrd = pattern(0x5000, 4);
  const std::string cmdline = "console=ttyS0 earlyprintk=serial";
  const vmm::BootPlan plan = vmm::load_linux(mem, inputs(img, cmdline, initrd));

  const uint64_t load = 0x1000000;  // pref_address
  const uint64_t initrd_at = top_placement(kGuest, initrd.size());
  BOOST_CHECK(plan.protocol == vmm::BootProtocol::linux64);
  BOOST_CHECK(plan.mode == vmm::EntryMode::long64);
  CHECK_NUM(plan.entry, load + 0x200);
  CHECK_NUM(plan.rsi, 0x7000);
  CHECK_NUM(plan.eax, 0);
  CHECK_NUM(plan.ebx, 0);
  CHECK_NUM(plan.kernel_start, load);
  CHECK_NUM(plan.kernel_end, load + spec.init_size);
  CHECK_NUM(plan.initrd_start, initrd_at);
  CHECK_NUM(plan.initrd_size, initrd.size());

  const Image kernel(img.begin() + setup_size(spec), img.end());
  check_guest_bytes(mem, load, kernel);
  check_guest_bytes(mem, initrd_at, initrd);
  BOOST_CHECK_EQUAL(guest_cstring(mem, layout::kCmdline), cmdline);

  const auto params = mem.read_obj<bp::LinuxBootParams>(layout::kZeroPage);
  const auto* raw = reinterpret_cast<const uint8_t*>(&params);
  // Everything before e820_entries, and the bytes up to the header, is zero
  // (ext_ramdisk_*, ext_cmd_line_ptr included; sentinel not copied).
  BOOST_CHECK(std::all_of(raw, raw + 0x1e8, [](uint8_t b) { return b == 0; }));
  BOOST_CHECK(std::all_of(raw + 0x1e9, raw + 0x1f1, [](uint8_t b) { return b == 0; }));
  CHECK_NUM(params.sentinel, 0);
  CHECK_NUM(params.ext_ramdisk_image, 0);
  CHECK_NUM(params.ext_ramdisk_size, 0);
  CHECK_NUM(params.ext_cmd_line_ptr, 0);

  const bp::LinuxSetupHeader h = params.hdr;
  // copied from the image
  CHECK_NUM(h.setup_sects, src.setup_sects);
  CHECK_NUM(h.root_flags, src.root_flags);
  CHECK_NUM(h.syssize, src.syssize);
  CHECK_NUM(h.ram_size, src.ram_size);
  CHECK_NUM(h.vid_mode, src.vid_mode);
  CHECK_NUM(h.root_dev, src.root_dev);
  CHECK_NUM(h.boot_flag, 0xaa55);
  CHECK_NUM(h.jump, src.jump);
  CHECK_NUM(h.header, 0x53726448);
  CHECK_NUM(h.version, src.version);
  CHECK_NUM(h.realmode_swtch, src.realmode_swtch);
  CHECK_NUM(h.start_sys_seg, src.start_sys_seg);
  CHECK_NUM(h.kernel_version, src.kernel_version);
  CHECK_NUM(h.setup_move_size, src.setup_move_size);
  CHECK_NUM(h.bootsect_kludge, src.bootsect_kludge);
  CHECK_NUM(h.initrd_addr_max, src.initrd_addr_max);
  CHECK_NUM(h.kernel_alignment, src.kernel_alignment);
  CHECK_NUM(h.relocatable_kernel, src.relocatable_kernel);
  CHECK_NUM(h.min_alignment, src.min_alignment);
  CHECK_NUM(h.xloadflags, src.xloadflags);
  CHECK_NUM(h.cmdline_size, src.cmdline_size);
  CHECK_NUM(h.hardware_subarch, src.hardware_subarch);
  CHECK_NUM(h.hardware_subarch_data, src.hardware_subarch_data);
  CHECK_NUM(h.payload_offset, src.payload_offset);
  CHECK_NUM(h.payload_length, src.payload_length);
  CHECK_NUM(h.setup_data, 0);
  CHECK_NUM(h.pref_address, src.pref_address);
  CHECK_NUM(h.init_size, src.init_size);
  CHECK_NUM(h.handover_offset, src.handover_offset);
  CHECK_NUM(h.kernel_info_offset, src.kernel_info_offset);
  // written by the loader
  CHECK_NUM(h.type_of_loader, 0xff);
  CHECK_NUM(h.loadflags, 0x01 | 0x80);  // LOADED_HIGH | CAN_USE_HEAP
  CHECK_NUM(h.code32_start, load);
  CHECK_NUM(h.ramdisk_image, initrd_at);
  CHECK_NUM(h.ramdisk_size, initrd.size());
  CHECK_NUM(h.heap_end_ptr, 0xfe00);
  CHECK_NUM(h.ext_loader_ver, 0);
  CHECK_NUM(h.ext_loader_type, 0);
  CHECK_NUM(h.cmd_line_ptr, 0x20000);

  BOOST_CHECK(std::all_of(raw + 0x26c, raw + 0x2d0, [](uint8_t b) { return b == 0; }));
  check_e820(params, kMap64M);
  BOOST_CHECK(std::all_of(raw + 0xcd0, raw + 0x1000, [](uint8_t b) { return b == 0; }));
}

BOOST_AUTO_TEST_CASE(linux_setup_sects_zero_means_four) {
  BzSpec spec;
  spec.setup_sects = 0;
  const Image img = build_bzimage(spec);
  vmm::GuestMemory mem(kGuest);
  vmm::load_linux(mem, inputs(img));
  check_guest_bytes(mem, spec.pref_address, Image(img.begin() + 5 * 512, img.end()));
}

BOOST_AUTO_TEST_CASE(linux_more_setup_sectors) {
  BzSpec spec;
  spec.setup_sects = 12;
  const Image img = build_bzimage(spec);
  vmm::GuestMemory mem(kGuest);
  vmm::load_linux(mem, inputs(img));
  check_guest_bytes(mem, spec.pref_address, Image(img.begin() + 13 * 512, img.end()));
}

BOOST_AUTO_TEST_CASE(linux_low_pref_address_loads_at_1m) {
  for (uint64_t pref : {uint64_t{0}, uint64_t{0x10000}}) {
    BzSpec spec;
    spec.pref_address = pref;
    vmm::GuestMemory mem(kGuest);
    const vmm::BootPlan plan = vmm::load_linux(mem, inputs(build_bzimage(spec)));
    CHECK_NUM(plan.entry, 0x100200);
    CHECK_NUM(plan.kernel_start, 0x100000);
    CHECK_NUM(mem.read_obj<bp::LinuxBootParams>(layout::kZeroPage).hdr.code32_start, 0x100000);
  }
}

BOOST_AUTO_TEST_CASE(linux_initrd_respects_initrd_addr_max) {
  BzSpec spec;
  spec.initrd_addr_max = 0x2ffffff;  // last byte at 48 MiB - 1
  vmm::GuestMemory mem(kGuest);
  const Image initrd = pattern(0x2345, 1);
  const vmm::BootPlan plan = vmm::load_linux(mem, inputs(build_bzimage(spec), "", initrd));
  CHECK_NUM(plan.initrd_start, top_placement(0x3000000, initrd.size()));
  const auto params = mem.read_obj<bp::LinuxBootParams>(layout::kZeroPage);
  CHECK_NUM(params.hdr.ramdisk_image, plan.initrd_start);
  CHECK_NUM(params.hdr.ramdisk_size, initrd.size());
  check_guest_bytes(mem, plan.initrd_start, initrd);
}

BOOST_AUTO_TEST_CASE(linux_big_guest_e820) {
  vmm::GuestMemory mem(kBigGuest);
  const Image initrd = pattern(0x1000, 1);
  const vmm::BootPlan plan = vmm::load_linux(mem, inputs(build_bzimage(), "", initrd));
  CHECK_NUM(plan.initrd_start, top_placement(0x38000000, initrd.size()));
  check_e820(mem.read_obj<bp::LinuxBootParams>(layout::kZeroPage), kMap5G);
}

BOOST_AUTO_TEST_CASE(linux_header_length_from_jump) {
  BzSpec spec;
  spec.jump_disp = kJumpHeader212;  // a 2.12 header: ends before kernel_info_offset
  const Image img = build_bzimage(spec);
  vmm::GuestMemory mem(kGuest);
  vmm::load_linux(mem, inputs(img));
  const auto params = mem.read_obj<bp::LinuxBootParams>(layout::kZeroPage);
  CHECK_NUM(params.hdr.handover_offset, image_header(img).handover_offset);
  CHECK_NUM(params.hdr.kernel_info_offset, 0);  // not part of this kernel's header
  spec.jump_disp = 0x10;
  CHECK_ERRC(vmm::load_linux(mem, inputs(build_bzimage(spec))), Errc::bzimage_bad_header);
}

BOOST_AUTO_TEST_CASE(linux_truncated) {
  const BzSpec spec;
  const Image img = build_bzimage(spec);
  vmm::GuestMemory mem(kGuest);
  for (size_t len : {size_t{0}, size_t{0x100}, size_t{0x1f1 + 0x10}, size_t{0x26b}, size_t{0x400},
                     size_t(setup_size(spec)), size_t(setup_size(spec) + 0x10),
                     img.size() - 16}) {
    BOOST_TEST_CONTEXT("cut at " << len) {
      CHECK_ERRC(vmm::load_linux(mem, inputs(cut(img, len))), Errc::image_truncated);
    }
  }
}

BOOST_AUTO_TEST_CASE(linux_bad_headers) {
  vmm::GuestMemory mem(kGuest);
  auto with = [](size_t field, auto value) {
    Image img = build_bzimage();
    put(img, kSetupHeaderAt + field, value);
    return img;
  };
  using H = bp::LinuxSetupHeader;
  CHECK_ERRC(vmm::load_linux(mem, inputs(with(offsetof(H, boot_flag), uint16_t{0x55aa}))),
             Errc::bzimage_bad_header);
  CHECK_ERRC(vmm::load_linux(mem, inputs(with(offsetof(H, header), uint32_t{0x53726449}))),
             Errc::bzimage_bad_header);
  CHECK_ERRC(vmm::load_linux(mem, inputs(with(offsetof(H, version), uint16_t{0x020b}))),
             Errc::bzimage_too_old);
  CHECK_ERRC(vmm::load_linux(mem, inputs(with(offsetof(H, version), uint16_t{0x0100}))),
             Errc::bzimage_too_old);
  CHECK_ERRC(vmm::load_linux(mem, inputs(with(offsetof(H, xloadflags), uint16_t{0}))),
             Errc::bzimage_not_64bit);
  CHECK_ERRC(vmm::load_linux(mem, inputs(with(offsetof(H, loadflags), uint8_t{0}))),
             Errc::bzimage_not_64bit);
  CHECK_ERRC(vmm::load_linux(mem, inputs(with(offsetof(H, syssize), uint32_t{0x1000}))),
             Errc::image_truncated);
}

BOOST_AUTO_TEST_CASE(linux_size_limits) {
  vmm::GuestMemory mem(kGuest);
  BzSpec spec;
  spec.cmdline_size = 16;
  const Image small_cmdline = build_bzimage(spec);
  BOOST_CHECK_NO_THROW(vmm::load_linux(mem, inputs(small_cmdline, std::string(16, 'c'))));
  CHECK_ERRC(vmm::load_linux(mem, inputs(small_cmdline, std::string(17, 'c'))),
             Errc::cmdline_too_long);
  BzSpec roomy;
  roomy.cmdline_size = 0x10000;  // the kernel allows more than our buffer holds
  CHECK_ERRC(vmm::load_linux(mem, inputs(build_bzimage(roomy), std::string(layout::kCmdlineMax, 'c'))),
             Errc::cmdline_too_long);

  BzSpec huge;
  huge.init_size = 0x4000000;  // 64 MiB from 16 MiB
  CHECK_ERRC(vmm::load_linux(mem, inputs(build_bzimage(huge))), Errc::image_too_large);
  BzSpec far;
  far.pref_address = 0x100000000;
  CHECK_ERRC(vmm::load_linux(mem, inputs(build_bzimage(far))), Errc::image_too_large);

  vmm::GuestMemory small(8 * kMiB);
  BzSpec low;
  low.pref_address = 0;
  low.init_size = 0x100000;
  CHECK_ERRC(vmm::load_linux(small, inputs(build_bzimage(low), "", Image(7 * kMiB))),
             Errc::initrd_too_large);
  BOOST_CHECK_NO_THROW(vmm::load_linux(small, inputs(build_bzimage(low), "", Image(6 * kMiB))));
}

BOOST_AUTO_TEST_CASE(refused_images_leave_guest_memory_untouched) {
  vmm::GuestMemory mem(kGuest);
  Image bad = build_elf({}).bytes;
  put<uint64_t>(bad, build_elf({}).load_ph + offsetof(Elf64_Phdr, p_filesz), 0x10000);
  CHECK_ERRC(vmm::load_pvh(mem, inputs(bad, "abc", pattern(0x1000, 1))), Errc::image_corrupt);
  CHECK_ERRC(vmm::load_pvh(mem, inputs(build_elf({}).bytes, "abc", Image(kGuest))),
             Errc::initrd_too_large);
  check_guest_zero(mem, 0, 4 * kMiB);
}

// ======================================================= robustness sweep ==

namespace {

// Runs every entry point on `kernel`; only vmm::Error may come out.
void try_all(vmm::GuestMemory& mem, std::span<const uint8_t> kernel, const Image& initrd,
             int& unexpected) {
  using Loader = vmm::BootPlan (*)(vmm::GuestMemory&, const vmm::BootInputs&);
  for (Loader load : {&vmm::load_kernel, &vmm::load_pvh, &vmm::load_multiboot, &vmm::load_linux}) {
    try {
      load(mem, {kernel, "console=ttyS0", initrd});
    } catch (const vmm::Error&) {
    } catch (const std::exception& e) {
      ++unexpected;
      BOOST_TEST_MESSAGE("unexpected exception: " << e.what());
    } catch (...) {
      ++unexpected;
    }
  }
}

void sweep(const Image& img) {
  vmm::GuestMemory mem(kGuest);
  const Image initrd = pattern(0x1000, 3);
  int unexpected = 0;
  const size_t step = std::max<size_t>(1, img.size() / 2048);
  for (size_t len = 0; len <= img.size(); len += step)
    try_all(mem, std::span<const uint8_t>(img.data(), len), initrd, unexpected);
  Image mutated = img;
  for (size_t pos = 0; pos < img.size(); pos += step) {
    const uint8_t orig = img[pos];
    for (uint8_t v : {uint8_t{0}, uint8_t{0xff}, uint8_t(orig ^ 0x80), uint8_t(orig + 1)}) {
      mutated[pos] = v;
      try_all(mem, mutated, initrd, unexpected);
    }
    mutated[pos] = orig;
  }
  BOOST_CHECK_EQUAL(unexpected, 0);
}

}  // namespace

BOOST_AUTO_TEST_CASE(sweep_truncations_and_byte_flips) {
  ElfSpec sectioned;
  sectioned.note_as_section = true;
  ElfSpec elf32;
  elf32.is64 = false;
  AoutSpec aout;
  aout.prefix = 0x40;
  aout.explicit_end = true;
  aout.trailer = 0x20;
  const std::vector<std::pair<const char*, Image>> images = {
      {"pvh elf64", build_elf({}).bytes},
      {"pvh elf32", build_elf(elf32).bytes},
      {"pvh note section", build_elf(sectioned).bytes},
      {"multiboot a.out", build_aout({}).bytes},
      {"multiboot a.out offset", build_aout(aout).bytes},
      {"multiboot elf32", build_elf(multiboot_elf_spec(false)).bytes},
      {"multiboot elf64", build_elf(multiboot_elf_spec(true)).bytes},
      {"bzImage", build_bzimage()},
  };
  for (const auto& [name, img] : images) {
    BOOST_TEST_CONTEXT(name) {
      vmm::GuestMemory mem(kGuest);
      BOOST_CHECK_NO_THROW(vmm::load_kernel(mem, inputs(img)));  // the original is valid
      sweep(img);
    }
  }
}
