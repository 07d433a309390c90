// ACPI soft-off and power button, 0xCF9 reset, triple fault; see power.hpp.
#include "guest/lib/power.hpp"

#include "guest/lib/io.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib {

namespace {
// Gives the VMM time to act on a reset/poweroff request made from this vCPU
// (~0.2 s of port exits) before the caller reports that nothing happened.
void settle() {
  for (uint32_t i = 0; i < 20000; ++i) inb(layout::kPostPort);
}
}  // namespace

uint16_t acpi_pm1_status() { return inw(layout::kAcpiPm1aEvt + kPm1StsOffset); }

void acpi_pm1_clear_status(uint16_t bits) { outw(layout::kAcpiPm1aEvt + kPm1StsOffset, bits); }

bool acpi_enable_power_button() {
  uint16_t port = layout::kAcpiPm1aEvt + kPm1EnOffset;
  uint16_t en = inw(port);
  if (en == 0xffff) return false;
  outw(port, static_cast<uint16_t>(en | kPm1EnPwrbtn));
  en = inw(port);
  return en != 0xffff && (en & kPm1EnPwrbtn);
}

void acpi_poweroff() {
  outw(layout::kAcpiPm1aCnt,
       static_cast<uint16_t>((layout::kAcpiSlpTypSoftOff << kPm1CntSlpTypShift) | kPm1CntSlpEn));
  settle();
}

void reset_cf9() {
  outb(layout::kResetControl, kCf9HardReset | kCf9DoReset);
  settle();
}

void triple_fault() {
  struct [[gnu::packed]] {
    uint16_t limit;
    uint64_t base;
  } empty_idt{0, 0};
  asm volatile("cli\n\tlidt %0\n\tud2" : : "m"(empty_idt) : "memory");
  __builtin_unreachable();
}

}  // namespace apiary::guestlib
