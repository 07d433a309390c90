// The control plane as it is deployed: a controller process and two node
// processes on loopback, connected through the CAF middleman, driven over
// the HTTP API with the bearer token the controller generated.
//
// What is shown here, each against the real processes:
//  * every Nova action does its real VMM work, checked through the guest's
//    console (the demo guest's shell over the console websocket) and the
//    disk file (KVM);
//  * the precondition matrix: every action in every vm_state the API can
//    reach answers as control::check() says (202, or 409/501 with Nova's
//    exact message and nothing changed);
//  * bad input: malformed JSON, unknown fields, wrong types, no token, a
//    wrong token, a huge body, an unknown instance, a node that is not
//    connected, and a duplicate create with the same request id;
//  * kill -9 of the controller in the middle of an action, then a restart:
//    no record lost, the action settled (never left running);
//  * a node process restarted under the same name is reconciled.
#define BOOST_TEST_MODULE control_plane_e2e
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <memory>
#include <regex>
#include <set>

#include <google/protobuf/util/json_util.h>

#include "cluster/nova_states.hpp"
#include "proto/apiary/v1/api.pb.h"
#include "tests/support/counter_output.hpp"
#include "tests/support/e2e.hpp"
#include "tests/support/test_support.hpp"

using namespace apiary::test;
namespace utf = boost::unit_test;
namespace control = apiary::control;

namespace {

int free_port() {
  net::io_context io;
  net::ip::tcp::acceptor a(io, net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0));
  return a.local_endpoint().port();
}

// A controller and two nodes ("n1", "n2"), each a separate `apiary` process.
struct ControlPlane {
  std::string base = "/tmp/apiary-e2e-cp-" + std::to_string(::getpid()) + "-" + std::to_string(free_port());
  std::string store = base + ".sqlite";
  std::string token_file = base + ".token";
  std::string node_port = std::to_string(free_port());
  bool simulated;
  std::unique_ptr<ApiaryProcess> controller;
  std::map<std::string, std::unique_ptr<ApiaryProcess>> nodes;
  int api = 0;

  explicit ControlPlane(bool simulated_nodes, const std::string& checkin_max_ms = "1000",
                        std::vector<std::string> node_extra_args = {})
      : simulated(simulated_nodes), checkin_max(checkin_max_ms), node_extra(std::move(node_extra_args)) {
    start_controller();
    start_node("n1");
    start_node("n2");
    BOOST_REQUIRE_MESSAGE(eventually([&] { return count(nodes_json(), "\"state\":\"created\"") == 2; }, 30s),
                          "both nodes registered: " << nodes_json());
  }
  ~ControlPlane() {
    for (auto& [n, p] : nodes) p.reset();
    controller.reset();
    for (const char* suffix : {".sqlite", ".sqlite-wal", ".sqlite-shm", ".token"}) std::remove((base + suffix).c_str());
  }

  void start_controller() {
    controller = std::make_unique<ApiaryProcess>(std::vector<std::string>{
        "controller", "--insecure", "--port", "0", "--node-port", node_port, "--store", store, "--token-file", token_file,
        "--checkin-max-ms", checkin_max});
    api = controller->http_port();
  }
  void start_node(const std::string& name) {
    std::vector<std::string> argv = {"node", "--insecure", "--controller", "127.0.0.1:" + node_port, "--name", name,
                                     "--checkin-ms", "200", "--vcpus", "16", "--memory", "4096"};
    if (simulated) argv.insert(argv.end(), {"--simulated", "yes"});
    argv.insert(argv.end(), node_extra.begin(), node_extra.end());
    nodes[name] = std::make_unique<ApiaryProcess>(argv);
  }

  std::string nodes_json() { return http_call(api, http::verb::get, "/v1/nodes").body; }
  static size_t count(const std::string& s, const std::string& needle) {
    size_t n = 0;
    for (size_t p = s.find(needle); p != std::string::npos; p = s.find(needle, p + 1)) ++n;
    return n;
  }

  Reply get(const std::string& id) { return http_call(api, http::verb::get, "/v1/instances/" + id); }
  std::string field(const std::string& id, const std::string& name) { return json_field(get(id).body, name); }
  Reply act(const std::string& id, const std::string& body) {
    return http_call(api, http::verb::post, "/v1/instances/" + id + "/actions", body);
  }
  std::string actions(const std::string& id) {
    return http_call(api, http::verb::get, "/v1/instances/" + id + "/actions").body;
  }

