// The control plane under CAF's deterministic scheduler: one controller
// actor (store in memory) and three node actors whose instances run on the
// simulated vCPU backend. Time is simulated, so check-in deadlines of
// minutes and the 10x error rule cost no wall-clock time.
//
// What is checked end to end: placement on the least-loaded node with the
// record's whole path (initial -> preflight -> creating -> created, ACTIVE);
// Nova actions driving the real instance actor lifecycle; refusals (409/501
// with Nova's exact message, nothing changed); the silence rule (missing,
// then error with the node's instances); reconciliation of a returning node
// (strays stopped and logged, Nova power sync); drain; scheduler rejections
// with their reasons in the action log.
#define BOOST_TEST_MODULE control_plane_sim
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "cluster/control_types.hpp"
#include "cluster/controller_actor.hpp"
#include "cluster/controller_reads.hpp"
#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"
#include "cluster/node_actor.hpp"
#include "cluster/state_store.hpp"
#include "proto/apiary/v1/instance.pb.h"
#include "tests/support/control_plane_support.hpp"
#include "tests/support/failing_sync_vfs.hpp"
#include "tests/support/sim_harness.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary;
using namespace apiary::actors;
using namespace std::chrono_literals;

using test::show;

namespace {

const std::vector<std::string> kNodeNames = {"node-a", "node-b", "node-c"};

std::string spec_bytes(const std::string& name, uint32_t vcpus = 1, uint64_t memory_mib = 16) {
  v1::InstanceSpec s;
  s.set_name(name);
  s.mutable_board()->set_vcpus(vcpus);
  s.mutable_board()->set_memory_mib(memory_mib);
  s.mutable_boot()->set_embedded_guest("hello");
  std::string out;
  s.SerializeToString(&out);
  return out;
}

// Control-plane errors print as "409: message"; others as describe() does.
struct Cluster : test::ControlPlaneHarness {
  std::map<std::string, node_actor> nodes;

  // cannot_run: node name -> why its instances cannot run (what a node
  // without a usable /dev/kvm reports).
  void boot(ControllerConfig c = {}, uint32_t node_vcpus = 4, const std::map<std::string, std::string>& cannot_run = {}) {
    c.store_path = ":memory:";
    c.id_seed = 7;
    c.sweep_interval = 5s;
    c.action_deadline = 30s;
    ctl = spawn_controller(sys, c);
    for (const auto& name : kNodeNames) {
      NodeConfig n = node_config(name, node_vcpus);
      n.soft_reboot_grace = 3s;
      if (auto it = cannot_run.find(name); it != cannot_run.end()) n.cannot_run = it->second;
      nodes[name] = spawn_node(sys, n);
    }
    run();
  }
  ~Cluster() {
    for (auto& [name, n] : nodes) self->send_exit(n, caf::exit_reason::user_shutdown);
    if (ctl) self->send_exit(ctl, caf::exit_reason::user_shutdown);
    run();
  }



  std::string create(const std::string& name, uint32_t vcpus = 1) {
    auto id = ask<std::string>(ctl, create_atom::value, spec_bytes(name, vcpus));
    if (!id) BOOST_FAIL("create failed: " << show(id.error()));
    return *id;
  }
  caf::expected<std::string> act(const std::string& id, const std::string& action, const std::string& type = "") {
    return ask<std::string>(ctl, act_atom::value, id, action, type);
  }
  std::string node_state(const std::string& name) {
    auto r = ask<std::vector<NodeInfo>>(ctl, nodes_atom::value);
    BOOST_REQUIRE(r);
    for (auto& n : *r)
      if (n.name == name) return n.state;
    return "";
  }
  instance_actor instance(const std::string& node, const std::string& id) {
    auto r = ask<caf::actor>(nodes.at(node), instance_of_atom::value, id);
    BOOST_REQUIRE(r);
    return caf::actor_cast<instance_actor>(*r);
  }
  // (state, target) of the instance actor for `id` on `node`; "" if the node has none.
  std::pair<std::string, std::string> vm(const std::string& node, const std::string& id) {
    auto inst = instance(node, id);
    if (!inst) return {"", ""};
    self->send(inst, get_state_atom::value);
    run();
    std::pair<std::string, std::string> out;
    take([&](const std::string& s, uint64_t, const std::string& t) { out = {s, t}; });
    return out;
  }
};

const ActionInfo* last_of(const std::vector<ActionInfo>& log, const std::string& action) {
  for (auto it = log.rbegin(); it != log.rend(); ++it)
    if (it->action == action) return &*it;
  return nullptr;
}

std::vector<std::string> events_named(const ActionInfo& a, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& e : a.events)
    if (e.name == name) out.push_back(e.detail);
  return out;
}

bool has_event(const ActionInfo& a, const std::string& name, const std::string& result) {
  for (const auto& e : a.events)
    if (e.name == name && e.result == result) return true;
  return false;
}

// What the clock holds for `node`: timer messages of its state waits, and
// timeouts of requests it made (CAF keeps one until it fires, answered or not).
struct ClockEntries {
  size_t wait_timers = 0;
  size_t request_timeouts = 0;
};
ClockEntries clock_entries_of(caf::scheduler::test_coordinator& sched, const node_actor& node) {
  using clock = caf::detail::simple_actor_clock;
  const auto who = caf::actor_cast<caf::strong_actor_ptr>(node);
  ClockEntries out;
  for (const auto& [due, ev] : sched.clock().schedule()) {
    if (ev->subtype == clock::actor_msg_type) {
      const auto& m = static_cast<const clock::actor_msg&>(*ev);
      if (m.receiver == who && m.content->content().match_element<wait_dl_atom>(0)) ++out.wait_timers;
    } else if (ev->subtype == clock::request_timeout_type) {
      if (static_cast<const clock::request_timeout&>(*ev).self == who) ++out.request_timeouts;
    }
  }
  return out;
}

}  // namespace

// Group commit, end to end in the controller: requests already in its
// mailbox share one batch (one commit for all of them), and when that
// commit fails (the disk refuses the fsync) every one of them is answered
// with the store's error -- none is acknowledged -- and the controller
// stops, because what it holds in memory is not what the store holds.
struct FileController : Cluster {
  std::string dir;
  FileController() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "apiary-ctl-XXXXXX").string();
    BOOST_REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    dir = tmpl;
  }
  ~FileController() {
    test::FailingSyncVfs::fail_sync = false;
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  void start(bool group_commit) {
    ControllerConfig c = controller_config(7);
    c.store_path = dir + "/state.db";
    c.store_vfs = test::FailingSyncVfs::name();
    c.group_commit = group_commit;
    auto spawned = spawn_controller_with_reads(sys, c);
    ctl = spawned.actor;
    reads = spawned.reads;
    run();
  }
  std::shared_ptr<ControllerReads> reads;
  // Sends n creates without letting the controller run in between, then
  // runs; returns the answers (ids or errors) in order.
  std::vector<std::string> creates(int n) {
    for (int i = 0; i < n; ++i) self->send(ctl, create_atom::value, spec_bytes("vm-" + std::to_string(i)));
    run();
    std::vector<std::string> out;
    for (int i = 0; i < n; ++i) {
      bool got = take([&](const std::string& id) { out.push_back("id " + id); },
                      [&](caf::error& e) { out.push_back("error " + show(e)); });
      if (!got) out.push_back("no answer");
    }
    return out;
  }
};

