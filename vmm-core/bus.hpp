// The I/O bus: address-range maps for port I/O and MMIO, dispatched inline on
// the vCPU thread that took the exit.
//
// The maps are built while the machine is assembled and frozen before any
// vCPU runs, so lookups need no lock (a sorted vector and a binary search).
// Overlapping ranges are refused when added. An access nobody claims reads as
// all-ones (what an empty ISA/PCI bus returns) and is counted, never fatal:
// guests probe for hardware that is not there.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "vmm-core/error.hpp"

namespace apiary::vmm {

// A device's face towards the bus. `offset` is relative to the base the
// device was registered at; `size` is 1, 2, 4 (or 8 for MMIO). Handlers are
// called concurrently from every vCPU thread and must be thread-safe.
class IoHandler {
 public:
  virtual ~IoHandler() = default;
  virtual uint64_t io_read(uint64_t offset, unsigned size) = 0;
  virtual void io_write(uint64_t offset, unsigned size, uint64_t value) = 0;
};

enum class AddressSpace { pio, mmio };

class Bus {
 public:
  struct Range {
    uint64_t base;
    uint64_t size;
    IoHandler* handler;
    std::string name;
  };

  // Throws bus_bad_range (empty or wrapping), bus_overlap (names both
  // claimants), or invalid_argument once frozen.
  void add(AddressSpace space, uint64_t base, uint64_t size, IoHandler* handler, std::string name);
  // No more ranges: the maps give back their growth slack (a machine's
  // maps are a few hundred bytes of every simulated instance).
  void freeze() {
    frozen_ = true;
    for (auto& m : maps_) m.shrink_to_fit();
  }

  // Dispatch. Returns false when unclaimed (reads then yield all-ones).
  bool read(AddressSpace space, uint64_t addr, unsigned size, uint64_t& value) noexcept;
  bool write(AddressSpace space, uint64_t addr, unsigned size, uint64_t value) noexcept;

  const Range* find(AddressSpace space, uint64_t addr) const noexcept;
  const std::vector<Range>& ranges(AddressSpace space) const noexcept { return maps_[index(space)]; }
  uint64_t unclaimed_reads() const noexcept { return unclaimed_reads_.load(std::memory_order_relaxed); }
  uint64_t unclaimed_writes() const noexcept { return unclaimed_writes_.load(std::memory_order_relaxed); }

 private:
  static size_t index(AddressSpace s) noexcept { return s == AddressSpace::pio ? 0 : 1; }
  std::vector<Range> maps_[2];
  bool frozen_ = false;
  std::atomic<uint64_t> unclaimed_reads_{0};
  std::atomic<uint64_t> unclaimed_writes_{0};
};

inline uint64_t all_ones(unsigned size) noexcept {
  return size >= 8 ? ~0ull : (1ull << (size * 8)) - 1;
}

}  // namespace apiary::vmm
