// The guest runtime: what runs between the entry stub and a program's
// guest_main, and the two ways a guest talks to the VMM about itself.
//
// entry.S calls guest_entry(protocol, boot_ptr) on a fresh stack with .bss
// zeroed; guest_entry (runtime.cpp) brings up COM1, parses the boot
// structures and calls the program's guest_main. When guest_main returns,
// its value becomes the debug-exit code, so a guest never falls off the end.
#pragma once

#include <stdint.h>

#include "guest/lib/boot_info.hpp"

namespace apiary::guestlib {

// Each guest program defines this (once).
int guest_main(const BootInfo& boot);

// Ends the VM through the isa-debug-exit port: status (value << 1) | 1.
[[noreturn]] void debug_exit(uint32_t value);
// A one-byte progress code on the POST port, for tests to follow a boot.
void progress(uint8_t code);

}  // namespace apiary::guestlib

extern "C" [[noreturn]] void guest_entry(uint32_t protocol, uint64_t boot_ptr);