BOOST_FIXTURE_TEST_CASE(requests_in_the_mailbox_share_one_commit, FileController) {
  start(true);
  const int syncs_before = test::FailingSyncVfs::syncs;
  auto answers = creates(5);
  for (const auto& a : answers) BOOST_TEST(a.rfind("id ", 0) == 0u, a);
  const int batched = test::FailingSyncVfs::syncs - syncs_before;
  BOOST_TEST_MESSAGE("5 creates with group commit: " << batched << " fsync(s)");

  // The same five creates, one commit each (and each create commits more
  // than once: its record, then the scheduler's outcome).
  FileController one;
  one.start(false);
  const int single_before = test::FailingSyncVfs::syncs;
  for (const auto& a : one.creates(5)) BOOST_TEST(a.rfind("id ", 0) == 0u, a);
  const int single = test::FailingSyncVfs::syncs - single_before;
  BOOST_TEST_MESSAGE("5 creates without: " << single << " fsync(s)");
  BOOST_TEST(batched > 0);
  BOOST_TEST(batched * 4 <= single, batched << " fsyncs batched against " << single << " without");
}

BOOST_FIXTURE_TEST_CASE(a_shutdown_commits_the_open_batch_first, FileController) {
  start(true);
  self->send(ctl, create_atom::value, spec_bytes("vm-last"));
  sched.run_once();  // the create: a batch opens, its flush is queued behind
  self->send_exit(ctl, caf::exit_reason::user_shutdown);
  run();
  std::string id;
  BOOST_TEST(take([&](const std::string& v) { id = v; }, [&](caf::error& e) { BOOST_ERROR(show(e)); }),
             "the create was not answered");
  ctl = nullptr;
  auto store = control::StateStore::open(dir + "/state.db");
  BOOST_TEST(store.get_instance(id).has_value(), "the acknowledged create " << id << " is not in the store");
}

// Reads off the writer (ControllerReads, what the HTTP API reads through):
// the controller's own answers for the same records, nothing of a batch
// that is not durable yet, and the controller's error for an unknown id.
BOOST_FIXTURE_TEST_CASE(reads_off_the_writer_answer_as_the_controller_does_and_only_what_is_durable, FileController) {
  start(true);
  BOOST_REQUIRE(reads != nullptr);
  auto first = creates(1);
  BOOST_REQUIRE(first[0].rfind("id ", 0) == 0u);
  const std::string id = first[0].substr(3);
  auto mine = reads->get(id);
  BOOST_REQUIRE_MESSAGE(mine, (mine ? std::string() : show(mine.error())));
  const auto theirs = get(id);
  BOOST_TEST(mine->id == theirs.id);
  BOOST_TEST(mine->name == theirs.name);
  BOOST_TEST(mine->node == theirs.node);
  BOOST_TEST(mine->sf_state == theirs.sf_state);
  BOOST_TEST(mine->vm_state == theirs.vm_state);
  BOOST_TEST(mine->task_state == theirs.task_state);
  BOOST_TEST(mine->lifecycle == theirs.lifecycle);
  BOOST_TEST(mine->vm_history == theirs.vm_history);
  BOOST_TEST(mine->sf_history == theirs.sf_history);
  auto log = reads->actions(id);
  BOOST_REQUIRE(log);
  const auto their_log = actions(id);
  BOOST_REQUIRE(log->size() == their_log.size());
  for (size_t i = 0; i < log->size(); ++i) {
    BOOST_TEST((*log)[i].request_id == their_log[i].request_id);
    BOOST_TEST((*log)[i].result == their_log[i].result);
    BOOST_TEST((*log)[i].events.size() == their_log[i].events.size());
  }

  // A create the controller has handled but not committed: not shown.
  self->send(ctl, create_atom::value, spec_bytes("vm-held"));
  sched.run_once();  // the create: its record is in the open batch, its answer held
  auto during = reads->list();
  BOOST_REQUIRE(during);
  BOOST_TEST(during->size() == 1u, "a reader showed a write that is not durable");
  run();
  std::string held;
  BOOST_TEST(take([&](const std::string& v) { held = v; }, [&](caf::error& e) { BOOST_ERROR(show(e)); }));
  auto after = reads->list();
  BOOST_REQUIRE(after);
  BOOST_TEST(after->size() == 2u);
  BOOST_TEST(static_cast<bool>(reads->get(held)));

  auto none = reads->get("i-0000000000000000");
  BOOST_REQUIRE(!none);
  BOOST_TEST(show(none.error()).find("404") == 0u, show(none.error()));
  auto no_log = reads->actions("i-0000000000000000");
  BOOST_REQUIRE(!no_log);
  BOOST_TEST(show(no_log.error()).find("404") == 0u, show(no_log.error()));
}

BOOST_FIXTURE_TEST_CASE(a_failed_fsync_fails_every_answer_of_its_batch_and_stops_the_controller, FileController) {
  start(true);
  auto first = creates(2);  // a batch that commits
  for (const auto& a : first) BOOST_TEST(a.rfind("id ", 0) == 0u, a);
  self->monitor(ctl);
  test::FailingSyncs failing;
  auto answers = creates(4);
  BOOST_REQUIRE(answers.size() == 4u);
  for (const auto& a : answers) {
    BOOST_TEST(a.rfind("error ", 0) == 0u, "acknowledged although its commit failed: " << a);
    BOOST_TEST(a.find("commit_failed") != std::string::npos, a);
  }
  std::optional<caf::error> reason;
  BOOST_TEST(take([&](caf::down_msg& d) { reason = d.reason; }), "the controller kept running");
  BOOST_REQUIRE(reason.has_value());
  BOOST_TEST(show(*reason).find("commit_failed") != std::string::npos, show(*reason));
  ctl = nullptr;
}

BOOST_FIXTURE_TEST_CASE(create_places_on_the_least_loaded_node_and_walks_the_record, Cluster) {
  boot();
  for (const auto& n : kNodeNames) BOOST_TEST(node_state(n) == "created");
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(create("vm" + std::to_string(i)));
  // Each placement goes to the node with the fewest instances (ties by name).
  BOOST_TEST(get(ids[0]).node == "node-a");
  BOOST_TEST(get(ids[1]).node == "node-b");
  BOOST_TEST(get(ids[2]).node == "node-c");
  BOOST_TEST(get(ids[3]).node == "node-a");

  auto r = get(ids[1]);
  BOOST_TEST(r.sf_state == "created");
  BOOST_TEST(r.vm_state == "active");
  BOOST_TEST(r.task_state == "none");
  auto log = actions(ids[1]);
  BOOST_REQUIRE(log.size() == 1u);
  BOOST_TEST(log[0].action == "create");
  BOOST_TEST(log[0].result == "success");
  BOOST_TEST(log[0].finish >= log[0].start);
  auto path = events_named(log[0], "sf_state");
  BOOST_TEST(path == (std::vector<std::string>{"initial -> preflight", "preflight -> creating", "creating -> created"}),
             boost::test_tools::per_element());
  auto sched = events_named(log[0], "schedule");
  BOOST_REQUIRE(sched.size() == 1u);
  BOOST_TEST(sched[0].find("node node-b (0 instances") == 0);
  // The node really runs it.
  BOOST_TEST(vm("node-b", ids[1]).first == "run");
  BOOST_TEST(!instance("node-a", ids[1]));
}

