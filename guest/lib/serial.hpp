// COM1 (16550A) driven by polling: the guests' console.
//
// No interrupts, no FIFO management: write waits for THRE, read waits for
// DR. Each register access is a port exit (~10 us under the emulator), so a
// printed character costs two exits and init costs six.
#pragma once

#include <stdint.h>

namespace apiary::guestlib::serial {

// 16550 register offsets from the base port and the bits we use. These are
// the UART's own register map, not part of the Apiary machine layout.
inline constexpr uint16_t kRbrThr = 0;   // receive buffer / transmit holding (DLAB=0)
inline constexpr uint16_t kDll = 0;      // divisor latch low (DLAB=1)
inline constexpr uint16_t kIerDlm = 1;   // interrupt enable / divisor latch high
inline constexpr uint16_t kFcr = 2;      // FIFO control (write)
inline constexpr uint16_t kLcr = 3;      // line control
inline constexpr uint16_t kMcr = 4;      // modem control
inline constexpr uint16_t kLsr = 5;      // line status
inline constexpr uint8_t kLcrDlab = 0x80;
inline constexpr uint8_t kLcr8N1 = 0x03;
inline constexpr uint8_t kMcrDtrRts = 0x03;
inline constexpr uint8_t kLsrDataReady = 0x01;
inline constexpr uint8_t kLsrThrEmpty = 0x20;
inline constexpr uint16_t kDivisor115200 = 1;

// 115200 8N1, interrupts off, FIFO off.
void init();
// Raw byte out (no newline translation).
void write_byte(uint8_t b);
// True when a received byte is waiting.
bool can_read();
// Blocks until a byte arrives.
uint8_t read_byte();

}  // namespace apiary::guestlib::serial
