// What the three kernel loaders share: the guest memory map they all report,
// protocol detection and dispatch (load_kernel), reading image files, and the
// range-checked helpers from loader_internal.hpp (image slicing, kernel
// placement rules, command line and initrd placement).
//
// Keeping placement policy here means every protocol puts the command line at
// the same address and the initrd in the same place, and refuses the same
// inputs with the same Errc.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <elf.h>

#include "vmm-core/boot.hpp"
#include "vmm-core/boot_protocols.hpp"
#include "vmm-core/layout.hpp"
#include "vmm-core/loader_internal.hpp"

namespace apiary::vmm {

// ------------------------------------------------------ loader helpers --
namespace loader {

Bytes file_range(Bytes image, uint64_t offset, uint64_t len, std::string_view what) {
  const uint64_t size = image.size();
  if (offset > UINT64_MAX - len)
    throw Error(Errc::image_corrupt, std::string(what) + " [" + hex(offset) + ", +" + hex(len) +
                                         ") wraps around the address space");
  if (offset + len > size)
    throw Error(Errc::image_truncated, std::string(what) + " [" + hex(offset) + ", +" + hex(len) +
                                           ") runs past the end of the " + hex(size) +
                                           "-byte image");
  return image.subspan(offset, len);
}

std::optional<uint64_t> align_up(uint64_t x, uint64_t align) {
  const uint64_t mask = align - 1;
  if (x > UINT64_MAX - mask) return std::nullopt;
  return (x + mask) & ~mask;
}

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}

std::vector<BootArea> boot_areas(BootProtocol protocol) {
  // x86_setup writes the GDT and one empty IDT descriptor for every boot, the
  // identity page tables only for a long-mode entry; the Machine writes the
  // ACPI tables, which lie in the reserved BIOS area the memory map reports.
  std::vector<BootArea> areas = {
      {layout::kBootGdt, layout::kBootIdt, "the boot GDT"},
      {layout::kBootIdt, layout::kBootIdt + sizeof(uint64_t), "the boot IDT"},
      {layout::kCmdline, layout::kCmdline + layout::kCmdlineMax, "the command line"},
      {layout::kAcpiTables, layout::kAcpiTables + layout::kAcpiTablesMax, "the ACPI tables"},
      {layout::kEbdaStart, layout::kHighMemory, "the reserved BIOS area"},
  };
  switch (protocol) {
    case BootProtocol::pvh:
      areas.push_back({layout::kPvhStartInfo, layout::kPvhModlist, "the PVH start info"});
      areas.push_back({layout::kPvhModlist, layout::kPvhMemmap, "the PVH module list"});
      areas.push_back({layout::kPvhMemmap, layout::kZeroPage, "the PVH memory map"});
      break;
    case BootProtocol::multiboot:
      break;  // the info block moves out of the kernel's way
    case BootProtocol::linux64:
      areas.push_back({layout::kZeroPage, layout::kZeroPage + sizeof(bootproto::LinuxBootParams),
                       "the zero page"});
      areas.push_back({layout::kPml4, layout::kPd + layout::kPdCount * kPageSize,
                       "the identity page tables"});
      break;
  }
  std::sort(areas.begin(), areas.end(),
            [](const BootArea& a, const BootArea& b) { return a.start < b.start; });
  return areas;
}

std::string overlapped_areas(uint64_t start, uint64_t end, std::span<const BootArea> areas) {
  std::string names;
  for (const BootArea& a : areas) {
    if (!(start < a.end && a.start < end)) continue;
    if (!names.empty()) names += " and ";
    names += std::string(a.what) + " [" + hex(a.start) + ", " + hex(a.end) + ")";
  }
  return names;
}

void check_kernel_range(const GuestMemory& mem, uint64_t start, uint64_t size,
                        std::string_view what, std::span<const BootArea> areas) {
  const std::string range = std::string(what) + " [" + hex(start) + ", +" + hex(size) + ")";
  const uint64_t low_end = mem.low_end();
  if (start > low_end || size > low_end - start)
    throw Error(Errc::image_too_large, range + " does not fit in guest RAM below " + hex(low_end));
  const std::string hit = overlapped_areas(start, start + size, areas);
  if (!hit.empty())
    throw Error(Errc::image_overlaps_boot_data,
                range + " overlaps " + hit + ", which Apiary writes for this boot");
}

void check_cmdline(std::string_view cmdline) {
  if (cmdline.size() + 1 > layout::kCmdlineMax)
    throw Error(Errc::cmdline_too_long, "command line of " + std::to_string(cmdline.size()) +
                                            " bytes exceeds the limit of " +
                                            std::to_string(layout::kCmdlineMax - 1));
  if (cmdline.find('\0') != std::string_view::npos)
    throw Error(Errc::invalid_argument, "command line contains a NUL byte");
}

void write_cstring(GuestMemory& mem, uint64_t gpa, std::string_view text) {
  mem.write(gpa, text);
  mem.fill(gpa + text.size(), 1, 0);
}

uint64_t write_cmdline(GuestMemory& mem, std::string_view cmdline) {
  check_cmdline(cmdline);
  write_cstring(mem, layout::kCmdline, cmdline);
  return layout::kCmdline;
}

namespace {
bool overlaps(uint64_t a, uint64_t a_end, uint64_t b, uint64_t b_end) {
  return a < b_end && b < a_end;
}

[[noreturn]] void no_room_for_initrd(uint64_t size, uint64_t limit) {
  throw Error(Errc::initrd_too_large, "initrd of " + hex(size) + " bytes does not fit between " +
                                          hex(layout::kHighMemory) + " and " + hex(limit) +
                                          " next to the kernel");
}
}  // namespace

uint64_t place_initrd(const GuestMemory& mem, uint64_t size, uint64_t kernel_start,
                      uint64_t kernel_end, uint64_t max_addr) {
  if (size == 0) return 0;
  kernel_start = std::max(kernel_start, layout::kHighMemory);  // low segments are no obstacle
  const uint64_t limit = std::min(mem.low_end() - 1, max_addr) + 1;  // exclusive
  if (size > limit) no_room_for_initrd(size, limit);
  uint64_t start = align_down(limit - size, kPageSize);
  if (overlaps(start, start + size, kernel_start, kernel_end)) {
    if (size > kernel_start) no_room_for_initrd(size, limit);
    start = align_down(kernel_start - size, kPageSize);
  }
  if (start < layout::kHighMemory) no_room_for_initrd(size, limit);
  return start;
}

bool has_elf_magic(Bytes image) noexcept {
  return image.size() >= SELFMAG && std::memcmp(image.data(), ELFMAG, SELFMAG) == 0;
}

bool has_bzimage_magic(Bytes image) noexcept {
  constexpr uint64_t at = __builtin_offsetof(bootproto::LinuxBootParams, hdr) +
                          __builtin_offsetof(bootproto::LinuxSetupHeader, header);
  uint32_t magic = 0;
  if (image.size() < at + sizeof magic) return false;
  std::memcpy(&magic, image.data() + at, sizeof magic);
  return magic == bootproto::kLinuxHeaderMagic;
}

}  // namespace loader