BOOST_FIXTURE_TEST_CASE(a_state_event_not_from_the_instances_vmm_changes_nothing, Cluster) {
  // A node takes an instance's state events only from the instance actor it
  // runs for it (the sender): a forged one, or a late one from a VMM it has
  // replaced, must not move its view of the instance nor the record.
  boot();
  const std::string id = create("forged");
  const std::string node = get(id).node;
  auto power = [&] {
    auto r = ask<std::map<std::string, std::string>>(nodes.at(node), power_list_atom::value);
    BOOST_REQUIRE(r);
    return r->count(id) ? r->at(id) : std::string("(none)");
  };
  const std::string before = power();
  BOOST_TEST(before == "running");
  caf::anon_send(nodes.at(node), state_atom::value, id, std::string("destroy"), uint64_t{99}, std::string(),
                 std::string("forged"));
  self->send(nodes.at(node), state_atom::value, id, std::string("destroy"), uint64_t{99}, std::string(),
             std::string("forged"));
  run();
  pass(2s, 500ms);
  BOOST_TEST(power() == before);
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(vm(node, id).first == "run");
  // The real instance's events still count: a stop is seen by the node.
  const auto old = instance(node, id);
  BOOST_REQUIRE(act(id, "stop"));
  BOOST_TEST(power() == "shutdown");
  BOOST_TEST(get(id).vm_state == "stopped");
  // A start makes a new VMM; a late event of the one it replaced is ignored.
  BOOST_REQUIRE(act(id, "start"));
  BOOST_TEST(power() == "running");
  BOOST_REQUIRE(instance(node, id).address() != old.address());
  caf::send_as(caf::actor_cast<caf::actor>(old), nodes.at(node), state_atom::value, id, std::string("destroy"),
               uint64_t{99}, std::string(), std::string("late"));
  run();
  pass(2s, 500ms);
  BOOST_TEST(power() == "running");
  BOOST_TEST(get(id).vm_state == "active");
}

BOOST_FIXTURE_TEST_CASE(actions_drive_the_instance_actor_lifecycle, Cluster) {
  boot();
  const std::string id = create("life");
  const std::string node = get(id).node;
  BOOST_TEST(vm(node, id).first == "run");

  BOOST_REQUIRE(act(id, "pause"));
  BOOST_TEST(get(id).vm_state == "paused");
  BOOST_TEST(get(id).task_state == "none");
  BOOST_TEST((vm(node, id) == std::pair<std::string, std::string>{"quiesce", "quiesce"}));

  BOOST_REQUIRE(act(id, "unpause"));
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(vm(node, id).first == "run");

  BOOST_REQUIRE(act(id, "stop"));
  BOOST_TEST(get(id).vm_state == "stopped");
  BOOST_TEST(vm(node, id).first == "destroy");

  BOOST_REQUIRE(act(id, "start"));
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(vm(node, id).first == "run");  // a new VMM from the same spec

  // Hard reboot: the instance goes through Reboot and back to Run.
  auto inst = instance(node, id);
  self->send(inst, subscribe_atom::value, caf::actor_cast<caf::actor>(self));
  run();
  take([](ack_atom) {});
  BOOST_REQUIRE(act(id, "reboot", "HARD"));
  std::vector<std::string> seen;
  while (take([&](state_atom, const std::string&, const std::string& s, uint64_t, const std::string&, const std::string&) {
    seen.push_back(s);
  })) {
  }
  BOOST_TEST(seen == (std::vector<std::string>{"quiesce", "halt", "reboot", "boot", "run"}),
             boost::test_tools::per_element());
  BOOST_TEST(get(id).vm_state == "active");

  // Soft reboot: the simulated guest ignores Ctrl-Alt-Del, so after the
  // grace period the node resets it (Nova's fallback).
  BOOST_REQUIRE(act(id, "reboot", "SOFT"));
  BOOST_TEST(get(id).task_state == "rebooting");
  pass(5s, 1s);
  BOOST_TEST(get(id).task_state == "none");
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(vm(node, id).first == "run");

  // Delete: powered off and forgotten by the node, record deleted.
  BOOST_REQUIRE(act(id, "delete"));
  auto r = get(id);
  BOOST_TEST(r.vm_state == "deleted");
  BOOST_TEST(r.sf_state == "deleted");
  BOOST_TEST(!instance(node, id));

  auto log = actions(id);
  std::vector<std::string> names;
  for (auto& a : log) {
    names.push_back(a.action);
    BOOST_TEST(a.result == "success", a.action << " ended " << a.result);
  }
  BOOST_TEST(names == (std::vector<std::string>{"create", "pause", "unpause", "stop", "start", "reboot_hard",
                                                "reboot_soft", "delete"}),
             boost::test_tools::per_element());
}

BOOST_FIXTURE_TEST_CASE(refused_actions_answer_409_or_501_and_change_nothing, Cluster) {
  boot();
  const std::string id = create("refuse");
  const auto before = get(id);
  const auto log_before = actions(id).size();

  auto r = act(id, "unpause");
  BOOST_REQUIRE(!r);
  BOOST_TEST(http_status(r.error()) == 409);
  BOOST_TEST(message_of(r.error()) == "Cannot 'unpause' instance " + id + " while it is in vm_state active");

  r = act(id, "set_admin_password");
  BOOST_REQUIRE(!r);
  BOOST_TEST(http_status(r.error()) == 501);
  BOOST_TEST(message_of(r.error()) ==
             "Cannot 'set_admin_password' instance " + id + ": not implemented, needs capability guest_agent");

  r = act(id, "reboot", "");
  BOOST_REQUIRE(!r);
  BOOST_TEST(http_status(r.error()) == 400);

  r = act("i-nope", "pause");
  BOOST_REQUIRE(!r);
  BOOST_TEST(http_status(r.error()) == 404);

  const auto after = get(id);
  BOOST_TEST(after.vm_state == before.vm_state);
  BOOST_TEST(after.task_state == before.task_state);
  BOOST_TEST(after.sf_state == before.sf_state);
  BOOST_TEST(actions(id).size() == log_before);
  BOOST_TEST(vm(after.node, id).first == "run");

  // A task in flight refuses the next action (not delete / hard reboot).
  self->send(ctl, act_atom::value, id, std::string("pause"), std::string());
  self->send(ctl, act_atom::value, id, std::string("stop"), std::string());
  run();
  std::vector<caf::error> errors;
  int accepted = 0;
  while (take([&](std::string&) { ++accepted; }, [&](caf::error& e) { errors.push_back(e); })) {
  }
  BOOST_TEST(accepted == 1);
  BOOST_REQUIRE(errors.size() == 1u);
  BOOST_TEST(http_status(errors[0]) == 409);
  BOOST_TEST(message_of(errors[0]) == "Cannot 'stop' instance " + id + " while it is in task_state pausing");
  BOOST_TEST(get(id).vm_state == "paused");
}