  // Creates an instance and waits until it is built; its id.
  std::string create(const std::string& name, const std::string& extra_spec = {}, const std::string& guest = "demo") {
    const auto r = http_call(api, http::verb::post, "/v1/instances",
                             R"({"spec":{"name":")" + name + R"(","board":{"vcpus":1,"memory_mib":32},)" +
                                 R"("boot":{"embedded_guest":")" + guest + "\"}" + extra_spec + "}}");
    BOOST_REQUIRE_MESSAGE(r.status == 202, r.body);
    const std::string id = json_field(r.body, "id");
    BOOST_REQUIRE_MESSAGE(eventually([&] { return field(id, "vm_state") != "building"; }, 30s), id);
    BOOST_REQUIRE_MESSAGE(field(id, "vm_state") == "active", get(id).body);
    return id;
  }

  // Runs an action and waits until its task is done; the final vm_state.
  std::string run(const std::string& id, const std::string& body, std::chrono::milliseconds d = 60s) {
    const auto r = act(id, body);
    BOOST_REQUIRE_MESSAGE(r.status == 202, body << " -> " << r.status << " " << r.body);
    BOOST_REQUIRE_MESSAGE(eventually([&] { return field(id, "task_state").empty(); }, d),
                          body << " still running: " << get(id).body);
    return field(id, "vm_state");
  }

  std::string checkin_max;
  std::vector<std::string> node_extra;
};

