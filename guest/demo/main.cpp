// demo: the guest Apiary boots when no kernel is given (it is embedded in
// the apiary binary, see guest/embedded.hpp). A tiny shell on COM1 that shows
// the VM works end to end: console both ways, boot info, vCPU count, and a
// clean exit. Input is polled (no interrupts); each polled LSR read is a port
// exit, which is fine for a human typing.
//
// Line editing: printable characters are echoed; backspace or DEL erases the
// last one; CR or LF ends the line (a CR LF pair counts once) and the shell
// answers with "\r\n" before any output. Commands live in commands.cpp.
//
// While waiting for a key, every kEventPollInterval-th UART poll also checks
// the i8042 and the ACPI power button (events.hpp): host-injected
// Ctrl-Alt-Del reboots the guest, a power-button press powers it off.
#include "guest/demo/commands.hpp"
#include "guest/demo/events.hpp"
#include "guest/lib/print.hpp"
#include "guest/lib/runtime.hpp"
#include "guest/lib/serial.hpp"
#include "guest/lib/string.hpp"

namespace apiary::guestlib {

namespace {

constexpr size_t kLineMax = 128;
constexpr char kBackspace = 0x08;
constexpr char kDelete = 0x7f;
// UART polls per event check: each poll is one port exit (~10 us), an event
// check two or three more, so checking 1 in 16 costs ~15% of idle polling
// and still reacts within a millisecond.
constexpr uint32_t kEventPollInterval = 16;

// Blocks until COM1 has a byte, checking for host events meanwhile.
char wait_key() {
  for (uint32_t polls = 0;; ++polls) {
    if (polls % kEventPollInterval == 0) demo::events_poll();
    if (serial::can_read()) return static_cast<char>(serial::read_byte());
  }
}

// Reads one line into buf (NUL-terminated, at most kLineMax - 1 characters).
void read_line(char* buf) {
  static bool last_was_cr = false;  // to swallow the LF of a CR LF pair
  size_t len = 0;
  for (;;) {
    char c = wait_key();
    if (c == '\n' && last_was_cr) {
      last_was_cr = false;
      continue;
    }
    last_was_cr = c == '\r';
    if (c == '\r' || c == '\n') {
      put_char('\n');  // sent as "\r\n"
      buf[len] = '\0';
      return;
    }
    if (c == kBackspace || c == kDelete) {
      if (len) {
        --len;
        put_str("\b \b");
      }
      continue;
    }
    if (c < ' ' || len + 1 >= kLineMax) continue;  // other control keys; full line
    buf[len++] = c;
    put_char(c);
  }
}

void run_line(const BootInfo& boot, char* line) {
  // Trim trailing blanks so commands see exactly their arguments.
  size_t len = str_len(line);
  while (len && is_space(line[len - 1])) line[--len] = '\0';
  const char* name = skip_spaces(line);
  if (!*name) return;
  const char* args = name;
  while (*args && !is_space(*args)) ++args;
  args = skip_spaces(args);
  if (const demo::Command* cmd = demo::find_command(name)) {
    cmd->run(demo::CommandContext{boot, args});
    return;
  }
  put_str("unknown command: ");
  while (*name && !is_space(*name)) put_char(*name++);
  puts(" (try help)");
}

}  // namespace

int guest_main(const BootInfo& boot) {
  puts("Apiary demo guest");
  puts("Type 'help' for a list of commands.");
  demo::events_init();
  char line[kLineMax];
  for (;;) {
    put_str("apiary> ");
    read_line(line);
    run_line(boot, line);
  }
}

}  // namespace apiary::guestlib
