#include "vmm-core/guest_memory.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <string>

#include "vmm-core/layout.hpp"

namespace apiary::vmm {

namespace {
// nullptr (and why in `error`) when the kernel refuses.
uint8_t* map_anonymous(uint64_t bytes, std::string& error) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p != MAP_FAILED) return static_cast<uint8_t*>(p);
  error = "mmap of " + std::to_string(bytes >> 20) + " MiB guest RAM failed: " + std::strerror(errno);
  return nullptr;
}
}  // namespace

GuestMemory::GuestMemory(uint64_t bytes, Backing backing) {
  if (bytes == 0 || bytes % 4096 != 0)
    throw Error(Errc::invalid_argument, "guest memory size must be a non-zero multiple of 4 KiB");
  const uint64_t low = bytes < layout::kMmioHoleStart ? bytes : layout::kMmioHoleStart;
  regions_.push_back({0, low, nullptr});
  if (bytes > low) regions_.push_back({layout::kMmioHoleEnd, bytes - low, nullptr});
  size_ = bytes;
  if (backing == Backing::mapped && !map()) throw Error(Errc::host_out_of_memory, map_error_);
}

bool GuestMemory::map() const noexcept {
  if (mapped()) return true;
  // noexcept: the message is built when the host is short of mappings and
  // perhaps of memory; if that (or call_once) throws, the mapping simply
  // failed, with whatever message there is.
  try {
    std::call_once(map_once_, [this] {
      for (auto& r : regions_) {
        try {
          r.host = map_anonymous(r.size, map_error_);
        } catch (...) {
          r.host = nullptr;
        }
        if (r.host) continue;
        for (auto& m : regions_)
          if (m.host) ::munmap(m.host, m.size), m.host = nullptr;
        return;
      }
      mapped_.store(true, std::memory_order_release);
    });
  } catch (...) {
  }
  return mapped();
}

const std::vector<GuestMemory::Region>& GuestMemory::regions() const {
  if (!map()) throw Error(Errc::host_out_of_memory, map_error_);
  return regions_;
}

GuestMemory::~GuestMemory() {
  for (auto& r : regions_)
    if (r.host) ::munmap(r.host, r.size);
}

bool GuestMemory::contains(uint64_t gpa, uint64_t len) const noexcept {
  return host_range(gpa, len) != nullptr;
}

uint8_t* GuestMemory::host_range(uint64_t gpa, uint64_t len) const noexcept {
  if (!map()) return nullptr;
  for (const auto& r : regions_) {
    if (gpa >= r.gpa && gpa - r.gpa <= r.size && len <= r.size - (gpa - r.gpa))
      return r.host + (gpa - r.gpa);
  }
  return nullptr;
}

uint8_t* GuestMemory::checked(uint64_t gpa, uint64_t len) const {
  uint8_t* p = host_range(gpa, len);
  if (!p) {
    if (!mapped()) throw Error(Errc::host_out_of_memory, map_error_);
    char buf[96];
    std::snprintf(buf, sizeof buf, "[%#llx, +%#llx) is not guest RAM",
                  static_cast<unsigned long long>(gpa), static_cast<unsigned long long>(len));
    throw Error(Errc::guest_address_out_of_range, buf);
  }
  return p;
}

void GuestMemory::write(uint64_t gpa, std::span<const uint8_t> bytes) {
  uint8_t* p = checked(gpa, bytes.size());
  if (!bytes.empty()) std::memcpy(p, bytes.data(), bytes.size());
  note_written(gpa, bytes.size());
}

void GuestMemory::start_write_tracking() {
  if (written_.empty()) {
    for (const auto& r : regions_) {
      const uint64_t words = (r.size / 4096 + 63) / 64;
      auto bits = std::make_unique<std::atomic<uint64_t>[]>(words);
      for (uint64_t i = 0; i < words; ++i) bits[i].store(0, std::memory_order_relaxed);
      written_.push_back(std::move(bits));
    }
  } else {
    for (size_t i = 0; i < regions_.size(); ++i) take_written(i);  // forget an earlier run's pages
  }
  tracking_.store(true, std::memory_order_release);
}

std::vector<uint64_t> GuestMemory::take_written(size_t index) {
  if (index >= written_.size()) return {};
  const uint64_t words = (regions_[index].size / 4096 + 63) / 64;
  std::vector<uint64_t> out(words);
  for (uint64_t i = 0; i < words; ++i) out[i] = written_[index][i].exchange(0, std::memory_order_acq_rel);
  return out;
}

void GuestMemory::note_written_slow(uint64_t gpa, uint64_t len) const noexcept {
  if (len == 0) return;
  for (size_t i = 0; i < regions_.size() && i < written_.size(); ++i) {
    const Region& r = regions_[i];
    if (gpa < r.gpa || gpa - r.gpa >= r.size) continue;
    const uint64_t first = (gpa - r.gpa) / 4096;
    const uint64_t last = (std::min(gpa - r.gpa + len, r.size) - 1) / 4096;
    for (uint64_t p = first; p <= last; ++p)
      written_[i][p / 64].fetch_or(1ull << (p % 64), std::memory_order_acq_rel);
    return;
  }
}

void GuestMemory::write(uint64_t gpa, std::string_view text) {
  write(gpa, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

void GuestMemory::read(uint64_t gpa, std::span<uint8_t> out) const {
  const uint8_t* p = checked(gpa, out.size());
  if (!out.empty()) std::memcpy(out.data(), p, out.size());
}

void GuestMemory::fill(uint64_t gpa, uint64_t len, uint8_t value) {
  uint8_t* p = checked(gpa, len);
  std::memset(p, value, len);
  note_written(gpa, len);
}

void GuestMemory::zero_all() {
  if (!mapped()) return;  // never mapped: every page reads as zero already
  for (auto& r : regions_) {
    if (::madvise(r.host, r.size, MADV_DONTNEED) != 0) std::memset(r.host, 0, r.size);
  }
}

}  // namespace apiary::vmm