std::string action_body(control::Action a) {
  std::string body = std::string(R"({"action":")") + control::api_name(a) + "\"";
  if (const char* t = control::reboot_type(a)) body += std::string(R"(,"type":")") + t + "\"";
  if (a == control::Action::resize) body += R"(,"args":{"vcpus":"2"})";
  return body + "}";
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

// Every "tick N" of a console history as the API returns it (a JSON
// string: the line ends are the escapes \r\n), in order.
std::vector<long> ticks_in(const std::string& history) { return numbers_after(history, "tick", R"(\\r\\n)"); }

// Live migration between two node processes: a counting guest moves to the
// other node and counts on there (its console, read through the controller,
// shows no restart and no gap); the record's node changes; the action log
// names the rounds and the downtime. Then the destination node process is
// killed in the middle of a migration back (the nodes send at most 128 KiB
// of RAM per second, so it takes a while): the guest runs on at its source
// and the action ends reverted.
BOOST_AUTO_TEST_CASE(a_running_vm_migrates_live_between_node_processes,
                     *utf::precondition(apiary::test::kvm_available) * utf::label("kvm")) {
  ControlPlane cp(false, "1000", {"--migration-kib-per-s", "128"});
  const auto r = http_call(cp.api, http::verb::post, "/v1/instances",
                           R"({"spec":{"name":"mover","board":{"vcpus":1,"memory_mib":64},)"
                           R"("boot":{"embedded_guest":"spin","cmdline":"iters=20000000"}}})");
  BOOST_REQUIRE_MESSAGE(r.status == 202, r.body);
  const std::string id = json_field(r.body, "id");
  BOOST_REQUIRE(eventually([&] { return cp.field(id, "vm_state") == "active"; }, 60s));
  auto history = [&] {
    return json_field(http_call(cp.api, http::verb::get, "/v1/instances/" + id + "/console/history").body, "data");
  };
  BOOST_REQUIRE(eventually([&] { return ticks_in(history()).size() >= 3; }, 60s));
  const std::string source = cp.field(id, "node");
  const std::string dest = source == "n1" ? "n2" : "n1";

  // There (the scheduler picks the other node).
  BOOST_TEST(cp.run(id, R"({"action":"live_migrate"})", 180s) == "active");
  BOOST_TEST(cp.field(id, "node") == dest, cp.get(id).body);
  const std::string log = cp.actions(id);
  BOOST_TEST(log.find("\"action\":\"live_migrate\"") != std::string::npos);
  BOOST_TEST(log.find("migrated to 127.0.0.1:") != std::string::npos, log);
  BOOST_TEST(log.find("downtime") != std::string::npos, log);
  const size_t moved_at = ticks_in(history()).size();
  BOOST_TEST_REQUIRE(eventually([&] { return ticks_in(history()).size() >= moved_at + 5; }, 60s), history());
  BOOST_TEST(consecutive_from_1(ticks_in(history())));
  // Nothing of it is left on the source node.
  BOOST_TEST(cp.field(id, "power_state") == "running");

  // Back, with the destination killed in the middle.
  const auto back = cp.act(id, R"({"action":"live_migrate","args":{"host":")" + source + R"("}})");
  BOOST_REQUIRE_MESSAGE(back.status == 202, back.body);
  // The destination is ready (its prepare logged): the source now streams.
  BOOST_REQUIRE_MESSAGE(eventually([&] { return ControlPlane::count(cp.actions(id), " listens on ") == 2; }, 60s),
                        cp.actions(id));
  cp.nodes.at(source).reset();  // SIGTERM-less: the process is killed
  BOOST_REQUIRE_MESSAGE(eventually([&] { return cp.field(id, "task_state").empty(); }, 120s), cp.get(id).body);
  BOOST_TEST(cp.field(id, "vm_state") == "active");
  BOOST_TEST(cp.field(id, "node") == dest);
  const std::string log2 = cp.actions(id);
  BOOST_TEST(log2.rfind("\"result\":\"reverted\"") != std::string::npos, log2);
  const size_t after_kill = ticks_in(history()).size();
  BOOST_TEST(eventually([&] { return ticks_in(history()).size() >= after_kill + 5; }, 60s), history());
  BOOST_TEST(consecutive_from_1(ticks_in(history())));
}

// Every action against a demo guest on KVM, checked from inside the guest
// (its shell over the console websocket) or on the disk file.
BOOST_AUTO_TEST_CASE(every_action_does_its_real_vmm_work, *utf::precondition(apiary::test::kvm_available) * utf::label("kvm")) {
  ControlPlane cp(false);
  const std::string disk = cp.base + ".img";
  {
    std::ofstream f(disk, std::ios::binary);
    f << std::string(1 << 20, '\0');
  }
  const std::string id =
      cp.create("vm-actions", R"(,"devices":{"block":[{"id":"data","path":")" + disk + "\"}]}");
  BOOST_TEST(!cp.field(id, "node").empty());
  BOOST_TEST(eventually([&] {
    return http_call(cp.api, http::verb::get, "/v1/instances/" + id + "/console/history").body.find(
               "Apiary demo guest") != std::string::npos;
  }));

  // The guest's disk: write a sector from inside, read it from the host.
  {
    ConsoleClient c(cp.api, id);
    BOOST_TEST(c.wait_for("apiary> "));
    BOOST_TEST(c.command("info", "vcpus: 1"));
    BOOST_TEST(c.command("disk write 0 hello-apiary", "wrote sector 0"));
    BOOST_TEST(c.command("disk flush", "disk: flushed"));
  }
  BOOST_TEST(read_file(disk).substr(0, 12) == "hello-apiary");

  // pause really quiesces: typed input gets no answer until unpause.
  {
    ConsoleClient c(cp.api, id);
    BOOST_TEST(c.wait_for("apiary> "));
    BOOST_TEST(cp.run(id, R"({"action":"pause"})") == "paused");
    const size_t from = c.received.size();
    c.send("info\r");
    c.idle(1500ms);
    BOOST_TEST(c.received.find("vcpus:", from) == std::string::npos, "a paused guest answered: " << c.received);
    BOOST_TEST(cp.run(id, R"({"action":"unpause"})") == "active");
    BOOST_TEST(c.wait_for("vcpus: 1", 20s, from));
  }

  // Hard reboot: the VMM resets and reloads the guest (a second banner).
  auto banners = [&] {
    return ControlPlane::count(
        http_call(cp.api, http::verb::get, "/v1/instances/" + id + "/console/history").body, "Apiary demo guest");
  };
  const size_t before_reboots = banners();
  BOOST_TEST(cp.run(id, R"({"action":"reboot","type":"HARD"})") == "active");
  BOOST_TEST(eventually([&] { return banners() == before_reboots + 1; }));
  // Soft reboot: Ctrl-Alt-Del reaches the guest, which reboots itself.
  BOOST_TEST(cp.run(id, R"({"action":"reboot","type":"SOFT"})") == "active");
  BOOST_TEST(eventually([&] {
    return http_call(cp.api, http::verb::get, "/v1/instances/" + id + "/console/history").body.find(
               "ctrl-alt-del: rebooting") != std::string::npos;
  }));
  BOOST_TEST(eventually([&] { return banners() == before_reboots + 2; }));

  // stop powers the VMM off (no console any more); start builds a new one.
  BOOST_TEST(cp.run(id, R"({"action":"stop"})") == "stopped");
  BOOST_TEST(http_call(cp.api, http::verb::get, "/v1/instances/" + id + "/console/history").status == 409);
  BOOST_TEST(cp.run(id, R"({"action":"start"})") == "active");
  BOOST_TEST(eventually([&] { return banners() == 1; }));  // a fresh VMM, a fresh console
  {
    ConsoleClient c(cp.api, id);
    BOOST_TEST(c.wait_for("apiary> "));
    BOOST_TEST(c.command("disk read 0", "hello-apiary"));  // the disk survived
  }

  // snapshot copies the disk file.
  BOOST_TEST(cp.run(id, R"({"action":"snapshot","args":{"name":"s1"}})") == "active");
  BOOST_TEST(read_file(disk + ".snapshot-s1").substr(0, 12) == "hello-apiary");

  // resize builds a new VMM with the new board; revert goes back, confirm keeps it.
  BOOST_TEST(cp.run(id, R"({"action":"resize","args":{"vcpus":"2"}})") == "resized");
  {
    ConsoleClient c(cp.api, id);
    BOOST_TEST(c.wait_for("apiary> "));
    BOOST_TEST(c.command("info", "vcpus: 2"));
  }
  BOOST_TEST(cp.run(id, R"({"action":"revert_resize"})") == "active");
  {
    ConsoleClient c(cp.api, id);
    BOOST_TEST(c.wait_for("apiary> "));
    BOOST_TEST(c.command("info", "vcpus: 1"));
  }
  BOOST_TEST(cp.run(id, R"({"action":"resize","args":{"vcpus":"2"}})") == "resized");
  BOOST_TEST(cp.run(id, R"({"action":"confirm_resize"})") == "active");
  {
    ConsoleClient c(cp.api, id);
    BOOST_TEST(c.wait_for("apiary> "));
    BOOST_TEST(c.command("info", "vcpus: 2"));
  }

  // rescue boots the rescue guest with the instance's disk; unrescue returns.
  BOOST_TEST(cp.run(id, R"({"action":"rescue"})") == "rescued");
  {
    ConsoleClient c(cp.api, id);
    BOOST_TEST(c.wait_for("apiary> "));
    BOOST_TEST(c.command("info", "cmdline: rescue"));
    BOOST_TEST(c.command("disk read 0", "hello-apiary"));
  }
  BOOST_TEST(cp.run(id, R"({"action":"unrescue"})") == "active");
  {
    ConsoleClient c(cp.api, id);
    BOOST_TEST(c.wait_for("apiary> "));
    BOOST_TEST(c.command("info", "cmdline:"));
    BOOST_TEST(c.received.find("cmdline: rescue") == std::string::npos);
  }

  // rebuild recreates the disk (zeroed) and boots a fresh VMM.
  BOOST_TEST(cp.run(id, R"({"action":"rebuild"})") == "active");
  const std::string after = read_file(disk);
  BOOST_TEST(after.size() == size_t{1} << 20);
  BOOST_TEST(after.find_first_not_of('\0') == std::string::npos);

  // delete removes the VMM; the record stays as deleted.
  const auto r = http_call(cp.api, http::verb::delete_, "/v1/instances/" + id);
  BOOST_TEST(r.status == 202);
  BOOST_TEST(eventually([&] { return cp.field(id, "vm_state") == "deleted"; }));
  BOOST_TEST(http_call(cp.api, http::verb::get, "/v1/instances/" + id + "/console/history").status >= 400);
  for (const std::string& f : {disk, disk + ".snapshot-s1"}) std::remove(f.c_str());
}

