// The device actor: one per emulated device, driving its Lifecycle (start,
// pause, resume, reset, halt, export state) on the control plane. The
// device's I/O handlers are NOT behind this actor: they run inline on vCPU
// threads. Only lifecycle changes travel as messages.
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

// `machine` owns `device`; the actor keeps it alive.
device_actor spawn_device(caf::actor_system& sys, std::shared_ptr<devices::Machine> machine, devices::Device& device);

}  // namespace apiary::actors