// Suspend is built (docs/snapshots.md), but a simulated VM runs no guest and
// has no state to save: the node says so, resumes the VM, and the action is
// reverted with the instance still ACTIVE and running.
BOOST_FIXTURE_TEST_CASE(a_simulated_vm_cannot_be_suspended_and_runs_on, Cluster) {
  boot();
  const std::string id = create("no-state");
  BOOST_REQUIRE(act(id, "suspend"));
  pass(5s, 100ms);
  const auto r = get(id);
  BOOST_TEST(r.vm_state == "active");
  BOOST_TEST(r.task_state == "none");
  BOOST_TEST(vm(r.node, id).first == "run");
  const auto log = actions(id);
  BOOST_REQUIRE(!log.empty());
  BOOST_TEST(log.back().action == "suspend");
  BOOST_TEST(log.back().result == "reverted");
  bool named = false;
  for (const auto& e : log.back().events) named = named || e.detail.find("snapshot_unsupported") != std::string::npos;
  BOOST_TEST(named);
}

// A node that refuses an action (wrong_state: its instance is busy with
// something the controller no longer waits for) did nothing; the record
// follows what the node runs instead of going to ERROR while the VM runs on
// (found by the chaos suite: a pause refused while the instance was still
// rebooting set vm_state error). Refused while rebooting: reverted, ACTIVE.
// Refused because it was already paused behind the controller's back:
// success, PAUSED.
BOOST_FIXTURE_TEST_CASE(an_action_the_node_refuses_leaves_the_record_as_the_vm_is, Cluster) {
  boot();
  const std::string id = create("busy");
  const std::string node = get(id).node;
  auto inst = instance(node, id);

  // A reset reaches the instance first; the controller's pause finds it
  // still rebooting.
  self->send(inst, hard_reset_atom::value);
  self->send(ctl, act_atom::value, id, std::string("pause"), std::string());
  run();
  while (take([](ack_atom) {}, [](const std::string&) {}, [&](caf::error& e) { BOOST_ERROR(show(e)); })) {
  }
  pass(2s, 100ms);
  auto r = get(id);
  BOOST_TEST(r.vm_state == "active");
  BOOST_TEST(r.task_state == "none");
  BOOST_TEST(vm(node, id).first == "run");
  auto log = actions(id);
  BOOST_REQUIRE(log.back().action == "pause");
  BOOST_TEST(log.back().result == "reverted");
  auto refusal = events_named(log.back(), "compute_pause");
  BOOST_REQUIRE(refusal.size() == 1u);
  BOOST_TEST(refusal[0].find("wrong_state: cannot pause instance") == 0, refusal[0]);
  BOOST_TEST(refusal[0].find("(target reboot)") != std::string::npos, refusal[0]);
  auto check = events_named(log.back(), "power_check");
  BOOST_REQUIRE(check.size() == 1u);
  BOOST_TEST(check[0] == "node " + node + " reports it running: not done (refused); the record keeps its state");

  // Paused behind the controller's back: its pause is refused and the
  // record says paused, as the VM is.
  BOOST_REQUIRE(ask<std::string>(nodes.at(node), node_act_atom::value, id, std::string("pause"), std::string()));
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_REQUIRE(act(id, "pause"));
  pass(2s, 100ms);
  r = get(id);
  BOOST_TEST(r.vm_state == "paused");
  BOOST_TEST((vm(node, id) == std::pair<std::string, std::string>{"quiesce", "quiesce"}));
  log = actions(id);
  BOOST_TEST(log.back().result == "success");
  BOOST_TEST(has_event(log.back(), "compute_pause", "error"));
  check = events_named(log.back(), "power_check");
  BOOST_REQUIRE(check.size() == 1u);
  BOOST_TEST(check[0] == "node " + node + " reports it paused: it was already");
  BOOST_REQUIRE(act(id, "unpause"));
  BOOST_TEST(get(id).vm_state == "active");

  // An action that starts with a pause (suspend, snapshot, backup, shelve):
  // the refused pause did nothing, so the action is reverted and the record
  // stays ACTIVE (it went to ERROR before, the VM running on).
  self->send(inst, hard_reset_atom::value);
  self->send(ctl, act_atom::value, id, std::string("suspend"), std::string());
  run();
  while (take([](ack_atom) {}, [](const std::string&) {}, [&](caf::error& e) { BOOST_ERROR(show(e)); })) {
  }
  pass(2s, 100ms);
  r = get(id);
  BOOST_TEST(r.vm_state == "active");
  BOOST_TEST(r.task_state == "none");
  BOOST_TEST(vm(node, id).first == "run");
  log = actions(id);
  BOOST_REQUIRE(log.back().action == "suspend");
  BOOST_TEST(log.back().result == "reverted");
  auto suspend = events_named(log.back(), "compute_suspend");
  BOOST_REQUIRE(suspend.size() == 1u);
  BOOST_TEST(suspend[0].find("pause for the save: wrong_state: cannot pause instance") != std::string::npos, suspend[0]);
}

// Nova's power sync. A VM that went away without the controller asking (its
// guest powered off, or it died) is reported destroyed by its node; some
// seconds later (lifecycle_sync_delay) the controller compares the node's
// power list with the records and records the instance STOPPED by a "stop"
// action with a power_sync event, so that a user's start works again. A VM
// that runs while its record says STOPPED is powered off by the periodic
// sync (power_sync_interval).
BOOST_FIXTURE_TEST_CASE(the_power_sync_records_a_vm_that_went_away_and_stops_one_that_should_not_run, Cluster) {
  ControllerConfig c;
  c.power_sync_interval = 30s;
  c.lifecycle_sync_delay = 5s;
  boot(c);
  const std::string id = create("goes-away");
  const std::string node = get(id).node;
  auto inst = instance(node, id);
  self->send(inst, poweroff_atom::value);  // not through the controller
  run();
  take([](ack_atom) {});
  BOOST_TEST(vm(node, id).first == "destroy");
  pass(3s, 500ms);
  BOOST_TEST(get(id).vm_state == "active");  // before the delay
  pass(3s, 500ms);
  auto r = get(id);
  BOOST_TEST(r.vm_state == "stopped");
  BOOST_TEST(r.task_state == "none");
  auto log = actions(id);
  BOOST_REQUIRE(log.back().action == "stop");
  BOOST_TEST(log.back().result == "success");
  auto sync = events_named(log.back(), "power_sync");
  BOOST_REQUIRE(sync.size() == 1u);
  BOOST_TEST(sync[0] == "node " + node + " runs no VM for this active instance: recorded stopped");
  BOOST_REQUIRE(act(id, "start"));
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(vm(node, id).first == "run");

  // Stopped on the record, started behind the controller's back: the
  // periodic sync powers it off and the record stays STOPPED.
  BOOST_REQUIRE(act(id, "stop"));
  BOOST_TEST(get(id).vm_state == "stopped");
  BOOST_REQUIRE(ask<std::string>(nodes.at(node), node_act_atom::value, id, std::string("poweron"), std::string()));
  BOOST_TEST(vm(node, id).first == "run");
  const size_t actions_before = actions(id).size();
  pass(31s, 1s);
  BOOST_TEST(vm(node, id).first == "destroy");
  r = get(id);
  BOOST_TEST(r.vm_state == "stopped");
  BOOST_TEST(r.task_state == "none");
  log = actions(id);
  BOOST_TEST(log.size() == actions_before);  // a stopped instance cannot be stopped: the last stop says it
  auto stray = events_named(log.back(), "reconcile_stray");
  BOOST_REQUIRE(stray.size() == 2u);
  BOOST_TEST(stray[0] == "node " + node + " runs it while the record says sf_state created, vm_state stopped; stopping it");
  BOOST_TEST(stray[1].find("stopped on node " + node) == 0, stray[1]);
}