// Every action in every vm_state the API can reach (simulated vCPUs: the
// matrix is about the control plane, not the guest). shelved, suspended and
// shelved_offloaded cannot be reached until VM state save/restore exists
// (their actions answer 501); building lasts milliseconds; the unit tests
// walk every row.
// set_admin_password is 501 in every state (there is no guest agent).
BOOST_AUTO_TEST_CASE(the_precondition_matrix_over_http) {
  ControlPlane cp(true);
  using control::Action;
  using control::VmState;
  // How to bring a new instance into each state from active.
  const std::vector<std::pair<VmState, std::vector<std::string>>> paths = {
      {VmState::active, {}},
      {VmState::paused, {R"({"action":"pause"})"}},
      {VmState::stopped, {R"({"action":"stop"})"}},
      {VmState::resized, {R"({"action":"resize","args":{"vcpus":"2"}})"}},
      {VmState::rescued, {R"({"action":"rescue"})"}},
      {VmState::soft_deleted, {R"({"action":"soft_delete"})"}},
      {VmState::deleted, {R"({"action":"delete"})"}},
      // A rescue whose image the node cannot boot fails: ERROR, node alive.
      {VmState::error, {R"({"action":"rescue","args":{"image":"no-such-guest"}})"}},
  };
  int n = 0;
  auto instance_in = [&](VmState s, const std::vector<std::string>& path) {
    const std::string id = cp.create("m-" + std::to_string(n++), {}, "hello");
    for (const auto& body : path) cp.run(id, body);
    BOOST_REQUIRE_MESSAGE(cp.field(id, "vm_state") == control::to_string(s), cp.get(id).body);
    return id;
  };
  size_t accepted = 0, refused = 0;
  for (const auto& [state, path] : paths) {
    const std::string probe = instance_in(state, path);
    std::vector<Action> allowed;
    for (Action a : control::kAllActions) {
      if (a == Action::create) continue;
      auto refusal = control::check(a, state, control::TaskState::none, probe);
      if (a == Action::set_admin_password)
        refusal = control::Refusal{501, control::RefusalReason::not_implemented,
                                   "Cannot 'set_admin_password' instance " + probe +
                                       ": not implemented, needs capability guest_agent"};
      BOOST_TEST_CONTEXT(control::to_string(a) << " in " << control::to_string(state)) {
        if (!refusal) {
          allowed.push_back(a);
          continue;
        }
        const std::string before = cp.get(probe).body;
        const std::string log_before = cp.actions(probe);
        const auto r = cp.act(probe, action_body(a));
        BOOST_TEST(r.status == refusal->http_status, r.body);
        BOOST_TEST(json_field(r.body, "message") == refusal->message);
        BOOST_TEST(cp.get(probe).body == before);  // nothing changed,
        BOOST_TEST(cp.actions(probe) == log_before);  // nothing logged
        ++refused;
      }
    }
    // Each allowed action on a fresh instance in that state: accepted (202)
    // and it ends (success, or reverted/error with its reason logged).
    bool probe_used = false;
    for (Action a : allowed) {
      BOOST_TEST_CONTEXT(control::to_string(a) << " in " << control::to_string(state)) {
        const std::string id = probe_used ? instance_in(state, path) : probe;
        probe_used = true;
        const auto r = cp.act(id, action_body(a));
        BOOST_TEST(r.status == 202, r.body);
        BOOST_TEST(json_field(r.body, "request_id") != "");
        BOOST_TEST(eventually([&] { return cp.field(id, "task_state").empty(); }, 30s), cp.get(id).body);
        ++accepted;
      }
    }
  }
  BOOST_TEST_MESSAGE(accepted << " accepted and " << refused << " refused pairs checked");
  BOOST_TEST(accepted > 20u);
  BOOST_TEST(refused > 80u);
}

