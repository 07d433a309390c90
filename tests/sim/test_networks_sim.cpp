// Networks under CAF's deterministic scheduler: one controller (store in
// memory) and two simulated nodes. Checks the Shaken Fist network machine as
// the controller drives it (created at once; delete_wait while instances are
// attached; deleted with the last one), the NIC checks on instance create
// (400 and nothing written for a missing or dead network), that instances
// with NICs still boot (there is no NIC data plane; the node leaves them
// out), and the periodic purge of deleted records after CLEANER_DELAY
// (error records are kept).
#define BOOST_TEST_MODULE networks_sim
#include "cluster/control_types.hpp"
#include "cluster/controller_actor.hpp"
#include "actors/errors.hpp"
#include "cluster/node_actor.hpp"
#include "proto/apiary/v1/instance.pb.h"
#include "tests/support/control_plane_support.hpp"
#include "tests/support/sim_harness.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary;
using namespace apiary::actors;
using namespace std::chrono_literals;

using test::show;

namespace {

std::string spec_bytes(const std::string& name, const std::vector<std::string>& networks, uint32_t vcpus = 1) {
  v1::InstanceSpec s;
  s.set_name(name);
  s.mutable_board()->set_vcpus(vcpus);
  s.mutable_board()->set_memory_mib(16);
  s.mutable_boot()->set_embedded_guest("hello");
  for (const auto& n : networks) s.mutable_devices()->add_nics()->set_network(n);
  std::string out;
  s.SerializeToString(&out);
  return out;
}

struct Cluster : test::ControlPlaneHarness {
  std::map<std::string, node_actor> nodes;

  Cluster() {
    ControllerConfig c = controller_config(11);
    c.purge_interval = 60s;  // cleaner_delay keeps its default, 3600 s
    ctl = spawn_controller(sys, c);
    for (const std::string name : {"node-a", "node-b"}) {
      NodeConfig n = node_config(name, 1);  // 16 vCPUs with the default allocation ratio
      n.soft_reboot_grace = 3s;
      nodes[name] = spawn_node(sys, n);
    }
    run();
  }
  ~Cluster() {
    for (auto& [name, n] : nodes) self->send_exit(n, caf::exit_reason::user_shutdown);
    self->send_exit(ctl, caf::exit_reason::user_shutdown);
    run();
  }


  std::string create_network(const std::string& name, const std::string& cidr = "") {
    auto id = ask<std::string>(ctl, net_create_atom::value, name, cidr);
    if (!id) BOOST_FAIL("network create failed: " << show(id.error()));
    return *id;
  }
  caf::expected<NetworkInfo> network(const std::string& id) { return ask<NetworkInfo>(ctl, net_get_atom::value, id); }
  NetworkInfo net(const std::string& id) {
    auto n = network(id);
    if (!n) BOOST_FAIL("network get failed: " << show(n.error()));
    return *n;
  }
  caf::expected<NetworkInfo> delete_network(const std::string& id) {
    return ask<NetworkInfo>(ctl, net_delete_atom::value, id);
  }
  caf::expected<std::string> create(const std::string& name, const std::vector<std::string>& networks,
                                    uint32_t vcpus = 1) {
    return ask<std::string>(ctl, create_atom::value, spec_bytes(name, networks, vcpus));
  }
  caf::expected<InstanceInfo> try_instance(const std::string& id) { return ask<InstanceInfo>(ctl, get_atom::value, id); }
  InstanceInfo instance(const std::string& id) {
    auto r = try_instance(id);
    if (!r) BOOST_FAIL("get failed: " << show(r.error()));
    return *r;
  }
  size_t instance_count() {
    auto all = ask<std::vector<InstanceInfo>>(ctl, list_atom::value);
    BOOST_REQUIRE(all);
    return all->size();
  }
  void delete_instance(const std::string& id) {
    auto r = ask<std::string>(ctl, act_atom::value, id, std::string("delete"), std::string());
    if (!r) BOOST_FAIL("delete failed: " << show(r.error()));
    run();
  }
};

}  // namespace

