// Polled 16550 driver for COM1; see serial.hpp.
#include "guest/lib/serial.hpp"

#include "guest/lib/io.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib::serial {

namespace {
constexpr uint16_t kBase = layout::kCom1Base;
}

void init() {
  outb(kBase + kIerDlm, 0);  // no interrupts
  outb(kBase + kLcr, kLcrDlab);
  outb(kBase + kDll, kDivisor115200 & 0xff);
  outb(kBase + kIerDlm, kDivisor115200 >> 8);
  outb(kBase + kLcr, kLcr8N1);
  outb(kBase + kMcr, kMcrDtrRts);
}

void write_byte(uint8_t b) {
  while (!(inb(kBase + kLsr) & kLsrThrEmpty)) {
  }
  outb(kBase + kRbrThr, b);
}

bool can_read() { return inb(kBase + kLsr) & kLsrDataReady; }

uint8_t read_byte() {
  while (!can_read()) {
  }
  return inb(kBase + kRbrThr);
}

}  // namespace apiary::guestlib::serial
