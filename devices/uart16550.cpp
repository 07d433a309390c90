#include "devices/uart16550.hpp"

namespace apiary::devices {

using namespace uart;

Uart16550::Uart16550(std::string name, uint32_t irq, IrqLine& irq_line, ConsoleBackend& console)
    : Device(std::move(name)), irq_(irq), irq_line_(irq_line), console_(console) {
  reset();
}

void Uart16550::reset() {
  std::lock_guard lock(mutex_);
  ier_ = 0;
  lcr_ = 0;
  mcr_ = 0;
  lsr_ = kLsrThre | kLsrTemt;
  msr_ = kMsrDcd | kMsrDsr | kMsrCts;  // a host terminal is "connected"
  scr_ = 0;
  fcr_ = 0;
  divisor_ = kResetDivisor;
  thre_pending_ = false;
  rx_fifo_.clear();
  update_irq();
}

size_t Uart16550::rx_trigger() const {
  if (!(fcr_ & kFcrEnable)) return 1;
  static constexpr size_t levels[] = {1, 4, 8, 14};
  return levels[(fcr_ & kFcrTriggerMask) >> 6];
}

uint8_t Uart16550::modem_status_lines() const {
  if (!(mcr_ & kMcrLoop)) return msr_ & 0xf0;
  uint8_t lines = 0;
  if (mcr_ & kMcrRts) lines |= kMsrCts;
  if (mcr_ & kMcrDtr) lines |= kMsrDsr;
  if (mcr_ & kMcrOut1) lines |= kMsrRi;
  if (mcr_ & kMcrOut2) lines |= kMsrDcd;
  return lines;
}

uint8_t Uart16550::current_iir() const {
  const uint8_t fifo_bits = (fcr_ & kFcrEnable) ? kIirFifoEnabled : 0;
  if ((ier_ & kIerLineStatus) && (lsr_ & kLsrOverrun)) return kIirLineStatus | fifo_bits;
  if ((ier_ & kIerRda) && !rx_fifo_.empty())
    return (rx_fifo_.size() >= rx_trigger() ? kIirRda : kIirTimeout) | fifo_bits;
  if ((ier_ & kIerThre) && thre_pending_) return kIirThre | fifo_bits;
  if ((ier_ & kIerModemStatus) && (msr_ & 0x0f)) return kIirModemStatus | fifo_bits;
  return kIirNoInterrupt | fifo_bits;
}

void Uart16550::update_irq() {
  const bool pending = !(current_iir() & kIirNoInterrupt);
  // On the PC, OUT2 gates the UART's interrupt onto the ISA bus; in loopback
  // the interrupt output is disconnected from the pin.
  const bool level = pending && (mcr_ & kMcrOut2) && !(mcr_ & kMcrLoop);
  if (level == irq_level_) return;
  irq_level_ = level;
  if (level) ++irqs_;
  irq_line_.set_level(irq_, level);
}

void Uart16550::receive(uint8_t b) {
  const size_t cap = (fcr_ & kFcrEnable) ? kFifoSize : 1;
  if (rx_fifo_.size() >= cap) {
    lsr_ |= kLsrOverrun;
    ++overruns_;
    return;
  }
  rx_fifo_.push_back(b);
  ++rx_bytes_;
  lsr_ |= kLsrDataReady;
}

void Uart16550::refill_rx() {
  const size_t cap = (fcr_ & kFcrEnable) ? kFifoSize : 1;
  while (!host_queue_.empty() && rx_fifo_.size() < cap && !(mcr_ & kMcrLoop)) {
    receive(host_queue_.front());
    host_queue_.pop_front();
  }
}

size_t Uart16550::input(std::span<const uint8_t> bytes) {
  std::lock_guard lock(mutex_);
  size_t accepted = 0;
  for (uint8_t b : bytes) {
    if (host_queue_.size() >= kHostQueueSize) {
      ++input_dropped_;
      continue;
    }
    host_queue_.push_back(b);
    ++accepted;
  }
  refill_rx();
  update_irq();
  return accepted;
}

uint8_t Uart16550::read_reg(unsigned reg) {
  const bool dlab = lcr_ & kLcrDlab;
  switch (reg) {
    case kRbrThrDll: {
      if (dlab) return static_cast<uint8_t>(divisor_ & 0xff);
      uint8_t b = 0;
      if (!rx_fifo_.empty()) {
        b = rx_fifo_.front();
        rx_fifo_.pop_front();
      }
      refill_rx();
      if (rx_fifo_.empty()) lsr_ &= static_cast<uint8_t>(~kLsrDataReady);
      return b;
    }
    case kIerDlm:
      return dlab ? static_cast<uint8_t>(divisor_ >> 8) : ier_;
    case kIirFcr: {
      const uint8_t iir = current_iir();
      // Reading IIR acknowledges a THRE interrupt when that is what it reports.
      if ((iir & 0x0f) == kIirThre) thre_pending_ = false;
      return iir;
    }
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr: {
      uint8_t v = lsr_;
      lsr_ &= static_cast<uint8_t>(~kLsrOverrun);  // error bits clear on read
      return v;
    }
    case kMsr: {
      uint8_t v = static_cast<uint8_t>(modem_status_lines() | (msr_ & 0x0f));
      msr_ &= 0xf0;  // delta bits clear on read
      return v;
    }
    case kScr:
      return scr_;
  }
  return 0xff;
}

void Uart16550::write_reg(unsigned reg, uint8_t v) {
  const bool dlab = lcr_ & kLcrDlab;
  switch (reg) {
    case kRbrThrDll:
      if (dlab) {
        divisor_ = static_cast<uint16_t>((divisor_ & 0xff00) | v);
        return;
      }
      ++tx_bytes_;
      if (mcr_ & kMcrLoop) {
        receive(v);
      } else {
        const uint8_t byte[1] = {v};
        console_.write(byte);
      }
      // The byte left at once: the holding register is empty again.
      thre_pending_ = true;
      return;
    case kIerDlm:
      if (dlab) {
        divisor_ = static_cast<uint16_t>((divisor_ & 0x00ff) | (v << 8));
      } else {
        const bool thre_enabled_now = (v & kIerThre) && !(ier_ & kIerThre);
        ier_ = v & 0x0f;
        if (thre_enabled_now && (lsr_ & kLsrThre)) thre_pending_ = true;
      }
      return;
    case kIirFcr:
      if ((v & kFcrEnable) != (fcr_ & kFcrEnable)) rx_fifo_.clear();  // mode change flushes
      if (v & kFcrClearRx) rx_fifo_.clear();
      fcr_ = v & (kFcrEnable | kFcrTriggerMask);
      if (rx_fifo_.empty()) lsr_ &= static_cast<uint8_t>(~kLsrDataReady);
      refill_rx();
      return;
    case kLcr:
      lcr_ = v;
      return;
    case kMcr: {
      const uint8_t before = modem_status_lines();
      mcr_ = v & kMcrMask;
      const uint8_t after = modem_status_lines();
      const uint8_t changed = before ^ after;
      if (changed & kMsrCts) msr_ |= kMsrDcts;
      if (changed & kMsrDsr) msr_ |= kMsrDdsr;
      if ((before & kMsrRi) && !(after & kMsrRi)) msr_ |= kMsrTeri;
      if (changed & kMsrDcd) msr_ |= kMsrDdcd;
      refill_rx();
      return;
    }
    case kLsr:
    case kMsr:
      return;  // read-only; writes ignored as on real parts
    case kScr:
      scr_ = v;
      return;
  }
}

uint64_t Uart16550::io_read(uint64_t offset, unsigned size) {
  std::lock_guard lock(mutex_);
  uint64_t v = 0;
  for (unsigned i = 0; i < size; ++i) {
    const uint64_t reg = offset + i;
    v |= static_cast<uint64_t>(reg < 8 ? read_reg(static_cast<unsigned>(reg)) : 0xff) << (8 * i);
  }
  update_irq();
  return v;
}

void Uart16550::io_write(uint64_t offset, unsigned size, uint64_t value) {
  std::lock_guard lock(mutex_);
  for (unsigned i = 0; i < size; ++i) {
    const uint64_t reg = offset + i;
    if (reg < 8) write_reg(static_cast<unsigned>(reg), static_cast<uint8_t>(value >> (8 * i)));
  }
  update_irq();
}

v1::DeviceState Uart16550::export_state() const {
  std::lock_guard lock(mutex_);
  v1::DeviceState s = base_state();
  auto& r = *s.mutable_registers();
  r["ier"] = ier_;
  r["iir"] = current_iir();
  r["fcr"] = fcr_;
  r["lcr"] = lcr_;
  r["mcr"] = mcr_;
  r["lsr"] = lsr_;
  r["msr"] = static_cast<uint8_t>(modem_status_lines() | (msr_ & 0x0f));
  r["scr"] = scr_;
  r["divisor"] = divisor_;
  r["thre_pending"] = thre_pending_;
  r["msr_raw"] = msr_;
  OpaqueWriter w;  // the RX FIFO, then input the FIFO had no room for yet
  w.bytes(rx_fifo_);
  w.bytes(host_queue_);
  s.set_opaque(w.take());
  auto& c = *s.mutable_counters();
  c["tx_bytes"] = tx_bytes_;
  c["rx_bytes"] = rx_bytes_;
  c["rx_fifo_level"] = rx_fifo_.size();
  c["host_queue"] = host_queue_.size();
  c["input_dropped"] = input_dropped_;
  c["overruns"] = overruns_;
  c["irqs"] = irqs_;
  c["irq_level"] = irq_level_;
  return s;
}

void Uart16550::import_state(const v1::DeviceState& state) {
  StateReader r(*this, state);
  OpaqueReader o(r);
  const std::string rx = o.bytes(kFifoSize), host = o.bytes(kHostQueueSize);
  o.expect_end();
  std::lock_guard lock(mutex_);
  ier_ = r.reg_as<uint8_t>("ier");
  fcr_ = r.reg_as<uint8_t>("fcr");
  lcr_ = r.reg_as<uint8_t>("lcr");
  mcr_ = r.reg_as<uint8_t>("mcr");
  lsr_ = r.reg_as<uint8_t>("lsr");
  msr_ = r.reg_as<uint8_t>("msr_raw");
  scr_ = r.reg_as<uint8_t>("scr");
  divisor_ = r.reg_as<uint16_t>("divisor");
  thre_pending_ = r.flag("thre_pending");
  rx_fifo_.assign(rx.begin(), rx.end());
  host_queue_.assign(host.begin(), host.end());
  update_irq();
}

}  // namespace apiary::devices
