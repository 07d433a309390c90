// The instance actor: the single writer of one VM's lifecycle state and the
// driver that moves it through the table in instance_lifecycle.hpp towards
// its target state.
//
// It owns the Machine (shared with its vCPU, device and console actors so
// memory outlives every thread that touches it), spawns one actor per vCPU
// and per device (see "Device actors" below), and runs every phase as a fan-out with a deadline:
//   pause:   vCPUs hold (acks), then devices pause (acks)
//   resume:  devices resume (acks), then vCPUs release (acks)
//   reboot:  RAM cleared and kernel reloaded, devices reset (acks), vCPUs reset (acks)
//   destroy: vCPU threads exit and are joined (acks), devices halt (acks)
// A missing ack is the named fault ack_timeout naming the silent actor; the
// instance then takes its error path (target Destroy, through Halt so the
// diagnostics are kept).
//
// Device actors. A device whose lifecycle calls may wait (in-flight I/O, a
// worker thread: Device::lifecycle_may_wait) gets its actor at Initialize, so
// a stuck call holds only that actor and the phase's deadline names it.
// Every other device gets its actor at the instance's first pause, resume,
// reset or device fault hook; until then the instance calls its start (Boot
// -> Run, before any vCPU is released) itself, and its halt too if it is
// destroyed straight from Initialize (no vCPU ever released). Every other
// way to Destroy passes through Quiesce, whose pause gives the devices their
// actors. A running instance that is never stopped has ten actors fewer and
// sends twenty messages fewer to boot (docs/simulation.md, "Scale"): most
// of a scale run's instances, which end with their node.
//
// API calls only set the target (or inject an event) and answer at once;
// progress is observed through the generation-numbered state stream
// (subscribe, wait_state), as with Propolis' state monitor.
#pragma once

#include <caf/all.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "actors/atoms.hpp"
#include "actors/console_actor.hpp"
#include "actors/instance_lifecycle.hpp"
#include "actors/metrics.hpp"
#include "devices/machine.hpp"
#include "devices/machine_migration.hpp"

