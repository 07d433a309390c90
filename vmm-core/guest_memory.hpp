// Guest RAM: anonymous host mappings laid out around the 32-bit MMIO hole,
// with bounds-checked accessors.
//
// Loaders and devices only ever touch guest memory through these accessors
// (or a pointer obtained from host_range(), which checks the whole range
// first), so a hostile guest address or a malformed image can at worst
// produce Errc::guest_address_out_of_range, never a host fault.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

#include "vmm-core/error.hpp"

namespace apiary::vmm {

class GuestMemory {
 public:
  struct Region {
    uint64_t gpa;    // guest-physical start
    uint64_t size;   // bytes
    uint8_t* host;   // host mapping of the whole region
  };

  // Maps `bytes` of anonymous RAM: [0, min(bytes, hole)) and, for the rest,
  // [4 GiB, ...). Throws Errc::host_out_of_memory or invalid_argument.
  explicit GuestMemory(uint64_t bytes);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  const std::vector<Region>& regions() const noexcept { return regions_; }
  uint64_t size() const noexcept { return size_; }
  // Highest RAM address + 1 below the MMIO hole.
  uint64_t low_end() const noexcept { return regions_.front().size; }

  // True iff [gpa, gpa+len) lies within a single RAM region.
  bool contains(uint64_t gpa, uint64_t len) const noexcept;
  // Host pointer for [gpa, gpa+len), or nullptr when out of range.
  uint8_t* host_range(uint64_t gpa, uint64_t len) const noexcept;

  // Bounds-checked copies; throw Errc::guest_address_out_of_range.
  void write(uint64_t gpa, std::span<const uint8_t> bytes);
  void write(uint64_t gpa, std::string_view text);  // no terminator
  void read(uint64_t gpa, std::span<uint8_t> out) const;
  void fill(uint64_t gpa, uint64_t len, uint8_t value);
  // Returns every page to zero by dropping it (MADV_DONTNEED): no host RAM
  // is touched, unlike a memset. Used for reboot.
  void zero_all();

  template <class T>
  void write_obj(uint64_t gpa, const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    write(gpa, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(&v), sizeof v));
  }
  template <class T>
  T read_obj(uint64_t gpa) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T v;
    read(gpa, std::span<uint8_t>(reinterpret_cast<uint8_t*>(&v), sizeof v));
    return v;
  }

 private:
  uint8_t* checked(uint64_t gpa, uint64_t len) const;
  std::vector<Region> regions_;
  uint64_t size_ = 0;
};

}  // namespace apiary::vmm
