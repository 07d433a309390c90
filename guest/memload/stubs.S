// memload's timer interrupt (see main.cpp).
#include "guest/lib/asm_abi.hpp"

    .text
    .code64

// Vector 0x20 (IRQ 0, the PIT, after the PIC remap): one more tick, then a
// non-specific EOI to the master PIC. Touches only %rax, which it saves.
    .globl memload_timer_entry
memload_timer_entry:
    push %rax
    incq memload_ticks(%rip)
    mov $APIARY_PIC_EOI, %al
    out %al, $APIARY_PIC1_COMMAND
    pop %rax
    iretq

    .bss
    .balign 8
    .globl memload_ticks
memload_ticks:
    .quad 0

    .section .note.GNU-stack, "", @progbits
