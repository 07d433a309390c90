// The Nova actions that do real work on a node's VMM and disk files, under
// CAF's deterministic scheduler with the simulated vCPU backend. Disks are
// temporary files with known bytes.
//
// What is checked: resize builds a new instance actor with the new board
// (its spec on the node, and the vCPUs its diagnostics dump), confirm and
// revert (also from STOPPED), and the capacity re-check; snapshot and backup
// copy every disk byte for byte, name the files in the action's events,
// rotate backups and leave a running VM running; a failed copy reverts the
// action with the errno text; rebuild zeroes (or re-images) the disk and
// boots a fresh VMM; rescue boots the rescue guest with the same disks and
// unrescue returns to the normal spec; soft_delete / restore; each action
// refused from a wrong state with Nova's exact 409; set_admin_password 501.
//
// The disk-file work runs on a thread of its own; the node polls it on a
// (simulated) timer, so the tests move simulated time in small steps while
// the thread works (settle()).
#define BOOST_TEST_MODULE nova_actions_sim
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "cluster/control_types.hpp"
#include "cluster/controller_actor.hpp"
#include "actors/errors.hpp"
#include "actors/instance_actor.hpp"
#include "cluster/node_actor.hpp"
#include "proto/apiary/v1/diagnostics.pb.h"
#include "proto/apiary/v1/instance.pb.h"
#include "tests/support/control_plane_support.hpp"
#include "tests/support/sim_harness.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary;
using namespace apiary::actors;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

using test::show;

