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
//        poweroff: the ACPI power button to a running guest that has armed
//        it; if it is not down within shutdown_timeout (or never armed the
//        button), a forced power-off (Nova's clean_shutdown). `delete` and
//        the actions that replace a VMM power off at once.
//   nodeact, id, action, spec, args -> (power state, detail)
//        the same actions plus the ones that need arguments or report
//        files; `detail` is one line per thing done (file names), "" if none.
//        Every disk-file step (copy, zero) runs on a thread of its own, never
//        on the actor, and is polled every file_poll until file_deadline.
//        resize        spec = the new spec. The old VMM is powered off; if it
//                      was running a NEW instance actor is built from the new
//                      spec and started. The old spec is kept for revert.
//        confirmresize drops the kept spec.
//        revertresize  back to the kept spec (or `spec` if given): power off,
//                      and a new VMM from it if it was running.
//        snapshot      args name: every disk -> <path>.snapshot-<name>
//        backup        args rotation (default 1): every disk ->
//                      <path>.backup-<n> (n = 1 + the highest there); then
//                      only the newest `rotation` <path>.backup-<digits>
//                      files are kept. Snapshot and backup pause a running
//                      VM for the copy and resume it; a copy goes to
//                      <dst>.partial and is renamed when complete, and a
//                      failure removes every copy of the request.
//        rebuild       args image (optional): power off; every writable disk
//                      is truncated to 0 and back to its size (zeroed), or
//                      the first one is copied from `image`; a fresh VMM from
//                      the spec is started.
//        rescue        args image (embedded guest, default "demo"): power
//                      off, boot the rescue guest with the instance's disks
//                      and cmdline "rescue".
//        unrescue      power off the rescue VMM, start the normal spec.
//        suspend       pause a running VM, save its whole state to
//                      <save_dir>/<id>.snap (docs/snapshots.md), then end
//                      its VMM: power state suspended. A failed save
//                      resumes the VM (vm intact).
//        resume        a new VMM built from <save_dir>/<id>.snap (also after
//                      a node restart), started where the guest was saved;
//                      the file is removed once it runs. A file that cannot
//                      be restored is kept and named (vm intact: the
//                      instance stays suspended).
//        shelve        args shelf (absolute directory): writable disks to
//                      <shelf>/disk-<i>, the VM state to <shelf>/state.snap
//                      (a running VM paused first; a suspended one's file
//                      moved; a stopped one has none), then the VMM ends.
//        shelveoffload forget the shelved instance (its resources are free).
//        unshelve      args shelf: the disks back from the shelf, the VM
//                      restored from its state (or booted from the spec),
//                      the shelf removed once it runs.
//        migratein     live migration's destination: a VMM waiting on
//                      <migration_host>:<a free port> for the source; the
//                      detail is "listening HOST:PORT". It runs once the
//                      source commits; nothing came within state_deadline:
//                      it ends (init_failed).
//        migrateout    args destination HOST:PORT: live-migrate the running
//                      VM there (pre-copy, stop-and-copy, commit); once the
//                      destination runs it, this node forgets the instance.
//                      The detail names rounds, pages, bytes, total time
//                      and downtime. A failure before the commit leaves the
//                      VM running here (vm intact); migrate_unknown (the
//                      destination never confirmed the commit) leaves it
//                      paused here.
//        Errors: a disk-file step that failed with the VM back as it was
//        (resumed, or never paused) is invalid_argument with the errno text
//        ("open <path>: No such file or directory"); every other failure
//        wrong_state.
//   instspec, id                 -> the spec bytes the id's current VMM was
//        built from ("" if none): the board after a resize, the rescue
//        guest while rescued (tests, diagnostics)
//   powerlist                    -> id -> running / paused / shutdown / suspended
//   capacity                     -> (vcpus, memory_mib, instances)
//   drain                        -> ack once every instance is stopped; from
//        then on placements are refused and check-ins stop (the node is
//        stopped).
//   instof, id                   -> the instance actor (tests, console)
//   consoleof, id                -> the console actor of a running instance,
//        as a plain caf::actor (it crosses the middleman to the controller);
//        destroyed when the node does not run it, wrong_state before the
//        console exists
//   metrics                      -> Prometheus sample lines of this node's
//        fan-out phase latencies (apiary_fanout_duration_seconds, labels
//        node and phase; the controller adds the HELP/TYPE header) and of
//        its networks' switches (apiary_net_*: frames, bytes and drops per
//        port, MAC entries, flooding; labels node, network, port, kind)
//   diskfault, bool              -> ack; simulation: while set, every
//        disk-file job (snapshot, backup, rebuild) fails at once as if the
//        disk answered EIO, with the VM left as it was (the action reverts)
//   partition, bool              -> ack; simulation: while cut off the node
//        neither checks in nor answers the controller (replies are withheld)
#pragma once

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "actors/atoms.hpp"
#include "cluster/control_types.hpp"
#include "actors/metrics.hpp"
#include "net/vxlan.hpp"
#include "vmm-core/shared_bytes.hpp"

