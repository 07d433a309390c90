// uart_irq's interrupt entry points (see main.cpp).
#include "guest/lib/asm_abi.hpp"

    .text
    .code64

// Vector 0x24 (IRQ 4 after the PIC remap). On entry the CPU has pushed five
// quadwords onto a 16-byte aligned stack; nine more pushes make the call
// below see the SysV alignment (rsp + 8 a multiple of 16).
    .globl uart_irq_entry
uart_irq_entry:
    push %rax
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    cld
    call uart_irq_handler
    mov $APIARY_PIC_EOI, %al    // non-specific EOI to the master PIC
    out %al, $APIARY_PIC1_COMMAND
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rax
    iretq

    .section .note.GNU-stack, "", @progbits