// Live migration is built (docs/snapshots.md), but a simulated VM has no
// guest state to move: the destination the scheduler picked says so before
// anything is sent, and the action is reverted with the instance ACTIVE and
// running on its own node. Naming the instance's own node is a 400.
BOOST_FIXTURE_TEST_CASE(a_simulated_vm_cannot_migrate_live_and_stays_on_its_node, Cluster) {
  boot();
  const std::string id = create("stays");
  const std::string node = get(id).node;
  auto own = ask<std::string>(ctl, act_atom::value, id, std::string("live_migrate"), std::string(),
                              std::map<std::string, std::string>{{"host", node}});
  BOOST_REQUIRE(!own);
  BOOST_TEST(http_status(own.error()) == 400);
  BOOST_TEST(message_of(own.error()) == "live_migrate: instance " + id + " is already on node " + node);
  BOOST_REQUIRE(act(id, "live_migrate"));
  pass(5s, 100ms);
  const auto r = get(id);
  BOOST_TEST(r.vm_state == "active");
  BOOST_TEST(r.task_state == "none");
  BOOST_TEST(r.node == node);
  BOOST_TEST(vm(node, id).first == "run");
  const auto log = actions(id);
  BOOST_REQUIRE(!log.empty());
  BOOST_TEST(log.back().action == "live_migrate");
  BOOST_TEST(log.back().result == "reverted");
  bool named = false;
  for (const auto& e : log.back().events) named = named || e.detail.find("runs simulated instances") != std::string::npos;
  BOOST_TEST(named);
}

// Shelving a stopped VM (a simulated one has no state to save when it
// runs): with Nova's default it is offloaded at once and no node holds it;
// unshelve schedules it anew and boots it from its spec. With offloading
// deferred it stays SHELVED on its node until shelve_offload.
BOOST_FIXTURE_TEST_CASE(shelve_offload_and_unshelve_a_stopped_vm, Cluster) {
  ControllerConfig c;
  c.shelf_dir = "/tmp/apiary-sim-shelf-" + std::to_string(::getpid());
  c.shelve_offloads = false;
  boot(c);
  const std::string id = create("shelf");
  BOOST_REQUIRE(act(id, "stop"));
  pass(2s, 100ms);
  BOOST_REQUIRE(get(id).vm_state == "stopped");
  BOOST_REQUIRE(act(id, "shelve"));
  pass(2s, 100ms);
  auto r = get(id);
  BOOST_TEST(r.vm_state == "shelved");
  BOOST_TEST(!r.node.empty());
  BOOST_TEST(std::filesystem::is_directory(c.shelf_dir + "/" + id));
  BOOST_REQUIRE(act(id, "shelve_offload"));
  pass(2s, 100ms);
  r = get(id);
  BOOST_TEST(r.vm_state == "shelved_offloaded");
  BOOST_TEST(r.node.empty());
  BOOST_REQUIRE(act(id, "unshelve"));
  pass(2s, 100ms);
  r = get(id);
  BOOST_TEST(r.vm_state == "active");
  BOOST_TEST(r.task_state == "none");
  BOOST_REQUIRE(!r.node.empty());
  BOOST_TEST(vm(r.node, id).first == "run");
  BOOST_TEST(!std::filesystem::exists(c.shelf_dir + "/" + id));  // removed once it runs
  const auto log = actions(id);
  BOOST_TEST(log.back().action == "unshelve");
  BOOST_TEST(log.back().result == "success");
  std::filesystem::remove_all(c.shelf_dir);
}

// A watcher (the dashboard's event stream) that notes every instance id it
// is told of.
caf::behavior change_recorder(caf::event_based_actor*, std::shared_ptr<std::vector<std::string>> seen) {
  return {[seen](changed_atom, const std::vector<std::string>& instances, const std::vector<std::string>&,
                 const std::vector<std::string>&) { seen->insert(seen->end(), instances.begin(), instances.end()); }};
}

BOOST_FIXTURE_TEST_CASE(a_watcher_hears_of_each_change_and_records_show_their_vmm_state_and_history, Cluster) {
  boot();
  auto seen = std::make_shared<std::vector<std::string>>();
  caf::actor watcher = sys.spawn(change_recorder, seen);
  BOOST_REQUIRE(ask<ack_atom>(ctl, watch_atom::value, watcher));
  const std::string id = create("watched");
  BOOST_TEST(std::count(seen->begin(), seen->end(), id) >= 4);  // record, placement, VMM steps, action end
  auto r = get(id);
  // The node's reports: the VMM runs, and how it got there.
  BOOST_TEST(r.lifecycle == "run");
  BOOST_TEST(r.power == "running");
  BOOST_TEST(r.lifecycle_history.front() == "start");
  BOOST_TEST(r.lifecycle_history.back() == "run");
  BOOST_TEST((r.vm_history == std::vector<std::string>{"building", "active"}));
  BOOST_TEST(r.sf_history == (std::vector<std::string>{"initial", "preflight", "creating", "created"}), boost::test_tools::per_element());

  seen->clear();
  BOOST_REQUIRE(act(id, "pause"));
  BOOST_TEST(std::count(seen->begin(), seen->end(), id) >= 2);
  r = get(id);
  BOOST_TEST(r.lifecycle == "quiesce");
  BOOST_TEST(r.power == "paused");
  BOOST_TEST((r.vm_history == std::vector<std::string>{"building", "active", "paused"}));
  BOOST_TEST(r.lifecycle_history.back() == "quiesce");

  // Nodes and their histories.
  auto nodes = ask<std::vector<NodeInfo>>(ctl, nodes_atom::value);
  BOOST_REQUIRE(nodes);
  for (const auto& n : *nodes) BOOST_TEST((n.history == std::vector<std::string>{"created"}), n.name);

  // A watcher that dies is dropped: later changes go nowhere and break nothing.
  self->send_exit(watcher, caf::exit_reason::user_shutdown);
  run();
  seen->clear();
  BOOST_REQUIRE(act(id, "unpause"));
  BOOST_TEST(seen->empty());
  BOOST_TEST(get(id).lifecycle == "run");

  // A report from a node that does not hold the record is not shown.
  self->send(ctl, lifecycle_atom::value, std::string("node-x"), id, std::string("halt"), std::string("shutdown"));
  run();
  BOOST_TEST(get(id).lifecycle == "run");
}

