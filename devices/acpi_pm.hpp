// ACPI fixed-hardware power management registers: the PM1a event block
// (PM1_STS, PM1_EN) and the PM1a control block (PM1_CNT).
//
// Why it exists: it is how an ACPI guest powers the machine off (writing
// SLP_TYP = soft-off together with SLP_EN to PM1_CNT) and how the host asks
// it to shut down cleanly (press_power_button(): PWRBTN_STS, then an SCI if
// the guest enabled PWRBTN_EN). The FADT built by the lead points at these
// ports (layout::kAcpiPm1aEvt / kAcpiPm1aCnt, SCI = layout::kAcpiSciIrq).
//
// Model:
//  * PM1_STS bits are write-1-to-clear. The SCI is a level: asserted while
//    (PM1_STS & PM1_EN & the SCI sources modelled here) != 0 and SCI_EN is
//    set; only changes are sent to the irqchip.
//  * SCI_EN reads 1 from power-on: there is no SMI_CMD port and no SMM, so
//    the machine is always in ACPI mode (the FADT has SMI_CMD = 0). It stays
//    writable; a guest that clears it gets no SCI.
//  * SLP_EN is write-only (reads 0). SLP_EN with SLP_TYP = soft-off asks for
//    poweroff; any other sleep type is refused (counted), since sleep states
//    are not implemented.
//  * There is no PM timer (no PM_TMR_BLK), so TMR_STS never sets.
//  * Registers may be accessed with any width at any offset; each byte is
//    handled on its own, then the side effects of the whole access follow.
//
// Registration: either the two adapters
//   bus.add(pio, layout::kAcpiPm1aEvt, layout::kAcpiPm1aEvtLen, &pm.event_block(), "acpi-pm1a-evt");
//   bus.add(pio, layout::kAcpiPm1aCnt, layout::kAcpiPm1aCntLen, &pm.control_block(), "acpi-pm1a-cnt");
// or the device itself over the 6-byte window starting at kAcpiPm1aEvt
// (offsets 0-1 PM1_STS, 2-3 PM1_EN, 4-5 PM1_CNT; the blocks are adjacent).
#pragma once

#include <mutex>

#include "devices/device.hpp"

namespace apiary::devices {

namespace acpi_pm {
// Offsets in the combined window (event block, then control block).
inline constexpr unsigned kSts = 0, kEn = 2, kCnt = 4, kWindow = 6;
// PM1_STS / PM1_EN bits.
inline constexpr uint16_t kTmrSts = 1u << 0, kBmSts = 1u << 4, kGblSts = 1u << 5, kPwrBtnSts = 1u << 8,
                          kSlpBtnSts = 1u << 9, kRtcSts = 1u << 10, kWakeSts = 1u << 15;
inline constexpr uint16_t kTmrEn = 1u << 0, kGblEn = 1u << 5, kPwrBtnEn = 1u << 8, kSlpBtnEn = 1u << 9,
                          kRtcEn = 1u << 10;
inline constexpr uint16_t kStsMask = kTmrSts | kBmSts | kGblSts | kPwrBtnSts | kSlpBtnSts | kRtcSts | kWakeSts;
inline constexpr uint16_t kEnMask = kTmrEn | kGblEn | kPwrBtnEn | kSlpBtnEn | kRtcEn;
// Status bits that raise the SCI when enabled.
inline constexpr uint16_t kSciSources = kTmrSts | kGblSts | kPwrBtnSts | kSlpBtnSts | kRtcSts;
// PM1_CNT bits.
inline constexpr uint16_t kSciEn = 1u << 0, kBmRld = 1u << 1, kGblRls = 1u << 2;
inline constexpr unsigned kSlpTypShift = 10;
inline constexpr uint16_t kSlpTypMask = 7u << kSlpTypShift, kSlpEn = 1u << 13;
inline constexpr uint16_t kCntStored = kSciEn | kBmRld | kSlpTypMask;  // GBL_RLS, SLP_EN: write-only
inline constexpr uint16_t kCntPowerOn = kSciEn;
}  // namespace acpi_pm

class AcpiPm final : public Device {
 public:
  AcpiPm(std::string name, IrqLine& irq_line, DeviceEvents& events);
  const char* kind() const noexcept override { return "acpi-pm"; }

  // The combined 6-byte window (see the offsets above).
  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;

  vmm::IoHandler& event_block() noexcept { return event_block_; }
  vmm::IoHandler& control_block() noexcept { return control_block_; }

  // Host request for an orderly shutdown: PWRBTN_STS is set either way; true
  // when the guest listens (PWRBTN_EN and SCI_EN set), so that the SCI fires.
  bool press_power_button();

  void reset() override;
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

 private:
  class Block final : public vmm::IoHandler {
   public:
    Block(AcpiPm& dev, unsigned base, unsigned len) : dev_(dev), base_(base), len_(len) {}
    uint64_t io_read(uint64_t offset, unsigned size) override;
    void io_write(uint64_t offset, unsigned size, uint64_t value) override;

   private:
    AcpiPm& dev_;
    const unsigned base_, len_;
  };

  // Accesses to [base, base+len) of the window; bytes past it read as
  // all-ones and are dropped on write.
  uint64_t read_range(unsigned base, unsigned len, uint64_t offset, unsigned size);
  void write_range(unsigned base, unsigned len, uint64_t offset, unsigned size, uint64_t value);
  uint8_t read_byte(unsigned off) const;  // with mutex_ held
  void update_sci();                      // with mutex_ held

  IrqLine& irq_line_;
  DeviceEvents& events_;
  Block event_block_{*this, acpi_pm::kSts, acpi_pm::kCnt};
  Block control_block_{*this, acpi_pm::kCnt, acpi_pm::kWindow - acpi_pm::kCnt};
  mutable std::mutex mutex_;
  uint16_t sts_ = 0, en_ = 0, cnt_ = acpi_pm::kCntPowerOn;
  bool sci_level_ = false;
  uint64_t sci_irqs_ = 0, power_button_presses_ = 0, poweroff_requests_ = 0, sleep_refused_ = 0;
};

}  // namespace apiary::devices
