// PCI configuration mechanism #1 with a lone host bridge at 00:00.0.
#include "devices/pci_host.hpp"

namespace apiary::devices {

using namespace pci;

namespace {
constexpr unsigned kDataOffset = 4;
// Bus, device and function fields of CONFIG_ADDRESS.
constexpr uint32_t kBdfMask = 0x00ffff00u;
constexpr unsigned kRegMask = 0xfc;
}  // namespace

PciHostBridge::PciHostBridge(std::string name) : Device(std::move(name)) {}

uint32_t PciHostBridge::config_read(uint8_t bus, uint8_t device, uint8_t function, uint8_t reg) const {
  if (bus != 0 || device != 0 || function != 0) return 0xffffffffu;
  switch (reg & kRegMask) {
    case kVendorId:
      return static_cast<uint32_t>(kHostDevice) << 16 | kHostVendor;
    case kClassRevision:
      return static_cast<uint32_t>(kClassBridge) << 24 | static_cast<uint32_t>(kSubclassHost) << 16;
    case kHeaderType:
      return 0;  // single-function, type 0 header
    case kSubsystemIds:
      return static_cast<uint32_t>(kSubsystem) << 16 | kSubsystemVendor;
    default:
      return 0;  // command, status, BARs, interrupt line/pin: all zero
  }
}

uint64_t PciHostBridge::io_read(uint64_t offset, unsigned size) {
  const uint64_t ones = vmm::all_ones(size);
  std::lock_guard lock(mutex_);
  if (offset < kDataOffset) {
    if (offset != 0 || size != 4) {
      ++ignored_;
      return ones;
    }
    return address_;
  }
  const unsigned byte = static_cast<unsigned>(offset - kDataOffset);
  if (!(address_ & kEnable) || byte + size > 4) {
    ++ignored_;
    return ones;
  }
  ++config_reads_;
  const uint32_t dword = config_read(static_cast<uint8_t>(address_ >> 16), static_cast<uint8_t>((address_ >> 11) & 0x1f),
                                     static_cast<uint8_t>((address_ >> 8) & 0x7), static_cast<uint8_t>(address_));
  return (dword >> (byte * 8)) & ones;
}

void PciHostBridge::io_write(uint64_t offset, unsigned size, uint64_t value) {
  std::lock_guard lock(mutex_);
  if (offset == 0 && size == 4) {
    address_ = static_cast<uint32_t>(value) & kAddressMask;
    return;
  }
  if (offset >= kDataOffset && (address_ & kEnable) && offset - kDataOffset + size <= 4 && (address_ & kBdfMask) == 0) {
    ++config_writes_;  // the host bridge's header is read-only
    return;
  }
  ++ignored_;
}

void PciHostBridge::reset() {
  std::lock_guard lock(mutex_);
  address_ = 0;
}

v1::DeviceState PciHostBridge::export_state() const {
  std::lock_guard lock(mutex_);
  v1::DeviceState s = base_state();
  (*s.mutable_registers())["config_address"] = address_;
  (*s.mutable_counters())["config_reads"] = config_reads_;
  (*s.mutable_counters())["config_writes"] = config_writes_;
  (*s.mutable_counters())["ignored_accesses"] = ignored_;
  return s;
}

void PciHostBridge::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  std::lock_guard lock(mutex_);
  address_ = r.reg_as<uint32_t>("config_address");
}

}  // namespace apiary::devices
