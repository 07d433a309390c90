// Host-injected events the demo shell reacts to while it waits for input:
// Ctrl-Alt-Del on the i8042 keyboard (-> reboot through the i8042) and the
// ACPI power button (-> ACPI soft-off).
//
// Why polled: the guests run with interrupts off, and the shell already
// spins on the UART's line status while idle, so it checks these too, once
// every few UART polls. This makes a host's "soft reset" (inject
// Ctrl-Alt-Del) and "soft poweroff" (press the power button) observable
// and testable: the guest prints a line, then takes the matching path.
#pragma once

namespace apiary::guestlib::demo {

// Finds which devices are there (absent ports read all-ones and must not
// look like events) and sets PWRBTN_EN.
void events_init();
// One cheap check of both sources (at most a few port reads). Does not
// return if an event ends the machine.
void events_poll();

}  // namespace apiary::guestlib::demo
