#include "vmm-core/kvm.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include "vmm-core/layout.hpp"
#include "vmm-core/x86.hpp"

namespace apiary::vmm::kvm {

namespace {
constexpr int kKvmApiVersion = 12;
constexpr uint32_t kMaxCpuidEntries = 256;

// <linux/kvm.h> declares the variable-length tails of kvm_cpuid2 and kvm_msrs
// with __DECLARE_FLEX_ARRAY, whose empty struct has size 1 in C++: sizeof()
// and the offset of entries[] come out 12 instead of 8, which corrupts both
// the ioctl numbers and the layout. So these ioctls use their own 8-byte
// headers, matching the kernel ABI (the entries follow at offset 8).
struct VarHeader {
  uint32_t count;
  uint32_t padding;
};
static_assert(sizeof(VarHeader) == 8);
constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, VarHeader);
constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, VarHeader);
constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, VarHeader);
constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, VarHeader);
// kvm_msr_list's header is one u32; kvm_xsave ends in a flexible array too
// (sized 4 KiB without it, which is the layout KVM_GET_XSAVE uses).
struct MsrListHeader {
  uint32_t count;
};
constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, MsrListHeader);
struct Xsave4k {
  uint32_t region[1024];
};
static_assert(sizeof(Xsave4k) == 4096);
constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, Xsave4k);
constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, Xsave4k);
constexpr uint32_t kMaxMsrIndices = 4096;
constexpr uint32_t kMsrTscDeadline = 0x6e0;  // IA32_TSC_DEADLINE

template <class Entry>
std::vector<uint8_t> var_buffer(const Entry* entries, uint32_t n) {
  std::vector<uint8_t> buf(sizeof(VarHeader) + n * sizeof(Entry));
  VarHeader h{n, 0};
  std::memcpy(buf.data(), &h, sizeof h);
  if (entries) std::memcpy(buf.data() + sizeof h, entries, n * sizeof(Entry));
  return buf;
}

// The entry of CPUID leaf `function`, subleaf `index`, or null.
const kvm_cpuid_entry2* find_cpuid(const std::vector<kvm_cpuid_entry2>& entries, uint32_t function,
                                   uint32_t index) noexcept {
  for (const auto& e : entries)
    if (e.function == function && e.index == index) return &e;
  return nullptr;
}
}  // namespace

Fd::~Fd() {
  if (fd_ >= 0) ::close(fd_);
}

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

long checked_ioctl(int fd, unsigned long request, const char* name, unsigned long arg) {
  long r;
  do {
    r = ::ioctl(fd, request, arg);
  } while (r < 0 && errno == EINTR);
  if (r < 0) throw Error(Errc::ioctl_failed, std::string(name) + ": " + std::strerror(errno));
  return r;
}

std::string why_unusable(const std::string& path) {
  try {
    System probe(path);
    return {};
  } catch (const Error& e) {
    return e.what();
  }
}

System::System(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == ENOENT || err == ENODEV || err == ENXIO)
      throw Error(Errc::kvm_unavailable, path + ": " + std::strerror(err) +
                                             " (is the kvm module loaded? does this host allow virtualization?)");
    throw Error(Errc::kvm_permission, path + ": " + std::strerror(err) +
                                          " (run as root or add the user to the kvm group)");
  }
  fd_ = Fd(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISCHR(st.st_mode) || ::ioctl(fd, KVM_GET_API_VERSION, 0) < 0)
    throw Error(Errc::kvm_unavailable, path + " is not a KVM device");
  long version = APIARY_KVM_IOCTL(fd, KVM_GET_API_VERSION);
  if (version != kKvmApiVersion)
    throw Error(Errc::kvm_api_version, "KVM API version " + std::to_string(version) + ", need 12");
  vcpu_mmap_size_ = static_cast<size_t>(APIARY_KVM_IOCTL(fd, KVM_GET_VCPU_MMAP_SIZE));
  for (long cap : {KVM_CAP_IRQCHIP, KVM_CAP_PIT2, KVM_CAP_IMMEDIATE_EXIT, KVM_CAP_USER_MEMORY,
                   KVM_CAP_EXT_CPUID}) {
    if (check_extension(cap) <= 0)
      throw Error(Errc::kvm_capability, "KVM capability " + std::to_string(cap) + " missing");
  }
  auto buf = var_buffer<kvm_cpuid_entry2>(nullptr, kMaxCpuidEntries);
  checked_ioctl(fd, kGetSupportedCpuid, "KVM_GET_SUPPORTED_CPUID", buf.data());
  VarHeader h;
  std::memcpy(&h, buf.data(), sizeof h);
  cpuid_.resize(h.count);
  std::memcpy(cpuid_.data(), buf.data() + sizeof h, h.count * sizeof(kvm_cpuid_entry2));
  require_hardware_cpuid(cpuid_, path);

  std::vector<uint32_t> list(1 + kMaxMsrIndices);
  list[0] = kMaxMsrIndices;
  checked_ioctl(fd, kGetMsrIndexList, "KVM_GET_MSR_INDEX_LIST", list.data());
  msr_list_.assign(list.begin() + 1, list.begin() + 1 + std::min<uint32_t>(list[0], kMaxMsrIndices));
}

