// Guest RAM: anonymous host mappings laid out around the 32-bit MMIO hole,
// with bounds-checked accessors.
//
// Loaders and devices only ever touch guest memory through these accessors
// (or a pointer obtained from host_range(), which checks the whole range
// first), so a hostile guest address or a malformed image can at worst
// produce Errc::guest_address_out_of_range, never a host fault.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <string>
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

  // mapped: the RAM is mapped by the constructor.
  // on_first_use: mapped by the first access that needs host memory
  // (host_range, the copies, regions()); until then the memory costs no
  // mapping and no system call. For simulated machines, whose RAM no guest
  // code touches: a node process with a million of them would otherwise
  // hold a million mappings, and unmapping some of them splits the rest
  // past the kernel's limit on mappings per process (vm.max_map_count,
  // 65,530 by default), after which every mmap fails, the allocator's too.
  enum class Backing { mapped, on_first_use };

  // Maps `bytes` of anonymous RAM: [0, min(bytes, hole)) and, for the rest,
  // [4 GiB, ...). Throws Errc::host_out_of_memory or invalid_argument.
  explicit GuestMemory(uint64_t bytes, Backing backing = Backing::mapped);
  ~GuestMemory();
  GuestMemory(const GuestMemory&) = delete;
  GuestMemory& operator=(const GuestMemory&) = delete;

  // Maps on_first_use memory first (throws Errc::host_out_of_memory when
  // that fails).
  const std::vector<Region>& regions() const;
  // Whether the RAM is mapped (always, unless on_first_use and not used yet).
  bool mapped() const noexcept { return mapped_.load(std::memory_order_acquire); }
  uint64_t size() const noexcept { return size_; }
  // Highest RAM address + 1 below the MMIO hole.
  uint64_t low_end() const noexcept { return regions_.front().size; }

  // True iff [gpa, gpa+len) lies within a single RAM region.
  bool contains(uint64_t gpa, uint64_t len) const noexcept;
  // Host pointer for [gpa, gpa+len), or nullptr when out of range (or when
  // on_first_use memory cannot be mapped: checked() then names that).
  uint8_t* host_range(uint64_t gpa, uint64_t len) const noexcept;

  // Bounds-checked copies; throw Errc::guest_address_out_of_range.
  void write(uint64_t gpa, std::span<const uint8_t> bytes);
  void write(uint64_t gpa, std::string_view text);  // no terminator
  void read(uint64_t gpa, std::span<uint8_t> out) const;
  void fill(uint64_t gpa, uint64_t len, uint8_t value);
  // Returns every page to zero by dropping it (MADV_DONTNEED): no host RAM
  // is touched, unlike a memset. Used for reboot.
  void zero_all();

  // Writes by the VMM itself (devices' DMA: virtqueue rings and buffers,
  // virtio-rng, fw_cfg DMA, the accessors above), recorded per 4 KiB page
  // while tracking is on. KVM's dirty log sees only what vCPUs write; live
  // migration needs both (devices/machine_migration.hpp). Off, a write costs
  // one relaxed load. The bitmaps, once made, live as long as the memory, so
  // a device thread never races their allocation.
  void start_write_tracking();
  void stop_write_tracking() noexcept { tracking_.store(false, std::memory_order_release); }
  // The pages of region `index` written since the last call (bit i = page i
  // of the region), cleared as they are taken. Empty when never started.
  std::vector<uint64_t> take_written(size_t index);
  void note_written(uint64_t gpa, uint64_t len) const noexcept {
    if (tracking_.load(std::memory_order_acquire)) note_written_slow(gpa, len);
  }

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
  void note_written_slow(uint64_t gpa, uint64_t len) const noexcept;
  bool map() const noexcept;  // maps on_first_use memory once; false if that failed
  // The host pointers are filled in by map() (under map_once_) for
  // on_first_use memory; gpa and size are set from the start.
  mutable std::vector<Region> regions_;
  mutable std::once_flag map_once_;
  mutable std::atomic<bool> mapped_{false};
  mutable std::string map_error_;  // why map() failed, once it has
  std::atomic<bool> tracking_{false};
  // One bitmap per region (1 bit per page), allocated on the first start.
  std::vector<std::unique_ptr<std::atomic<uint64_t>[]>> written_;
  uint64_t size_ = 0;
};

}  // namespace apiary::vmm
