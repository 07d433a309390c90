// The controller actor: the control plane's single writer. It owns the
// state store (state_store.hpp), keeps the node registry, schedules new
// instances onto nodes, runs users' actions through the nodes and keeps the
// records true to what the nodes really run.
//
// Why one actor: every record change is validated by the store and must be
// durable before it is acknowledged; with a single owner of the store
// connection there is no second writer to race, and the mailbox orders the
// API calls, check-ins, sweeps and node replies.
//
// API (each answers at once; the work continues asynchronously, and every
// request to a node has a deadline, so no action stays in flight forever):
//   create, spec_bytes        -> instance id. The record is written
//        (initial, vm_state building, action "create") before the reply;
//        then preflight (scheduling), creating (placed, the node starts it),
//        created + ACTIVE, or the X-error path + ERROR. Errors:
//        400 (spec does not parse or is invalid).
//   create, spec_bytes, request_id -> the same with the client's
//        idempotency key ([A-Za-z0-9._-], 1..64; "" = none): a key already
//        used by a create answers that create's instance id, nothing new is
//        written; a key used by another action is 409. The key becomes the
//        create action's request id, so it survives restarts with the store.
//   consoleof, id             -> the console actor of a running instance
//        (through its node: works for nodes in other processes). 404; 503
//        when its node is not connected; 409 when it does not run.
//   metrics                   -> Prometheus text: instances by vm_state,
//        record state and task, nodes by state, check-in ages, action
//        durations and results (since start), and each connected node's
//        fan-out phase latencies (apiary_node_scrape_up says who answered).
//   list                      -> every instance record
//   get, id                   -> one record; 404
//   act, id, action, type     -> request id; 409 / 501 with Nova's exact
//        message and nothing changed (control::check); 400 unknown action.
//        action is the API name ("pause", "reboot", "delete", ...); type is
//        "SOFT"/"HARD" for reboot, ignored otherwise.
//        A node action whose answer was lost, or that the node refused
//        (wrong_state: the VM was busy, e.g. still rebooting), is settled
//        from the node's power list: in the target state, success; as it
//        was, "reverted" (vm_state unchanged); anything else ERROR.
//   act, id, action, type, args -> the same, with the action's arguments
//        (the API's ActionRequest.args; the 4-element form is this with none):
//        resize        vcpus, memory_mib (at least one; the other is kept).
//                      400 if the new board is invalid or the same. The
//                      node's capacity is re-checked for the new board; a
//                      board that does not fit ends the action "reverted"
//                      (vm_state unchanged) with the reason in a "schedule"
//                      event. While RESIZED the instance counts with the
//                      larger of both boards, and the old spec is kept (in
//                      memory) for revert_resize.
//        snapshot      name (default: the request id; [A-Za-z0-9._-], 1..64,
//                      not starting with '.'): <disk>.snapshot-<name>
//        backup        rotation (default 1, >= 1): <disk>.backup-<n>, the
//                      newest `rotation` kept
//        rebuild       image (optional host path): the first writable disk
//                      is copied from it, every other writable disk zeroed
//        rescue        image (embedded guest, default "demo")
//        A disk copy that fails with the VM back as it was ends the action
//        "reverted" (Nova's reverts_task_state: vm_state unchanged) with an
//        error event carrying the errno text; any other failure ERROR.
//        Every file the node wrote or removed is one event of the action.
//        set_admin_password: 501 "... needs capability guest_agent" (there
//        is no guest agent), whatever the state.
//   actions, id               -> the action log (oldest first); 404
//   nodes                     -> every node record
//   drain, node               -> ack once the node is recorded stopping; the
//        node then stops its instances (recorded STOPPED) and the node
//        becomes stopped. 404
//   clusterlog                -> what reconciliation did that belongs to no
//        instance record (strays the store has never heard of)
//   watch, actor              -> ack; from then on the actor receives
//        (changed, instance ids, network ids, node names) after every store
//        transaction that changed those records (StoreChanges), and when a
//        node reports a new lifecycle state of an instance. Until it goes
//        down (it is monitored). Why: live views (the dashboard's event
//        stream) without polling the store.
//   lifecycle, node, id, state, power (from nodes) -> the VMM state of an
//        instance as its node sees it, kept in memory and returned in
//        InstanceInfo (lifecycle, power) by list and get.
// Networks (Shaken Fist's network records; there is no data plane yet, so a
// new network is created at once):
//   netcreate, name, cidr     -> network id. 400 for an empty name or a
//        cidr that is not "a.b.c.d/n" ("" = none).
//   netlist                   -> every network record, with its instances
//   netget, id                -> one; 404
//   netdelete, id             -> the record after the request: deleted when
//        no instance is attached, otherwise delete_wait (it becomes deleted
//        when its last instance is deleted). 404; 409 when already deleted;
//        delete_wait again answers the record unchanged.
//   Instance create checks every devices.nics[].network (a network id, or
//   the name of exactly one live network): it must exist and not be dead
//   (deleted, delete_wait, error), else 400 and nothing is written. The new
//   record is attached to each network in the same transaction; the
//   attachments go when the instance's record becomes deleted.
// From nodes:
//   checkin, name, vcpus, memory_mib, instances, node, cannot_run -> ack.
//        The first check-in creates the node; one from a missing or error
//        node reconciles it (strays stopped, ACTIVE records without a VM
//        stopped). cannot_run non-empty: the node's instances cannot run
//        (the root cause, e.g. kvm_unavailable: ...); the scheduler rejects
//        the node with that reason until a check-in says otherwise.
//   nodenet, name, vtep, {network id -> problem} -> {network id -> peer VTEPs}
//        Every check-in tick of a node that hosts ports: the networks it
//        hosts (problem "" when its switch is up) and its VTEP ("" = it runs
//        without an overlay). The answer lists, per network, the VTEPs of
//        the other up nodes where an instance attached to it is placed;
//        deleted or unknown networks answer no peers. A network becomes
//        error when a node reports a problem with it, or when a node
//        without a VTEP hosts a port of a network that spans other nodes.
// Restart recovery (recover, once, recovery_grace after the start): every
// action left running by a previous controller is finished or failed, never
// left hanging: unplaced creates are scheduled again; the others are settled
// from their node's power list (success when the effect is visible,
// reverted when the VM is as it was, error otherwise, or when the node did
// not come back). A node's first check-in after a controller start, or
// from a new node process, is reconciled like a returning missing node.
// Internal: sweep (every sweep_interval): the silence rule through the
// store; at error the store errors the node's instances. purge (every
// purge_interval): hard-deletes instance and network records that have been
// deleted for longer than cleaner_delay (error records are kept).
// powersync (every power_sync_interval, and lifecycle_sync_delay after a
// node reports a VMM halted or destroyed): every connected node is
// reconciled as at its registration (Nova's _sync_power_states), ERROR
// records aside (their VMs run on, for the operator): a VM the
// records do not want running is stopped; an ACTIVE or PAUSED record whose
// VM no longer runs is recorded STOPPED by a "stop" action with a
// power_sync event; an instance with an action under way is left alone.
#pragma once

#include <caf/all.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "actors/atoms.hpp"
#include "cluster/control_types.hpp"
#include "cluster/shakenfist_states.hpp"

namespace apiary::actors {

struct ControllerConfig {
  std::string store_path = ":memory:";
  std::chrono::seconds checkin_max = control::Defaults::node_checkin_maximum;  // NODE_CHECKIN_MAXIMUM
  std::chrono::milliseconds sweep_interval{10000};
  double cpu_allocation_ratio = 16.0;  // Nova's defaults
  double ram_allocation_ratio = 1.5;
  std::chrono::milliseconds action_deadline{60000};  // a node's answer to one action
  // A live migration's source node answers once the destination runs the
  // guest: pre-copy of a busy guest can take minutes.
  // Above the node's own migration deadline (10 min), so that the node
  // answers (and cancels) before the controller gives up on it.
  std::chrono::milliseconds migration_deadline{11 * 60 * 1000};
  std::chrono::milliseconds node_deadline{10000};    // powerlist / drain round trips
  uint64_t id_seed = 0;                              // instance / request ids; 0 = random
  std::chrono::seconds cleaner_delay = control::Defaults::cleaner_delay;  // CLEANER_DELAY
  std::chrono::milliseconds purge_interval{60000};                         // how often the purge runs
  // Nova's power sync (sync_power_state_interval, 600 s): every connected
  // node's power list against the records, as at a node's registration.
  // 0: off.
  std::chrono::milliseconds power_sync_interval{600000};
  // A VMM a node reports halted or destroyed has its node synced this long
  // after (Nova acts on the hypervisor's "stopped" event after a delay too):
  // a guest that powered itself off, or died, is recorded STOPPED without
  // waiting for the periodic sync; an action under way by then is left
  // alone. 0: off.
  std::chrono::milliseconds lifecycle_sync_delay{5000};
  // The store's clock is the actor system's clock plus this many Unix
  // milliseconds; unset: anchored to the wall clock at spawn. The simulator
  // sets it so that record times (and its traces) are the same on every run.
  std::optional<int64_t> clock_epoch_ms;
  bool test_skip_error_fanout = false;  // test-only fault hook, see StoreOptions
  // Test-only fault hook (the chaos suite's "broken rule" check): creates
  // ignore their idempotency key, so a retried create makes a second
  // instance. Never set in production.
  bool test_ignore_request_ids = false;
  // After a start, how long nodes get to register before the actions the
  // previous controller left running are settled from their power lists.
  std::chrono::milliseconds recovery_grace{10000};
  // A create that finds no node to place on, while some node the store
  // lists as up has not connected (the controller has just started, or the
  // node's connection dropped), waits for it: up to this long after the
  // controller's start or the node's last check-in, whichever is later,
  // trying again every placement_retry. 0: no wait.
  std::chrono::milliseconds placement_wait{30000};
  std::chrono::milliseconds placement_retry{500};
  // Group commit (StateStore::commit_batch): the writes of every message
  // the controller handles between two flushes go to the disk with one
  // fsync, and every answer waits for it. false: one fsync per write, as
  // the store does alone.
  bool group_commit = true;
  // The SQLite VFS of the store ("" = default; tests name a failing one).
  std::string store_vfs;
  // Shelving: each shelved instance's state and disk copies go to
  // <shelf_dir>/<id> (a directory every node can reach for unshelve to land
  // anywhere: shared storage across hosts). "": <temp dir>/apiary-shelf.
  std::string shelf_dir;
  // Nova's shelved_offload_time = 0 (its default): a shelve offloads at
  // once (SHELVED_OFFLOADED, the node's resources freed). false: it stays
  // SHELVED on its node until shelve_offload.
  bool shelve_offloads = true;
  // Each line of the cluster log (nodes coming and going, reconciliation,
  // recovery, store failures) as it is noted, on the controller's actor:
  // the controller process prints them. Empty: kept in memory only.
  std::function<void(const std::string&)> on_note;
};

using controller_actor = caf::typed_actor<
    caf::replies_to<create_atom, std::string>::with<std::string>,
    caf::replies_to<create_atom, std::string, std::string>::with<std::string>,
    caf::replies_to<console_of_atom, std::string>::with<caf::actor>,
    caf::replies_to<metrics_atom>::with<std::string>,
    caf::replies_to<list_atom>::with<std::vector<InstanceInfo>>,
    caf::replies_to<get_atom, std::string>::with<InstanceInfo>,
    caf::replies_to<act_atom, std::string, std::string, std::string>::with<std::string>,
    caf::replies_to<act_atom, std::string, std::string, std::string, std::map<std::string, std::string>>::with<
        std::string>,
    caf::replies_to<actions_atom, std::string>::with<std::vector<ActionInfo>>,
    caf::replies_to<nodes_atom>::with<std::vector<NodeInfo>>,
    caf::replies_to<drain_atom, std::string>::with<ack_atom>,
    caf::replies_to<cluster_log_atom>::with<std::vector<std::string>>,
    caf::replies_to<net_create_atom, std::string, std::string>::with<std::string>,
    caf::replies_to<net_list_atom>::with<std::vector<NetworkInfo>>,
    caf::replies_to<net_get_atom, std::string>::with<NetworkInfo>,
    caf::replies_to<net_delete_atom, std::string>::with<NetworkInfo>,
    caf::replies_to<checkin_atom, std::string, uint32_t, uint64_t, uint32_t, caf::actor, std::string>::with<ack_atom>,
    caf::replies_to<node_net_atom, std::string, std::string, std::map<std::string, std::string>>::with<
        std::map<std::string, std::vector<std::string>>>,
    caf::replies_to<watch_atom, caf::actor>::with<ack_atom>,
    caf::reacts_to<lifecycle_atom, std::string, std::string, std::string, std::string>,
    caf::reacts_to<sweep_atom>, caf::reacts_to<purge_atom>, caf::reacts_to<recover_atom>, caf::reacts_to<flush_atom>,
    caf::reacts_to<power_sync_atom>, caf::reacts_to<power_sync_atom, std::string>,
    caf::reacts_to<replace_atom, std::string, int64_t>>;

// Opens the store (throws control::StoreError when it cannot) and spawns.
controller_actor spawn_controller(caf::actor_system& sys, ControllerConfig config);

class ControllerReads;
// As spawn_controller, with the reads of its store served off the writer
// (cluster/controller_reads.hpp) for the API of the same process; `reads`
// is null for a store in memory, which no second connection can open.
struct SpawnedController {
  controller_actor actor;
  std::shared_ptr<ControllerReads> reads;
};
SpawnedController spawn_controller_with_reads(caf::actor_system& sys, ControllerConfig config);

}  // namespace apiary::actors
