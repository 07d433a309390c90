// The demo's machine-control commands: reboot (i8042 reset line), reset
// (0xCF9), poweroff (ACPI soft-off) and crash (triple fault). Each is a
// different VMM path to a reboot or a poweroff; each announces itself first
// so a test can tell which path it took, and says so if the machine is
// still running afterwards.
#include "guest/demo/commands.hpp"
#include "guest/lib/i8042.hpp"
#include "guest/lib/power.hpp"
#include "guest/lib/print.hpp"

namespace apiary::guestlib::demo {

void cmd_reboot(const CommandContext&) {
  puts("rebooting via i8042");
  reboot_i8042();
  puts("reboot: still running after the i8042 reset");
}

void cmd_reset(const CommandContext&) {
  puts("resetting via 0xcf9");
  reset_cf9();
  puts("reset: still running after the 0xcf9 reset");
}

void cmd_poweroff(const CommandContext&) {
  puts("powering off via ACPI");
  acpi_poweroff();
  puts("poweroff: still running after ACPI soft-off");
}

void cmd_crash(const CommandContext&) {
  puts("crashing: triple fault");
  triple_fault();
}

}  // namespace apiary::guestlib::demo
