// Reset control register (port 0xCF9, "RST_CNT" on Intel chipsets).
//
// Why it exists: it is Linux's "reboot=pci" path and what ACPI's FADT
// RESET_REG usually names (reset value 0x06), so a guest that does not use
// the i8042 still gets a clean reboot.
//
// Model: a byte register. SYS_RST (bit 1) and FULL_RST (bit 3) are stored
// and read back; RST_CPU (bit 2) reads 0 and every write with it set asks
// the owner for a reset (the hardware resets on its 0->1 transition, and the
// bit self-clears, so every such write is a transition). Only the low byte
// of a wider access is used: the following ports are not this register.
//
// Registration: bus.add(pio, layout::kResetControl, layout::kResetControlLen, &rc, "reset-control").
// Note 0xCF8 (PCI CONFIG_ADDRESS) is a dword register right below it; a
// future PCI host bridge must leave byte 0xCF9 to this device.
#pragma once

#include <mutex>

#include "devices/device.hpp"

namespace apiary::devices {

namespace reset_control {
inline constexpr uint8_t kSysRst = 0x02, kRstCpu = 0x04, kFullRst = 0x08;
inline constexpr uint8_t kStored = kSysRst | kFullRst;
}  // namespace reset_control

class ResetControl final : public Device {
 public:
  ResetControl(std::string name, DeviceEvents& events) : Device(std::move(name)), events_(events) {}
  const char* kind() const noexcept override { return "reset-control"; }
  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;
  void reset() override;
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

 private:
  DeviceEvents& events_;
  mutable std::mutex mutex_;
  uint8_t value_ = 0;
  uint64_t reset_requests_ = 0, writes_ = 0;
};

}  // namespace apiary::devices
