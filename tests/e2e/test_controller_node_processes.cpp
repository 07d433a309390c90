// The control plane as separate processes, as on several hosts: a
// controller and two nodes connected through the CAF middleman (BASP with
// heartbeats). A VM placed on a node keeps running while the controller is
// killed with -9; the restarted controller (same store) sees every record,
// the nodes re-register and actions work again; a node killed with -9 goes
// missing and then to error, and its instances are declared errored.
// Creates accepted by a restarted controller before its nodes have
// reconnected wait for them instead of ending in ERROR.
#define BOOST_TEST_MODULE controller_node_processes
#include <signal.h>

#include "tests/support/e2e.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary::test;
namespace utf = boost::unit_test;

namespace {
std::string vm_state(int port, const std::string& id) {
  return json_field(http_call(port, http::verb::get, "/v1/instances/" + id).body, "vm_state");
}
int free_port() {
  net::io_context io;
  net::ip::tcp::acceptor a(io, net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}
}  // namespace

BOOST_AUTO_TEST_CASE(vm_survives_controller_kill_9_and_a_dead_node_errors_its_vms,
                     *utf::precondition(apiary::test::kvm_available) * utf::label("kvm")) {
  const std::string store = "/tmp/apiary-e2e-cn-" + std::to_string(::getpid()) + ".sqlite";
  const std::string node_port = std::to_string(free_port());
  const std::vector<std::string> controller_args = {"controller", "--insecure", "--port", "0", "--node-port", node_port,
                                                    "--store", store, "--checkin-max-ms", "1000",
                                                    "--token-file", store + ".token"};
  auto controller = std::make_unique<ApiaryProcess>(controller_args);
  int api = controller->http_port();
  ApiaryProcess n1({"node", "--insecure", "--controller", "127.0.0.1:" + node_port, "--name", "n1", "--checkin-ms", "200"});
  auto n2 = std::make_unique<ApiaryProcess>(
      std::vector<std::string>{"node", "--insecure", "--controller", "127.0.0.1:" + node_port, "--name", "n2", "--checkin-ms", "200"});

  // Both nodes register; two VMs spread over them (lowest load first).
  std::vector<std::string> ids;
  for (int i = 0; i < 2; ++i) {
    Reply r;
    BOOST_TEST(eventually([&] {
      r = http_call(api, http::verb::post, "/v1/instances",
                    R"({"spec":{"name":"vm-)" + std::to_string(i) +
                        R"(","board":{"vcpus":1,"memory_mib":32},"boot":{"embedded_guest":"demo"}}})");
      const std::string id = json_field(r.body, "id");
      if (r.status == 202 && eventually([&] { return vm_state(api, id) != "building"; }, 10s) &&
          vm_state(api, id) == "active") {
        ids.push_back(id);
        return true;
      }
      return false;  // no node registered yet: try again
    }));
  }
  BOOST_REQUIRE(ids.size() == 2u);
  const std::string node0 = json_field(http_call(api, http::verb::get, "/v1/instances/" + ids[0]).body, "node");
  const std::string node1 = json_field(http_call(api, http::verb::get, "/v1/instances/" + ids[1]).body, "node");
  BOOST_TEST(node0 != node1);

  // kill -9 the controller; restart it on the same store.
  BOOST_TEST(controller->stop(SIGKILL) == -SIGKILL);
  controller = std::make_unique<ApiaryProcess>(controller_args);
  api = controller->http_port();
  BOOST_TEST(vm_state(api, ids[0]) == "active");  // the record survived
  // The nodes re-register; the VM kept running, so it can be paused now.
  BOOST_TEST(eventually([&] {
    const auto r = http_call(api, http::verb::post, "/v1/instances/" + ids[0] + "/actions", R"({"action":"pause"})");
    return r.status == 202 && eventually([&] { return vm_state(api, ids[0]) != "active"; }, 10s) &&
           vm_state(api, ids[0]) == "paused";
  }));

  // kill -9 the node running the second VM: missing after 1 s, error after 10 s.
  const std::string victim = node1;
  if (victim == "n2") {
    BOOST_TEST(n2->stop(SIGKILL) == -SIGKILL);
  } else {
    BOOST_TEST(n1.stop(SIGKILL) == -SIGKILL);
  }
  BOOST_TEST(eventually([&] { return vm_state(api, ids[1]) == "error"; }, 40s));
  BOOST_TEST(controller->stop(SIGTERM) == 0);
  for (const char* suffix : {"", "-wal", "-shm", ".token"}) std::remove((store + suffix).c_str());
}

