// The guest-visible machine: every guest-physical address, I/O port, IRQ
// line and size limit Apiary uses, in one place.
//
// This header is shared by the VMM (C++20, hosted) and by the freestanding
// in-tree guests (guest/, built with -ffreestanding), so it includes nothing
// but <stdint.h> and holds only constexpr values. docs/layout.md mirrors it
// as a table; change both together.
#pragma once

#include <stdint.h>

namespace apiary::layout {

// The board's revision: part of every snapshot's board name, so that a
// saved VM is never restored onto a board whose addresses, ports or IRQs
// differ. Bump it with any guest-visible change in this file.
inline constexpr uint32_t kBoardRevision = 1;

// ---------------------------------------------------------------- memory --
// Low memory used by the VMM for boot structures (all below 1 MiB).
inline constexpr uint64_t kBootGdt = 0x500;          // 6 x 8-byte descriptors
inline constexpr uint64_t kBootIdt = 0x540;          // empty IDT (limit 0)
inline constexpr uint64_t kPvhStartInfo = 0x6000;    // struct hvm_start_info
inline constexpr uint64_t kPvhModlist = 0x6200;      // hvm_modlist_entry[]
inline constexpr uint64_t kPvhMemmap = 0x6400;       // hvm_memmap_table_entry[]
inline constexpr uint64_t kZeroPage = 0x7000;        // Linux struct boot_params (4 KiB)
inline constexpr uint64_t kMultibootInfo = 0x8000;   // struct multiboot_info
inline constexpr uint64_t kMultibootMmap = 0x8100;   // multiboot mmap entries
inline constexpr uint64_t kMultibootMods = 0x8800;   // multiboot module list
inline constexpr uint64_t kMultibootStrings = 0x8c00;// module strings, loader name
inline constexpr uint64_t kMultibootBlockSize = 0x1000;  // info..strings, moved as one (after a kernel that is here)
inline constexpr uint64_t kPml4 = 0x9000;            // identity page tables (long-mode entry only):
inline constexpr uint64_t kPdpt = 0xa000;            //   PML4 -> PDPT -> 4 PDs of
inline constexpr uint64_t kPd = 0xb000;              //   2 MiB pages = 0..4 GiB
inline constexpr uint64_t kPdCount = 4;              //   (0xb000..0xefff)
static_assert(kMultibootInfo + kMultibootBlockSize <= kPml4);
inline constexpr uint64_t kCmdline = 0x20000;        // kernel command line
inline constexpr uint64_t kCmdlineMax = 4096;        // bytes incl. the NUL
inline constexpr uint64_t kEbdaStart = 0x9fc00;      // reserved: EBDA, VGA, BIOS
inline constexpr uint64_t kAcpiTables = 0xe0000;     // RSDP (where a BIOS scan finds it) and the tables
inline constexpr uint64_t kAcpiTablesMax = 0x10000;  //   up to 0xeffff
inline constexpr uint64_t kHighMemory = 0x100000;    // 1 MiB: kernels load here
inline constexpr uint64_t kKernelLoad = kHighMemory;

// The 32-bit MMIO hole: guest RAM never occupies [kMmioHoleStart, 4 GiB).
// RAM above the hole continues at 4 GiB.
inline constexpr uint64_t kMmioHoleStart = 0xc0000000;
inline constexpr uint64_t kMmioHoleEnd = 0x100000000;
inline constexpr uint64_t kVirtioMmioBase = 0xd0000000;
inline constexpr uint64_t kVirtioMmioStride = 0x1000;
inline constexpr uint32_t kVirtioMmioSlots = 8;
inline constexpr uint64_t kIoapicBase = 0xfec00000;
inline constexpr uint64_t kLapicBase = 0xfee00000;
inline constexpr uint64_t kKvmIdentityMap = 0xfffbc000;  // KVM_SET_IDENTITY_MAP_ADDR
inline constexpr uint64_t kKvmTss = 0xfffbd000;          // KVM_SET_TSS_ADDR (3 pages)

// Initrd / modules go as high as possible below this (Linux's default
// initrd_addr_max for 64-bit kernels is higher, but 32-bit protocols need it).
inline constexpr uint64_t kInitrdMax = 0x37ffffff;

// ----------------------------------------------------------------- board --
inline constexpr uint32_t kMaxVcpus = 64;
inline constexpr uint64_t kMinMemoryMib = 4;
inline constexpr uint64_t kMaxMemoryMib = 64 * 1024;

// -------------------------------------------------------------- I/O ports --
// KVM's in-kernel 8259 pair and 8254 PIT (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2):
// the VMM registers nothing at these ports; guests program them directly.
inline constexpr uint16_t kPic1Base = 0x20;      // command; data at +1
inline constexpr uint16_t kPic2Base = 0xa0;
inline constexpr uint8_t kPicCascadeIrq = 2;     // the slave PIC's line on the master
inline constexpr uint16_t kPitChannel0 = 0x40;
inline constexpr uint16_t kPitCommand = 0x43;
inline constexpr uint8_t kPitIrq = 0;
inline constexpr uint32_t kPitInputHz = 1193182;  // the 8254's input clock
inline constexpr uint16_t kCom1Base = 0x3f8;     // 16550A, 8 registers
inline constexpr uint16_t kCom1Size = 8;
inline constexpr uint8_t kCom1Irq = 4;
inline constexpr uint16_t kI8042Data = 0x60;
inline constexpr uint16_t kI8042Command = 0x64;  // status on read
inline constexpr uint8_t kI8042Irq = 1;
inline constexpr uint8_t kI8042ResetCommand = 0xfe;
inline constexpr uint16_t kRtcIndex = 0x70;
inline constexpr uint16_t kRtcData = 0x71;
inline constexpr uint16_t kPostPort = 0x80;      // progress codes
inline constexpr uint16_t kDebugExitPort = 0xf4; // QEMU isa-debug-exit
inline constexpr uint16_t kFwCfgSelector = 0x510;
inline constexpr uint16_t kFwCfgData = 0x511;
inline constexpr uint16_t kFwCfgDma = 0x514;
inline constexpr uint16_t kAcpiPm1aEvt = 0x600;  // PM1a_EVT_BLK (4 bytes)
inline constexpr uint16_t kAcpiPm1aCnt = 0x604;  // PM1a_CNT_BLK (2 bytes)
inline constexpr uint8_t kAcpiSciIrq = 9;
inline constexpr uint16_t kAcpiSlpTypSoftOff = 5;
inline constexpr uint16_t kPciConfigAddress = 0xcf8;  // PCI CONFIG_ADDRESS (dword accesses only)
inline constexpr uint16_t kResetControl = 0xcf9;      // byte 0xcf9 inside it: reset control
inline constexpr uint16_t kPciConfigData = 0xcfc;     // PCI CONFIG_DATA, 0xcfc..0xcff
inline constexpr uint8_t kVirtioFirstIrq = 5;
// The GSI of each virtio-mmio slot: the free ISA lines from 5, skipping 8
// (RTC), 9 (ACPI SCI), 12 (PS/2 mouse) and 13 (FPU); the last slot needs the
// IOAPIC (GSI 16).
inline constexpr uint8_t kVirtioIrqs[8] = {5, 6, 7, 10, 11, 14, 15, 16};
static_assert(sizeof(kVirtioIrqs) == kVirtioMmioSlots);
// A port claimed by a device that does nothing: the exit-cost benchmark's
// target. Not 0x2000, which is pc-testdev's (below); 0x2100 is in no PC
// device's range in Apiary or QEMU and below the PCI I/O window (0xc000).
inline constexpr uint16_t kNoopPort = 0x2100;

// QEMU's pc-testdev (devices/pc_testdev.hpp), present only when the machine
// is configured with it, at QEMU's ports so third-party tests run unchanged.
inline constexpr uint16_t kPcTestdevIoport = 0xe0;       // 32-bit scratch register
inline constexpr uint16_t kPcTestdevIoportLen = 4;
inline constexpr uint16_t kPcTestdevIoportByte = 0xe8;   // the same register, QEMU's byte-wise window
inline constexpr uint16_t kPcTestdevIrqLines = 0x2000;   // a byte v at +n sets GSI n's level to v != 0
inline constexpr uint16_t kPcTestdevIrqLineCount = 24;   // the in-kernel IOAPIC's pins
inline constexpr uint64_t kPcTestdevIomem = 0xff000000;  // scratch MMIO buffer, in the MMIO hole
inline constexpr uint64_t kPcTestdevIomemLen = 0x10000;
static_assert(kPcTestdevIrqLines + kPcTestdevIrqLineCount <= kNoopPort);
static_assert(kPcTestdevIomem > kLapicBase && kPcTestdevIomem + kPcTestdevIomemLen <= kKvmIdentityMap);

// Legacy platform devices (i8042, CMOS RTC, ACPI PM, fw_cfg): the sizes of
// the port ranges they are registered with, and the CMOS memory-size base.
inline constexpr uint16_t kRtcPorts = 2;             // 0x70 index + 0x71 data
inline constexpr uint16_t kAcpiPm1aEvtLen = 4;       // PM1_STS(2) + PM1_EN(2)
inline constexpr uint16_t kAcpiPm1aCntLen = 2;       // PM1_CNT
inline constexpr uint16_t kResetControlLen = 1;      // 0xcf9, byte register
inline constexpr uint16_t kPciConfigAddressLen = 1;  // dword at 0xcf8; 0xcf9 is reset control's
inline constexpr uint16_t kPciConfigDataLen = 4;     // 0xcfc..0xcff
inline constexpr uint16_t kFwCfgDmaLen = 8;          // be64 address: high @+0, low @+4
inline constexpr uint16_t kFwCfgPorts = kFwCfgDma + kFwCfgDmaLen - kFwCfgSelector;  // 0x510..0x51b
inline constexpr uint32_t kCmosBaseMemoryKib = 640;  // CMOS 0x15/0x16 conventional memory

// ------------------------------------------------------------- network --
// What a guest NIC looks like (devices/virtio_net.hpp) and what the overlay
// between nodes costs (net/vxlan.hpp). The MTU offered to guests
// (VIRTIO_NET_F_MTU) leaves room for the VXLAN encapsulation inside a
// 1500-byte underlay, so an overlay frame never needs IP fragmentation.
inline constexpr uint32_t kEthernetHeaderBytes = 14;
inline constexpr uint32_t kVxlanOverheadBytes = 50;  // outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
inline constexpr uint32_t kUnderlayMtu = 1500;
inline constexpr uint16_t kNetMtu = kUnderlayMtu - kVxlanOverheadBytes;  // 1450, the guest's IP MTU
// The largest frame a NIC accepts either way: the MTU, the Ethernet header
// and one 802.1Q tag. Longer frames are dropped and counted.
inline constexpr uint32_t kNetMaxFrameBytes = kNetMtu + kEthernetHeaderBytes + 4;
inline constexpr uint16_t kVxlanUdpPort = 4789;  // IANA's VXLAN port (RFC 7348 §5)

// Debug exit: a write of v ends the VM with status (v << 1) | 1.
constexpr int debug_exit_status(uint32_t v) { return static_cast<int>((v << 1) | 1); }

// ------------------------------------------------- in-tree test guests --
// Numbers the guests in guest/ rely on (added with the triple and smp guests).
// CMOS RAM byte (survives reboots, not guest RAM) where guests count boots.
inline constexpr uint8_t kCmosBootCounter = 0x50;
// 4 KiB page below 1 MiB the smp guest copies its AP real-mode trampoline to;
// the STARTUP IPI vector is its page number (0x10).
inline constexpr uint64_t kApTrampoline = 0x10000;

}  // namespace apiary::layout
