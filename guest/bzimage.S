// Wraps a guest's flat image (<name>.mb) into a Linux bzImage.
//
// A bzImage is a real-mode setup part followed by the protected-mode kernel.
// Our guests never run real-mode code; the setup part exists only to carry
// the setup header that tells a 64-bit boot-protocol loader where and how to
// put the kernel. So: two sectors (setup_sects = 1, plus the boot sector),
// header at 0x1f1, then the flat image byte for byte. The flat image is
// linked at 0x100000 and has its 64-bit entry at offset 0x200, which is
// where the 64-bit protocol enters (code32_start + 0x200).
//
// Built per guest as:  assemble with -DAPIARY_FLAT_IMAGE="<path>.mb", link
// with guest/bzimage.ld and --just-symbols=<name>.elf (for init_size, which
// needs the .bss size the flat file does not carry), objcopy -O binary.
#include "guest/lib/asm_abi.hpp"

#define SETUP_SIZE ((APIARY_LINUX_SETUP_SECTS + 1) * 512)

// Stops the build if a field is not at its documented offset.
.macro at offset
    .if . - bzimage_start != \offset
    .error "bzImage setup header field at the wrong offset"
    .endif
.endm

    .section .bzimage, "a", @progbits
    .globl bzimage_start
bzimage_start:
    .fill APIARY_LINUX_SETUP_HEADER_OFFSET, 1, 0  // (not .org: keeps `at` constant)
    at 0x1f1
    .byte APIARY_LINUX_SETUP_SECTS          // setup_sects
    .word 0                                 // root_flags
    .long (kernel_end - kernel_start + 15) / 16  // syssize (16-byte units)
    .word 0                                 // ram_size
    .word 0                                 // vid_mode
    .word 0                                 // root_dev
    at 0x1fe
    .word APIARY_LINUX_BOOT_FLAG            // boot_flag
    at 0x200
    .byte 0xeb, header_end - 0x202          // jump: short jmp over the header
    at 0x202
    .long APIARY_LINUX_HEADER_MAGIC         // header "HdrS"
    .word APIARY_LINUX_BOOT_VERSION         // version
    .long 0                                 // realmode_swtch
    .word 0                                 // start_sys_seg
    .word version_string - 0x200            // kernel_version
    .byte 0                                 // type_of_loader (the loader's)
    .byte APIARY_LINUX_LOADED_HIGH          // loadflags
    .word 0                                 // setup_move_size
    at 0x214
    .long APIARY_KERNEL_LOAD                // code32_start
    .long 0                                 // ramdisk_image
    .long 0                                 // ramdisk_size
    .long 0                                 // bootsect_kludge
    .word 0                                 // heap_end_ptr
    .byte 0                                 // ext_loader_ver
    .byte 0                                 // ext_loader_type
    .long 0                                 // cmd_line_ptr
    .long APIARY_INITRD_MAX                 // initrd_addr_max
    .long APIARY_LINUX_KERNEL_ALIGNMENT     // kernel_alignment
    .byte 0                                 // relocatable_kernel
    .byte 21                                // min_alignment (log2 of 2 MiB)
    at 0x236
    .word APIARY_LINUX_XLF_KERNEL_64        // xloadflags
    .long APIARY_LINUX_CMDLINE_SIZE         // cmdline_size
    .long 0                                 // hardware_subarch
    .quad 0                                 // hardware_subarch_data
    .long 0                                 // payload_offset
    .long 0                                 // payload_length
    .quad 0                                 // setup_data
    at 0x258
    .quad APIARY_KERNEL_LOAD                // pref_address
    at 0x260
    .long _apiary_init_size                 // init_size (from the guest's ELF)
    .long 0                                 // handover_offset
    .long 0                                 // kernel_info_offset
    at 0x26c
header_end:
version_string:
    .asciz "Apiary in-tree guest"

    .org SETUP_SIZE
kernel_start:
    .incbin APIARY_FLAT_IMAGE
    .balign 16, 0   // loaders check syssize * 16 <= the bytes after the setup
kernel_end:
