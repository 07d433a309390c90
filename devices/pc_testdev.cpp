#include "devices/pc_testdev.hpp"

#include <algorithm>

namespace apiary::devices {

namespace {

bool valid_pio_size(unsigned size) { return size == 1 || size == 2 || size == 4; }
bool valid_mmio_size(unsigned size) { return valid_pio_size(size) || size == 8; }

// The bytes of `window` (little-endian, `len` long) that an access of `size`
// at `offset` covers: [offset, min(offset + size, len)).
uint64_t covered_bytes(uint64_t offset, unsigned size, uint64_t len) {
  return std::min<uint64_t>(size, len - offset);
}

}  // namespace

PcTestdev::PcTestdev(std::string name, IrqLine& irq_line)
    : Device(std::move(name)),
      irq_line_(irq_line),
      iomem_buf_(std::make_unique<std::array<uint8_t, layout::kPcTestdevIomemLen>>()) {
  iomem_buf_->fill(0);
}

uint64_t PcTestdev::refuse(unsigned size) {
  refused_.fetch_add(1, std::memory_order_relaxed);
  return vmm::all_ones(size);
}

// ------------------------------------------------- the scratch register --

uint64_t PcTestdev::io_read(uint64_t offset, unsigned size) {
  if (!valid_pio_size(size) || offset >= layout::kPcTestdevIoportLen) return refuse(size);
  const uint64_t n = covered_bytes(offset, size, layout::kPcTestdevIoportLen);
  const uint64_t reg = scratch_.load(std::memory_order_relaxed);
  return (reg >> (offset * 8)) & vmm::all_ones(static_cast<unsigned>(n));
}

void PcTestdev::io_write(uint64_t offset, unsigned size, uint64_t value) {
  if (!valid_pio_size(size) || offset >= layout::kPcTestdevIoportLen) {
    refuse(size);
    return;
  }
  const uint64_t n = covered_bytes(offset, size, layout::kPcTestdevIoportLen);
  const auto mask = static_cast<uint32_t>(vmm::all_ones(static_cast<unsigned>(n)) << (offset * 8));
  const auto bits = static_cast<uint32_t>(value << (offset * 8)) & mask;
  uint32_t old = scratch_.load(std::memory_order_relaxed);
  while (!scratch_.compare_exchange_weak(old, (old & ~mask) | bits, std::memory_order_relaxed)) {
  }
}

// ------------------------------------------------------------ IRQ lines --

uint64_t PcTestdev::read_irq_line(uint64_t offset, unsigned size) {
  if (size != 1 || offset >= layout::kPcTestdevIrqLineCount) return refuse(size);
  return 0;
}

void PcTestdev::write_irq_line(uint64_t offset, unsigned size, uint64_t value) {
  if (size != 1 || offset >= layout::kPcTestdevIrqLineCount) {
    refuse(size);
    return;
  }
  const auto gsi = static_cast<uint32_t>(offset);
  const bool level = value != 0;
  if (level)
    levels_.fetch_or(1u << gsi, std::memory_order_relaxed);
  else
    levels_.fetch_and(~(1u << gsi), std::memory_order_relaxed);
  irq_writes_.fetch_add(1, std::memory_order_relaxed);
  irq_line_.set_level(gsi, level);
}

// ---------------------------------------------------------------- iomem --

uint64_t PcTestdev::read_iomem(uint64_t offset, unsigned size) {
  if (!valid_mmio_size(size) || offset >= layout::kPcTestdevIomemLen) return refuse(size);
  const uint64_t n = covered_bytes(offset, size, layout::kPcTestdevIomemLen);
  uint64_t v = 0;
  std::lock_guard lock(iomem_mutex_);
  for (uint64_t i = 0; i < n; ++i) v |= uint64_t{(*iomem_buf_)[offset + i]} << (i * 8);
  return v;
}

void PcTestdev::write_iomem(uint64_t offset, unsigned size, uint64_t value) {
  if (!valid_mmio_size(size) || offset >= layout::kPcTestdevIomemLen) {
    refuse(size);
    return;
  }
  const uint64_t n = covered_bytes(offset, size, layout::kPcTestdevIomemLen);
  std::lock_guard lock(iomem_mutex_);
  for (uint64_t i = 0; i < n; ++i) (*iomem_buf_)[offset + i] = static_cast<uint8_t>(value >> (i * 8));
}

// ------------------------------------------------------------ lifecycle --

void PcTestdev::reset() {
  scratch_.store(0, std::memory_order_relaxed);
  {
    std::lock_guard lock(iomem_mutex_);
    iomem_buf_->fill(0);
  }
  const uint32_t high = levels_.exchange(0, std::memory_order_relaxed);
  for (uint32_t gsi = 0; gsi < layout::kPcTestdevIrqLineCount; ++gsi)
    if (high & (1u << gsi)) irq_line_.set_level(gsi, false);
}

v1::DeviceState PcTestdev::export_state() const {
  v1::DeviceState s = base_state();
  (*s.mutable_registers())["scratch"] = scratch();
  (*s.mutable_registers())["irq_levels"] = irq_levels();
  {
    std::lock_guard lock(iomem_mutex_);
    s.set_opaque(std::string(iomem_buf_->begin(), iomem_buf_->end()));
  }
  (*s.mutable_counters())["irq_line_writes"] = irq_writes_.load(std::memory_order_relaxed);
  (*s.mutable_counters())["refused_accesses"] = refused_accesses();
  return s;
}

void PcTestdev::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  if (r.opaque().size() != layout::kPcTestdevIomemLen)
    r.fail("iomem has " + std::to_string(r.opaque().size()) + " bytes");
  scratch_.store(r.reg_as<uint32_t>("scratch"), std::memory_order_relaxed);
  {
    std::lock_guard lock(iomem_mutex_);
    std::memcpy(iomem_buf_->data(), r.opaque().data(), iomem_buf_->size());
  }
  const uint32_t levels = static_cast<uint32_t>(r.reg("irq_levels", (1ull << layout::kPcTestdevIrqLineCount) - 1));
  levels_.store(levels, std::memory_order_relaxed);
  for (uint32_t gsi = 0; gsi < layout::kPcTestdevIrqLineCount; ++gsi)
    if (levels & (1u << gsi)) irq_line_.set_level(gsi, true);
}

}  // namespace apiary::devices
