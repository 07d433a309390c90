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

    .section .note.GNU-stack, "", @progbits