BOOST_AUTO_TEST_CASE(creates_after_a_controller_restart_wait_for_nodes_that_reconnect_late) {
  const std::string store = "/tmp/apiary-e2e-restart-" + std::to_string(::getpid()) + ".sqlite";
  const std::string node_port = std::to_string(free_port());
  const std::vector<std::string> controller_args = {"controller", "--insecure", "--port", "0", "--node-port", node_port,
                                                    "--store", store, "--token-file", store + ".token"};
  auto controller = std::make_unique<ApiaryProcess>(controller_args);
  int api = controller->http_port();
  std::vector<std::unique_ptr<ApiaryProcess>> nodes;
  for (const char* name : {"n1", "n2"})
    nodes.push_back(std::make_unique<ApiaryProcess>(std::vector<std::string>{
        "node", "--insecure", "--controller", "127.0.0.1:" + node_port, "--name", name, "--checkin-ms", "200", "--simulated",
        "yes"}));
  auto create = [&](const std::string& name, const std::string& key) {
    return http_call(api, http::verb::post, "/v1/instances",
                     R"({"request_id":")" + key + R"(","spec":{"name":")" + name +
                         R"(","board":{"vcpus":1,"memory_mib":16},"boot":{"embedded_guest":"hello"}}})");
  };
  // Both nodes registered: a create on each lands ACTIVE.
  BOOST_REQUIRE(eventually([&] {
    const auto r = http_call(api, http::verb::get, "/v1/nodes");
    return r.status == 200 && r.body.find("\"n1\"") != std::string::npos &&
           r.body.find("\"n2\"") != std::string::npos;
  }));

  // The nodes freeze (they will reconnect late), the controller dies and
  // comes back on its store; creates arrive before any node is back.
  for (auto& n : nodes) BOOST_REQUIRE(::kill(n->pid, SIGSTOP) == 0);
  BOOST_TEST(controller->stop(SIGKILL) == -SIGKILL);
  controller = std::make_unique<ApiaryProcess>(controller_args);
  api = controller->http_port();
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    const auto r = create("late-" + std::to_string(i), "restart-key-" + std::to_string(i));
    BOOST_TEST(r.status == 202, r.body);
    ids.push_back(json_field(r.body, "id"));
  }
  std::this_thread::sleep_for(2s);
  for (const auto& id : ids) BOOST_TEST(vm_state(api, id) == "building");

  for (auto& n : nodes) BOOST_REQUIRE(::kill(n->pid, SIGCONT) == 0);
  for (const auto& id : ids) {
    BOOST_TEST(eventually([&] { return vm_state(api, id) != "building"; }, 30s));
    BOOST_TEST(vm_state(api, id) == "active", id);
  }
  // A client that retries a create it had no answer for gets the same
  // instance, not a second one.
  const auto again = create("late-0", "restart-key-0");
  BOOST_TEST(json_field(again.body, "id") == ids[0], again.body);
  const auto actions = http_call(api, http::verb::get, "/v1/instances/" + ids[0] + "/actions");
  BOOST_TEST(actions.body.find("waiting up to") != std::string::npos, actions.body);

  for (auto& n : nodes) n->stop(SIGTERM);
  BOOST_TEST(controller->stop(SIGTERM) == 0);
  for (const char* suffix : {"", "-wal", "-shm", ".token"}) std::remove((store + suffix).c_str());
}
