// ACPI PM1a event/control registers: byte-wise register access, W1C status,
// the SCI level and the soft-off request. See acpi_pm.hpp for the model.
#include "devices/acpi_pm.hpp"

#include "vmm-core/layout.hpp"

namespace apiary::devices {

using namespace acpi_pm;

static_assert(layout::kAcpiPm1aCnt == layout::kAcpiPm1aEvt + layout::kAcpiPm1aEvtLen,
              "the combined window assumes PM1a_CNT_BLK follows PM1a_EVT_BLK");
static_assert(kCnt == layout::kAcpiPm1aEvtLen && kWindow - kCnt == layout::kAcpiPm1aCntLen);
static_assert(layout::kAcpiSlpTypSoftOff <= (kSlpTypMask >> kSlpTypShift));

AcpiPm::AcpiPm(std::string name, IrqLine& irq_line, DeviceEvents& events)
    : Device(std::move(name)), irq_line_(irq_line), events_(events) {}

void AcpiPm::reset() {
  std::lock_guard lock(mutex_);
  sts_ = 0;
  en_ = 0;
  cnt_ = kCntPowerOn;
  update_sci();
}

void AcpiPm::update_sci() {
  const bool level = (cnt_ & kSciEn) && (sts_ & en_ & kSciSources);
  if (level == sci_level_) return;
  sci_level_ = level;
  if (level) ++sci_irqs_;
  irq_line_.set_level(layout::kAcpiSciIrq, level);
}

uint8_t AcpiPm::read_byte(unsigned off) const {
  uint16_t reg = 0;
  switch (off & ~1u) {
    case kSts: reg = sts_; break;
    case kEn: reg = en_; break;
    case kCnt: reg = cnt_; break;
    default: return 0xff;
  }
  return static_cast<uint8_t>(reg >> (8 * (off & 1)));
}

uint64_t AcpiPm::read_range(unsigned base, unsigned len, uint64_t offset, unsigned size) {
  std::lock_guard lock(mutex_);
  uint64_t v = 0;
  for (unsigned i = 0; i < size && i < 8; ++i) {
    const uint64_t off = offset + i;
    const uint8_t b = off < len ? read_byte(base + static_cast<unsigned>(off)) : 0xff;
    v |= static_cast<uint64_t>(b) << (8 * i);
  }
  return v;
}

void AcpiPm::write_range(unsigned base, unsigned len, uint64_t offset, unsigned size, uint64_t value) {
  bool poweroff = false;
  {
    std::lock_guard lock(mutex_);
    bool sleep = false;
    for (unsigned i = 0; i < size && i < 8; ++i) {
      const uint64_t off = offset + i;
      if (off >= len) continue;
      const unsigned reg = base + static_cast<unsigned>(off);
      const unsigned shift = 8 * (reg & 1);
      const auto bits = static_cast<uint16_t>(static_cast<uint8_t>(value >> (8 * i)) << shift);
      const auto keep = static_cast<uint16_t>(~(0xffu << shift));
      switch (reg & ~1u) {
        case kSts:
          sts_ &= static_cast<uint16_t>(~(bits & kStsMask));  // write 1 to clear
          break;
        case kEn:
          en_ = static_cast<uint16_t>(((en_ & keep) | bits) & kEnMask);
          break;
        case kCnt:
          cnt_ = static_cast<uint16_t>(((cnt_ & keep) | bits) & kCntStored);
          if (bits & kSlpEn) sleep = true;
          break;
      }
    }
    if (sleep) {
      // SLP_TYP as it stands after the whole access (a 16-bit write sets
      // both fields at once; a byte write of the high half does too).
      if (((cnt_ & kSlpTypMask) >> kSlpTypShift) == layout::kAcpiSlpTypSoftOff) {
        ++poweroff_requests_;
        poweroff = true;
      } else {
        ++sleep_refused_;
      }
    }
    update_sci();
  }
  // Outside the lock: the owner may react by resetting this device.
  if (poweroff) events_.poweroff_requested(name());
}

uint64_t AcpiPm::io_read(uint64_t offset, unsigned size) { return read_range(0, kWindow, offset, size); }

void AcpiPm::io_write(uint64_t offset, unsigned size, uint64_t value) {
  write_range(0, kWindow, offset, size, value);
}

uint64_t AcpiPm::Block::io_read(uint64_t offset, unsigned size) {
  return dev_.read_range(base_, len_, offset, size);
}

void AcpiPm::Block::io_write(uint64_t offset, unsigned size, uint64_t value) {
  dev_.write_range(base_, len_, offset, size, value);
}

bool AcpiPm::press_power_button() {
  std::lock_guard lock(mutex_);
  ++power_button_presses_;
  sts_ |= kPwrBtnSts;
  update_sci();
  return (en_ & kPwrBtnEn) && (cnt_ & kSciEn);
}

v1::DeviceState AcpiPm::export_state() const {
  std::lock_guard lock(mutex_);
  v1::DeviceState s = base_state();
  auto& r = *s.mutable_registers();
  r["pm1_sts"] = sts_;
  r["pm1_en"] = en_;
  r["pm1_cnt"] = cnt_;
  auto& c = *s.mutable_counters();
  c["sci_level"] = sci_level_;
  c["sci_irqs"] = sci_irqs_;
  c["power_button_presses"] = power_button_presses_;
  c["poweroff_requests"] = poweroff_requests_;
  c["sleep_refused"] = sleep_refused_;
  return s;
}

void AcpiPm::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  std::lock_guard lock(mutex_);
  sts_ = r.reg_as<uint16_t>("pm1_sts");
  en_ = r.reg_as<uint16_t>("pm1_en");
  cnt_ = r.reg_as<uint16_t>("pm1_cnt");
  update_sci();
}

}  // namespace apiary::devices
