// The ACPI tables Apiary presents: how an unmodified OS finds its CPUs,
// interrupt controllers, power management ports and devices without
// firmware.
//
// Why tables and not a BIOS: Apiary boots kernels directly (no firmware),
// so it writes what firmware would have left in memory. Everything in them
// comes from layout.hpp and the machine's configuration:
//   RSDP (found by the kernel's scan of 0xE0000-0xFFFFF, or handed over in
//        boot_params.acpi_rsdp_addr / hvm_start_info.rsdp_paddr)
//   XSDT -> FADT, MADT
//   FADT: PM1a event/control blocks at layout::kAcpiPm1aEvt/Cnt, SCI on
//         layout::kAcpiSciIrq, the fixed-feature power button, the reset
//         register (0xCF9), i8042 present, no VGA, no SMI port (always in
//         ACPI mode), FACS and DSDT
//   MADT: one enabled local APIC per vCPU (APIC id = vCPU index), the
//         IOAPIC, interrupt source overrides for the level-triggered lines
//         (the SCI and the virtio-mmio slots in use), LINT1 = NMI
//   DSDT (AML): \_S5 with SLP_TYP soft-off (layout::kAcpiSlpTypSoftOff),
//         COM1 (PNP0501), one LNRO0005 device per virtio-mmio slot (Linux's
//         virtio_mmio driver binds to it: no command-line device list)
// The tables live in the reserved area at layout::kAcpiTables; the e820 map
// already reports [kEbdaStart, 1 MiB) as reserved.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace apiary::vmm {

class GuestMemory;

namespace acpi {

struct VirtioSlot {
  uint64_t base = 0;  // MMIO window (layout::kVirtioMmioStride bytes)
  uint32_t gsi = 0;
};

struct Config {
  uint32_t vcpus = 1;
  std::vector<VirtioSlot> virtio;  // the slots with a device behind them
};

// Where each table went (guest-physical), for tests and diagnostics.
struct Placement {
  uint64_t rsdp = 0, xsdt = 0, facs = 0, fadt = 0, madt = 0, dsdt = 0;
  uint64_t end = 0;  // first byte after the last table
};

// The tables as one image to be copied to layout::kAcpiTables. Throws
// Error(invalid_argument) when they would not fit (layout::kAcpiTablesMax).
std::vector<uint8_t> build(const Config& config, Placement* placement = nullptr);

// build() and copies the image into guest memory; returns where the RSDP is.
uint64_t write(GuestMemory& mem, const Config& config);

// The sum of `len` bytes at `p`, mod 256 (0 for a valid table).
uint8_t checksum(const uint8_t* p, size_t len);

}  // namespace acpi
}  // namespace apiary::vmm
