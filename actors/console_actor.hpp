// The serial console as an actor: the bounded output history, any number of
// live readers, and at most one writer at a time whose input goes to the
// UART.
//
// Output reaches readers in batches: the UART's backend appends to a buffer
// on the vCPU thread and posts one `flush` only when the buffer goes from
// empty to non-empty, so there is no message per byte or per I/O exit.
// Readers are monitored; a reader that dies is dropped (and frees the writer
// slot if it held it).
#pragma once

#include <caf/all.hpp>

#include <string>

#include "actors/atoms.hpp"
#include "devices/console_backend.hpp"
#include "devices/machine.hpp"

namespace apiary::actors {

// attach(reader, want_writer) -> (history so far, writer granted)
//   readers then receive (output_atom, std::string) for new output.
// detach(reader) -> ack
// input(writer, bytes) -> bytes accepted; error not_writer if `writer` does not hold the slot.
// history -> everything still in the bounded history.
using console_actor = caf::typed_actor<
    caf::replies_to<attach_atom, caf::actor, bool>::with<std::string, bool>,
    caf::replies_to<detach_atom, caf::actor>::with<ack_atom>,
    caf::replies_to<input_atom, caf::actor, std::string>::with<uint64_t>,
    caf::replies_to<history_atom>::with<std::string>,
    caf::reacts_to<flush_atom>>;

// `on_first_attach` (may be null) gets (cond_met_atom, "console") when the
// first reader attaches — the boot condition wait_for_console.
// The actor keeps the machine (which owns the backend and UART) alive.
console_actor spawn_console(caf::actor_system& sys, std::shared_ptr<devices::Machine> machine,
                            caf::actor on_first_attach);

}  // namespace apiary::actors
