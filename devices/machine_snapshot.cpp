#include "devices/machine_snapshot.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <type_traits>

#include "devices/machine.hpp"
#include "devices/le_bytes.hpp"
#include "vmm-core/error.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::devices::snapshot {

using vmm::Errc;
using vmm::Error;

namespace {

constexpr char kMagic[8] = {'A', 'P', 'I', 'A', 'R', 'Y', 'S', 'N'};
constexpr char kEndMagic[8] = {'A', 'P', 'I', 'A', 'R', 'Y', 'N', 'D'};
constexpr uint64_t kEndOfRuns = ~0ull;
constexpr size_t kPreambleBytes = 16;


template <class T>
std::string raw(const T& v) {
  static_assert(std::is_trivially_copyable_v<T>);
  return std::string(reinterpret_cast<const char*>(&v), sizeof v);
}
template <class T>
void from_raw(const std::string& bytes, T& out, const std::string& what) {
  static_assert(std::is_trivially_copyable_v<T>);
  if (bytes.size() != sizeof out)
    throw Error(Errc::snapshot_corrupt, what + " has " + std::to_string(bytes.size()) + " bytes, expected " +
                                            std::to_string(sizeof out));
  std::memcpy(&out, bytes.data(), sizeof out);
}

// A file written through one CRC: every byte written is checksummed.
class Writer {
 public:
  Writer(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd_ < 0) fail();
  }
  ~Writer() {
    if (fd_ >= 0) ::close(fd_);
  }
  void write(const void* data, size_t n) {
    crc_ = crc32_z(crc_, static_cast<const Bytef*>(data), n);
    const auto* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail();
      p += w;
      n -= static_cast<size_t>(w);
      bytes_ += static_cast<uint64_t>(w);
    }
  }
  void write(const std::string& s) { write(s.data(), s.size()); }
  void sync_and_close() {
    if (::fsync(fd_) != 0) fail();
    if (::close(fd_) != 0) {
      fd_ = -1;
      fail();
    }
    fd_ = -1;
  }
  uLong crc() const noexcept { return crc_; }
  uint64_t bytes() const noexcept { return bytes_; }

 private:
  [[noreturn]] void fail() { throw Error(Errc::file_unwritable, path_ + ": " + std::strerror(errno)); }
  std::string path_;
  int fd_ = -1;
  uLong crc_ = crc32_z(0, nullptr, 0);
  uint64_t bytes_ = 0;
};

// Reads a file through one CRC; a short read is snapshot_truncated.
class Reader {
 public:
  explicit Reader(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0)
      throw Error(errno == ENOENT ? Errc::file_not_found : Errc::file_unreadable, path + ": " + std::strerror(errno));
  }
  ~Reader() { ::close(fd_); }
  uint64_t file_size() const {
    struct stat st {};
    return ::fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  }
  void read(void* out, size_t n, const char* what) {
    auto* p = static_cast<uint8_t*>(out);
    size_t left = n;
    while (left > 0) {
      ssize_t r = ::read(fd_, p, left);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) throw Error(Errc::file_unreadable, path_ + ": " + std::strerror(errno));
      if (r == 0)
        throw Error(Errc::snapshot_truncated, path_ + ": ends at byte " + std::to_string(offset_) + " inside the " + what);
      p += r;
      left -= static_cast<size_t>(r);
      offset_ += static_cast<uint64_t>(r);
    }
    crc_ = crc32_z(crc_, static_cast<const Bytef*>(out), n);
  }
  bool at_end() {
    uint8_t b;
    ssize_t r;
    do r = ::read(fd_, &b, 1);
    while (r < 0 && errno == EINTR);
    return r == 0;
  }
  uLong crc() const noexcept { return crc_; }
  uint64_t offset() const noexcept { return offset_; }

 private:
  std::string path_;
  int fd_ = -1;
  uLong crc_ = crc32_z(0, nullptr, 0);
  uint64_t offset_ = 0;
};

void check_board(const v1::MachineSnapshot& s, const std::string& path) {
  if (s.board() != board_name())
    throw Error(Errc::snapshot_board, path + ": made for board '" + s.board() + "', this is '" + board_name() + "'");
}