void require_hardware_cpuid(const std::vector<kvm_cpuid_entry2>& supported, const std::string& path) {
  const auto* features = find_cpuid(supported, x86::kCpuidFeatures, 0);
  if (!features || !(features->ecx & x86::kCpuidEcxSse3))
    throw Error(Errc::kvm_unavailable, path + ": its KVM offers no SSE3 (KVM_GET_SUPPORTED_CPUID, leaf 1): a "
                                              "software-emulated KVM, which cannot boot a stock Linux guest");
}

int System::check_extension(long cap) const {
  int r = ::ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return r < 0 ? 0 : r;
}

int System::max_vcpus() const {
  int n = check_extension(KVM_CAP_MAX_VCPUS);
  if (n <= 0) n = check_extension(KVM_CAP_NR_VCPUS);
  return n > 0 ? n : 1;
}

Vm::Vm(const System& sys) : sys_(&sys) {
  fd_ = Fd(static_cast<int>(APIARY_KVM_IOCTL(sys.fd(), KVM_CREATE_VM, 0ul)));
  APIARY_KVM_IOCTL(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(layout::kKvmTss));
  uint64_t identity = layout::kKvmIdentityMap;
  APIARY_KVM_IOCTL(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &identity);
  APIARY_KVM_IOCTL(fd_.get(), KVM_CREATE_IRQCHIP);
  kvm_pit_config pit{};
  pit.flags = KVM_PIT_SPEAKER_DUMMY;
  APIARY_KVM_IOCTL(fd_.get(), KVM_CREATE_PIT2, &pit);
}

void Vm::map_memory(const GuestMemory& mem) {
  for (const auto& r : mem.regions()) {
    kvm_userspace_memory_region region{};
    region.slot = static_cast<uint32_t>(slots_.size());
    region.guest_phys_addr = r.gpa;
    region.memory_size = r.size;
    region.userspace_addr = reinterpret_cast<uint64_t>(r.host);
    APIARY_KVM_IOCTL(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region);
    slots_.push_back(region);
  }
}

void Vm::set_dirty_logging(bool on) {
  for (auto& region : slots_) {
    region.flags = on ? KVM_MEM_LOG_DIRTY_PAGES : 0;
    APIARY_KVM_IOCTL(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region);
  }
}

std::vector<uint64_t> Vm::take_dirty_log(uint32_t slot) {
  if (slot >= slots_.size()) throw Error(Errc::invalid_argument, "no memslot " + std::to_string(slot));
  // KVM writes one bit per page, in whole longs.
  std::vector<uint64_t> bits((slots_[slot].memory_size / 4096 + 63) / 64);
  kvm_dirty_log log{};
  log.slot = slot;
  log.dirty_bitmap = bits.data();
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_DIRTY_LOG, &log);
  return bits;
}

void Vm::set_irq_line(uint32_t irq, bool level) {
  kvm_irq_level l{};
  l.irq = irq;
  l.level = level ? 1 : 0;
  APIARY_KVM_IOCTL(fd_.get(), KVM_IRQ_LINE, &l);
}

void Vm::add_irqfd(int eventfd, uint32_t gsi) {
  kvm_irqfd f{};
  f.fd = static_cast<uint32_t>(eventfd);
  f.gsi = gsi;
  APIARY_KVM_IOCTL(fd_.get(), KVM_IRQFD, &f);
}

