// i8042 keyboard controller, polled: status/data access, controller
// commands, the reset line, and a Ctrl-Alt-Del detector.
//
// Why the guest needs it: command 0xFE on port 0x64 pulses the CPU reset
// line, the classic PC reboot that Linux and firmware use; and the host
// injects keystrokes (Ctrl-Alt-Del in particular) through the keyboard's
// output buffer, so a guest that watches it can react to a host-requested
// soft reset. Every wait here is a bounded loop: a missing or broken
// controller must never hang a guest. An absent controller reads as 0xff
// (the bus returns all-ones for unclaimed ports), which present() checks.
#pragma once

#include <stdint.h>

namespace apiary::guestlib::i8042 {

// Status register bits (port 0x64, read).
inline constexpr uint8_t kStatusObf = 0x01;     // output buffer full: data waiting at 0x60
inline constexpr uint8_t kStatusIbf = 0x02;     // input buffer full: controller busy
inline constexpr uint8_t kStatusAuxObf = 0x20;  // the waiting byte is from the aux (mouse) port
inline constexpr uint8_t kCmdReadConfig = 0x20;
inline constexpr uint8_t kCmdSelfTest = 0xaa;
inline constexpr uint8_t kSelfTestOk = 0x55;
// Polls of the status register before a wait gives up (~10 us each).
inline constexpr uint32_t kWaitPolls = 10000;

uint8_t read_status();
uint8_t read_data();
// False when nothing answers at 0x64 (reads all-ones).
bool present();
// Waits until the output buffer holds a byte; false after `polls` polls.
bool wait_output(uint32_t polls = kWaitPolls);
// Waits until the controller can take a byte; false after `polls` polls.
bool wait_input_empty(uint32_t polls = kWaitPolls);
// Writes a controller command to 0x64 (after waiting for IBF to clear).
bool send_command(uint8_t cmd);
// A command that answers one byte (0x20 read config, 0xAA self-test, ...):
// the reply, or -1 when none came.
int command_with_reply(uint8_t cmd);

// Set-1 scancodes the detector follows.
inline constexpr uint8_t kScanCtrl = 0x1d, kScanAlt = 0x38, kScanDelete = 0x53, kScanExtended = 0xe0,
                         kScanRelease = 0x80;

// Follows a set-1 scancode stream and reports Ctrl+Alt+Delete: true on the
// Delete make code (with or without the E0 prefix) while a Ctrl and an Alt
// (left or right) are down. Pure logic, so it is host-testable.
class CtrlAltDelDetector {
 public:
  bool feed(uint8_t code) {
    if (code == kScanExtended) return false;  // prefix: left/right keys share codes
    bool make = !(code & kScanRelease);
    uint8_t key = code & static_cast<uint8_t>(~kScanRelease);
    if (key == kScanCtrl) ctrl_ = make;
    else if (key == kScanAlt) alt_ = make;
    else if (key == kScanDelete && make && ctrl_ && alt_) return true;
    return false;
  }

 private:
  bool ctrl_ = false;
  bool alt_ = false;
};

}  // namespace apiary::guestlib::i8042

namespace apiary::guestlib {

// Pulses the reset line (0xFE to port 0x64). Returns only if the machine is
// still running after a short bounded wait, so the caller can report it.
void reboot_i8042();

}  // namespace apiary::guestlib
