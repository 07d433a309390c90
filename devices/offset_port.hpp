// A window of a device registered on the bus on its own: accesses at
// offset o of the window reach the device at base + o. For devices whose
// registers are not one contiguous range (the i8042's 0x60 and 0x64, the PCI
// host bridge's 0xCF8 and 0xCFC around reset control's 0xCF9).
#pragma once

#include "vmm-core/bus.hpp"

namespace apiary::devices {

class OffsetPort final : public vmm::IoHandler {
 public:
  OffsetPort(vmm::IoHandler& device, unsigned base) : device_(device), base_(base) {}
  uint64_t io_read(uint64_t offset, unsigned size) override { return device_.io_read(base_ + offset, size); }
  void io_write(uint64_t offset, unsigned size, uint64_t value) override {
    device_.io_write(base_ + offset, size, value);
  }

 private:
  vmm::IoHandler& device_;
  const unsigned base_;
};

}  // namespace apiary::devices
