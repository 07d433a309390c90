// The catch-all interrupt entry of guests with an IDT (guest/lib/interrupts.hpp).
#include "guest/lib/asm_abi.hpp"

    .text
    .code64

// Every vector nobody claimed (an exception, a stray IRQ): no output,
// debug-exit 0x3f (exit status 127).
    .globl unexpected_vector_entry
unexpected_vector_entry:
    mov $0x3f, %eax
    mov $APIARY_DEBUG_EXIT_PORT, %edx
    outl %eax, %dx
1:  cli
    hlt
    jmp 1b

// IRQ 7 of the master PIC when nothing is in service there: the 8259's
// spurious interrupt (a line that dropped before the acknowledge). It takes
// no EOI, so it is simply ignored.
    .globl spurious_irq7_entry
spurious_irq7_entry:
    iretq

    .section .note.GNU-stack, "", @progbits
