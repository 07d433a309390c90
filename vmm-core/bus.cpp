#include "vmm-core/bus.hpp"

#include <algorithm>
#include <cstdio>

namespace apiary::vmm {

namespace {
std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%#llx", static_cast<unsigned long long>(v));
  return buf;
}
}  // namespace

void Bus::add(AddressSpace space, uint64_t base, uint64_t size, IoHandler* handler, std::string name) {
  if (frozen_) throw Error(Errc::invalid_argument, "bus is frozen; cannot add " + name);
  if (!handler) throw Error(Errc::invalid_argument, "no handler for " + name);
  if (size == 0 || base + size < base)
    throw Error(Errc::bus_bad_range, name + ": range [" + hex(base) + ", +" + hex(size) + ") is empty or wraps");
  if (space == AddressSpace::pio && base + size > 0x10000)
    throw Error(Errc::bus_bad_range, name + ": port range beyond 0xffff");
  auto& map = maps_[index(space)];
  auto it = std::lower_bound(map.begin(), map.end(), base,
                             [](const Range& r, uint64_t b) { return r.base < b; });
  auto clash = [&](const Range& r) {
    throw Error(Errc::bus_overlap, name + " [" + hex(base) + ", +" + hex(size) + ") overlaps " + r.name +
                                       " [" + hex(r.base) + ", +" + hex(r.size) + ")");
  };
  if (it != map.end() && it->base < base + size) clash(*it);
  if (it != map.begin() && std::prev(it)->base + std::prev(it)->size > base) clash(*std::prev(it));
  map.insert(it, Range{base, size, handler, std::move(name)});
}

const Bus::Range* Bus::find(AddressSpace space, uint64_t addr) const noexcept {
  const auto& map = maps_[index(space)];
  auto it = std::upper_bound(map.begin(), map.end(), addr,
                             [](uint64_t a, const Range& r) { return a < r.base; });
  if (it == map.begin()) return nullptr;
  --it;
  return addr - it->base < it->size ? &*it : nullptr;
}

bool Bus::read(AddressSpace space, uint64_t addr, unsigned size, uint64_t& value) noexcept {
  const Range* r = find(space, addr);
  if (!r) {
    value = all_ones(size);
    unclaimed_reads_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  value = r->handler->io_read(addr - r->base, size) & all_ones(size);
  return true;
}

bool Bus::write(AddressSpace space, uint64_t addr, unsigned size, uint64_t value) noexcept {
  const Range* r = find(space, addr);
  if (!r) {
    unclaimed_writes_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  r->handler->io_write(addr - r->base, size, value & all_ones(size));
  return true;
}

}  // namespace apiary::vmm
