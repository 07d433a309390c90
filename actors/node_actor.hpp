// The node actor: one per hypervisor host. It runs instances (one instance
// actor each, spawned from an InstanceSpec), checks in with the controller
// periodically with its capacity, executes the controller's actions on its
// instances and reports what it runs for reconciliation.
//
// Why an actor per node: the controller must never touch an instance actor
// directly — a node can vanish, and everything the controller knows about
// it has to go through one place that can be silent (missing), refuse work
// (draining) and report what it really runs (power states, for Nova-style
// power sync). Each node reply means "the effect is complete": the node
// waits for the instance actor's state stream to reach the state the action
// promises (with a deadline), so the controller can finish its action log
// entry from the reply alone.
//
// Messages (every request carries the caller's deadline):
//   place, id, spec_bytes        -> power state ("running")
//        refused while draining (wrong_state); init failures (init_failed)
//   nodeact, id, action, spec    -> power state after the action
//        action: poweron, poweroff, pause, unpause, softreboot, hardreboot,
//        delete. spec_bytes (may be "") lets poweron / hardreboot recreate an
//        instance the node does not know (stopped instances are recreated
//        from their spec: a new VMM, as Nova's start).
//        softreboot: Ctrl-Alt-Del to the guest; if it has not rebooted within
//        soft_reboot_grace, a forced reset (Nova's fallback).
//   powerlist                    -> id -> running / paused / shutdown
//   capacity                     -> (vcpus, memory_mib, instances)
//   drain                        -> ack once every instance is stopped; from
//        then on placements are refused and check-ins stop (the node is
//        stopped).
//   instof, id                   -> the instance actor (tests, console)
//   partition, bool              -> ack; simulation: while cut off the node
//        neither checks in nor answers the controller (replies are withheld)
#pragma once

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "actors/atoms.hpp"
#include "actors/control_types.hpp"

namespace apiary::actors {

struct NodeConfig {
  std::string name = "node";
  uint32_t vcpus = 8;          // what the host offers (before overcommit)
  uint64_t memory_mib = 8192;
  caf::actor controller;       // where check-ins go (none: no check-ins)
  std::chrono::milliseconds checkin_interval{10000};
  bool simulated = false;      // instances use the simulated vCPU backend
  // Resolves an embedded guest name to its image. Empty: embedded guests
  // cannot be started here (the apiary binary passes guest::find_embedded;
  // apiary_actors itself does not link the embedded images).
  std::function<std::vector<uint8_t>(const std::string& name)> embedded_guest;
  std::chrono::milliseconds phase_deadline{5000};     // per instance fan-out phase
  std::chrono::milliseconds state_deadline{30000};    // how long an action waits for its state
  std::chrono::milliseconds soft_reboot_grace{10000};  // before a soft reboot turns hard
};

using node_actor = caf::typed_actor<
    caf::replies_to<place_atom, std::string, std::string>::with<std::string>,
    caf::replies_to<node_act_atom, std::string, std::string, std::string>::with<std::string>,
    caf::replies_to<power_list_atom>::with<std::map<std::string, std::string>>,
    caf::replies_to<capacity_atom>::with<uint32_t, uint64_t, uint32_t>,
    caf::replies_to<drain_atom>::with<ack_atom>,
    caf::replies_to<instance_of_atom, std::string>::with<caf::actor>,
    caf::replies_to<partition_atom, bool>::with<ack_atom>,
    caf::reacts_to<tick_atom>,
    caf::reacts_to<wait_dl_atom, std::string, uint64_t>,
    caf::reacts_to<inst_ev_atom, std::string, uint64_t, std::string, std::string>>;  // internal

node_actor spawn_node(caf::actor_system& sys, NodeConfig config);

}  // namespace apiary::actors