BOOST_AUTO_TEST_CASE(bad_input_is_refused_and_changes_nothing) {
  ControlPlane cp(true);
  const std::string id = cp.create("bad-input", {}, "hello");
  const std::string list_before = http_call(cp.api, http::verb::get, "/v1/instances").body;
  auto expect = [&](const Reply& r, int status, const std::string& in_message) {
    BOOST_TEST(r.status == status, r.body);
    BOOST_TEST(json_field(r.body, "message").find(in_message) != std::string::npos, r.body);
  };
  // Malformed JSON, unknown fields, wrong types.
  expect(http_call(cp.api, http::verb::post, "/v1/instances", R"({"spec":)"), 400, "invalid JSON");
  expect(http_call(cp.api, http::verb::post, "/v1/instances", R"({"spec":{"name":"x","boardd":{}}})"), 400,
         "invalid JSON");
  expect(http_call(cp.api, http::verb::post, "/v1/instances", R"({"spec":{"name":"x","board":{"vcpus":"two"}}})"),
         400, "invalid JSON");
  expect(cp.act(id, R"({"action":"pause","typo":1})"), 400, "invalid JSON");
  expect(cp.act(id, R"({"action":7})"), 400, "invalid JSON");
  expect(cp.act(id, R"({"action":"fly"})"), 400, "unknown action 'fly'");
  expect(http_call(cp.api, http::verb::post, "/v1/instances", R"({"spec":{"name":"x"},"request_id":"bad id!"})"),
         400, "request_id");
  // A huge body is refused before it is read.
  expect(http_call(cp.api, http::verb::post, "/v1/instances", std::string(2 << 20, ' ')), 413, "exceeds");
  // Unknown instance.
  expect(cp.get("i-nope"), 404, "instance i-nope not found");
  expect(cp.act("i-nope", R"({"action":"pause"})"), 404, "instance i-nope not found");
  // Tokens.
  const std::string token = bearer_token();
  bearer_token().clear();
  expect(http_call(cp.api, http::verb::get, "/v1/instances"), 401, "missing bearer token");
  bearer_token() = token + "x";
  expect(http_call(cp.api, http::verb::get, "/v1/instances"), 401, "wrong bearer token");
  bearer_token() = token;
  struct stat st {};
  BOOST_TEST(::stat(cp.token_file.c_str(), &st) == 0);
  BOOST_TEST((st.st_mode & 0777) == 0600u);
  // Nothing of that changed anything.
  BOOST_TEST(http_call(cp.api, http::verb::get, "/v1/instances").body == list_before);

  // Duplicate create with the same request id: one instance, the same id.
  const std::string body = R"({"spec":{"name":"idem","boot":{"embedded_guest":"hello"}},"request_id":"req-idem-1"})";
  const auto first = http_call(cp.api, http::verb::post, "/v1/instances", body);
  const auto second = http_call(cp.api, http::verb::post, "/v1/instances", body);
  BOOST_TEST(first.status == 202);
  BOOST_TEST(second.status == 202);
  BOOST_TEST(json_field(first.body, "id") == json_field(second.body, "id"));
  BOOST_TEST(ControlPlane::count(http_call(cp.api, http::verb::get, "/v1/instances").body,
                                 "\"name\":\"idem\",\"spec\"") == 1u);

  // A node that is not connected: the listing says so at once (its record
  // keeps its state until the silence rule marks it missing), and its
  // instances' actions answer 503. The pause waits for the listing: one sent before the
  // controller saw the connection drop is accepted and fails against the
  // dead node, as it should.
  const std::string node = cp.field(id, "node");
  const auto connected = [&]() -> std::string {
    apiary::v1::NodeList list;
    if (!google::protobuf::util::JsonStringToMessage(cp.nodes_json(), &list).ok()) return "unparsable";
    for (const auto& n : list.nodes())
      if (n.name() == node) return n.state() + (n.connected() ? ", connected" : ", not connected");
    return "unlisted";
  };
  BOOST_TEST(connected() == "created, connected");
  BOOST_TEST(cp.nodes.at(node)->stop(SIGKILL) == -SIGKILL);
  const auto not_connected = [](const std::string& s) { return s.find(", not connected") != std::string::npos; };
  BOOST_TEST(eventually([&] { return not_connected(connected()); }, 20s), connected());
  expect(cp.act(id, R"({"action":"pause"})"), 503, "is not connected to the controller");
  BOOST_TEST(cp.field(id, "task_state").empty());
  BOOST_TEST(cp.field(id, "vm_state") == "active");
}

