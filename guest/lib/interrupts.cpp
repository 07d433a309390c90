#include "guest/lib/interrupts.hpp"

#include "guest/lib/io.hpp"

namespace apiary::guestlib {

namespace {
constexpr uint16_t kCodeSelector = 0x08;  // entry.S's 64-bit code segment
constexpr uint8_t kInterruptGate = 0x8e;  // present, DPL 0, 64-bit interrupt gate
constexpr uint8_t kIcw1Init = 0x11;       // edge triggered, cascade, ICW4 follows
constexpr uint8_t kIcw4_8086 = 0x01;

struct IdtGate {
  uint16_t offset_low, selector;
  uint8_t ist, type_attr;
  uint16_t offset_mid;
  uint32_t offset_high, reserved;
};
static_assert(sizeof(IdtGate) == 16);
IdtGate idt[256];
}  // namespace

void set_gate(unsigned vector, void (*fn)()) {
  const auto a = reinterpret_cast<uint64_t>(fn);
  idt[vector] = {static_cast<uint16_t>(a), kCodeSelector, 0, kInterruptGate, static_cast<uint16_t>(a >> 16),
                 static_cast<uint32_t>(a >> 32), 0};
}

void install_idt() {
  for (unsigned v = 0; v < 256; ++v) set_gate(v, unexpected_vector_entry);
  set_gate(kIrqVectorBase + kSpuriousIrq, spurious_irq7_entry);
  struct [[gnu::packed]] {
    uint16_t limit;
    uint64_t base;
  } idtr{sizeof(idt) - 1, reinterpret_cast<uint64_t>(idt)};
  asm volatile("lidt %0" : : "m"(idtr));
}

void init_pics(uint8_t unmasked_irqs) {
  using namespace layout;
  outb(kPic1Base, kIcw1Init);
  outb(kPic2Base, kIcw1Init);
  outb(kPic1Base + 1, kIrqVectorBase);
  outb(kPic2Base + 1, kIrqVectorBase + 8);
  outb(kPic1Base + 1, 1u << kPicCascadeIrq);  // ICW3: the slave hangs on IRQ 2
  outb(kPic2Base + 1, kPicCascadeIrq);        // ICW3: the slave's cascade identity
  outb(kPic1Base + 1, kIcw4_8086);
  outb(kPic2Base + 1, kIcw4_8086);
  outb(kPic1Base + 1, static_cast<uint8_t>(~unmasked_irqs));
  outb(kPic2Base + 1, 0xff);
}

}  // namespace apiary::guestlib
