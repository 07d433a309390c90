// The smp guest's application-processor entry: a real-mode trampoline the
// BSP copies to layout::kApTrampoline (0x10000), where a STARTUP IPI with
// vector 0x10 starts each AP (CS = 0x1000, IP = 0, real mode).
//
// Why assembly: an AP starts in 16-bit real mode and must climb to long
// mode itself: load a temporary GDT (32-bit code, data, 64-bit code),
// protected mode, PAE + the BSP's page tables (CR3 passed in ap_boot_cr3) +
// EFER.LME + paging, then 64-bit code. There it switches to the BSP's GDT
// (ap_boot_gdtr, stored by the BSP with sgdt), takes a private stack and
// calls ap_main() in C++.
//
// The block is linked inside the kernel image but only ever runs from its
// copy, so every absolute reference into it is written as TRAMP(symbol),
// the symbol's address in the copy. References out of it (the stack
// counter, the stacks, ap_entry64) are ordinary absolute addresses in the
// image, which is identity mapped below 2 GiB. All APs may run this at
// once (the BSP starts them with one broadcast), so the only shared write,
// taking a stack, is a lock xadd on a counter.
#include "guest/lib/asm_abi.hpp"

#define TRAMP(sym) (APIARY_AP_TRAMPOLINE + ((sym) - ap_trampoline_start))
#define T_CODE32 0x08
#define T_DATA 0x10
#define T_CODE64 0x18
#define AP_STACK_SIZE 4096
#define AP_STACKS (APIARY_MAX_VCPUS - 1)

    .section .rodata.ap_trampoline, "a", @progbits
    .balign 16
    .globl ap_trampoline_start
ap_trampoline_start:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl %ds:(tramp_gdtr - ap_trampoline_start)
    mov %cr0, %eax
    or $X86_CR0_PE, %eax
    mov %eax, %cr0
    ljmpl $T_CODE32, $TRAMP(tramp32)

    .code32
tramp32:
    mov $T_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %cr4, %eax
    or $X86_CR4_PAE, %eax
    mov %eax, %cr4
    mov TRAMP(ap_boot_cr3), %eax
    mov %eax, %cr3
    mov $X86_MSR_EFER, %ecx
    rdmsr
    or $X86_EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $X86_CR0_PG, %eax
    mov %eax, %cr0
    ljmp $T_CODE64, $TRAMP(tramp64)

    .code64
tramp64:
    lgdt TRAMP(ap_boot_gdtr)
    mov $APIARY_GDT_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    // Stack k (0-based, in arrival order) is [ap_stacks + k*SIZE, +SIZE).
    mov $1, %eax
    lock xaddl %eax, ap_stack_next
    cmp $AP_STACKS, %eax
    jae 1f
    inc %eax
    imul $AP_STACK_SIZE, %eax, %eax
    mov $ap_stacks, %rsp
    add %rax, %rsp
    // Into the image with the BSP's code selector.
    pushq $APIARY_GDT_CODE64
    movabs $ap_entry64, %rax
    pushq %rax
    lretq
1:  cli                     // more APs than stacks: park
    hlt
    jmp 1b

    .balign 8
tramp_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff    // 0x08: 32-bit code, flat
    .quad 0x00cf92000000ffff    // 0x10: data, flat
    .quad 0x00af9a000000ffff    // 0x18: 64-bit code
tramp_gdt_end:
tramp_gdtr:
    .word tramp_gdt_end - tramp_gdt - 1
    .long TRAMP(tramp_gdt)

// Filled in the copy by the BSP before the first IPI.
    .balign 8
    .globl ap_boot_cr3
ap_boot_cr3:
    .quad 0
    .globl ap_boot_gdtr
ap_boot_gdtr:
    .word 0                     // limit
    .quad 0                     // base
    .globl ap_trampoline_end
ap_trampoline_end:

// ----------------------------------------------------- in the image --
    .text
    .code64
// With the stack set: a call keeps the ABI's alignment for ap_main.
ap_entry64:
    xor %ebp, %ebp
    call ap_main
2:  cli
    hlt
    jmp 2b

    .bss
    .balign 4
ap_stack_next:
    .long 0

// Not in .bss: the stacks need no zeroing (guest.ld puts .apiary_stack.*
// after __bss_end, like the BSP's stack).
    .section .apiary_stack.ap, "aw", @nobits
    .balign 16
ap_stacks:
    .space AP_STACK_SIZE * AP_STACKS

    .section .note.GNU-stack, "", @progbits
