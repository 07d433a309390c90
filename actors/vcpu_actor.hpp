// The vCPU actor: one per vCPU, the only thing that talks to its backend.
//
// With KVM it owns a dedicated OS thread that loops on KVM_RUN with inline
// bus dispatch; control messages are queued for that thread and delivered
// with a kick, and the thread's answer comes back as a message before the
// actor replies. With the simulated backend (deterministic simulation) there
// is no thread: the actor runs one backend step per `step` message.
//
// A vCPU starts held (outside the run loop, at INIT) and enters the guest only
// on `release`. Exits it cannot handle — triple fault, emulation failure,
// failed entry, unknown exit — are sent to the owner as guest events
// (guest_event_atom, kind, vcpu id, detail) and the vCPU parks itself.
#pragma once

#include <caf/all.hpp>

#include <string>

#include "actors/atoms.hpp"
#include "devices/machine.hpp"

namespace apiary::actors {

// Every control message answers ack_atom once done (so a fan-out can collect
// them); `dump` answers the serialized apiary.v1.VcpuState.
using vcpu_actor = caf::typed_actor<
    caf::replies_to<hold_atom>::with<ack_atom>,             // leave guest context and park
    caf::replies_to<release_atom>::with<ack_atom>,          // (re-)enter the run loop
    caf::replies_to<reset_atom>::with<ack_atom>,            // architectural RESET (BSP) / INIT (APs)
    caf::replies_to<dump_atom>::with<std::string>,          // registers, sregs, mp_state
    caf::replies_to<exit_atom>::with<ack_atom>,             // thread exits and is joined
    caf::replies_to<fault_hook_atom, std::string>::with<ack_atom>,  // test-only: "ignore_kicks"
    caf::reacts_to<step_atom>,                              // internal (simulated backend)
    caf::reacts_to<thread_ack_atom, uint64_t, std::string>>;  // internal (KVM thread)

// `owner` receives guest events: (guest_event_atom, std::string kind, uint32_t vcpu, std::string detail)
// with kind one of triple_fault, guest_fault.
// The actor keeps the machine alive until its thread has been joined.
vcpu_actor spawn_vcpu(caf::actor_system& sys, std::shared_ptr<devices::Machine> machine, uint32_t index,
                      caf::actor owner);

}  // namespace apiary::actors
