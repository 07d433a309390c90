// Every atom of Apiary's actor messaging API, in one place (CAF 0.17 atoms
// are at most 10 characters). docs/actor-api.md describes each message.
#pragma once

#include <caf/atom.hpp>

namespace apiary::actors {

// Replies
using ack_atom = caf::atom_constant<caf::atom("ack")>;

// Lifecycle control of vCPUs and devices (fan-out messages)
using hold_atom = caf::atom_constant<caf::atom("hold")>;        // vCPU: leave guest context, park
using release_atom = caf::atom_constant<caf::atom("release")>;  // vCPU: enter / re-enter the run loop
using pause_atom = caf::atom_constant<caf::atom("pause")>;
using resume_atom = caf::atom_constant<caf::atom("resume")>;
using reset_atom = caf::atom_constant<caf::atom("reset")>;
using halt_atom = caf::atom_constant<caf::atom("halt")>;
using start_atom = caf::atom_constant<caf::atom("start")>;
using dump_atom = caf::atom_constant<caf::atom("dump")>;
using exit_atom = caf::atom_constant<caf::atom("exit")>;
using step_atom = caf::atom_constant<caf::atom("step")>;        // internal: one simulated step
using thread_ack_atom = caf::atom_constant<caf::atom("thr_ack")>;  // internal: vCPU thread -> actor
using fault_hook_atom = caf::atom_constant<caf::atom("faulthook")>;  // test-only fault injection
using device_op_atom = caf::atom_constant<caf::atom("deviceop")>;  // device: (deviceop, start|pause|resume|reset|halt)
using fan_out_deadline_atom = caf::atom_constant<caf::atom("fodeadline")>;  // internal: the fan-out timer fired (fan_out.hpp)

// Instance API
using poweroff_atom = caf::atom_constant<caf::atom("poweroff")>;     // forced poweroff
using hard_reset_atom = caf::atom_constant<caf::atom("hardreset")>;  // forced reset
using soft_reset_atom = caf::atom_constant<caf::atom("softreset")>;  // Ctrl-Alt-Del
using soft_off_atom = caf::atom_constant<caf::atom("softoff")>;      // ACPI power button
using get_state_atom = caf::atom_constant<caf::atom("getstate")>;
using wait_state_atom = caf::atom_constant<caf::atom("waitstate")>;
using subscribe_atom = caf::atom_constant<caf::atom("subscribe")>;
using state_atom = caf::atom_constant<caf::atom("state")>;          // state-change event
using diag_atom = caf::atom_constant<caf::atom("diag")>;
using console_atom = caf::atom_constant<caf::atom("console")>;
using guest_event_atom = caf::atom_constant<caf::atom("guestev")>;  // internal: from vCPUs / devices
using exit_status_atom = caf::atom_constant<caf::atom("exitstat")>;
using cond_met_atom = caf::atom_constant<caf::atom("condmet")>;     // internal: boot condition met
using save_atom = caf::atom_constant<caf::atom("save")>;            // snapshot a paused instance to a file
using saved_atom = caf::atom_constant<caf::atom("saved")>;          // internal: the save thread is done
using init_done_atom = caf::atom_constant<caf::atom("initdone")>;   // internal: a restored machine is built
using migrate_atom = caf::atom_constant<caf::atom("migrate")>;      // live-migrate a running instance
using migration_atom = caf::atom_constant<caf::atom("migration")>;  // internal: a migration thread's step

// Console
using attach_atom = caf::atom_constant<caf::atom("attach")>;
using detach_atom = caf::atom_constant<caf::atom("detach")>;
using input_atom = caf::atom_constant<caf::atom("input")>;
using output_atom = caf::atom_constant<caf::atom("output")>;
using history_atom = caf::atom_constant<caf::atom("history")>;
using flush_atom = caf::atom_constant<caf::atom("flush")>;

}  // namespace apiary::actors
