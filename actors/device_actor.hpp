// The device actor: one per emulated device, driving its Lifecycle (start,
// pause, resume, reset, halt, export state) on the control plane. The
// device's I/O handlers are NOT behind this actor: they run inline on vCPU
// threads. Only lifecycle changes travel as messages. The instance spawns
// it at Initialize or at its first pause (instance_actor.hpp, "Device
// actors").
#pragma once

#include <caf/all.hpp>

#include <string>

#include "actors/atoms.hpp"
#include "devices/device.hpp"
#include "devices/machine.hpp"

namespace apiary::actors {

// (deviceop, op) with op one of start, pause, resume, reset, halt (the
// atoms' values) answers ack_atom when the device has reached the state
// (pause: in-flight work finished or parked); any other op is
// invalid_argument. One handler for the five, not one each: an instance has
// ten device actors and each handler is a match case in every one of them
// (docs/simulation.md, "Scale"). `dump` answers the serialized
// apiary.v1.DeviceState. fault_hook "ignore_pause" (tests and simulation):
// pause requests are never acknowledged.
using device_actor = caf::typed_actor<
    caf::replies_to<device_op_atom, caf::atom_value>::with<ack_atom>,
    caf::replies_to<dump_atom>::with<std::string>,
    caf::replies_to<fault_hook_atom, std::string>::with<ack_atom>>;

// Runs lifecycle operation `op` (start, pause, resume, reset, halt) on
// `device` on the caller's thread: the device actor's handler, and the
// instance's for a device that has no actor yet. The error (invalid_argument)
// names the device and the operation that failed or is unknown.
caf::error run_device_lifecycle(devices::Device& device, caf::atom_value op);

// `machine` owns `device`; the actor keeps it alive.
device_actor spawn_device(caf::actor_system& sys, std::shared_ptr<devices::Machine> machine, devices::Device& device);

}  // namespace apiary::actors