// -------------------------------------------------------- public API --

const char* to_string(BootProtocol p) noexcept {
  switch (p) {
    case BootProtocol::pvh: return "pvh";
    case BootProtocol::multiboot: return "multiboot";
    case BootProtocol::linux64: return "linux64";
  }
  return "unknown";
}

std::vector<MemoryMapEntry> memory_map(const GuestMemory& mem) {
  const uint64_t low_end = mem.low_end();
  std::vector<MemoryMapEntry> map;
  map.push_back({0, std::min(low_end, layout::kEbdaStart), kMemRam});
  map.push_back({layout::kEbdaStart, layout::kHighMemory - layout::kEbdaStart, kMemReserved});
  if (low_end > layout::kHighMemory)
    map.push_back({layout::kHighMemory, low_end - layout::kHighMemory, kMemRam});
  for (const auto& region : mem.regions())
    if (region.gpa >= layout::kMmioHoleEnd) map.push_back({region.gpa, region.size, kMemRam});
  return map;
}

namespace {

// An ELF is PVH when it carries the note; otherwise it may still be a
// multiboot kernel. When neither fits, a broken ELF reports why it is broken.
BootProtocol detect_elf(std::span<const uint8_t> image) {
  std::optional<Error> elf_error;
  try {
    const loader::ElfImage elf = loader::parse_elf(image);
    if (loader::find_pvh_entry(image, elf)) return BootProtocol::pvh;
  } catch (const Error& e) {
    elf_error = e;
  }
  if (loader::find_multiboot_magic(image)) return BootProtocol::multiboot;
  if (elf_error) throw *elf_error;
  throw Error(Errc::elf_no_pvh_note,
              "ELF image has neither a XEN_ELFNOTE_PHYS32_ENTRY note nor a multiboot header");
}

}  // namespace