// kill -9 of the controller while an action is in flight (a soft reboot the
// simulated guest never answers, so it waits for its grace period), then a
// restart on the same store: every record is there and the action is
// settled from what the node reports; nothing stays "running".
BOOST_AUTO_TEST_CASE(a_controller_killed_mid_action_settles_it_after_restart) {
  ControlPlane cp(true);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(cp.create("keep-" + std::to_string(i), {}, "hello"));
  const auto r = cp.act(ids[0], R"({"action":"reboot","type":"SOFT"})");
  BOOST_REQUIRE(r.status == 202);
  const std::string request_id = json_field(r.body, "request_id");
  BOOST_TEST(cp.field(ids[0], "task_state") == "rebooting");
  BOOST_TEST(cp.controller->stop(SIGKILL) == -SIGKILL);
  cp.start_controller();
  for (const auto& id : ids) BOOST_TEST(cp.get(id).status == 200);  // no record lost
  BOOST_TEST(eventually([&] { return cp.field(ids[0], "task_state").empty(); }, 30s), cp.get(ids[0]).body);
  const std::string log = cp.actions(ids[0]);
  BOOST_TEST(log.find("controller_restart") != std::string::npos, log);
  BOOST_TEST(log.find("\"result\":\"running\"") == std::string::npos, log);
  BOOST_TEST(log.find(request_id) != std::string::npos);
  // The others were left alone and work again once their node is back (503 until then).
  BOOST_TEST(eventually([&] { return cp.act(ids[1], R"({"action":"pause"})").status == 202; }, 30s));
  BOOST_TEST(eventually([&] { return cp.field(ids[1], "vm_state") == "paused"; }, 30s));
}

