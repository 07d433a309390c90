// 16550A UART (the PC's COM1): the full register file — RBR/THR, IER, IIR/FCR
// with 16-byte FIFOs, LCR with DLAB, MCR with loopback, LSR, MSR, SCR.
//
// Transmission is instantaneous: a byte written to THR goes straight to the
// ConsoleBackend, so THRE is always set again right after a write. Input from
// the host waits in a bounded host-side queue and moves into the receive FIFO
// as the guest drains it, so a fast host never overruns a slow guest.
// The interrupt output follows the PC wiring: asserted only while an enabled
// condition is pending AND MCR.OUT2 is set, and only edges are sent to the
// irqchip (ISA lines are edge-triggered on the PIC).
#pragma once

#include <mutex>

#include "devices/console_backend.hpp"
#include "devices/device.hpp"
#include "devices/fifo.hpp"

namespace apiary::devices {

namespace uart {
// Register offsets from the base port.
inline constexpr unsigned kRbrThrDll = 0, kIerDlm = 1, kIirFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6,
                          kScr = 7;
inline constexpr uint8_t kIerRda = 0x01, kIerThre = 0x02, kIerLineStatus = 0x04, kIerModemStatus = 0x08;
inline constexpr uint8_t kIirNoInterrupt = 0x01, kIirModemStatus = 0x00, kIirThre = 0x02, kIirRda = 0x04,
                         kIirLineStatus = 0x06, kIirTimeout = 0x0c, kIirFifoEnabled = 0xc0;
inline constexpr uint8_t kFcrEnable = 0x01, kFcrClearRx = 0x02, kFcrClearTx = 0x04, kFcrTriggerMask = 0xc0;
inline constexpr uint8_t kLcrDlab = 0x80;
inline constexpr uint8_t kMcrDtr = 0x01, kMcrRts = 0x02, kMcrOut1 = 0x04, kMcrOut2 = 0x08, kMcrLoop = 0x10,
                         kMcrMask = 0x1f;
inline constexpr uint8_t kLsrDataReady = 0x01, kLsrOverrun = 0x02, kLsrThre = 0x20, kLsrTemt = 0x40;
inline constexpr uint8_t kMsrDcts = 0x01, kMsrDdsr = 0x02, kMsrTeri = 0x04, kMsrDdcd = 0x08, kMsrCts = 0x10,
                         kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;
inline constexpr size_t kFifoSize = 16;
inline constexpr size_t kHostQueueSize = 4096;
inline constexpr uint16_t kResetDivisor = 12;  // 9600 baud
}  // namespace uart

class Uart16550 final : public Device {
 public:
  Uart16550(std::string name, uint32_t irq, IrqLine& irq_line, ConsoleBackend& console);
  const char* kind() const noexcept override { return "uart16550a"; }

  uint64_t io_read(uint64_t offset, unsigned size) override;
  void io_write(uint64_t offset, unsigned size, uint64_t value) override;

  // Host-side input (keyboard). Returns bytes accepted; the rest are dropped
  // and counted when the host queue is full.
  size_t input(std::span<const uint8_t> bytes);

  void reset() override;
  v1::DeviceState export_state() const override;
  void import_state(const v1::DeviceState& state) override;

 private:
  uint8_t read_reg(unsigned reg);
  void write_reg(unsigned reg, uint8_t v);
  void receive(uint8_t b);  // into the RX FIFO (from host queue or loopback)
  void refill_rx();
  uint8_t current_iir() const;
  uint8_t modem_status_lines() const;
  size_t rx_trigger() const;
  void update_irq();  // called with mutex_ held

  const uint32_t irq_;
  IrqLine& irq_line_;
  ConsoleBackend& console_;
  mutable std::mutex mutex_;
  uint8_t ier_ = 0, lcr_ = 0, mcr_ = 0, lsr_ = 0, msr_ = 0, scr_ = 0, fcr_ = 0;
  uint16_t divisor_ = uart::kResetDivisor;
  bool thre_pending_ = false;  // THRE interrupt condition (cleared by IIR read / THR write)
  InlineFifo<uint8_t, uart::kFifoSize> rx_fifo_;
  LazyFifo<uint8_t> host_queue_{uart::kHostQueueSize};
  bool irq_level_ = false;
  uint64_t tx_bytes_ = 0, rx_bytes_ = 0, input_dropped_ = 0, overruns_ = 0, irqs_ = 0;
};

}  // namespace apiary::devices