VmState Vm::capture_state() const {
  VmState s;
  s.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
  s.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
  s.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_IRQCHIP, &s.pic_master);
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_IRQCHIP, &s.pic_slave);
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_IRQCHIP, &s.ioapic);
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_PIT2, &s.pit);
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_CLOCK, &s.clock);
  return s;
}

void Vm::restore_state(const VmState& s) {
  auto chip = [&](const kvm_irqchip& c, uint32_t id) {
    kvm_irqchip copy = c;
    copy.chip_id = id;
    APIARY_KVM_IOCTL(fd_.get(), KVM_SET_IRQCHIP, &copy);
  };
  chip(s.pic_master, KVM_IRQCHIP_PIC_MASTER);
  chip(s.pic_slave, KVM_IRQCHIP_PIC_SLAVE);
  chip(s.ioapic, KVM_IRQCHIP_IOAPIC);
  kvm_pit_state2 pit = s.pit;
  APIARY_KVM_IOCTL(fd_.get(), KVM_SET_PIT2, &pit);
  // Only the clock value is set: the flags KVM_GET_CLOCK reports (stable
  // TSC, realtime) describe the host it was read on, not a request.
  kvm_clock_data clock{};
  clock.clock = s.clock.clock;
  APIARY_KVM_IOCTL(fd_.get(), KVM_SET_CLOCK, &clock);
}

Vcpu::Vcpu(const Vm& vm, uint32_t id) : sys_(&vm.system()), id_(id) {
  fd_ = Fd(static_cast<int>(APIARY_KVM_IOCTL(vm.fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(id))));
  run_size_ = vm.system().vcpu_mmap_size();
  void* p = ::mmap(nullptr, run_size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
  if (p == MAP_FAILED)
    throw Error(Errc::ioctl_failed, std::string("mmap(kvm_run): ") + std::strerror(errno));
  run_ = static_cast<kvm_run*>(p);
}

Vcpu::~Vcpu() {
  if (run_) ::munmap(run_, run_size_);
}

int Vcpu::run() noexcept {
  return ::ioctl(fd_.get(), KVM_RUN, 0) < 0 ? -errno : 0;
}

kvm_regs Vcpu::get_regs() const {
  kvm_regs r{};
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_REGS, &r);
  return r;
}
void Vcpu::set_regs(const kvm_regs& r) { APIARY_KVM_IOCTL(fd_.get(), KVM_SET_REGS, &r); }
kvm_sregs Vcpu::get_sregs() const {
  kvm_sregs s{};
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_SREGS, &s);
  return s;
}
void Vcpu::set_sregs(const kvm_sregs& s) { APIARY_KVM_IOCTL(fd_.get(), KVM_SET_SREGS, &s); }
kvm_mp_state Vcpu::get_mp_state() const {
  kvm_mp_state m{};
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_MP_STATE, &m);
  return m;
}
void Vcpu::set_mp_state(uint32_t state) {
  kvm_mp_state m{state};
  APIARY_KVM_IOCTL(fd_.get(), KVM_SET_MP_STATE, &m);
}
void Vcpu::set_fpu(const kvm_fpu& f) { APIARY_KVM_IOCTL(fd_.get(), KVM_SET_FPU, &f); }

void Vcpu::set_cpuid(const std::vector<kvm_cpuid_entry2>& entries) {
  auto buf = var_buffer(entries.data(), static_cast<uint32_t>(entries.size()));
  checked_ioctl(fd_.get(), kSetCpuid2, "KVM_SET_CPUID2", buf.data());
  cpuid_xcr0_ = kvm::cpuid_xcr0(entries);
}

uint64_t cpuid_xcr0(const std::vector<kvm_cpuid_entry2>& entries) noexcept {
  const auto* e = find_cpuid(entries, 0xd, 0);
  return e ? e->eax | (static_cast<uint64_t>(e->edx) << 32) : 0;
}

void Vcpu::set_msrs(const std::vector<kvm_msr_entry>& msrs) {
  auto buf = var_buffer(msrs.data(), static_cast<uint32_t>(msrs.size()));
  long n = checked_ioctl(fd_.get(), kSetMsrs, "KVM_SET_MSRS", buf.data());
  if (n != static_cast<long>(msrs.size()))
    throw Error(Errc::ioctl_failed, "KVM_SET_MSRS: set " + std::to_string(n) + " of " +
                                        std::to_string(msrs.size()) + " MSRs (first refused: index " +
                                        std::to_string(msrs[static_cast<size_t>(n)].index) + ")");
}

