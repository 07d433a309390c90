// The guest images inside the apiary binary (see embedded.hpp). Host
// assembly: .incbin copies each built image verbatim into .rodata between
// a start and an end symbol. The paths come from guest/CMakeLists.txt as
// APIARY_<NAME>_ELF.

.macro embed name, path
    .section .rodata.apiary_guest_\name, "a", @progbits
    .balign 16
    .globl apiary_guest_\name\()_start
    .hidden apiary_guest_\name\()_start
    .globl apiary_guest_\name\()_end
    .hidden apiary_guest_\name\()_end
apiary_guest_\name\()_start:
    .incbin "\path"
apiary_guest_\name\()_end:
.endm

    embed demo_elf, APIARY_DEMO_ELF
    embed hello_elf, APIARY_HELLO_ELF
    embed triple_elf, APIARY_TRIPLE_ELF
    embed spin_elf, APIARY_SPIN_ELF
    embed smp_elf, APIARY_SMP_ELF

    .section .note.GNU-stack, "", @progbits