BOOST_FIXTURE_TEST_CASE(network_waits_for_its_instances_before_it_is_deleted, Cluster) {
  const auto n = create_network("blue", "10.1.0.0/24");
  auto info = net(n);
  BOOST_TEST(info.state == "created");
  BOOST_TEST(info.name == "blue");
  BOOST_TEST(info.cidr == "10.1.0.0/24");
  BOOST_TEST(info.instances.empty());

  // By id and by name; the instance boots although the node has no NIC data plane.
  auto a = create("a", {n});
  if (!a) BOOST_FAIL(show(a.error()));
  auto b = create("b", {"blue", n});
  if (!b) BOOST_FAIL(show(b.error()));
  run();
  BOOST_TEST(instance(*a).vm_state == "active");
  BOOST_TEST(instance(*b).sf_state == "created");
  info = net(n);
  BOOST_TEST(info.instances.size() == 2u);

  auto listed = ask<std::vector<NetworkInfo>>(ctl, net_list_atom::value);
  BOOST_REQUIRE(listed);
  BOOST_TEST(listed->size() == 1u);

  // Deleting it with instances attached: delete_wait, and no new NICs on it.
  auto d = delete_network(n);
  if (!d) BOOST_FAIL(show(d.error()));
  BOOST_TEST(d->state == "delete_wait");
  BOOST_TEST(delete_network(n)->state == "delete_wait");  // asking again changes nothing
  auto refused = create("c", {n});
  BOOST_REQUIRE(!refused);
  BOOST_TEST(http_status(refused.error()) == 400, show(refused.error()));
  BOOST_TEST(message_of(refused.error()).find("delete_wait") != std::string::npos, show(refused.error()));

  delete_instance(*a);
  BOOST_TEST(instance(*a).sf_state == "deleted");
  info = net(n);
  BOOST_TEST(info.state == "delete_wait");
  BOOST_TEST(info.instances == std::vector<std::string>{*b});

  delete_instance(*b);
  info = net(n);
  BOOST_TEST(info.state == "deleted");
  BOOST_TEST(info.instances.empty());

  auto again = delete_network(n);
  BOOST_REQUIRE(!again);
  BOOST_TEST(http_status(again.error()) == 409, show(again.error()));
  refused = create("d", {n});
  BOOST_REQUIRE(!refused);
  BOOST_TEST(http_status(refused.error()) == 400, show(refused.error()));
}

BOOST_FIXTURE_TEST_CASE(an_unused_network_is_deleted_at_once, Cluster) {
  const auto n = create_network("green");
  auto d = delete_network(n);
  if (!d) BOOST_FAIL(show(d.error()));
  BOOST_TEST(d->state == "deleted");
  auto missing = delete_network("net-nope");
  BOOST_REQUIRE(!missing);
  BOOST_TEST(http_status(missing.error()) == 404);
  BOOST_TEST(http_status(network("net-nope").error()) == 404);
}

BOOST_FIXTURE_TEST_CASE(bad_network_requests_are_400, Cluster) {
  for (auto [name, cidr] : std::vector<std::pair<std::string, std::string>>{
           {"", ""}, {"x", "10.0.0.0"}, {"x", "10.0.0.256/24"}, {"x", "10.0.0.0/33"}, {"x", "a.b.c.d/8"}}) {
    auto r = ask<std::string>(ctl, net_create_atom::value, name, cidr);
    BOOST_REQUIRE(!r);
    BOOST_TEST(http_status(r.error()) == 400, name << " " << cidr);
  }
}

BOOST_FIXTURE_TEST_CASE(a_nic_on_a_missing_or_deleted_network_writes_nothing, Cluster) {
  const auto n = create_network("red");
  BOOST_REQUIRE(delete_network(n));
  const auto live = create_network("ok");
  for (const std::string& bad : std::vector<std::string>{"net-missing", n, "red"}) {
    auto r = create("x", {live, bad});
    BOOST_REQUIRE(!r);
    BOOST_TEST(http_status(r.error()) == 400, show(r.error()));
    BOOST_TEST(message_of(r.error()).find("devices.nics[1].network") != std::string::npos, show(r.error()));
  }
  BOOST_TEST(instance_count() == 0u);
  BOOST_TEST(net(live).instances.empty());
}

BOOST_FIXTURE_TEST_CASE(deleted_records_are_purged_after_the_cleaner_delay, Cluster) {
  const auto gone = create_network("gone");
  const auto n = create_network("kept");
  auto ok = create("ok", {n});
  BOOST_REQUIRE(ok);
  // Too big for any node: no valid host, the record ends in error.
  auto broken = create("broken", {n}, 32);
  BOOST_REQUIRE(broken);
  run();
  BOOST_TEST(instance(*broken).sf_state == "error");
  BOOST_TEST(net(n).instances.size() == 2u);  // an error instance stays attached

  BOOST_REQUIRE(delete_network(gone));
  delete_instance(*ok);
  BOOST_TEST(instance(*ok).sf_state == "deleted");

  pass(3000s, 30s);  // not yet CLEANER_DELAY
  BOOST_TEST(instance(*ok).sf_state == "deleted");
  BOOST_TEST(net(gone).state == "deleted");

  pass(700s, 30s);  // past it, with a purge since
  BOOST_TEST(http_status(try_instance(*ok).error()) == 404);
  BOOST_TEST(http_status(network(gone).error()) == 404);
  BOOST_TEST(instance(*broken).sf_state == "error");  // error records are never purged
  BOOST_TEST(net(n).state == "created");
  BOOST_TEST(net(n).instances == std::vector<std::string>{*broken});
  BOOST_TEST(instance_count() == 1u);
}