namespace apiary::actors {

struct NodeConfig {
  std::string name = "node";
  uint32_t vcpus = 8;          // what the host offers (before overcommit)
  uint64_t memory_mib = 8192;
  caf::actor controller;       // where check-ins go (none: no check-ins)
  std::chrono::milliseconds checkin_interval{10000};
  bool simulated = false;      // instances use the simulated vCPU backend
  // Why this node's instances cannot run (e.g. "kvm_unavailable: /dev/kvm:
  // No such file or directory"); empty when they can. Sent with every
  // check-in so that the scheduler never places an instance here, and
  // answered to any place request.
  std::string cannot_run;
  // Resolves an embedded guest name to its image. Empty: embedded guests
  // cannot be started here (the apiary binary passes embedded_guest_image,
  // one shared buffer per guest;
  // apiary_actors itself does not link the embedded images).
  std::function<vmm::SharedBytes(const std::string& name)> embedded_guest;
  std::chrono::milliseconds phase_deadline{5000};     // per instance fan-out phase
  std::chrono::milliseconds state_deadline{30000};    // how long an action waits for its state
  std::chrono::milliseconds soft_reboot_grace{10000};  // before a soft reboot turns hard
  // poweroff (Nova's stop): how long the guest has to shut down after the
  // ACPI power button before it is powered off. Below the controller's
  // action deadline (60 s) with the forced power-off's state_deadline added.
  std::chrono::milliseconds shutdown_timeout{20000};
  std::chrono::milliseconds file_deadline{45000};      // one disk-file job (copy / zero), all disks
  std::chrono::milliseconds file_poll{20};             // how often the node looks at a running file job
  // Fan-out phase latencies of this node's instances; created by spawn_node
  // when null.
  std::shared_ptr<LatencyFamily> fan_out_latency;
  // Simulation: run disk-file jobs on the actor itself (no thread, so the
  // deterministic scheduler orders them) and report them with a message.
  bool inline_file_jobs = false;
  // Where the node writes what it runs, rewritten (atomically) at every
  // check-in tick: one line per instance, "<id> <power state>". Operators
  // read it to see a node's own view without the controller; the chaos
  // suite compares it with the records. Empty: not written.
  std::string status_file;
  // Where the node says what an operator needs to know about its link to
  // the controller: a check-in failing (again when the reason changes) and
  // the first one answered after failures. Called on the node's actor.
  // Empty: not said.
  std::function<void(const std::string&)> on_log;
  // Networks (net/): with data_plane, every NIC of an instance becomes a
  // port of its network's switch on this node (one network actor per
  // network, made with the first port, ended when the last one goes), and
  // the node asks the controller for the network's peer VTEPs at every tick
  // (nodenet). `tunnel` is this node's VXLAN endpoint (null: local
  // switching only; the controller marks a network that spans nodes error).
  // Without data_plane (simulated nodes) NICs exist with their link down.
  bool data_plane = false;
  std::shared_ptr<net::VxlanTunnel> tunnel;
  // With data_plane: every network hosted here also gets a host tap,
  // net::tap_name(vni), up, without an address (net/tap.hpp). A tap that
  // cannot be made (no CAP_NET_ADMIN, the name in use) is reported with
  // the network's peers request and the controller marks the network error.
  bool taps = false;
  // Where suspended instances' state files go (<save_dir>/<id>.snap).
  // Empty: <system temp dir>/apiary-saved-<name>.
  std::string save_dir;
  // Live migration: the address this node's destinations listen on (a port
  // is picked per migration) and how long one migration may take, pre-copy
  // of a busy guest included.
  std::string migration_host = "127.0.0.1";
  std::chrono::milliseconds migration_deadline{10 * 60 * 1000};
  uint64_t migration_bytes_per_second = 0;  // outgoing page data; 0: unlimited
};

using node_actor = caf::typed_actor<
    caf::replies_to<place_atom, std::string, std::string>::with<std::string>,
    caf::replies_to<node_act_atom, std::string, std::string, std::string>::with<std::string>,
    caf::replies_to<node_act_atom, std::string, std::string, std::string, std::map<std::string, std::string>>::with<
        std::string, std::string>,
    caf::replies_to<inst_spec_atom, std::string>::with<std::string>,
    caf::replies_to<power_list_atom>::with<std::map<std::string, std::string>>,
    caf::replies_to<capacity_atom>::with<uint32_t, uint64_t, uint32_t>,
    caf::replies_to<drain_atom>::with<ack_atom>,
    caf::replies_to<instance_of_atom, std::string>::with<caf::actor>,
    caf::replies_to<partition_atom, bool>::with<ack_atom>,
    caf::replies_to<disk_fault_atom, bool>::with<ack_atom>,
    caf::replies_to<metrics_atom>::with<std::string>,
    caf::replies_to<console_of_atom, std::string>::with<caf::actor>,
    caf::reacts_to<tick_atom>,
    caf::reacts_to<wait_dl_atom, uint64_t>,  // internal: the state waits' timer
    caf::reacts_to<file_poll_atom, uint64_t>,
    caf::reacts_to<state_atom, std::string, std::string, uint64_t, std::string, std::string>>;  // from its instances

node_actor spawn_node(caf::actor_system& sys, NodeConfig config);

// The metric families a node's metrics answer holds (its fan-out latencies,
// its networks, its tunnel), with their headers: the controller regroups
// every node's samples under them (group_families).
const std::vector<MetricFamily>& node_metric_families();

}  // namespace apiary::actors