// Reads the preamble and header from `in` (checking magic, version, board).
v1::MachineSnapshot read_preamble_and_header(Reader& in, const std::string& path) {
  uint8_t pre[kPreambleBytes];
  in.read(pre, sizeof pre, "preamble");
  if (std::memcmp(pre, kMagic, sizeof kMagic) != 0)
    throw Error(Errc::snapshot_corrupt, path + ": not an Apiary snapshot (bad magic)");
  const uint32_t version = static_cast<uint32_t>(get_le(pre + 8, 4));
  if (version != kFormatVersion)
    throw Error(Errc::snapshot_version, path + ": format version " + std::to_string(version) + ", this Apiary reads " +
                                            std::to_string(kFormatVersion));
  const uint32_t header_len = static_cast<uint32_t>(get_le(pre + 12, 4));
  if (header_len == 0 || header_len > kMaxHeaderBytes)
    throw Error(Errc::snapshot_corrupt, path + ": header length " + std::to_string(header_len));
  if (in.offset() + header_len > in.file_size())  // before allocating for it
    throw Error(Errc::snapshot_truncated, path + ": the header of " + std::to_string(header_len) +
                                              " bytes does not fit in the file (" + std::to_string(in.file_size()) +
                                              " bytes)");
  std::string header(header_len, '\0');
  in.read(header.data(), header.size(), "header");
  v1::MachineSnapshot s;
  if (!s.ParseFromString(header)) throw Error(Errc::snapshot_corrupt, path + ": the header does not parse");
  check_board(s, path);
  const auto& m = s.machine();
  if (m.vcpus() == 0 || static_cast<uint32_t>(s.vcpus_size()) != m.vcpus() || m.memory_bytes() == 0 ||
      m.memory_bytes() % (1ull << 20) != 0 || m.kernel().empty())
    throw Error(Errc::snapshot_corrupt, path + ": the header's machine is inconsistent (" + std::to_string(m.vcpus()) +
                                            " vCPUs, " + std::to_string(s.vcpus_size()) + " vCPU states, " +
                                            std::to_string(m.memory_bytes()) + " bytes of RAM)");
  return s;
}

}  // namespace

// Which pages of [host, host + bytes) the guest may have written: present in
// RAM or swapped out, from /proc/self/pagemap (bits 63 and 62). A page never
// touched is neither and reads as zero, so it need not be read at all (each
// first touch costs ~12 us here). mincore() would not do: it calls a
// swapped-out anonymous page "not resident", and its data would be lost.
// When pagemap cannot be read, every page is a candidate.
std::vector<bool> touched_pages(const uint8_t* host, uint64_t bytes) {
  const uint64_t pages = bytes / kPageSize;
  std::vector<bool> out(pages, true);
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return out;
  constexpr uint64_t kPresent = 1ull << 63, kSwapped = 1ull << 62;
  std::vector<uint64_t> entries(4096);
  const uint64_t first = reinterpret_cast<uintptr_t>(host) / kPageSize;
  for (uint64_t p = 0; p < pages;) {
    const uint64_t n = std::min<uint64_t>(entries.size(), pages - p);
    const ssize_t r = ::pread(fd, entries.data(), n * sizeof(uint64_t), static_cast<off_t>((first + p) * 8));
    if (r != static_cast<ssize_t>(n * sizeof(uint64_t))) break;  // the rest stays "maybe written"
    for (uint64_t i = 0; i < n; ++i) out[p + i] = (entries[i] & (kPresent | kSwapped)) != 0;
    p += n;
  }
  ::close(fd);
  return out;
}

bool page_is_zero(const uint8_t* p) {
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < kPageSize / sizeof(uint64_t); ++i)
    if (w[i]) return false;
  return true;
}

std::string board_name() { return "apiary-pc/" + std::to_string(layout::kBoardRevision) + "/x86_64-kvm"; }

