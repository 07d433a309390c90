// QEMU's pc-testdev: the ports through which x86 test programs (kvm-unit-tests
// and the like) raise interrupt lines and check port and MMIO accesses, at
// QEMU's addresses so the same binary runs on QEMU and on Apiary. Optional:
// the Machine has it only with MachineConfig::pc_testdev (`apiary run
// --pc-testdev`), since an ordinary guest has no business driving raw GSIs.
//
// What it does (layout.hpp has the numbers):
//   - 0xe0-0xe3, the scratch register: 32 bits that read back what was
//     written. An access of 1, 2 or 4 bytes at offset o covers the register's
//     bytes [o, min(o + size, 4)) little-endian, the bytes past its end are
//     dropped on a write and read as 0 (in QEMU they fall on the flush-page
//     port, which reads as 0). 0xe8-0xeb is the same register again: QEMU
//     splits accesses there into bytes, with the same result.
//   - 0x2000-0x2017, the IRQ lines: a one-byte write of v to 0x2000 + n sets
//     GSI n's level to v != 0 through the machine's IrqLine; a byte read is 0.
//     As in QEMU, a line that a device also drives is simply driven (the
//     in-kernel irqchip keeps one level per line for the VMM); tests use free
//     lines. Lines this device raised are lowered on reset, so a reboot does
//     not leave a level-triggered line stuck high.
//   - 0xff000000-0xff00ffff, a 64 KiB MMIO buffer that reads back what was
//     written (1, 2, 4 or 8 bytes at any offset; past the end as above): what
//     instruction-emulation tests point their memory operands at.
// Every access QEMU would not accept (a wider IRQ-line access, a size that
// is not 1/2/4(/8), an offset outside the window) changes nothing, reads as
// all-ones and is counted in `refused_accesses`; none is fatal.
//
// Left out: QEMU's flush-page port (0xe4, a guest physical address written
// there has its host page mprotect()ed away and back, to make KVM drop its
// mapping). Here guest RAM is touched by other threads at any time (virtio
// backends, the console), which would fault on the protected page and take
// the VMM down, so the port stays unclaimed rather than pretend to flush.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <mutex>

#include "devices/device.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::devices {

class PcTestdev final : public Device {
 public:
  PcTestdev(std::string name, IrqLine& irq_line);
  const char* kind() const noexcept override { return "pc-testdev"; }

  // The Device's own handler is the scratch register, registered at
  // layout::kPcTestdevIoport (and, through byte_window(), at kPcTestdevIoportByte).
  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;

  vmm::IoHandler& byte_window() noexcept { return byte_window_; }  // at kPcTestdevIoportByte
  vmm::IoHandler& irq_lines() noexcept { return irq_lines_; }      // at kPcTestdevIrqLines
  vmm::IoHandler& iomem() noexcept { return iomem_; }              // at kPcTestdevIomem (MMIO)

  void reset() override;
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

  uint32_t scratch() const noexcept { return scratch_.load(std::memory_order_relaxed); }
  // Bit n: the level this device last set on GSI n.
  uint32_t irq_levels() const noexcept { return levels_.load(std::memory_order_relaxed); }
  uint64_t refused_accesses() const noexcept { return refused_.load(std::memory_order_relaxed); }

 private:
  // One window of the device on the bus, forwarding to a member pair.
  template <uint64_t (PcTestdev::*Read)(uint64_t, unsigned), void (PcTestdev::*Write)(uint64_t, unsigned, uint64_t)>
  class Window final : public vmm::IoHandler {
   public:
    explicit Window(PcTestdev& dev) : dev_(dev) {}
    uint64_t io_read(uint64_t offset, unsigned size) override { return (dev_.*Read)(offset, size); }
    void io_write(uint64_t offset, unsigned size, uint64_t value) override { (dev_.*Write)(offset, size, value); }

   private:
    PcTestdev& dev_;
  };

  uint64_t read_irq_line(uint64_t offset, unsigned size);
  void write_irq_line(uint64_t offset, unsigned size, uint64_t value);
  uint64_t read_iomem(uint64_t offset, unsigned size);
  void write_iomem(uint64_t offset, unsigned size, uint64_t value);
  uint64_t refuse(unsigned size);  // counts; all-ones for reads

  IrqLine& irq_line_;
  Window<&PcTestdev::io_read, &PcTestdev::io_write> byte_window_{*this};
  Window<&PcTestdev::read_irq_line, &PcTestdev::write_irq_line> irq_lines_{*this};
  Window<&PcTestdev::read_iomem, &PcTestdev::write_iomem> iomem_{*this};

  std::atomic<uint32_t> scratch_{0};
  std::atomic<uint32_t> levels_{0};
  static_assert(layout::kPcTestdevIrqLineCount <= 32, "levels_ has one bit per line");
  mutable std::mutex iomem_mutex_;
  std::unique_ptr<std::array<uint8_t, layout::kPcTestdevIomemLen>> iomem_buf_;
  std::atomic<uint64_t> irq_writes_{0};
  std::atomic<uint64_t> refused_{0};
};

}  // namespace apiary::devices
