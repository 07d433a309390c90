// `apiary cluster` as a user runs it: a separate process with the HTTP API
// on an ephemeral port, driven over HTTP — create a VM on real KVM, read its
// console, Nova actions (pause, suspend and resume), a refusal (409) and a
// missing capability (501),
// the action log, delete — then kill -9 and a restart on the same store,
// which must still hold every acknowledged record.
#define BOOST_TEST_MODULE cluster_http
#include "tests/support/e2e.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary::test;
namespace utf = boost::unit_test;

namespace {
struct Cluster : ApiaryProcess {
  int port;
  explicit Cluster(const std::string& store)
      : ApiaryProcess({"cluster", "--nodes", "2", "--port", "0", "--store", store, "--token-file", store + ".token"}),
        port(http_port()) {}
};
std::string vm_state(int port, const std::string& id) {
  return json_field(http_call(port, http::verb::get, "/v1/instances/" + id).body, "vm_state");
}
}  // namespace

BOOST_AUTO_TEST_CASE(create_act_refuse_delete_then_survive_kill_9, *utf::precondition(apiary::test::kvm_available) * utf::label("kvm")) {
  const std::string store = "/tmp/apiary-e2e-" + std::to_string(::getpid()) + ".sqlite";
  std::string id, deleted_id;
  {
    Cluster c(store);
    auto r = http_call(c.port, http::verb::post, "/v1/instances",
                  R"({"spec":{"name":"web-1","board":{"vcpus":1,"memory_mib":32},"boot":{"embedded_guest":"demo"}}})");
    BOOST_TEST(r.status == 202);
    id = json_field(r.body, "id");
    BOOST_REQUIRE(!id.empty());
    BOOST_TEST(eventually([&] { return vm_state(c.port, id) == "active"; }));
    BOOST_TEST(eventually([&] {
      return http_call(c.port, http::verb::get, "/v1/instances/" + id + "/console/history").body.find("Apiary demo guest") !=
             std::string::npos;
    }));
    r = http_call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"pause"})");
    BOOST_TEST(r.status == 202);
    BOOST_TEST(eventually([&] { return vm_state(c.port, id) == "paused"; }));
    r = http_call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"pause"})");
    BOOST_TEST(r.status == 409);
    BOOST_TEST(r.body.find("Cannot 'pause' instance " + id + " while it is in vm_state paused") != std::string::npos);
    r = http_call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"set_admin_password"})");
    BOOST_TEST(r.status == 501);  // no guest agent
    // Suspend (from PAUSED: Nova refuses it, 409), then from ACTIVE: the
    // VM's state goes to a file on its node and its VMM goes; resume brings
    // the same guest back (its shell answers, it did not boot again).
    r = http_call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"suspend"})");
    BOOST_TEST(r.status == 409);
    r = http_call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"unpause"})");
    BOOST_TEST(eventually([&] { return vm_state(c.port, id) == "active"; }));
    r = http_call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"suspend"})");
    BOOST_TEST(r.status == 202);
    BOOST_TEST(eventually([&] { return vm_state(c.port, id) == "suspended"; }));
    r = http_call(c.port, http::verb::get, "/v1/instances/" + id);
    BOOST_TEST(json_field(r.body, "power_state") == "suspended", r.body);
    r = http_call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"resume"})");
    BOOST_TEST(r.status == 202);
    BOOST_TEST(eventually([&] { return vm_state(c.port, id) == "active"; }));
    r = http_call(c.port, http::verb::get, "/v1/instances/" + id + "/actions");
    BOOST_TEST(r.body.find("\"action\":\"suspend\"") != std::string::npos);
    BOOST_TEST(r.body.find(id + ".snap: ") != std::string::npos, r.body);  // "saved <save_dir>/<id>.snap: ..."
    BOOST_TEST(r.body.find("restored from ") != std::string::npos, r.body);
    {
      const std::string history =
          http_call(c.port, http::verb::get, "/v1/instances/" + id + "/console/history").body;
      BOOST_TEST(history.find("Apiary demo guest") == history.rfind("Apiary demo guest"), history);
    }
    // Shelve: state and disks to the shelf, offloaded at once (Nova's
    // shelved_offload_time = 0: no node holds it), then unshelved onto the
    // other node, where the same guest continues.
    const std::string first_node = json_field(http_call(c.port, http::verb::get, "/v1/instances/" + id).body, "node");
    BOOST_REQUIRE(!first_node.empty());
    const std::string other_node = first_node == "node-1" ? "node-2" : "node-1";
    r = http_call(c.port, http::verb::post, "/v1/instances/" + id + "/actions", R"({"action":"shelve"})");
    BOOST_TEST(r.status == 202);
    BOOST_TEST(eventually([&] { return vm_state(c.port, id) == "shelved_offloaded"; }));
    BOOST_TEST(json_field(http_call(c.port, http::verb::get, "/v1/instances/" + id).body, "node") == "");
    r = http_call(c.port, http::verb::post, "/v1/instances/" + id + "/actions",
                  R"({"action":"unshelve","args":{"host":")" + other_node + R"("}})");
    BOOST_TEST(r.status == 202, r.body);
    BOOST_TEST(eventually([&] { return vm_state(c.port, id) == "active"; }));
    BOOST_TEST(json_field(http_call(c.port, http::verb::get, "/v1/instances/" + id).body, "node") == other_node);
    r = http_call(c.port, http::verb::get, "/v1/instances/" + id + "/actions");
    BOOST_TEST(r.body.find("\"action\":\"unshelve\"") != std::string::npos);
    BOOST_TEST(r.body.find("saved the VM state to ") != std::string::npos, r.body);
    {
      const std::string history =
          http_call(c.port, http::verb::get, "/v1/instances/" + id + "/console/history").body;
      BOOST_TEST(history.find("Apiary demo guest") == history.rfind("Apiary demo guest"), history);
    }
    r = http_call(c.port, http::verb::post, "/v1/instances", R"({"spec":{"name":"bad","board":{"vcpus":0}}})");
    BOOST_TEST(r.status == 422);
    BOOST_TEST(r.body.find("spec.board.vcpus") != std::string::npos);
    r = http_call(c.port, http::verb::get, "/v1/instances/" + id + "/actions");
    BOOST_TEST(r.body.find("\"action\":\"pause\"") != std::string::npos);

    // A second VM, deleted: its record must survive as deleted.
    r = http_call(c.port, http::verb::post, "/v1/instances",
             R"({"spec":{"name":"web-2","board":{"vcpus":1,"memory_mib":32},"boot":{"embedded_guest":"demo"}}})");
    deleted_id = json_field(r.body, "id");
    BOOST_TEST(eventually([&] { return vm_state(c.port, deleted_id) == "active"; }));
    BOOST_TEST(http_call(c.port, http::verb::delete_, "/v1/instances/" + deleted_id).status == 202);
    BOOST_TEST(eventually([&] { return vm_state(c.port, deleted_id) == "deleted"; }));
    BOOST_TEST(c.stop(SIGKILL) == -SIGKILL);
  }
  {
    Cluster c(store);  // same store after kill -9
    auto r = http_call(c.port, http::verb::get, "/v1/instances/" + id);
    BOOST_TEST(r.status == 200);
    BOOST_TEST(json_field(r.body, "name") == "web-1");
    r = http_call(c.port, http::verb::get, "/v1/instances/" + deleted_id);
    BOOST_TEST(json_field(r.body, "vm_state") == "deleted");
    r = http_call(c.port, http::verb::get, "/v1/instances/" + id + "/actions");
    BOOST_TEST(r.body.find("\"action\":\"pause\"") != std::string::npos);
    BOOST_TEST(c.stop(SIGTERM) == 0);  // graceful stop
  }
  for (const char* suffix : {"", "-wal", "-shm", ".token"}) std::remove((store + suffix).c_str());
}

