// Entry stubs shared by every in-tree guest: one image, three ways in.
//
// The image is linked once at layout::kKernelLoad (0x100000), identity
// mapped, and .text.head is the first thing in it (guest.ld puts it there):
//
//   0x100000  multiboot v1 header (address-field form, so the flat .mb file
//             needs no ELF parsing)
//   ...       apiary_pvh_entry32 / apiary_multiboot_entry32: 32-bit protected
//             mode, paging off. Both switch to long mode themselves.
//   0x100200  apiary_linux_entry64: the Linux 64-bit boot protocol enters
//             here (code32_start + 0x200), already in long mode.
//
// All three end in the same place: their own GDT, their own page tables,
// their own stack, .bss zeroed, then guest_entry(protocol, boot_ptr). The
// page tables are initialized statically with .rept (0..4 GiB in 2 MiB
// pages) because guest code runs under an instruction emulator here: a
// 2048-iteration fill loop at boot would cost milliseconds, a data section
// costs nothing. The whole path is ~40 instructions.
#include "guest/lib/asm_abi.hpp"

#define MB_HEADER_FLAGS (APIARY_MB_HEADER_MEMORY_INFO | APIARY_MB_HEADER_AOUT_KLUDGE)
#define PTE_TABLE (X86_PTE_PRESENT | X86_PTE_WRITABLE)
#define PTE_2M (X86_PTE_PRESENT | X86_PTE_WRITABLE | X86_PTE_HUGE)
#define STACK_SIZE 16384

    .section .text.head, "ax", @progbits
    .code32
    .globl apiary_image_start
apiary_image_start:

// ------------------------------------------------------ multiboot header --
    .balign 4
    .globl apiary_multiboot_header
apiary_multiboot_header:
    .long APIARY_MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(APIARY_MB_HEADER_MAGIC + MB_HEADER_FLAGS)
    .long apiary_multiboot_header   // header_addr
    .long _kernel_start             // load_addr
    .long _edata                    // load_end_addr
    .long _end                      // bss_end_addr
    .long apiary_multiboot_entry32  // entry_addr

// ------------------------------------------------------ 32-bit entries --
// PVH: %ebx = hvm_start_info.
    .globl apiary_pvh_entry32
apiary_pvh_entry32:
    cli
    mov $APIARY_PROTOCOL_PVH, %edi
    mov %ebx, %esi
    jmp 1f

// Multiboot: %eax = bootloader magic, %ebx = multiboot_info. A wrong magic
// passes boot_ptr 0, which the BootInfo parser reports as "no boot info".
    .globl apiary_multiboot_entry32
apiary_multiboot_entry32:
    cli
    mov $APIARY_PROTOCOL_MULTIBOOT, %edi
    xor %esi, %esi
    cmp $APIARY_MB_BOOTLOADER_MAGIC, %eax
    jne 1f
    mov %ebx, %esi

1:  lgdt apiary_gdt_pointer
    mov $APIARY_GDT_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov %cr4, %eax
    or $X86_CR4_PAE, %eax
    mov %eax, %cr4
    mov $apiary_pml4, %eax
    mov %eax, %cr3
    mov $X86_MSR_EFER, %ecx
    rdmsr
    or $X86_EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $(X86_CR0_PG | X86_CR0_PE), %eax
    mov %eax, %cr0
    ljmp $APIARY_GDT_CODE64, $from_32bit

    .code64
// The upper halves of the registers are undefined after a 32-bit stretch.
from_32bit:
    mov %edi, %edi
    mov %esi, %esi
    jmp common64

// ------------------------------------------------- Linux 64-bit entry --
// Long mode, %rsi = boot_params, paging on (the VMM's tables). Take over
// with our own GDT, page tables and stack; reload CS with a far return.
    .org APIARY_LINUX_64_ENTRY_OFFSET
    .globl apiary_linux_entry64
apiary_linux_entry64:
    cli
    mov $APIARY_PROTOCOL_LINUX, %edi
    lgdt apiary_gdt_pointer
    mov $apiary_pml4, %eax
    mov %rax, %cr3
    mov $apiary_stack_top, %esp
    pushq $APIARY_GDT_CODE64
    pushq $1f
    lretq
1:  mov $APIARY_GDT_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs

// ------------------------------------------------------- common tail --
// %edi = protocol, %rsi = boot pointer (both zero-extended).
common64:
    cld
    mov $apiary_stack_top, %esp
    mov %edi, %r12d
    mov %rsi, %r13
    mov $__bss_start, %edi      // the stack lives above __bss_end: not zeroed
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb
    mov %r12d, %edi
    mov %r13, %rsi
    xor %ebp, %ebp
    call guest_entry
    mov $APIARY_EXIT_ENTRY_RETURNED, %eax
    mov $APIARY_DEBUG_EXIT_PORT, %edx
    outl %eax, %dx
2:  hlt
    jmp 2b

// ------------------------------------------------------------------ GDT --
    .section .rodata.apiary_gdt, "a", @progbits
    .balign 16
apiary_gdt:
    .quad 0                     // null
    .quad 0x00af9a000000ffff    // 0x08: 64-bit code, DPL 0
    .quad 0x00cf92000000ffff    // 0x10: flat 4 GiB data, DPL 0
apiary_gdt_end:
    .balign 8
// lgdt reads 6 bytes in 32-bit mode, 10 in 64-bit mode: one pointer for both.
apiary_gdt_pointer:
    .word apiary_gdt_end - apiary_gdt - 1
    .quad apiary_gdt

// ---------------------------------------------------------- page tables --
// PML4[0] -> PDPT; PDPT[0..3] -> four page directories; each PD entry maps
// one 2 MiB page, so the four PDs cover 0..4 GiB identity mapped.
    .section .data.apiary_pagetables, "aw", @progbits
    .balign 4096
apiary_pml4:
    .quad apiary_pdpt + PTE_TABLE
    .fill 511, 8, 0
apiary_pdpt:
    .set .Lpd_index, 0
    .rept 4
    .quad apiary_pd + .Lpd_index * 4096 + PTE_TABLE
    .set .Lpd_index, .Lpd_index + 1
    .endr
    .fill 508, 8, 0
apiary_pd:
    .set .Lpage_addr, 0
    .rept 4 * 512
    .quad .Lpage_addr + PTE_2M
    .set .Lpage_addr, .Lpage_addr + X86_PAGE_2M
    .endr

// ---------------------------------------------------------------- stack --
// Its own NOBITS section, placed after __bss_end by guest.ld.
    .section .apiary_stack, "aw", @nobits
    .balign 16
    .space STACK_SIZE
apiary_stack_top:

// ---------------------------------------------------------- PVH ELF note --
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                                 // namesz: "Xen\0"
    .long 4                                 // descsz
    .long APIARY_XEN_ELFNOTE_PHYS32_ENTRY   // type
    .asciz "Xen"
    .long apiary_pvh_entry32

    .section .note.GNU-stack, "", @progbits