BOOST_FIXTURE_TEST_CASE(a_silent_node_goes_missing_then_error_with_its_instances, Cluster) {
  boot();
  const std::string id = create("lost");
  BOOST_REQUIRE(get(id).node == "node-a");
  BOOST_REQUIRE(ask<ack_atom>(nodes.at("node-a"), partition_atom::value, true));
  // An action sent to the cut-off node ends in ERROR instead of staying in
  // flight: at its deadline (30 s) plus the power check's (10 s), which asks
  // the node whether it did the work after all and gets no answer either.
  BOOST_REQUIRE(act(id, "pause"));
  BOOST_TEST(get(id).task_state == "pausing");
  pass(35s);
  BOOST_TEST(get(id).task_state == "pausing");
  pass(10s);
  BOOST_TEST(get(id).task_state == "none");
  BOOST_TEST(get(id).vm_state == "error");
  BOOST_TEST(actions(id).back().result == "error");
  BOOST_TEST(actions(id).back().events.back().name == "power_check");
  BOOST_TEST(vm("node-a", id).first == "run");  // the node never got it

  pass(115s - 45s);
  BOOST_TEST(node_state("node-a") == "created");  // within NODE_CHECKIN_MAXIMUM (120 s)
  pass(15s);
  BOOST_TEST(node_state("node-a") == "missing");
  BOOST_TEST(node_state("node-b") == "created");
  BOOST_TEST(get(id).sf_state == "created");  // missing is not yet error

  pass(1200s - 130s);
  BOOST_TEST(node_state("node-a") == "missing");
  pass(10s);
  BOOST_TEST(node_state("node-a") == "error");
  auto r = get(id);
  BOOST_TEST(r.sf_state == "error");
  BOOST_TEST(r.vm_state == "error");
  BOOST_TEST(r.task_state == "none");

  // An action on an instance of a node in error fails at once (hard reboot
  // is allowed from ERROR).
  BOOST_REQUIRE(act(id, "reboot", "HARD"));
  BOOST_TEST(get(id).task_state == "none");
  auto last = actions(id).back();
  BOOST_TEST(last.action == "reboot_hard");
  BOOST_TEST(last.result == "error");

  // The node returns: it is created again and the VM it still runs for an
  // errored record is a stray: stopped and logged.
  BOOST_REQUIRE(ask<ack_atom>(nodes.at("node-a"), partition_atom::value, false));
  BOOST_TEST(node_state("node-a") == "created");
  BOOST_TEST(vm("node-a", id).first == "destroy");
  auto log = actions(id);
  auto* stop = last_of(log, "stop");
  BOOST_REQUIRE(stop);
  BOOST_TEST(stop->request_id.find("reconcile-") == 0);
  BOOST_TEST(has_event(*stop, "reconcile_stray", "success"));
  BOOST_TEST(get(id).vm_state == "stopped");
}

BOOST_FIXTURE_TEST_CASE(a_missing_node_that_returns_is_reconciled, Cluster) {
  boot();
  const std::string stray = create("stray");     // node-a
  const std::string other = create("other-b");  // node-b
  const std::string gone = create("gone");      // node-c
  const std::string lost = create("lost");      // node-a
  BOOST_REQUIRE(get(stray).node == "node-a");
  BOOST_REQUIRE(get(lost).node == "node-a");
  BOOST_REQUIRE(ask<ack_atom>(nodes.at("node-a"), partition_atom::value, true));
  pass(130s);
  BOOST_REQUIRE(node_state("node-a") == "missing");

  // Deleted while its node is missing: Nova's local delete.
  BOOST_REQUIRE(act(stray, "delete"));
  BOOST_TEST(get(stray).sf_state == "deleted");
  BOOST_TEST(vm("node-a", stray).first == "run");  // the node does not know yet
  // Meanwhile the other VM on node-a shut down behind the controller's back.
  self->send(instance("node-a", lost), poweroff_atom::value);
  run();
  take([](ack_atom) {});
  BOOST_TEST(vm("node-a", lost).first == "destroy");
  BOOST_TEST(get(lost).vm_state == "active");

  BOOST_REQUIRE(ask<ack_atom>(nodes.at("node-a"), partition_atom::value, false));
  BOOST_TEST(node_state("node-a") == "created");
  // The stray is stopped and forgotten by the node, and logged on the delete.
  BOOST_TEST(!instance("node-a", stray));
  const auto stray_log = actions(stray);
  auto* del = last_of(stray_log, "delete");
  BOOST_REQUIRE(del);
  BOOST_TEST(has_event(*del, "local_delete", "success"));
  BOOST_TEST(has_event(*del, "reconcile_stray", "success"));
  // Power sync: ACTIVE on record, nothing running: STOPPED.
  BOOST_TEST(get(lost).vm_state == "stopped");
  const auto lost_log = actions(lost);
  auto* sync = last_of(lost_log, "stop");
  BOOST_REQUIRE(sync);
  BOOST_TEST(has_event(*sync, "power_sync", "success"));
  // Nothing else was touched.
  BOOST_TEST(get(other).vm_state == "active");
  BOOST_TEST(get(gone).vm_state == "active");
  auto clog = ask<std::vector<std::string>>(ctl, cluster_log_atom::value);
  BOOST_REQUIRE(clog);
  bool noted = false;
  for (auto& l : *clog) noted |= l == "node node-a: returned from missing, reconciling";
  BOOST_TEST(noted);
}

BOOST_FIXTURE_TEST_CASE(drain_stops_instances_and_refuses_placements, Cluster) {
  boot();
  const std::string a = create("d1");  // node-a
  const std::string b = create("d2");  // node-b
  const std::string c = create("d3");  // node-c
  BOOST_REQUIRE(get(c).node == "node-c");
  BOOST_REQUIRE(ask<ack_atom>(ctl, drain_atom::value, std::string("node-c")));
  BOOST_TEST(node_state("node-c") == "stopped");
  BOOST_TEST(get(c).vm_state == "stopped");
  BOOST_TEST(vm("node-c", c).first == "destroy");
  BOOST_TEST(get(a).vm_state == "active");

  // The node refuses placements itself...
  auto p = ask<std::string>(nodes.at("node-c"), place_atom::value, std::string("i-x"), spec_bytes("x"));
  BOOST_REQUIRE(!p);
  BOOST_TEST(show(p.error()).find("draining") != std::string::npos);
  // ...and the scheduler no longer picks it, saying why. Its check-ins have
  // stopped, and a stopped node is not swept into missing.
  pass(300s);
  BOOST_TEST(node_state("node-c") == "stopped");
  const std::string d = create("d4");
  const std::string e = create("d5");
  BOOST_TEST(get(d).node != "node-c");
  BOOST_TEST(get(e).node != "node-c");
  auto rejected = events_named(actions(d)[0], "filter");
  BOOST_REQUIRE(rejected.size() == 1u);
  BOOST_TEST(rejected[0] == "node node-c: state stopped");
}