SaveStats write_file(const std::string& path, const v1::MachineSnapshot& s, const vmm::GuestMemory& memory) {
  const std::string header = s.SerializeAsString();
  if (header.size() > kMaxHeaderBytes)
    throw Error(Errc::snapshot_unsupported, "the state is " + std::to_string(header.size()) + " bytes, above the " +
                                                std::to_string(kMaxHeaderBytes) + " a header may hold");
  const std::string tmp = path + ".partial";
  SaveStats stats;
  try {
    Writer w(tmp);
    std::string pre(kMagic, sizeof kMagic);
    put_le(pre, kFormatVersion, 4);
    put_le(pre, header.size(), 4);
    w.write(pre);
    w.write(header);
    for (const auto& region : memory.regions()) {
      const uint64_t pages = region.size / kPageSize;
      const std::vector<bool> touched = touched_pages(region.host, region.size);
      uint64_t run_start = 0, run_len = 0;
      auto flush = [&] {
        if (!run_len) return;
        std::string rec;
        put_le(rec, region.gpa + run_start * kPageSize, 8);
        put_le(rec, run_len * kPageSize, 8);
        w.write(rec);
        w.write(region.host + run_start * kPageSize, run_len * kPageSize);
        stats.pages_written += run_len;
        run_len = 0;
      };
      for (uint64_t p = 0; p < pages; ++p) {
        const bool keep = touched[p] && !page_is_zero(region.host + p * kPageSize);
        if (!keep) {
          flush();
          ++stats.pages_skipped;
          continue;
        }
        if (!run_len) run_start = p;
        ++run_len;
      }
      flush();
    }
    std::string end;
    put_le(end, kEndOfRuns, 8);
    put_le(end, 0, 8);
    put_le(end, stats.pages_written, 8);
    w.write(end);
    std::string trailer;
    put_le(trailer, static_cast<uint32_t>(w.crc()), 4);
    trailer.append(kEndMagic, sizeof kEndMagic);
    w.write(trailer);
    stats.file_bytes = w.bytes();
    w.sync_and_close();
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw Error(Errc::file_unwritable, path + ": " + std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  return stats;
}

v1::MachineSnapshot capture_config(Machine& machine, const std::string& instance_name) {
  const MachineConfig& cfg = machine.config();

  v1::MachineSnapshot s;
  s.set_board(board_name());
  s.set_instance(instance_name);
  s.set_created_unix_ms(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count()));
  auto& m = *s.mutable_machine();
  m.set_vcpus(cfg.vcpus);
  m.set_memory_bytes(machine.memory().size());
  m.set_cmdline(cfg.cmdline);
  m.set_kernel(std::string(cfg.kernel.begin(), cfg.kernel.end()));
  m.set_initrd(std::string(cfg.initrd.begin(), cfg.initrd.end()));
  for (const auto& d : cfg.disks) {
    auto* out = m.add_disks();
    out->set_id(d.id);
    out->set_path(d.path);
    out->set_read_only(d.read_only);
    struct stat st {};
    if (::stat(d.path.c_str(), &st) == 0) out->set_size_bytes(static_cast<uint64_t>(st.st_size));
  }
  for (const auto& n : cfg.nics) m.add_nic_macs(std::string(n.mac.begin(), n.mac.end()));
  m.set_rng(cfg.rng);
  m.set_pc_testdev(cfg.pc_testdev);
  m.set_console_history_bytes(cfg.console_history_bytes);
  return s;
}

v1::MachineSnapshot capture(Machine& machine, const std::string& instance_name) {
  vmm::kvm::Vm* vm = machine.kvm_vm();
  if (!vm) throw Error(Errc::snapshot_unsupported, "a simulated machine runs no guest and has no state to save");
  v1::MachineSnapshot s = capture_config(machine, instance_name);

  for (const auto& backend : machine.vcpus()) {
    auto* kvm_vcpu = dynamic_cast<vmm::KvmVcpuBackend*>(backend.get());
    if (!kvm_vcpu) throw Error(Errc::snapshot_unsupported, "vCPU " + std::to_string(backend->id()) + " is not a KVM vCPU");
    const vmm::kvm::VcpuState st = kvm_vcpu->raw().capture_state();
    auto* v = s.add_vcpus();
    v->set_id(backend->id());
    v->set_regs(raw(st.regs));
    v->set_sregs(raw(st.sregs));
    v->set_xsave(std::string(st.xsave.begin(), st.xsave.end()));
    v->set_xcrs(raw(st.xcrs));
    v->set_lapic(raw(st.lapic));
    v->set_msrs(std::string(reinterpret_cast<const char*>(st.msrs.data()), st.msrs.size() * sizeof(kvm_msr_entry)));
    v->set_events(raw(st.events));
    v->set_mp_state(raw(st.mp_state));
    v->set_debugregs(raw(st.debugregs));
  }
  const vmm::kvm::VmState vs = vm->capture_state();
  auto& out_vm = *s.mutable_vm();
  out_vm.set_pic_master(raw(vs.pic_master));
  out_vm.set_pic_slave(raw(vs.pic_slave));
  out_vm.set_ioapic(raw(vs.ioapic));
  out_vm.set_pit(raw(vs.pit));
  out_vm.set_clock(raw(vs.clock));
  for (Device* d : machine.devices()) *s.add_devices() = d->export_state();
  s.set_console_history(machine.console().history());
  return s;
}

SaveStats save(Machine& machine, const std::string& path, const std::string& instance_name) {
  const auto started = std::chrono::steady_clock::now();
  const v1::MachineSnapshot s = capture(machine, instance_name);
  SaveStats stats = write_file(path, s, machine.memory());
  stats.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return stats;
}

std::shared_ptr<const Header> read_header(const std::string& path) {
  Reader in(path);
  auto h = std::make_shared<Header>();
  h->path = path;
  h->state = read_preamble_and_header(in, path);
  h->memory_offset = in.offset();
  return h;
}

MachineConfig restore_config(std::shared_ptr<const Header> header) {
  const auto& m = header->state.machine();
  MachineConfig c;
  c.vcpus = m.vcpus();
  c.memory_mib = m.memory_bytes() >> 20;
  c.cmdline = m.cmdline();
  c.kernel.assign(m.kernel().begin(), m.kernel().end());
  c.initrd.assign(m.initrd().begin(), m.initrd().end());
  for (const auto& d : m.disks()) c.disks.push_back({d.id(), d.path(), d.read_only()});
  for (const auto& mac : m.nic_macs()) {
    MachineConfig::Nic n;
    if (mac.size() != n.mac.size()) throw Error(Errc::snapshot_corrupt, header->path + ": a NIC's MAC is not 6 bytes");
    std::memcpy(n.mac.data(), mac.data(), n.mac.size());
    c.nics.push_back(n);
  }
  c.rng = m.rng();
  c.pc_testdev = m.pc_testdev();
  if (m.console_history_bytes()) c.console_history_bytes = m.console_history_bytes();
  c.restore = std::move(header);
  return c;
}

void read_memory(const Header& header, vmm::GuestMemory& mem) {
  const std::string& path = header.path;
  if (header.state.machine().memory_bytes() != mem.size())
    throw Error(Errc::snapshot_board, path + ": saved with " + std::to_string(header.state.machine().memory_bytes()) +
                                          " bytes of RAM, this machine has " + std::to_string(mem.size()));
  // Memory, read straight into guest RAM, and the checksum over the whole
  // file (the header is read again for it: it is small).
  Reader in(path);
  read_preamble_and_header(in, path);
  uint64_t pages = 0;
  for (;;) {
    uint8_t rec[16];
    in.read(rec, sizeof rec, "memory");
    const uint64_t gpa = get_le(rec, 8), len = get_le(rec + 8, 8);
    if (gpa == kEndOfRuns && len == 0) break;
    uint8_t* host = (len && len % kPageSize == 0 && gpa % kPageSize == 0) ? mem.host_range(gpa, len) : nullptr;
    if (!host)
      throw Error(Errc::snapshot_corrupt, path + ": a memory run [" + std::to_string(gpa) + ", +" + std::to_string(len) +
                                              ") is not whole pages of guest RAM");
    in.read(host, len, "memory");
    pages += len / kPageSize;
  }
  uint8_t count[8];
  in.read(count, sizeof count, "trailer");
  const uLong crc = in.crc();
  uint8_t trailer[12];
  in.read(trailer, sizeof trailer, "trailer");
  if (std::memcmp(trailer + 4, kEndMagic, sizeof kEndMagic) != 0)
    throw Error(Errc::snapshot_corrupt, path + ": bad end marker");
  if (get_le(trailer, 4) != (crc & 0xffffffffu))
    throw Error(Errc::snapshot_corrupt, path + ": checksum mismatch (the file was changed or damaged)");
  if (get_le(count, 8) != pages)
    throw Error(Errc::snapshot_corrupt, path + ": " + std::to_string(pages) + " pages read, the trailer says " +
                                            std::to_string(get_le(count, 8)));
  if (!in.at_end()) throw Error(Errc::snapshot_corrupt, path + ": bytes after the trailer");

}

void load_into(Machine& machine, const Header& header) {
  check_fits(machine, header.state, header.path);
  read_memory(header, machine.memory());
  apply_state(machine, header.state, header.path);
}

void check_fits(Machine& machine, const v1::MachineSnapshot& s, const std::string& path) {
  if (!machine.kvm_vm())
    throw Error(Errc::snapshot_unsupported, "a simulated machine cannot be restored from a snapshot");
  check_board(s, path);
  if (s.machine().memory_bytes() != machine.memory().size() || s.machine().vcpus() != machine.vcpus().size())
    throw Error(Errc::snapshot_board, path + ": saved with " + std::to_string(s.machine().vcpus()) + " vCPUs and " +
                                          std::to_string(s.machine().memory_bytes()) + " bytes of RAM");
}

void apply_state(Machine& machine, const v1::MachineSnapshot& s, const std::string& path) {
  check_fits(machine, s, path);
  vmm::kvm::Vm* vm = machine.kvm_vm();

  // The VM-wide devices first (vCPU LAPICs and device lines refer to them).
  vmm::kvm::VmState vs;
  from_raw(s.vm().pic_master(), vs.pic_master, "PIC master state");
  from_raw(s.vm().pic_slave(), vs.pic_slave, "PIC slave state");
  from_raw(s.vm().ioapic(), vs.ioapic, "IOAPIC state");
  from_raw(s.vm().pit(), vs.pit, "PIT state");
  from_raw(s.vm().clock(), vs.clock, "clock state");
  vm->restore_state(vs);

  std::vector<bool> seen(machine.vcpus().size(), false);
  for (const auto& v : s.vcpus()) {
    if (v.id() >= machine.vcpus().size() || seen[v.id()])
      throw Error(Errc::snapshot_corrupt, path + ": vCPU id " + std::to_string(v.id()) + " out of range or repeated");
    seen[v.id()] = true;
    auto* kvm_vcpu = dynamic_cast<vmm::KvmVcpuBackend*>(machine.vcpus()[v.id()].get());
    if (!kvm_vcpu) throw Error(Errc::snapshot_unsupported, "vCPU " + std::to_string(v.id()) + " is not a KVM vCPU");
    const std::string who = "vCPU " + std::to_string(v.id()) + " ";
    vmm::kvm::VcpuState st;
    from_raw(v.regs(), st.regs, who + "regs");
    from_raw(v.sregs(), st.sregs, who + "sregs");
    if (v.xsave().size() != st.xsave.size()) throw Error(Errc::snapshot_corrupt, who + "xsave: wrong size");
    std::memcpy(st.xsave.data(), v.xsave().data(), st.xsave.size());
    from_raw(v.xcrs(), st.xcrs, who + "xcrs");
    from_raw(v.lapic(), st.lapic, who + "lapic");
    if (v.msrs().size() % sizeof(kvm_msr_entry)) throw Error(Errc::snapshot_corrupt, who + "MSRs: ragged");
    st.msrs.resize(v.msrs().size() / sizeof(kvm_msr_entry));
    std::memcpy(st.msrs.data(), v.msrs().data(), v.msrs().size());
    from_raw(v.events(), st.events, who + "events");
    from_raw(v.mp_state(), st.mp_state, who + "MP state");
    from_raw(v.debugregs(), st.debugregs, who + "debug registers");
    try {
      kvm_vcpu->raw().restore_state(st);
    } catch (const Error& e) {
      throw Error(Errc::snapshot_corrupt, path + ": " + who + "refused by KVM: " + e.what());
    }
  }

  std::map<std::string, const v1::DeviceState*> by_name;
  for (const auto& d : s.devices())
    if (!by_name.emplace(d.device(), &d).second)
      throw Error(Errc::snapshot_corrupt, path + ": two states for device " + d.device());
  for (Device* d : machine.devices()) {
    auto it = by_name.find(d->name());
    if (it == by_name.end()) throw Error(Errc::snapshot_board, path + ": no state for device " + d->name());
    d->import_state(*it->second);
    by_name.erase(it);
  }
  if (!by_name.empty())
    throw Error(Errc::snapshot_board, path + ": state for a device this machine lacks: " + by_name.begin()->first);
  const std::string& history = s.console_history();
  machine.console().write(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(history.data()), history.size()));
}

}  // namespace apiary::devices::snapshot
