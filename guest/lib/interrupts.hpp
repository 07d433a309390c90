// Interrupts for the guests that take them (uart_irq, memload): a 64-bit
// IDT, the legacy 8259 pair remapped above the exceptions, and the sleep
// between interrupts.
//
// The other guests run with interrupts off and poll. A guest that wants one
// line installs the IDT (every vector at first goes to
// unexpected_vector_entry, which debug-exits 0x3f), points its vector at its
// own entry stub, and unmasks exactly that line at the PICs. The stub ends
// with a non-specific EOI to the master PIC (these guests use IRQs 0-7).
#pragma once

#include <stdint.h>

#include "vmm-core/layout.hpp"

extern "C" void unexpected_vector_entry();
extern "C" void spurious_irq7_entry();

namespace apiary::guestlib {

// IRQ n of the master PIC arrives as vector kIrqVectorBase + n.
inline constexpr uint8_t kIrqVectorBase = 0x20;
inline constexpr uint8_t kPicEoi = 0x20;  // OCW2: non-specific end of interrupt
inline constexpr uint8_t kSpuriousIrq = 7;  // the master 8259's spurious interrupt line

// Fills the IDT with unexpected_vector_entry (IRQ 7, the 8259's spurious
// vector, with spurious_irq7_entry, which ignores it) and loads it.
void install_idt();
// Points one vector at fn (a 64-bit interrupt gate, DPL 0).
void set_gate(unsigned vector, void (*fn)());
// ICW1-4 to both PICs (master at kIrqVectorBase, slave 8 above, cascade on
// IRQ 2), then masks every line but those set in unmasked_irqs (bits 0-7).
void init_pics(uint8_t unmasked_irqs);

// With IF=0 outside this, main code never races a handler.
inline void wait_for_interrupt() { asm volatile("sti; hlt; cli" ::: "memory"); }

}  // namespace apiary::guestlib
