// Networks under CAF's deterministic scheduler: one controller (store in
// memory) and two simulated nodes. Checks the Shaken Fist network machine as
// the controller drives it (created at once; delete_wait while instances are
// attached; deleted with the last one), the NIC checks on instance create
// (400 and nothing written for a missing or dead network), the addresses
// the controller gives NICs and the ones it refuses, a network turned error
// by what a node reports (a tap it could not make, no VTEP for a network
// spanning nodes) with the reason on the record, that instances with NICs
// still boot (simulated nodes have no data plane: their NICs' links are
// down), and the periodic purge of deleted records after CLEANER_DELAY
// (error records are kept).
#define BOOST_TEST_MODULE networks_sim
#include <algorithm>
#include <set>

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

// NICs on `networks`; ipv4[i] (if given and not empty) is the address NIC
// i asks for.
std::string spec_bytes(const std::string& name, const std::vector<std::string>& networks, uint32_t vcpus = 1,
                       const std::vector<std::string>& ipv4 = {}) {
  v1::InstanceSpec s;
  s.set_name(name);
  s.mutable_board()->set_vcpus(vcpus);
  s.mutable_board()->set_memory_mib(16);
  s.mutable_boot()->set_embedded_guest("hello");
  for (size_t i = 0; i < networks.size(); ++i) {
    auto* nic = s.mutable_devices()->add_nics();
    nic->set_network(networks[i]);
    if (i < ipv4.size()) nic->set_ipv4(ipv4[i]);
  }
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
                                    uint32_t vcpus = 1, const std::vector<std::string>& ipv4 = {}) {
    return ask<std::string>(ctl, create_atom::value, spec_bytes(name, networks, vcpus, ipv4));
  }
  // What a node says at its tick: it hosts `hosted` (network -> problem).
  std::map<std::string, std::vector<std::string>> node_net(const std::string& node, const std::string& vtep,
                                                           const std::map<std::string, std::string>& hosted) {
    auto r = ask<std::map<std::string, std::vector<std::string>>>(ctl, node_net_atom::value, node, vtep, hosted);
    if (!r) BOOST_FAIL("nodenet failed: " << show(r.error()));
    return *r;
  }
  std::vector<std::string> addresses(const std::string& network) {
    std::vector<std::string> out;
    for (const auto& p : net(network).ports) out.push_back(p.ipv4);
    std::sort(out.begin(), out.end());
    return out;
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

BOOST_FIXTURE_TEST_CASE(nics_get_the_lowest_free_address_and_bad_asks_are_refused, Cluster) {
  const auto n = create_network("small", "10.5.0.0/29");  // hosts .1 to .6; .1 is left for a gateway
  auto a = create("a", {n});
  auto b = create("b", {n}, 1, {"10.5.0.6/29"});
  auto c = create("c", {n, n});  // two NICs on it: two addresses
  for (auto* r : {&a, &b, &c})
    if (!*r) BOOST_FAIL(show(r->error()));
  run();
  BOOST_TEST(addresses(n) == (std::vector<std::string>{"10.5.0.2/29", "10.5.0.3/29", "10.5.0.4/29", "10.5.0.6/29"}));
  for (const auto& p : net(n).ports) BOOST_TEST(p.mac.substr(0, 3) == "02:", p.mac);  // locally administered

  // Each refusal names the NIC's field and writes nothing.
  struct Bad {
    std::vector<std::string> ipv4;
    std::string field, says;
  };
  for (const auto& bad : std::vector<Bad>{
           {{"10.5.0.6/29"}, "devices.nics[0].ipv4", "is taken"},
           {{"10.5.1.2/29"}, "devices.nics[0].ipv4", "is not a host address"},
           {{"10.5.0.0/29"}, "devices.nics[0].ipv4", "is not a host address"},   // the network's own address
           {{"10.5.0.7/29"}, "devices.nics[0].ipv4", "is not a host address"},   // its broadcast
           {{"10.5.0.5/24"}, "devices.nics[0].ipv4", "is not a host address"},   // another prefix
           {{"10.5.0.5"}, "devices.nics[0].ipv4", ""},                           // no prefix
       }) {
    auto r = create("x", {n}, 1, bad.ipv4);
    BOOST_REQUIRE(!r);
    BOOST_TEST(http_status(r.error()) / 100 == 4, show(r.error()));
    BOOST_TEST(message_of(r.error()).find(bad.field) != std::string::npos, show(r.error()));
    BOOST_TEST(message_of(r.error()).find(bad.says) != std::string::npos, show(r.error()));
  }
  // .5 is the last free one; then the range is exhausted.
  auto d = create("d", {n});
  if (!d) BOOST_FAIL(show(d.error()));
  auto full = create("e", {n});
  BOOST_REQUIRE(!full);
  BOOST_TEST(http_status(full.error()) == 400, show(full.error()));
  BOOST_TEST(message_of(full.error()).find("has no free address") != std::string::npos, show(full.error()));
  run();
  BOOST_TEST(instance_count() == 4u);
  BOOST_TEST(addresses(n).size() == 5u);

  // A deleted instance's address is free again.
  delete_instance(*a);
  auto f = create("f", {n});
  if (!f) BOOST_FAIL(show(f.error()));
  run();
  BOOST_TEST(addresses(n) == (std::vector<std::string>{"10.5.0.2/29", "10.5.0.3/29", "10.5.0.4/29", "10.5.0.5/29",
                                                       "10.5.0.6/29"}));
}

BOOST_FIXTURE_TEST_CASE(a_node_that_cannot_carry_a_network_turns_it_error_with_the_reason, Cluster) {
  const auto tapped = create_network("tapped", "10.6.0.0/24");
  const auto spread = create_network("spread", "10.7.0.0/24");
  const auto fine = create_network("fine", "10.8.0.0/24");
  for (const std::string name : {"t", "s1", "s2", "f"})
    BOOST_REQUIRE(create(name, {name == "t" ? tapped : name == "f" ? fine : spread}));
  run();
  // The scheduler spread s1 and s2 over the two nodes.
  std::set<std::string> spread_nodes;
  for (const auto& p : net(spread).ports) spread_nodes.insert(p.node);
  BOOST_REQUIRE(spread_nodes.size() == 2u);

  // node-a could not make the host tap of "tapped"; "spread" spans both
  // nodes while node-a has no VTEP. "fine" has its one port on one node:
  // no VTEP needed, nothing wrong.
  const std::string why = "tap_not_permitted: /dev/net/tun: Operation not permitted";
  node_net("node-a", "", {{tapped, why}, {spread, ""}});
  node_net(net(fine).ports.at(0).node, "", {{fine, ""}});
  auto t = net(tapped);
  BOOST_TEST(t.state == "error");
  BOOST_TEST(t.error == "node node-a: " + why);
  auto s = net(spread);
  BOOST_TEST(s.state == "error");
  BOOST_TEST(s.error.find("without a VTEP") != std::string::npos, s.error);
  BOOST_TEST(net(fine).state == "created");
  BOOST_TEST(net(fine).error.empty());

  // An error network keeps its overlay: its guests still reach each other,
  // the nodes are still told their peers (a problem does not empty them).
  node_net("node-a", "10.0.0.1:4789", {{spread, ""}});
  auto peers = node_net("node-b", "10.0.0.2:4789", {{spread, "tap_name_in_use: apiary-000001"}});
  BOOST_TEST(peers[spread] == std::vector<std::string>{"10.0.0.1:4789"});
  BOOST_TEST(net(spread).error.find("without a VTEP") != std::string::npos, "the first reason stays");

  // Its instances run on: a network error is about the fabric, not the VMs.
  for (const auto& i : net(tapped).instances) BOOST_TEST(instance(i).vm_state == "active");
  // A broken network is deleted at once (Shaken Fist: error -> deleted),
  // its ports or not; the reason goes with the error state.
  auto d = delete_network(tapped);
  BOOST_REQUIRE(d);
  BOOST_TEST(d->state == "deleted");
  BOOST_TEST(d->error.empty());
}