kvm_lapic_state Vcpu::get_lapic() const {
  kvm_lapic_state l{};
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_LAPIC, &l);
  return l;
}
void Vcpu::set_lapic(const kvm_lapic_state& l) { APIARY_KVM_IOCTL(fd_.get(), KVM_SET_LAPIC, &l); }
std::vector<uint32_t> Vcpu::readable_msrs() const {
  // KVM lists every MSR it knows; which of them a vCPU has depends on its
  // CPUID. Each is probed alone (KVM_GET_MSRS stops at the first refusal).
  std::vector<uint32_t> out;
  for (uint32_t index : sys_->msr_index_list()) {
    kvm_msr_entry e{};
    e.index = index;
    auto buf = var_buffer(&e, 1);
    if (::ioctl(fd_.get(), kGetMsrs, buf.data()) == 1) out.push_back(index);
  }
  return out;
}

VcpuState Vcpu::capture_state() const {
  VcpuState s;
  s.regs = get_regs();
  s.sregs = get_sregs();
  Xsave4k xs{};
  checked_ioctl(fd_.get(), kGetXsave, "KVM_GET_XSAVE", &xs);
  std::memcpy(s.xsave.data(), &xs, sizeof xs);
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_XCRS, &s.xcrs);
  s.lapic = get_lapic();
  const std::vector<uint32_t> indices = readable_msrs();
  std::vector<kvm_msr_entry> entries(indices.size());
  for (size_t i = 0; i < indices.size(); ++i) entries[i].index = indices[i];
  auto buf = var_buffer(entries.data(), static_cast<uint32_t>(entries.size()));
  long n = checked_ioctl(fd_.get(), kGetMsrs, "KVM_GET_MSRS", buf.data());
  if (n != static_cast<long>(entries.size()))
    throw Error(Errc::ioctl_failed, "KVM_GET_MSRS: read " + std::to_string(n) + " of " +
                                        std::to_string(entries.size()) + " MSRs");
  std::memcpy(entries.data(), buf.data() + sizeof(VarHeader), entries.size() * sizeof(kvm_msr_entry));
  s.msrs = std::move(entries);
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_VCPU_EVENTS, &s.events);
  s.mp_state = get_mp_state();
  APIARY_KVM_IOCTL(fd_.get(), KVM_GET_DEBUGREGS, &s.debugregs);
  return s;
}

void Vcpu::restore_state(const VcpuState& s) {
  // The order QEMU uses, for the same reasons: sregs (EFER, APIC base)
  // before the MSRs; XCRs before XSAVE; MP state before the LAPIC; and the
  // TSC deadline again after the LAPIC, because setting the LAPIC disarms
  // its timer (a guest sleeping on it would never wake); events (a pending
  // exception or NMI) and debug registers last.
  set_regs(s.regs);
  kvm_xcrs xcrs = s.xcrs;
  APIARY_KVM_IOCTL(fd_.get(), KVM_SET_XCRS, &xcrs);
  Xsave4k xs{};
  std::memcpy(&xs, s.xsave.data(), sizeof xs);
  checked_ioctl(fd_.get(), kSetXsave, "KVM_SET_XSAVE", &xs);
  set_sregs(s.sregs);
  set_msrs(s.msrs);
  set_mp_state(s.mp_state.mp_state);
  set_lapic(s.lapic);
  for (const auto& m : s.msrs)
    if (m.index == kMsrTscDeadline) set_msrs({m});
  kvm_vcpu_events ev = s.events;
  ev.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SHADOW |
             (s.events.flags & KVM_VCPUEVENT_VALID_SMM);
  APIARY_KVM_IOCTL(fd_.get(), KVM_SET_VCPU_EVENTS, &ev);
  kvm_debugregs dr = s.debugregs;
  APIARY_KVM_IOCTL(fd_.get(), KVM_SET_DEBUGREGS, &dr);
}

void Vcpu::set_xcr0(uint64_t xcr0) {
  kvm_xcrs x{};
  x.nr_xcrs = 1;
  x.xcrs[0].xcr = 0;
  x.xcrs[0].value = xcr0;
  APIARY_KVM_IOCTL(fd_.get(), KVM_SET_XCRS, &x);
}

}  // namespace apiary::vmm::kvm