BOOST_FIXTURE_TEST_CASE(the_scheduler_rejects_full_nodes_with_reasons, Cluster) {
  ControllerConfig c;
  c.cpu_allocation_ratio = 1.0;
  boot(c, 4);
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(create("big" + std::to_string(i), 4));
  for (auto& id : ids) BOOST_TEST(get(id).vm_state == "active");
  const std::string full = create("one-too-many", 1);
  auto r = get(full);
  BOOST_TEST(r.sf_state == "error");
  BOOST_TEST(r.vm_state == "error");
  BOOST_TEST(r.node == "");
  auto log = actions(full);
  BOOST_REQUIRE(log.size() == 1u);
  BOOST_TEST(log[0].result == "error");
  auto rejected = events_named(log[0], "filter");
  BOOST_REQUIRE(rejected.size() == 3u);
  BOOST_TEST(rejected[0] ==
             "node node-a: not enough vCPUs: 1 requested, 4 of 4 in use (4 x cpu_allocation_ratio 1)");
  auto path = events_named(log[0], "sf_state");
  BOOST_TEST(path == (std::vector<std::string>{"initial -> preflight", "preflight -> preflight-error",
                                               "preflight-error -> error"}),
             boost::test_tools::per_element());
  auto sched = events_named(log[0], "schedule");
  BOOST_REQUIRE(sched.size() == 1u);
  BOOST_TEST(sched[0] == "no valid host: 3 node(s) rejected, none left");
}

// A node keeps its state waits' deadlines itself, under one timer: a
// hundred instances started at once leave no delayed message and no request
// timeout each with the clock (both used to stay there until long after the
// instances ran), and waits begun at different times still end each at its
// own deadline: here the soft reboot's grace, after which the node resets a
// guest that ignored Ctrl-Alt-Del (the simulated guest always does).
BOOST_FIXTURE_TEST_CASE(a_nodes_state_waits_share_one_timer_and_keep_their_own_deadlines, Cluster) {
  boot({}, 128);
  const auto node = nodes.at("node-a");
  const auto before = clock_entries_of(sched, node);
  for (int i = 0; i < 100; ++i)
    self->send(node, place_atom::value, "w-" + std::to_string(i), spec_bytes("w-" + std::to_string(i), 1, 8));
  run();
  int running = 0;
  while (take([&](const std::string& power) { running += power == "running"; }, [](caf::error&) {})) {
  }
  BOOST_TEST(running == 100);
  const auto after = clock_entries_of(sched, node);
  BOOST_TEST(after.wait_timers <= 1u);
  BOOST_TEST(after.request_timeouts <= before.request_timeouts + 1);  // a check-in's at most

  auto reboot_soft = [&](const std::string& id) {
    self->send(node, node_act_atom::value, id, std::string("softreboot"), std::string());
  };
  auto answers = [&] {
    int n = 0;
    while (take([&](const std::string&) { ++n; }, [&](caf::error& e) { BOOST_ERROR("softreboot: " << show(e)); })) {
    }
    return n;
  };
  reboot_soft("w-0");  // its grace ends at 3 s
  run();
  advance(1s);
  reboot_soft("w-1");  // and this one's at 4 s
  run();
  advance(1500ms);  // 2.5 s
  BOOST_TEST(answers() == 0);
  advance(1s);  // 3.5 s: w-0 reset, w-1 still in its grace
  BOOST_TEST(answers() == 1);
  BOOST_TEST(vm("node-a", "w-0").first == "run");
  advance(1s);  // 4.5 s
  BOOST_TEST(answers() == 1);
  BOOST_TEST(vm("node-a", "w-1").first == "run");
  // The timer for the waits of the resets, and at most one it superseded.
  BOOST_TEST(clock_entries_of(sched, node).wait_timers <= 2u);
}

// A node that gets to its mailbox late (held, or busy) finds the wait
// timer and what arrived after it in that order. The timer ends only the
// waits due when it was set to fire: here it fires for w-0's grace at 3 s,
// but the node takes it only at 4.5 s, behind w-1's reboot, which came at
// 3.5 s, within w-1's grace (4 s). w-1's wait is met, and w-1 is not reset
// a second time by the soft reboot's fallback.
BOOST_FIXTURE_TEST_CASE(a_wait_met_in_time_is_not_failed_by_a_timer_taken_late, Cluster) {
  boot({}, 8);
  const auto node = nodes.at("node-a");
  for (std::string id : {"w-0", "w-1"}) BOOST_REQUIRE(ask<std::string>(node, place_atom::value, id, spec_bytes(id, 1, 8)));
  const auto w0 = instance("node-a", "w-0");
  const auto w1 = instance("node-a", "w-1");
  auto generation = [&](const instance_actor& inst) {
    self->send(inst, get_state_atom::value);
    run();
    uint64_t g = 0;
    take([&](const std::string&, uint64_t gen, const std::string&) { g = gen; });
    return g;
  };
  const uint64_t g0 = generation(w0), g1 = generation(w1);
  self->send(node, node_act_atom::value, std::string("w-0"), std::string("softreboot"), std::string());
  run();  // w-0's grace ends at 3 s
  advance(1s);
  self->send(node, node_act_atom::value, std::string("w-1"), std::string("softreboot"), std::string());
  run();  // w-1's at 4 s
  // From 3.5 s the node is held: everything but it runs.
  const auto* held = caf::actor_cast<caf::abstract_actor*>(node);
  auto others = [held](caf::resumable* job) { return dynamic_cast<caf::abstract_actor*>(job) != held; };
  sched.advance_time(2500ms);  // the timer (for 3 s) is in the node's mailbox
  sched.run_jobs_filtered(others);
  self->send(w1, hard_reset_atom::value);  // w-1 reboots at 3.5 s: its states queue behind the timer
  sched.run_jobs_filtered(others);
  sched.advance_time(1s);  // 4.5 s: past w-1's grace
  sched.run_jobs_filtered(others);
  run();  // the node at last
  advance(100ms);
  int answers = 0;
  while (take([&](const std::string&) { ++answers; }, [&](caf::error& e) { BOOST_ERROR(show(e)); })) {
  }
  BOOST_TEST(answers == 2);
  // Each rebooted once: w-0 by the fallback, w-1 by the reset from outside.
  BOOST_TEST(generation(w0) - g0 > 0u);
  BOOST_TEST(generation(w1) - g1 == generation(w0) - g0);
}

// The wait timer is the node's own message; its interface is open to the
// controller, a remote peer: the same message from anyone else, with any
// generation, fails no wait before its deadline.
BOOST_FIXTURE_TEST_CASE(a_forged_wait_timer_fails_no_wait, Cluster) {
  boot({}, 8);
  const auto node = nodes.at("node-a");
  BOOST_REQUIRE(ask<std::string>(node, place_atom::value, std::string("w-0"), spec_bytes("w-0", 1, 8)));
  self->send(node, node_act_atom::value, std::string("w-0"), std::string("softreboot"), std::string());
  run();  // its grace ends at 3 s
  for (uint64_t g = 0; g < 64; ++g) self->send(node, wait_dl_atom::value, g);
  run();
  int answers = 0;
  auto count = [&] {
    while (take([&](const std::string&) { ++answers; }, [&](caf::error& e) { BOOST_ERROR(show(e)); })) {
    }
  };
  count();
  BOOST_TEST(answers == 0);  // still in its grace
  advance(2500ms);
  count();
  BOOST_TEST(answers == 0);
  advance(1s);  // past the grace: the node resets the guest
  count();
  BOOST_TEST(answers == 1);
  BOOST_TEST(vm("node-a", "w-0").first == "run");
}