BootProtocol detect_protocol(std::span<const uint8_t> image) {
  if (loader::has_elf_magic(image)) return detect_elf(image);
  if (loader::has_bzimage_magic(image)) return BootProtocol::linux64;
  if (loader::find_multiboot_magic(image)) return BootProtocol::multiboot;
  if (image.size() < SELFMAG)
    throw Error(Errc::image_truncated, "image of " + std::to_string(image.size()) +
                                           " bytes is too short to identify");
  throw Error(Errc::image_bad_magic,
              "not an ELF (PVH or multiboot), bzImage or multiboot image");
}

BootPlan load_kernel(GuestMemory& mem, const BootInputs& in) {
  switch (detect_protocol(in.kernel)) {
    case BootProtocol::pvh: return load_pvh(mem, in);
    case BootProtocol::multiboot: return load_multiboot(mem, in);
    case BootProtocol::linux64: return load_linux(mem, in);
  }
  throw Error(Errc::image_unsupported, "unknown boot protocol");
}

namespace {

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { ::close(fd_); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

[[noreturn]] void throw_file_error(const std::string& path, const char* op, int err) {
  const Errc code = err == ENOENT ? Errc::file_not_found : Errc::file_unreadable;
  throw Error(code, path + ": " + op + ": " + std::strerror(err));
}

// Large reads: a kernel comes over 9p in the nested-KVM VM, where every
// read is a round trip to QEMU.
constexpr size_t kReadChunk = 1 << 20;
// Reads past a regular file's size, and of files without one (pipes, /proc).
constexpr size_t kSpillBytes = 64 * 1024;

}  // namespace

std::vector<uint8_t> read_file(const std::string& path) {
  const int raw = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) throw_file_error(path, "open", errno);
  const Fd fd(raw);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_file_error(path, "fstat", errno);
  if (S_ISDIR(st.st_mode)) throw_file_error(path, "read", EISDIR);

  // A regular file is read straight into a buffer of its size (one
  // allocation, faulted in once, never reallocated); past that size, or for
  // anything else, reads go through a small buffer and are appended.
  std::vector<uint8_t> data;
  if (S_ISREG(st.st_mode)) data.resize(static_cast<size_t>(st.st_size));
  size_t used = 0;
  uint8_t spill[kSpillBytes];
  for (;;) {
    const bool inside = used < data.size();
    uint8_t* into = inside ? data.data() + used : spill;
    const size_t want = inside ? std::min(kReadChunk, data.size() - used) : sizeof spill;
    const ssize_t n = ::read(fd.get(), into, want);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      throw_file_error(path, "read", err);
    }
    if (n == 0) break;
    if (!inside) data.insert(data.end(), spill, spill + n);
    used += static_cast<size_t>(n);
  }
  data.resize(used);  // a file that shrank while it was read
  return data;
}

}  // namespace apiary::vmm
