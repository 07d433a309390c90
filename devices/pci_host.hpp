// PCI host bridge behind configuration mechanism #1 (CONFIG_ADDRESS at
// 0xCF8, CONFIG_DATA at 0xCFC), with one device: the host bridge itself at
// 00:00.0. Nothing else sits on the bus yet (virtio devices are virtio-mmio).
//
// Why it exists: an x86 Linux probes for PCI configuration access whatever
// ACPI says, and without one its boot log says "PCI: Fatal: No config space
// access function found". A bus with only a host bridge is what a platform
// without PCI devices looks like; it is also where virtio-pci would attach.
//
// Model: CONFIG_ADDRESS is a dword register (enable bit 31, bus 23:16,
// device 15:11, function 10:8, register 7:2); narrower accesses to 0xCF8 are
// not it (byte 0xCF9 is reset control, see reset_control.hpp) and are
// ignored. CONFIG_DATA reads the selected dword (any 1/2/4-byte access at
// 0xCFC..0xCFF picks the bytes at that offset). Every function but 00:00.0
// reads all-ones, as an empty slot does. The host bridge's header is
// read-only: it has no BARs, no interrupt, no capabilities, so writes change
// nothing and are counted.
//
// Registration (two ranges, because 0xCF9 belongs to reset control):
//   bus.add(pio, layout::kPciConfigAddress, layout::kPciConfigAddressLen, &pci.address_port(), ...);
//   bus.add(pio, layout::kPciConfigData, layout::kPciConfigDataLen, &pci.data_port(), ...);
#pragma once

#include <mutex>

#include "devices/device.hpp"
#include "devices/offset_port.hpp"

namespace apiary::devices {

namespace pci {
inline constexpr uint32_t kEnable = 0x80000000u;
inline constexpr uint32_t kAddressMask = 0x80fffffcu;  // enable, bus, device, function, dword register
// The host bridge's identity: Red Hat's ID for a virtual PCIe host bridge,
// which Linux binds no driver or quirk to (an Intel chipset's ID would pull
// in that chipset's quirks).
inline constexpr uint16_t kHostVendor = 0x1b36, kHostDevice = 0x0008;
inline constexpr uint16_t kSubsystemVendor = 0x1af4, kSubsystem = 0x1100;
inline constexpr uint8_t kClassBridge = 0x06, kSubclassHost = 0x00;
// Configuration header offsets used.
inline constexpr unsigned kVendorId = 0x00, kClassRevision = 0x08, kHeaderType = 0x0c, kSubsystemIds = 0x2c;
}  // namespace pci

class PciHostBridge final : public Device {
 public:
  explicit PciHostBridge(std::string name);
  const char* kind() const noexcept override { return "pci-host"; }

  // Offsets: 0 is CONFIG_ADDRESS, 4..7 are CONFIG_DATA's bytes.
  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;

  vmm::IoHandler& address_port() noexcept { return address_port_; }
  vmm::IoHandler& data_port() noexcept { return data_port_; }

  // The dword at `reg` of bus/device/function, as CONFIG_DATA would read it.
  uint32_t config_read(uint8_t bus, uint8_t device, uint8_t function, uint8_t reg) const;

  void reset() override;
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

 private:
  OffsetPort address_port_{*this, 0};
  OffsetPort data_port_{*this, 4};
  mutable std::mutex mutex_;
  uint32_t address_ = 0;
  uint64_t config_reads_ = 0, config_writes_ = 0, ignored_ = 0;
};

}  // namespace apiary::devices