BOOST_FIXTURE_TEST_CASE(a_node_that_cannot_run_instances_is_never_chosen, Cluster) {
  const std::string no_kvm = "kvm_unavailable: /dev/kvm: No such file or directory";
  boot({}, 4, {{"node-a", no_kvm}, {"node-b", no_kvm}});
  // The nodes say so in their check-ins; the listing shows it.
  auto listed = ask<std::vector<NodeInfo>>(ctl, nodes_atom::value);
  BOOST_REQUIRE(listed);
  for (const auto& n : *listed) BOOST_TEST(n.cannot_run == (n.name == "node-c" ? "" : no_kvm), n.name);
  // Least-loaded placement would spread these over three nodes; all go to node-c.
  for (int i = 0; i < 6; ++i) {
    const std::string id = create("web" + std::to_string(i));
    const auto r = get(id);
    BOOST_TEST(r.node == "node-c");
    BOOST_TEST(r.vm_state == "active");
    const auto log = actions(id);
    BOOST_REQUIRE(!log.empty());
    const auto filtered = events_named(log[0], "filter");
    BOOST_REQUIRE(filtered.size() == 2u);
    BOOST_TEST(filtered[0] == "node node-a: cannot run instances: " + no_kvm);
    BOOST_TEST(filtered[1] == "node node-b: cannot run instances: " + no_kvm);
  }
  // With node-c draining, nothing is left: no valid host, and nothing lands
  // on the nodes that cannot run it.
  auto drained = ask<ack_atom>(ctl, drain_atom::value, std::string("node-c"));
  BOOST_REQUIRE(drained);
  run();
  const std::string id = create("nowhere");
  const auto r = get(id);
  BOOST_TEST(r.node == "");
  BOOST_TEST(r.vm_state == "error");
  const auto log = actions(id);
  BOOST_REQUIRE(log.size() == 1u);
  const auto sched = events_named(log[0], "schedule");
  BOOST_REQUIRE(sched.size() == 1u);
  BOOST_TEST(sched[0] == "no valid host: 3 node(s) rejected, none left");
  // The node itself refuses a placement too, with the root cause.
  auto placed = ask<std::string>(nodes.at("node-a"), place_atom::value, std::string("direct"), spec_bytes("direct"));
  BOOST_REQUIRE(!placed);
  BOOST_TEST(show(placed.error()).find("node node-a cannot run instances: " + no_kvm) != std::string::npos,
             show(placed.error()));
}

BOOST_FIXTURE_TEST_CASE(an_instance_that_fails_to_start_carries_the_root_cause_in_its_action, Cluster) {
  boot();
  v1::InstanceSpec s;
  s.set_name("broken");
  s.mutable_board()->set_vcpus(1);
  s.mutable_board()->set_memory_mib(16);
  s.mutable_boot()->set_kernel_path("/nonexistent/vmlinuz");
  std::string bytes;
  s.SerializeToString(&bytes);
  auto id = ask<std::string>(ctl, create_atom::value, bytes);
  BOOST_REQUIRE(id);
  const auto r = get(*id);
  BOOST_TEST(r.vm_state == "error");
  const auto log = actions(*id);
  BOOST_REQUIRE(!log.empty());
  BOOST_TEST(log[0].result == "error");
  bool named = false;
  std::string all;
  for (const auto& e : log[0].events) {
    all += e.name + "/" + e.result + ": " + e.detail + "\n";
    if (e.detail.find("file_not_found: /nonexistent/vmlinuz") != std::string::npos) named = true;
  }
  BOOST_TEST(named, "events:\n" << all);
}

// A controller restarted on its store meets nodes that reconnect only
// later (real node processes retry their connection every few seconds). A
// create accepted in between waits in preflight for them instead of ending
// in ERROR with "no check-in since the controller started"; one that no
// node comes back for ends in ERROR once placement_wait has passed.
struct Restart : Cluster {
  const std::string store = "/tmp/apiary-sim-restart-" + std::to_string(::getpid()) + ".sqlite";
  ControllerConfig config(std::chrono::milliseconds placement_wait) {
    ControllerConfig c = controller_config(7);
    c.store_path = store;
    c.placement_wait = placement_wait;
    return c;
  }
  // The first controller and its nodes register, then all of them die.
  void first_life() {
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((store + suffix).c_str());
    ctl = spawn_controller(sys, config(30s));
    spawn_nodes();
    for (const auto& name : kNodeNames) BOOST_REQUIRE(node_state(name) == "created");
    for (auto& [name, n] : nodes) self->send_exit(n, caf::exit_reason::kill);
    self->send_exit(ctl, caf::exit_reason::kill);
    nodes.clear();
    run();
  }
  void spawn_nodes() {
    for (const auto& name : kNodeNames) nodes[name] = spawn_node(sys, node_config(name, 4));
    run();
  }
  ~Restart() {
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((store + suffix).c_str());
  }
};

BOOST_FIXTURE_TEST_CASE(a_create_after_a_controller_restart_waits_for_the_nodes, Restart) {
  first_life();
  ctl = spawn_controller(sys, config(30s));
  run();
  const std::string id = create("early");
  auto r = get(id);
  BOOST_TEST(r.vm_state == "building");
  BOOST_TEST(r.sf_state == "preflight");
  pass(4s, 500ms);  // no node yet: still waiting, logged once
  BOOST_TEST(get(id).sf_state == "preflight");
  auto create_action = actions(id).front();
  BOOST_TEST(events_named(create_action, "schedule").size() == 1u);
  BOOST_TEST(has_event(create_action, "schedule", "waiting"));

  spawn_nodes();  // the nodes reconnect 4 s after the restart
  pass(2s, 500ms);
  r = get(id);
  BOOST_TEST(r.vm_state == "active");
  BOOST_TEST(r.sf_state == "created");
  BOOST_TEST(!r.node.empty());
  create_action = actions(id).front();
  BOOST_TEST(create_action.result == "success");
  BOOST_TEST(has_event(create_action, "schedule", "success"));
  BOOST_TEST(!has_event(create_action, "schedule", "error"));
  const auto schedule = events_named(create_action, "schedule");
  BOOST_REQUIRE(schedule.size() == 2u);
  BOOST_TEST(schedule[0].find("waiting up to 30 s for node(s) not connected since the controller started: "
                              "node-a, node-b, node-c") != std::string::npos,
             schedule[0]);
}

BOOST_FIXTURE_TEST_CASE(a_create_waits_no_longer_than_placement_wait, Restart) {
  first_life();
  ctl = spawn_controller(sys, config(5s));
  run();
  const std::string id = create("orphan");
  pass(4s, 500ms);
  BOOST_TEST(get(id).sf_state == "preflight");
  pass(2s, 500ms);  // nobody came back within 5 s
  auto r = get(id);
  BOOST_TEST(r.vm_state == "error");
  BOOST_TEST(r.sf_state == "error");
  auto create_action = actions(id).front();
  BOOST_TEST(create_action.result == "error");
  BOOST_TEST(has_event(create_action, "schedule", "waiting"));
  const auto filters = events_named(create_action, "filter");
  BOOST_TEST(filters.size() == 3u);
  BOOST_TEST(events_named(create_action, "schedule").back() == "no valid host: 3 node(s) rejected, none left");
}
