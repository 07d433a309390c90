// Power and reset paths a guest can take: ACPI fixed-hardware soft-off and
// power-button status, the 0xCF9 reset control register, and a deliberate
// triple fault. (The i8042 reset line is in i8042.hpp.)
//
// Why several: each is a different VMM code path (an ACPI PM register write,
// a chipset register write, a KVM shutdown exit) that must end in the same
// place, a reboot or a poweroff, and the demo and test guests exercise each.
// Functions that should end the machine return only if it is still running
// after a bounded wait, so callers can print what failed instead of hanging.
#pragma once

#include <stdint.h>

namespace apiary::guestlib {

// ACPI PM1 fixed-hardware bits (ACPI spec, "PM1 Event Registers" and
// "PM1 Control Registers").
inline constexpr uint16_t kPm1StsPwrbtn = 1u << 8;  // PM1_STS: power button pressed (W1C)
inline constexpr uint16_t kPm1EnPwrbtn = 1u << 8;   // PM1_EN: power button enable
inline constexpr uint16_t kPm1StsOffset = 0;        // from layout::kAcpiPm1aEvt
inline constexpr uint16_t kPm1EnOffset = 2;
inline constexpr unsigned kPm1CntSlpTypShift = 10;  // PM1_CNT: SLP_TYP bits 10-12
inline constexpr uint16_t kPm1CntSlpEn = 1u << 13;  // PM1_CNT: SLP_EN (write-only)

uint16_t acpi_pm1_status();
// Write-1-to-clear: clears exactly the bits set in `bits`.
void acpi_pm1_clear_status(uint16_t bits);
// Sets PWRBTN_EN in PM1_EN. True when the register reads back with the bit
// set, i.e. an ACPI PM block is there (absent ports read as all-ones).
bool acpi_enable_power_button();
// SLP_TYP = soft-off (5) with SLP_EN in PM1a_CNT.
void acpi_poweroff();

// 0x06 to port 0xCF9: "full reset" (bit 2, do it) with bit 1 (hard reset).
inline constexpr uint8_t kCf9HardReset = 0x02, kCf9DoReset = 0x04;
void reset_cf9();

// Loads an IDT with limit 0 and executes ud2: #UD cannot be delivered, nor
// the #GP or #DF that follow, so the CPU shuts down (a triple fault).
[[noreturn]] void triple_fault();

}  // namespace apiary::guestlib