// A node process killed and started again under the same name, before the
// silence rule notices: the controller sees a new node actor and reconciles
// (Nova's power sync records the lost VM as stopped).
BOOST_AUTO_TEST_CASE(a_restarted_node_is_reconciled) {
  ControlPlane cp(true, "60000");
  const std::string a = cp.create("r-1", {}, "hello");
  const std::string b = cp.create("r-2", {}, "hello");
  const std::string node = cp.field(a, "node");
  BOOST_TEST(cp.nodes.at(node)->stop(SIGKILL) == -SIGKILL);
  cp.start_node(node);
  BOOST_TEST(eventually([&] { return cp.field(a, "vm_state") == "stopped"; }, 30s), cp.get(a).body);
  BOOST_TEST(cp.actions(a).find("power_sync") != std::string::npos);
  // The other node's instance is untouched unless it was on the same node.
  if (cp.field(b, "node") != node) BOOST_TEST(cp.field(b, "vm_state") == "active");
  // And the restarted node takes work again.
  BOOST_TEST(cp.run(a, R"({"action":"start"})") == "active");
}

BOOST_AUTO_TEST_CASE(nodes_metrics_and_node_stop) {
  ControlPlane cp(true);
  const std::string id = cp.create("m-1", {}, "hello");
  cp.run(id, R"({"action":"pause"})");
  const auto nodes = http_call(cp.api, http::verb::get, "/v1/nodes");
  BOOST_TEST(nodes.status == 200);
  BOOST_TEST(nodes.body.find("\"name\":\"n1\"") != std::string::npos);
  BOOST_TEST(nodes.body.find("\"checkin_age_ms\"") != std::string::npos);
  const auto m = http_call(cp.api, http::verb::get, "/metrics");
  BOOST_TEST(m.status == 200);
  for (const char* needle :
       {"apiary_instances{vm_state=\"paused\"} 1", "apiary_nodes{state=\"created\"} 2",
        "apiary_node_checkin_age_seconds{node=\"n1\"}", "apiary_action_duration_seconds_count{action=\"pause\"} 1",
        "apiary_actions_finished_total{action=\"create\",result=\"success\"} 1", "apiary_node_scrape_up{node=\"n2\"} 1",
        "apiary_fanout_duration_seconds_bucket{node=\"", "phase=\"vcpu hold\""})
    BOOST_TEST(m.body.find(needle) != std::string::npos, needle);
  // Stopping a node drains it: its instances stop, it ends stopped.
  cp.run(id, R"({"action":"unpause"})");
  const std::string node = cp.field(id, "node");
  const auto stop = http_call(cp.api, http::verb::post, "/v1/nodes/" + node + "/stop");
  BOOST_TEST(stop.status == 202, stop.body);
  // The node as it is once the drain is accepted (and durable): stopping, or
  // already stopped when its one instance stopped before the answer left.
  const std::string stop_state = json_field(stop.body, "state");
  BOOST_TEST((stop_state == "stopping" || stop_state == "stopped"), stop.body);
  BOOST_TEST(eventually([&] { return cp.nodes_json().find("\"name\":\"" + node + "\",\"state\":\"stopped\"") !=
                                     std::string::npos; }, 30s), cp.nodes_json());
  BOOST_TEST(cp.field(id, "vm_state") == "stopped");
  BOOST_TEST(http_call(cp.api, http::verb::post, "/v1/nodes/nope/stop").status == 404);
}
