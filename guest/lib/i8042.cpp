// Polled i8042 access; see i8042.hpp.
#include "guest/lib/i8042.hpp"

#include "guest/lib/io.hpp"
#include "vmm-core/layout.hpp"

namespace apiary::guestlib::i8042 {

uint8_t read_status() { return inb(layout::kI8042Command); }
uint8_t read_data() { return inb(layout::kI8042Data); }
bool present() { return read_status() != 0xff; }

bool wait_output(uint32_t polls) {
  for (uint32_t i = 0; i < polls; ++i)
    if (read_status() & kStatusObf) return true;
  return false;
}

bool wait_input_empty(uint32_t polls) {
  for (uint32_t i = 0; i < polls; ++i)
    if (!(read_status() & kStatusIbf)) return true;
  return false;
}

bool send_command(uint8_t cmd) {
  if (!wait_input_empty()) return false;
  outb(layout::kI8042Command, cmd);
  return true;
}

int command_with_reply(uint8_t cmd) {
  if (!send_command(cmd) || !wait_output()) return -1;
  return read_data();
}

}  // namespace apiary::guestlib::i8042

namespace apiary::guestlib {

void reboot_i8042() {
  i8042::wait_input_empty();  // a busy controller would ignore the command
  outb(layout::kI8042Command, layout::kI8042ResetCommand);
  // The VMM acts on the reset from another thread; give it time. Each
  // status read is an exit (~10 us), so this waits ~0.2 s at most.
  for (uint32_t i = 0; i < 20000; ++i) i8042::read_status();
}

}  // namespace apiary::guestlib