namespace {

using Args = std::map<std::string, std::string>;

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_all(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// 64 KiB of a recognisable pattern.
std::string pattern(char seed) {
  std::string s(64 * 1024, '\0');
  for (size_t i = 0; i < s.size(); ++i) s[i] = static_cast<char>(seed + static_cast<char>(i % 251));
  return s;
}

struct Cluster : test::ControlPlaneHarness {
  node_actor node;
  fs::path dir;

  Cluster() {
    char tmpl[] = "/tmp/apiary-nova-XXXXXX";
    BOOST_REQUIRE(::mkdtemp(tmpl));
    dir = tmpl;
  }
  ~Cluster() {
    if (node) self->send_exit(node, caf::exit_reason::user_shutdown);
    if (ctl) self->send_exit(ctl, caf::exit_reason::user_shutdown);
    run();
    std::error_code ec;
    fs::remove_all(dir, ec);
  }

  // One node (4 vCPUs, 1024 MiB, cpu_allocation_ratio 1) so resizes stay on it.
  void boot() {
    ControllerConfig c = controller_config(11);
    c.cpu_allocation_ratio = 1.0;
    ctl = spawn_controller(sys, c);
    NodeConfig n = node_config("node-a", 4);
    n.file_deadline = 20s;
    n.file_poll = 10ms;
    node = spawn_node(sys, n);
    run();
  }

  std::string disk(const std::string& name, const std::string& bytes) {
    const std::string p = (dir / name).string();
    write_all(p, bytes);
    return p;
  }


  std::string create(const std::string& name, const std::vector<std::string>& disks, uint32_t vcpus = 1) {
    v1::InstanceSpec s;
    s.set_name(name);
    s.mutable_board()->set_vcpus(vcpus);
    s.mutable_board()->set_memory_mib(16);
    s.mutable_boot()->set_embedded_guest("hello");
    for (size_t i = 0; i < disks.size(); ++i) {
      auto* b = s.mutable_devices()->add_block();
      b->set_id("disk" + std::to_string(i));
      b->set_path(disks[i]);
    }
    std::string bytes;
    s.SerializeToString(&bytes);
    auto id = ask<std::string>(ctl, create_atom::value, bytes);
    if (!id) BOOST_FAIL("create failed: " << show(id.error()));
    BOOST_REQUIRE(get(*id).vm_state == "active");
    return *id;
  }
  caf::expected<std::string> act(const std::string& id, const std::string& action, Args args = {}) {
    return ask<std::string>(ctl, act_atom::value, id, action, std::string(), args);
  }
  // Accepted, then run until the action is finished (the disk-file thread
  // works in real time; the node polls it in simulated time).
  std::string act_ok(const std::string& id, const std::string& action, Args args = {}) {
    auto r = act(id, action, std::move(args));
    if (!r) BOOST_FAIL(action << " refused: " << show(r.error()));
    settle(id);
    return *r;
  }
  void settle(const std::string& id) {
    for (int i = 0; i < 2000; ++i) {
      if (get(id).task_state == "none") return;
      advance(10ms);
      std::this_thread::sleep_for(1ms);
    }
    BOOST_FAIL("instance " << id << " still has a task in flight");
  }
  instance_actor instance(const std::string& id) {
    auto r = ask<caf::actor>(node, instance_of_atom::value, id);
    BOOST_REQUIRE(r);
    return caf::actor_cast<instance_actor>(*r);
  }
  std::string vm(const std::string& id) {
    auto inst = instance(id);
    if (!inst) return "";
    self->send(inst, get_state_atom::value);
    run();
    std::string out;
    take([&](const std::string& s, uint64_t, const std::string&) { out = s; });
    return out;
  }
  // The spec the node's current VMM for `id` was built from (none: empty).
  v1::InstanceSpec running_spec(const std::string& id) {
    auto r = ask<std::string>(node, inst_spec_atom::value, id);
    BOOST_REQUIRE(r);
    v1::InstanceSpec s;
    BOOST_REQUIRE(s.ParseFromString(*r));
    return s;
  }
  // Halts the VMM and counts the vCPUs in its diagnostics dump.
  int dumped_vcpus(const std::string& id) {
    auto inst = instance(id);
    BOOST_REQUIRE(inst);
    self->send(inst, halt_atom::value);
    run();
    take([](ack_atom) {});
    advance(100ms);
    auto d = ask<std::string>(inst, diag_atom::value);
    BOOST_REQUIRE(d);
    v1::InstanceDiagnostics diag;
    BOOST_REQUIRE(diag.ParseFromString(*d));
    return diag.vcpus_size();
  }
};

const ActionInfo& last(const std::vector<ActionInfo>& log) { return log.back(); }

std::vector<std::string> events_named(const ActionInfo& a, const std::string& name) {
  std::vector<std::string> out;
  for (const auto& e : a.events)
    if (e.name == name) out.push_back(e.detail);
  return out;
}

bool mentions(const std::vector<std::string>& lines, const std::string& what) {
  for (const auto& l : lines)
    if (l.find(what) != std::string::npos) return true;
  return false;
}

void expect_409(const caf::expected<std::string>& r, const std::string& msg) {
  BOOST_REQUIRE(!r);
  BOOST_TEST(http_status(r.error()) == 409);
  BOOST_TEST(message_of(r.error()) == msg);
}

}  // namespace

BOOST_FIXTURE_TEST_CASE(resize_builds_a_new_vmm_and_confirm_or_revert_it, Cluster) {
  boot();
  const std::string id = create("rs", {disk("rs.img", pattern('a'))});
  const auto first = instance(id);
  BOOST_TEST(running_spec(id).board().vcpus() == 1u);

  act_ok(id, "resize", {{"vcpus", "2"}, {"memory_mib", "32"}});
  BOOST_TEST(get(id).vm_state == "resized");
  BOOST_TEST(last(actions(id)).result == "success");
  BOOST_TEST((instance(id) != first));  // a new instance actor
  BOOST_TEST(running_spec(id).board().vcpus() == 2u);
  BOOST_TEST(running_spec(id).board().memory_mib() == 32u);
  BOOST_TEST(vm(id) == "run");
  expect_409(act(id, "resize", {{"vcpus", "3"}}),
             "Cannot 'resize' instance " + id + " while it is in vm_state resized");

  act_ok(id, "confirm_resize");
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(running_spec(id).board().vcpus() == 2u);

  // Revert: back to the board before (2 vCPUs), again a new VMM.
  act_ok(id, "resize", {{"vcpus", "3"}});
  BOOST_TEST(running_spec(id).board().vcpus() == 3u);
  const auto resized = instance(id);
  act_ok(id, "revert_resize");
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST((instance(id) != resized));
  BOOST_TEST(running_spec(id).board().vcpus() == 2u);
  BOOST_TEST(running_spec(id).board().memory_mib() == 32u);
  BOOST_TEST(vm(id) == "run");
  // The VMM really has two vCPUs.
  BOOST_TEST(dumped_vcpus(id) == 2);
  for (const auto& a : actions(id)) BOOST_TEST(a.result == "success", a.action << " ended " << a.result);
}

BOOST_FIXTURE_TEST_CASE(resize_of_a_stopped_instance_lands_stopped, Cluster) {
  boot();
  const std::string id = create("rss", {});
  act_ok(id, "stop");
  act_ok(id, "resize", {{"vcpus", "2"}});
  BOOST_TEST(get(id).vm_state == "resized");
  BOOST_TEST(vm(id) != "run");
  act_ok(id, "confirm_resize");
  BOOST_TEST(get(id).vm_state == "stopped");
  act_ok(id, "start");
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(running_spec(id).board().vcpus() == 2u);

  act_ok(id, "stop");
  act_ok(id, "resize", {{"vcpus", "3"}});
  act_ok(id, "revert_resize");
  BOOST_TEST(get(id).vm_state == "stopped");
  act_ok(id, "start");
  BOOST_TEST(running_spec(id).board().vcpus() == 2u);
}

BOOST_FIXTURE_TEST_CASE(resize_rechecks_the_node_capacity_and_validates_the_board, Cluster) {
  boot();
  const std::string id = create("big", {}, 2);
  const auto before = instance(id);
  act_ok(id, "resize", {{"vcpus", "5"}});  // 4 vCPUs x ratio 1
  auto r = get(id);
  BOOST_TEST(r.vm_state == "active");  // nothing happened to the VM
  BOOST_TEST(r.task_state == "none");
  auto log = actions(id);
  BOOST_TEST(last(log).action == "resize");
  BOOST_TEST(last(log).result == "reverted");
  auto why = events_named(last(log), "schedule");
  BOOST_REQUIRE(why.size() == 1u);
  BOOST_TEST(why[0] ==
             "node node-a: not enough vCPUs for the resize: 5 requested, 0 of 4 in use by other instances (4 x "
             "cpu_allocation_ratio 1)");
  BOOST_TEST((instance(id) == before));
  BOOST_TEST(vm(id) == "run");

  // While resized the instance holds the larger board: 4 of 4 vCPUs.
  act_ok(id, "resize", {{"vcpus", "1"}});
  BOOST_TEST(get(id).vm_state == "resized");
  const std::string other = [&] {
    v1::InstanceSpec s;
    s.set_name("other");
    s.mutable_board()->set_vcpus(3);
    s.mutable_board()->set_memory_mib(16);
    s.mutable_boot()->set_embedded_guest("hello");
    std::string b;
    s.SerializeToString(&b);
    auto o = ask<std::string>(ctl, create_atom::value, b);
    BOOST_REQUIRE(o);
    return *o;
  }();
  BOOST_TEST(get(other).vm_state == "error");  // 2 (held) + 3 > 4
  act_ok(id, "confirm_resize");

  auto bad = act(id, "resize");
  BOOST_REQUIRE(!bad);
  BOOST_TEST(http_status(bad.error()) == 400);
  BOOST_TEST(message_of(bad.error()) == "resize needs the new board: args vcpus and/or memory_mib");
  bad = act(id, "resize", {{"vcpus", "1"}});
  BOOST_REQUIRE(!bad);
  BOOST_TEST(message_of(bad.error()) == "resize: the new board is the same as the current one");
  bad = act(id, "resize", {{"vcpus", "0"}});
  BOOST_REQUIRE(!bad);
  BOOST_TEST(http_status(bad.error()) == 400);
}

BOOST_FIXTURE_TEST_CASE(snapshot_copies_every_disk_of_a_running_vm, Cluster) {
  boot();
  const std::string d0 = disk("root.img", pattern('r'));
  const std::string d1 = disk("data.img", pattern('d'));
  const std::string id = create("snap", {d0, d1});
  const auto inst = instance(id);

  act_ok(id, "snapshot", {{"name", "s1"}});
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(read_all(d0 + ".snapshot-s1") == pattern('r'));
  BOOST_TEST(read_all(d1 + ".snapshot-s1") == pattern('d'));
  auto log = actions(id);
  BOOST_TEST(last(log).action == "snapshot");
  BOOST_TEST(last(log).result == "success");
  auto files = events_named(last(log), "disk_file");
  BOOST_TEST(mentions(files, "paused the VM for the copy"));
  BOOST_TEST(mentions(files, "copied " + d0 + " -> " + d0 + ".snapshot-s1 (65536 bytes)"));
  BOOST_TEST(mentions(files, "copied " + d1 + " -> " + d1 + ".snapshot-s1 (65536 bytes)"));
  BOOST_TEST(mentions(files, "resumed the VM"));
  BOOST_TEST((instance(id) == inst));  // the same VMM, running again
  BOOST_TEST(vm(id) == "run");
  BOOST_TEST(!fs::exists(d0 + ".snapshot-s1.partial"));

  // Default name: the request id. A paused VM stays paused.
  act_ok(id, "pause");
  const std::string req = act_ok(id, "snapshot");
  BOOST_TEST(read_all(d0 + ".snapshot-" + req) == pattern('r'));
  BOOST_TEST(get(id).vm_state == "paused");
  BOOST_TEST(vm(id) == "quiesce");

  // The same name again: refused by the file system, VM untouched.
  act_ok(id, "unpause");
  act_ok(id, "snapshot", {{"name", "s1"}});
  BOOST_TEST(last(actions(id)).result == "reverted");
  BOOST_TEST(get(id).vm_state == "active");

  auto bad = act(id, "snapshot", {{"name", "../x"}});
  BOOST_REQUIRE(!bad);
  BOOST_TEST(http_status(bad.error()) == 400);
}

BOOST_FIXTURE_TEST_CASE(a_failed_copy_reverts_with_the_errno_text, Cluster) {
  boot();
  const std::string d0 = disk("gone.img", pattern('g'));
  const std::string id = create("fail", {d0});
  BOOST_REQUIRE(::unlink(d0.c_str()) == 0);  // the VMM keeps its descriptor
  act_ok(id, "snapshot", {{"name", "x"}});
  auto r = get(id);
  BOOST_TEST(r.vm_state == "active");
  BOOST_TEST(r.task_state == "none");
  const auto a = last(actions(id));
  BOOST_TEST(a.result == "reverted");
  auto errs = events_named(a, "compute_snapshot");
  BOOST_REQUIRE(errs.size() == 1u);
  BOOST_TEST(errs[0] == "invalid_argument: open " + d0 + ": No such file or directory");
  BOOST_TEST(vm(id) == "run");  // resumed after the failed copy
  BOOST_TEST(!fs::exists(d0 + ".snapshot-x"));
}

BOOST_FIXTURE_TEST_CASE(backup_copies_and_rotates, Cluster) {
  boot();
  const std::string d0 = disk("bk.img", pattern('1'));
  const std::string id = create("bk", {d0});

  act_ok(id, "backup");
  BOOST_TEST(read_all(d0 + ".backup-1") == pattern('1'));
  write_all(d0, pattern('2'));
  act_ok(id, "backup", {{"rotation", "2"}});
  BOOST_TEST(read_all(d0 + ".backup-2") == pattern('2'));
  BOOST_TEST(fs::exists(d0 + ".backup-1"));
  write_all(d0, pattern('3'));
  act_ok(id, "backup", {{"rotation", "2"}});
  BOOST_TEST(read_all(d0 + ".backup-3") == pattern('3'));
  BOOST_TEST(read_all(d0 + ".backup-2") == pattern('2'));
  BOOST_TEST(!fs::exists(d0 + ".backup-1"));
  auto files = events_named(last(actions(id)), "disk_file");
  BOOST_TEST(mentions(files, "copied " + d0 + " -> " + d0 + ".backup-3"));
  BOOST_TEST(mentions(files, "removed " + d0 + ".backup-1 (rotation 2)"));
  // Default rotation 1: only the newest is kept.
  act_ok(id, "backup");
  BOOST_TEST(fs::exists(d0 + ".backup-4"));
  BOOST_TEST(!fs::exists(d0 + ".backup-3"));
  BOOST_TEST(!fs::exists(d0 + ".backup-2"));
  for (const auto& a : actions(id)) BOOST_TEST(a.result == "success", a.action << " ended " << a.result);
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(vm(id) == "run");

  // Stopped: copied without a VMM.
  act_ok(id, "stop");
  act_ok(id, "backup");
  BOOST_TEST(fs::exists(d0 + ".backup-5"));
  BOOST_TEST(get(id).vm_state == "stopped");

  auto bad = act(id, "backup", {{"rotation", "0"}});
  BOOST_REQUIRE(!bad);
  BOOST_TEST(http_status(bad.error()) == 400);
}

BOOST_FIXTURE_TEST_CASE(rebuild_recreates_the_disk_and_boots_a_fresh_vmm, Cluster) {
  boot();
  const std::string d0 = disk("rb.img", pattern('z'));
  const std::string id = create("rb", {d0});
  const auto before = instance(id);
  act_ok(id, "rebuild");
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(read_all(d0) == std::string(64 * 1024, '\0'));
  BOOST_TEST((instance(id) != before));
  BOOST_TEST(vm(id) == "run");
  auto files = events_named(last(actions(id)), "disk_file");
  BOOST_TEST(mentions(files, "zeroed " + d0 + " (65536 bytes)"));

  // From an image, and from STOPPED.
  const std::string image = disk("image.raw", pattern('i'));
  act_ok(id, "stop");
  act_ok(id, "rebuild", {{"image", image}});
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(read_all(d0) == pattern('i'));
  BOOST_TEST(vm(id) == "run");
  for (const auto& a : actions(id)) BOOST_TEST(a.result == "success", a.action << " ended " << a.result);
}

BOOST_FIXTURE_TEST_CASE(rescue_boots_the_rescue_guest_with_the_disks_and_unrescue_returns, Cluster) {
  boot();
  const std::string d0 = disk("rc.img", pattern('q'));
  const std::string id = create("rc", {d0});
  const auto normal = instance(id);
  act_ok(id, "rescue");
  BOOST_TEST(get(id).vm_state == "rescued");
  auto rs = running_spec(id);
  BOOST_TEST(rs.boot().embedded_guest() == "demo");
  BOOST_TEST(rs.boot().cmdline() == "rescue");
  BOOST_REQUIRE(rs.devices().block_size() == 1);
  BOOST_TEST(rs.devices().block(0).path() == d0);
  BOOST_TEST((instance(id) != normal));
  BOOST_TEST(vm(id) == "run");
  expect_409(act(id, "rescue"), "Cannot 'rescue' instance " + id + " while it is in vm_state rescued");
  expect_409(act(id, "snapshot"), "Cannot 'snapshot' instance " + id + " while it is in vm_state rescued");

  act_ok(id, "unrescue");
  BOOST_TEST(get(id).vm_state == "active");
  rs = running_spec(id);
  BOOST_TEST(rs.boot().embedded_guest() == "hello");
  BOOST_TEST(rs.boot().cmdline() == "");
  BOOST_TEST(vm(id) == "run");

  // A named rescue image, from STOPPED.
  act_ok(id, "stop");
  act_ok(id, "rescue", {{"image", "hello"}});
  BOOST_TEST(get(id).vm_state == "rescued");
  BOOST_TEST(running_spec(id).boot().embedded_guest() == "hello");
  BOOST_TEST(running_spec(id).boot().cmdline() == "rescue");
  act_ok(id, "unrescue");
  BOOST_TEST(get(id).vm_state == "active");
  for (const auto& a : actions(id)) BOOST_TEST(a.result == "success", a.action << " ended " << a.result);
}

BOOST_FIXTURE_TEST_CASE(soft_delete_stops_and_restore_starts, Cluster) {
  boot();
  const std::string id = create("sd", {});
  act_ok(id, "soft_delete");
  BOOST_TEST(get(id).vm_state == "soft_deleted");
  BOOST_TEST(vm(id) == "destroy");
  expect_409(act(id, "start"), "Cannot 'start' instance " + id + " while it is in vm_state soft_deleted");
  act_ok(id, "restore");
  BOOST_TEST(get(id).vm_state == "active");
  BOOST_TEST(vm(id) == "run");
  for (const auto& a : actions(id)) BOOST_TEST(a.result == "success", a.action << " ended " << a.result);
}

BOOST_FIXTURE_TEST_CASE(wrong_states_answer_409_and_set_admin_password_501, Cluster) {
  boot();
  const std::string id = create("wrong", {});
  const auto n = actions(id).size();
  auto msg = [&](const std::string& a, const std::string& s) {
    return "Cannot '" + a + "' instance " + id + " while it is in vm_state " + s;
  };
  expect_409(act(id, "confirm_resize"), msg("confirm_resize", "active"));
  expect_409(act(id, "revert_resize"), msg("revert_resize", "active"));
  expect_409(act(id, "unrescue"), msg("unrescue", "active"));
  expect_409(act(id, "restore"), msg("restore", "active"));
  act_ok(id, "pause");
  expect_409(act(id, "resize", {{"vcpus", "2"}}), msg("resize", "paused"));
  expect_409(act(id, "rebuild"), msg("rebuild", "paused"));
  expect_409(act(id, "rescue"), msg("rescue", "paused"));
  expect_409(act(id, "soft_delete"), msg("soft_delete", "paused"));

  auto r = act(id, "set_admin_password", {{"password", "x"}});
  BOOST_REQUIRE(!r);
  BOOST_TEST(http_status(r.error()) == 501);
  BOOST_TEST(message_of(r.error()) ==
             "Cannot 'set_admin_password' instance " + id + ": not implemented, needs capability guest_agent");
  BOOST_TEST(actions(id).size() == n + 1);  // only the pause
  BOOST_TEST(get(id).vm_state == "paused");
}