namespace apiary::actors {

// This instance is the destination of a live migration: its machine is
// built from what the source sends over a connection to `listener` (the
// InstanceConfig's machine is replaced by the source's), and it runs once
// the source commits. `cancelled` stops the wait (the owner gave up).
struct IncomingMigration {
  std::shared_ptr<devices::migration::Listener> listener;
  devices::migration::Policy policy;
  std::chrono::milliseconds accept_deadline{30000};
  // The whole migration, accept to running (pre-copy of a busy guest can
  // take minutes; each step has policy.io_deadline besides).
  std::chrono::milliseconds total_deadline{30 * 60 * 1000};
  std::atomic<bool> cancelled{false};
  std::unique_ptr<devices::migration::Incoming> stream;  // once accepted
};

// Everything about an instance but its machine: what the instance actor
// keeps for its whole life. The machine's config is needed only until the
// machine is built, and the actor drops it then (it is most of the config:
// a simulated run keeps 100,000 instance actors).
struct InstanceOptions {
  std::string name = "instance";
  bool wait_for_console = false;
  std::chrono::milliseconds console_wait{30000};
  std::chrono::milliseconds phase_deadline{5000};  // per fan-out phase
  // Where each fan-out phase's duration goes (label phase="vcpu hold", ...);
  // shared by the instances of one node. Null: not measured.
  std::shared_ptr<LatencyFamily> fan_out_latency;
  // Set: started as a live migration's destination (see IncomingMigration).
  std::shared_ptr<IncomingMigration> incoming;
  // How this instance migrates out (migrate).
  devices::migration::Policy migration_policy;
};

struct InstanceConfig : InstanceOptions {
  devices::MachineConfig machine;
};

// Replies and errors (ActorErrc, category "apiary"):
//   start      -> ack                 wrong_state unless in Start
//   pause      -> ack                 wrong_state unless Boot/Run with target Run
//   resume     -> ack                 wrong_state unless paused (target Quiesce)
//   halt       -> ack                 target Halt; destroyed after Destroy
//   poweroff   -> ack                 forced: target Destroy
//   hardreset  -> ack                 forced: target Reboot
//   softreset  -> ack                 Ctrl-Alt-Del into the guest; wrong_state unless Run
//   softoff    -> ack                 ACPI power button; wrong_state unless Run
//   getstate   -> (state, generation, target)   target "" when none
//   waitstate G -> (state, generation)          the first state with generation > G
//   subscribe A -> ack; A then gets (state_atom, name, state, generation, target, reason)
//                 from the instance actor (the sender): `name` is InstanceConfig::name, so
//                 one subscriber can follow many instances without a relay per instance
//   diag       -> serialized apiary.v1.InstanceDiagnostics from the last Halt ("" if none)
//   console    -> the console actor (invalid handle before Initialize)
//   exitstat   -> the guest's debug-exit status, -1 if none
//   save PATH  -> (file bytes, pages written, microseconds)
//                 paused instances only (wrong_state otherwise, or while a
//                 save is under way); the file is written off the actor's
//                 thread and resume waits for it. save_failed names why
//                 (file_unwritable, snapshot_unsupported, ...).
//   migrate HOST PORT -> serialized apiary.v1.MigrationStats
//                 live migration to a destination listening there
//                 (Run only; one at a time). Pre-copy while the guest runs,
//                 then a pause fan-out, stop-and-copy, commit; the instance
//                 is destroyed (reason "migrated to ...") once the
//                 destination runs. migrate_failed: the instance runs on
//                 here (resumed if it was stopped). migrate_unknown: commit
//                 went out but the destination never said it runs; the
//                 instance stays paused so that it never runs twice.
//                 While a migration is under way pause, resume, save and
//                 hard reset are refused; poweroff and halt cancel it.
//
// Restoring: an InstanceConfig whose machine.restore is set (from
// devices::snapshot::restore_config) starts as usual (start -> ... -> run),
// but its machine is built from the snapshot instead of booting the kernel:
// the guest continues where it was saved.
using instance_actor = caf::typed_actor<
    caf::replies_to<start_atom>::with<ack_atom>,
    caf::replies_to<pause_atom>::with<ack_atom>,
    caf::replies_to<resume_atom>::with<ack_atom>,
    caf::replies_to<halt_atom>::with<ack_atom>,
    caf::replies_to<poweroff_atom>::with<ack_atom>,
    caf::replies_to<hard_reset_atom>::with<ack_atom>,
    caf::replies_to<soft_reset_atom>::with<ack_atom>,
    caf::replies_to<soft_off_atom>::with<ack_atom>,
    caf::replies_to<get_state_atom>::with<std::string, uint64_t, std::string>,
    caf::replies_to<wait_state_atom, uint64_t>::with<std::string, uint64_t>,
    caf::replies_to<subscribe_atom, caf::actor>::with<ack_atom>,
    caf::replies_to<diag_atom>::with<std::string>,
    caf::replies_to<console_atom>::with<console_actor>,
    caf::replies_to<exit_status_atom>::with<int32_t>,
    caf::replies_to<save_atom, std::string>::with<uint64_t, uint64_t, uint64_t>,
    caf::reacts_to<saved_atom, uint64_t, uint64_t, uint64_t, uint64_t, std::string>,  // internal
    caf::reacts_to<init_done_atom, uint64_t>,                                      // internal
    caf::replies_to<migrate_atom, std::string, uint32_t>::with<std::string>,
    caf::reacts_to<migration_atom, uint64_t, std::string, std::string>,            // internal
    caf::replies_to<fault_hook_atom, std::string, uint32_t>::with<ack_atom>,  // test-only
    caf::reacts_to<guest_event_atom, std::string, uint32_t, std::string>,     // internal
    caf::reacts_to<cond_met_atom, std::string>,                               // internal
    caf::reacts_to<fan_out_deadline_atom, uint64_t>>;                         // internal (fan_out.hpp)

instance_actor spawn_instance(caf::actor_system& sys, InstanceConfig config);
// The same, with `subscriber` subscribed from the actor's first moment (as
// by subscribe, without its request, reply and timeout): it sees every
// state, and the spawner needs no round trip before it sends start.
instance_actor spawn_instance(caf::actor_system& sys, InstanceConfig config, caf::actor subscriber);

}  // namespace apiary::actors