BOOST_AUTO_TEST_CASE(networks_wait_for_their_instances, *utf::precondition(apiary::test::kvm_available) * utf::label("kvm")) {
  const std::string store = "/tmp/apiary-e2e-net-" + std::to_string(::getpid()) + ".sqlite";
  {
    Cluster c(store);
    auto r = http_call(c.port, http::verb::post, "/v1/networks", R"({"name":"net0","cidr":"10.0.0.0/24"})");
    BOOST_TEST(r.status == 201);
    const std::string net = json_field(r.body, "id");
    BOOST_REQUIRE(!net.empty());
    r = http_call(c.port, http::verb::post, "/v1/instances",
                  R"({"spec":{"name":"nic-vm","board":{"vcpus":1,"memory_mib":32},"boot":{"embedded_guest":"demo"},)"
                  R"("devices":{"nics":[{"network":"net0","mac":"52:54:00:00:00:01"}]}}})");
    BOOST_TEST(r.status == 202);
    const std::string id = json_field(r.body, "id");
    BOOST_TEST(eventually([&] { return vm_state(c.port, id) == "active"; }));
    BOOST_TEST(http_call(c.port, http::verb::get, "/v1/networks/" + net).body.find(id) != std::string::npos);
    // A NIC on a network that does not exist: 400, nothing created.
    r = http_call(c.port, http::verb::post, "/v1/instances",
                  R"({"spec":{"name":"bad","boot":{"embedded_guest":"demo"},"devices":{"nics":[{"network":"nope"}]}}})");
    BOOST_TEST(r.status == 400);
    // Deleting the network waits for its instance.
    BOOST_TEST(http_call(c.port, http::verb::delete_, "/v1/networks/" + net).status == 202);
    BOOST_TEST(json_field(http_call(c.port, http::verb::get, "/v1/networks/" + net).body, "state") == "delete_wait");
    BOOST_TEST(http_call(c.port, http::verb::delete_, "/v1/instances/" + id).status == 202);
    BOOST_TEST(eventually([&] {
      return json_field(http_call(c.port, http::verb::get, "/v1/networks/" + net).body, "state") == "deleted";
    }));
    BOOST_TEST(c.stop(SIGTERM) == 0);
  }
  for (const char* suffix : {"", "-wal", "-shm", ".token"}) std::remove((store + suffix).c_str());
}
