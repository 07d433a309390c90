// uart_irq: COM1 driven by interrupts through the legacy 8259 path. After
// initialization the UART is touched only from the IRQ 4 handler (and an LSR
// poll for TEMT at exit). Output goes into a ring that THRE interrupts drain
// into the 16-byte FIFO; received bytes land in an input ring; the main loop
// sleeps in `sti; hlt` between interrupts.
//
// Prints "uart-irq: ready", echoes each input line as "echo: <line>" (CR or
// LF ends a line, empty lines are skipped), and on "quit" prints
// "uart-irq: <n> interrupts, bye", waits for the transmitter to drain and
// debug-exits 0. Any other vector (an exception, a stray IRQ other than
// the 8259's spurious IRQ 7, which is ignored) debug-exits 0x3f.
//
// Main code runs with IF=0 except inside `sti; hlt`, so it never races the
// handler and the rings need no locking. A full input ring switches the RDA
// interrupt off until the main loop has emptied it, so a burst of input waits
// in the UART and the VMM's host queue instead of being dropped.
#include <stddef.h>

#include "guest/lib/interrupts.hpp"
#include "guest/lib/io.hpp"
#include "guest/lib/runtime.hpp"
#include "vmm-core/layout.hpp"

extern "C" void uart_irq_entry();
extern "C" void uart_irq_handler();

namespace apiary::guestlib {

namespace {
constexpr uint16_t kBase = layout::kCom1Base;
constexpr uint16_t kIer = 1, kIir = 2, kFcr = 2, kMcr = 4, kLsr = 5;
constexpr uint8_t kIerRda = 0x01, kIerThre = 0x02;
constexpr uint8_t kIirNone = 0x01, kIirIdMask = 0x0e, kIirThre = 0x02, kIirRda = 0x04, kIirTimeout = 0x0c,
                  kIirLineStatus = 0x06;
constexpr uint8_t kFcrEnableClear14 = 0xc7;  // FIFO on, clear both, RX trigger 14
constexpr uint8_t kMcrDtrRtsOut2 = 0x0b, kMcrLoop = 0x10;
constexpr uint8_t kLsrDr = 0x01, kLsrTemt = 0x40;
constexpr size_t kTxFifo = 16;

constexpr uint8_t kUartVector = kIrqVectorBase + layout::kCom1Irq;  // 0x24

template <size_t N>
struct Ring {
  uint8_t buf[N];
  size_t head = 0, tail = 0;  // head: next write; tail: next read
  bool empty() const { return head == tail; }
  bool full() const { return head - tail == N; }
  size_t size() const { return head - tail; }
  void push(uint8_t b) { buf[head++ % N] = b; }
  uint8_t pop() { return buf[tail++ % N]; }
};
Ring<1024> tx;
Ring<256> rx;
uint8_t ier = kIerRda;
uint64_t interrupts;

void init_uart() {
  // runtime.cpp left COM1 at 115200 8N1, polled. Switching the FIFO on
  // flushes the receiver, so park the receiver in loopback (input then waits
  // in the VMM's host queue), rescue what already arrived, switch, and let
  // the queued input flow into the FIFO once loopback is off again.
  outb(kBase + kIer, 0);
  outb(kBase + kMcr, kMcrLoop);
  while (inb(kBase + kLsr) & kLsrDr) rx.push(inb(kBase));
  outb(kBase + kFcr, kFcrEnableClear14);
  outb(kBase + kIer, ier);
  outb(kBase + kMcr, kMcrDtrRtsOut2);  // OUT2 gates the interrupt onto IRQ 4
}

void put(char c) {
  if (c == '\n') put('\r');
  while (tx.full()) wait_for_interrupt();
  tx.push(static_cast<uint8_t>(c));
  if (!(ier & kIerThre)) {
    ier |= kIerThre;  // THR is empty, so this raises a THRE interrupt at once
    outb(kBase + kIer, ier);
  }
}

void put_str(const char* s) {
  while (*s) put(*s++);
}

void put_dec(uint64_t v) {
  char digits[20];
  int n = 0;
  do digits[n++] = static_cast<char>('0' + v % 10);
  while (v /= 10);
  while (n) put(digits[--n]);
}

}  // namespace

// IRQ 4, IF=0. Services the UART until IIR reports nothing pending, so the
// (edge-triggered) line is low when we leave and the next condition makes a
// fresh edge. The one exception: after a THRE chunk that leaves bytes in the
// ring we return at once; that THR write re-raised the line (an edge the
// PIC has latched), and the next interrupt sends the next chunk.
extern "C" void uart_irq_handler() {
  ++interrupts;
  for (;;) {
    const uint8_t iir = inb(kBase + kIir);
    if (iir & kIirNone) return;
    switch (iir & kIirIdMask) {
      case kIirRda:
      case kIirTimeout:
        while (inb(kBase + kLsr) & kLsrDr) {
          if (rx.full()) {  // flow control: the rest waits in the UART (and the VMM)
            ier &= static_cast<uint8_t>(~kIerRda);
            outb(kBase + kIer, ier);
            break;
          }
          rx.push(inb(kBase));
        }
        break;
      case kIirThre: {
        size_t n = tx.size();
        if (n <= kTxFifo) {  // last chunk: THRE off first, so these writes raise nothing
          ier &= static_cast<uint8_t>(~kIerThre);
          outb(kBase + kIer, ier);
        }
        if (n > kTxFifo) n = kTxFifo;
        while (n--) outb(kBase, tx.pop());
        if (!tx.empty()) return;
        break;
      }
      case kIirLineStatus:
        inb(kBase + kLsr);
        break;
      default:  // modem status (not enabled)
        inb(kBase + 6);
        break;
    }
  }
}

int guest_main(const BootInfo&) {
  install_idt();
  set_gate(kUartVector, uart_irq_entry);
  init_pics(1u << layout::kCom1Irq);
  init_uart();
  put_str("uart-irq: ready\n");
  char line[128];
  size_t len = 0;
  for (;;) {
    while (!rx.empty()) {
      const char c = static_cast<char>(rx.pop());
      if (c != '\r' && c != '\n') {
        if (len < sizeof(line)) line[len++] = c;
        continue;
      }
      if (len == 4 && line[0] == 'q' && line[1] == 'u' && line[2] == 'i' && line[3] == 't') {
        put_str("uart-irq: ");
        put_dec(interrupts);
        put_str(" interrupts, bye\n");
        while (!tx.empty()) wait_for_interrupt();
        while (!(inb(kBase + kLsr) & kLsrTemt)) {
        }
        return 0;
      }
      if (len) {
        put_str("echo: ");
        for (size_t i = 0; i < len; ++i) put(line[i]);
        put('\n');
      }
      len = 0;
    }
    if (!(ier & kIerRda)) {  // the input ring is empty again: resume receiving
      ier |= kIerRda;
      outb(kBase + kIer, ier);
    }
    wait_for_interrupt();
  }
}

}  // namespace apiary::guestlib
