// Ctrl-Alt-Del and power-button polling for the demo shell; see events.hpp.
#include "guest/demo/events.hpp"

#include "guest/lib/i8042.hpp"
#include "guest/lib/power.hpp"
#include "guest/lib/print.hpp"

namespace apiary::guestlib::demo {

namespace {

constexpr int kMaxBytesPerPoll = 4;

bool have_i8042 = false;
bool have_acpi = false;
i8042::CtrlAltDelDetector detector;

}  // namespace

void events_init() {
  have_i8042 = i8042::present();
  have_acpi = acpi_enable_power_button();
}

void events_poll() {
  if (have_i8042) {
    for (int i = 0; i < kMaxBytesPerPoll; ++i) {
      uint8_t status = i8042::read_status();
      if (!(status & i8042::kStatusObf)) break;
      uint8_t code = i8042::read_data();
      if (status & i8042::kStatusAuxObf) continue;  // mouse bytes: not ours
      if (detector.feed(code)) {
        puts("\nctrl-alt-del: rebooting");
        reboot_i8042();
        puts("reboot: still running after the i8042 reset");
      }
    }
  }
  if (have_acpi && (acpi_pm1_status() & kPm1StsPwrbtn)) {
    acpi_pm1_clear_status(kPm1StsPwrbtn);
    puts("\npower button: powering off");
    acpi_poweroff();
    puts("poweroff: still running after ACPI soft-off");
  }
}

}  // namespace apiary::guestlib::demo
