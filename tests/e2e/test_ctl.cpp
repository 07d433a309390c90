// `apiary ctl` as a user or a script runs it: a child process against a real
// `apiary cluster` (2 nodes, the simulated vCPU backend so no /dev/kvm is
// needed, its own store and token file). Checks the tables and the --json
// output (parsed with the api.proto types), --wait for create, actions,
// delete and node stop, the action log, the console, networks, and every
// exit code: 0 ok, 1 API error (409 refusal, 401 wrong token, 404), 2 usage,
// 3 unreachable or no token, 124 timeout.
#define BOOST_TEST_MODULE ctl
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "proto/apiary/v1/api.pb.h"
#include "tests/support/e2e.hpp"
#include "tests/support/process.hpp"

using namespace apiary::test;
namespace v1 = apiary::v1;

namespace {

constexpr auto kCtlDeadline = 60s;  // one ctl run, --wait included
constexpr int kUsage = 2, kApiError = 1, kUnreachable = 3, kTimeout = 124;

std::string temp_path(const std::string& what) {
  return "/tmp/apiary-ctl-" + std::to_string(::getpid()) + "-" + what;
}

// A file only its owner can read (the CLI refuses anything else).
void write_private_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  BOOST_REQUIRE_MESSAGE(fd >= 0, "cannot create " << path);
  BOOST_REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  ::close(fd);
}

// One cluster for the whole module, started by the first test that needs
// it and stopped (files removed) at exit.
struct Cluster {
  const std::string store = temp_path("store.sqlite");
  const std::string token_file = temp_path("api.token");
  std::unique_ptr<ApiaryProcess> process;
  int port = 0;

  Cluster() {
    remove_files();
    process = std::make_unique<ApiaryProcess>(std::vector<std::string>{
        "cluster", "--nodes", "2", "--simulated", "--port", "0", "--store", store, "--token-file", token_file});
    port = process->http_port();
    BOOST_REQUIRE_MESSAGE(!read_token(token_file).empty(), "the cluster wrote no token to " << token_file);
  }
  ~Cluster() {
    process->stop(SIGTERM);
    remove_files();
  }
  void remove_files() const {
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((store + suffix).c_str());
    std::remove(token_file.c_str());
  }
  std::string api() const { return "127.0.0.1:" + std::to_string(port); }
};

Cluster& cluster() {
  static Cluster c;
  return c;
}

ProcessResult run_ctl(std::vector<std::string> args) {
  args.insert(args.begin(), {APIARY_BINARY, "ctl"});
  auto r = run_process(args, "", kCtlDeadline);
  std::string line;
  for (const auto& a : args) line += a + " ";
  BOOST_TEST_MESSAGE(line << "-> " << r.exit_code << "\n--- stdout\n" << r.out << "--- stderr\n" << r.err);
  BOOST_TEST(!r.timed_out);
  return r;
}

// ctl against the cluster with its token.
ProcessResult ctl(std::vector<std::string> args) {
  auto& c = cluster();
  args.insert(args.begin(), {"--api", c.api(), "--token-file", c.token_file});
  return run_ctl(std::move(args));
}

template <class M>
M parse(const std::string& json) {
  M m;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  BOOST_REQUIRE_MESSAGE(google::protobuf::util::JsonStringToMessage(json, &m, options).ok(), "not JSON: " << json);
  return m;
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

v1::Instance show(const std::string& id) {
  auto r = ctl({"instance", "show", id, "--json"});
  BOOST_REQUIRE_EQUAL(r.exit_code, 0);
  return parse<v1::Instance>(r.out);
}

// Creates an instance with --wait --json; its id.
std::string create_active(const std::string& name, std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"instance", "create", name, "--wait", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  auto r = ctl(args);
  BOOST_REQUIRE_EQUAL(r.exit_code, 0);
  const auto i = parse<v1::Instance>(r.out);  // progress went to stderr
  BOOST_TEST(i.vm_state() == "active");
  BOOST_TEST(i.node().starts_with("node-"));
  return i.id();
}

// Environment variables of the user running the tests must not leak in.
struct CleanEnvironment {
  CleanEnvironment() {
    for (const char* v : {"APIARY_API", "APIARY_TOKEN", "APIARY_TOKEN_FILE"}) ::unsetenv(v);
  }
};
BOOST_TEST_GLOBAL_FIXTURE(CleanEnvironment);

}  // namespace

BOOST_AUTO_TEST_CASE(help_and_usage_errors_exit_2_before_any_request) {
  auto r = run_ctl({"--help"});
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(contains(r.out, "instance create NAME"));
  BOOST_TEST(run_ctl({"node", "--help"}).exit_code == 0);
  BOOST_TEST(contains(run_ctl({"instance", "help"}).out, "--follow"));

  // A token file that does not exist: usage errors must still be exit 2.
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"instance"},
      {"frobnicate", "list"},
      {"instance", "frobnicate"},
      {"instance", "show"},
      {"instance", "show", "a", "b"},
      {"instance", "list", "--bogus"},
      {"instance", "create"},
      {"instance", "create", "x", "--vcpus", "two"},
      {"instance", "create", "x", "--memory"},
      {"instance", "create", "x", "--spec", "/nonexistent/spec.json"},
      {"instance", "create", "x", "--guest", "demo", "--kernel", "/boot/vmlinuz"},
      {"instance", "create", "x", "--initrd", "/boot/initrd.img"},
      {"instance", "create", "x", "--kernel", ""},
      {"instance", "action", "i-1"},
      {"instance", "action", "i-1", "reboot", "--type", "MEDIUM"},
      {"instance", "action", "i-1", "resize", "--arg", "novalue"},
      {"instance", "list", "--timeout", "-1"},
      {"instance", "list", "--api", "no-port"},
      {"instance", "list", "--json=yes"},
  };
  for (auto args : bad) {
    args.insert(args.end(), {"--token-file", "/nonexistent/token"});
    r = run_ctl(args);
    BOOST_TEST(r.exit_code == kUsage, "exit " << r.exit_code << " for: " << r.err);
    BOOST_TEST(contains(r.err, "apiary ctl"));
  }
  r = run_ctl({"instance", "show", "--token-file", "/nonexistent/token"});
  BOOST_TEST(contains(r.err, "missing ID"));
}

BOOST_AUTO_TEST_CASE(no_token_or_no_server_exits_3_saying_which) {
  auto r = run_ctl({"--api", "127.0.0.1:1", "--token-file", "/nonexistent/token", "node", "list"});
  BOOST_TEST(r.exit_code == kUnreachable);
  BOOST_TEST(contains(r.err, "/nonexistent/token"));

  const std::string token = temp_path("any.token");
  write_private_file(token, "0123abcd\n");
  r = run_ctl({"--api", "127.0.0.1:1", "--token-file", token, "node", "list"});
  BOOST_TEST(r.exit_code == kUnreachable);
  BOOST_TEST(contains(r.err, "cannot connect to the API at 127.0.0.1:1"));

  // A token file others can read is refused, like the controller does.
  ::chmod(token.c_str(), 0644);
  r = run_ctl({"--api", "127.0.0.1:1", "--token-file", token, "node", "list"});
  BOOST_TEST(r.exit_code == kUnreachable);
  BOOST_TEST(contains(r.err, "chmod 600"));
  std::remove(token.c_str());
}

BOOST_AUTO_TEST_CASE(a_server_that_never_answers_is_a_timeout_124) {
  // A listening socket nobody accepts on: the connection is made (backlog),
  // the answer never comes.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  BOOST_REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  BOOST_REQUIRE(::listen(fd, 4) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string token = temp_path("silent.token");
  write_private_file(token, "0123abcd\n");
  const auto start = std::chrono::steady_clock::now();
  auto r = run_ctl({"instance", "list", "--api", "127.0.0.1:" + std::to_string(ntohs(addr.sin_port)), "--token-file",
                    token, "--timeout", "0.5"});
  BOOST_TEST(r.exit_code == kTimeout);
  BOOST_TEST(contains(r.err, "timed out after 0.5s"));
  BOOST_TEST((std::chrono::steady_clock::now() - start < 10s));
  ::close(fd);
  std::remove(token.c_str());
}

BOOST_AUTO_TEST_CASE(wrong_token_is_401) {
  const std::string token = temp_path("wrong.token");
  write_private_file(token, "deadbeef\n");
  auto r = run_ctl({"--api", cluster().api(), "--token-file", token, "instance", "list"});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "apiary ctl: 401"));
  // The console's websocket upgrade is refused the same way.
  r = run_ctl({"--api", cluster().api(), "--token-file", token, "instance", "console", "i-1", "--follow", "--timeout",
               "5"});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "apiary ctl: 401"));
  std::remove(token.c_str());
}

BOOST_AUTO_TEST_CASE(instance_lifecycle_tables_json_actions_log) {
  const std::string id = create_active("web-1", {"--vcpus", "1", "--memory", "32"});

  // list: a table, and JSON.
  auto r = ctl({"instance", "list"});
  BOOST_REQUIRE_EQUAL(r.exit_code, 0);
  BOOST_TEST(r.out.starts_with("ID"));
  BOOST_TEST(contains(r.out, "VM_STATE"));
  BOOST_TEST(contains(r.out, id));
  BOOST_TEST(contains(r.out, "web-1"));
  r = ctl({"--json", "instance", "list"});
  const auto list = parse<v1::InstanceList>(r.out);
  BOOST_TEST(std::any_of(list.instances().begin(), list.instances().end(),
                         [&](const v1::Instance& i) { return i.id() == id && i.name() == "web-1"; }));

  // show: details, and JSON.
  r = ctl({"instance", "show", id});
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(contains(r.out, "vm_state"));
  BOOST_TEST(contains(r.out, "web-1"));
  const auto shown = show(id);
  BOOST_TEST(shown.node().starts_with("node-"));
  if (shown.has_spec()) {  // the controller may not send Instance.spec back
    BOOST_TEST(contains(r.out, "32 MiB"));
    BOOST_TEST(shown.spec().board().memory_mib() == 32u);
  }

  // pause --wait, then unpause --wait.
  r = ctl({"instance", "action", id, "pause", "--wait"});
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(contains(r.out, "pause accepted for instance " + id));
  BOOST_TEST(contains(r.out, "pause success"));
  BOOST_TEST(show(id).vm_state() == "paused");
  r = ctl({"instance", "action", id, "unpause", "--wait", "--json"});
  BOOST_TEST(r.exit_code == 0);
  const auto record = parse<v1::ActionRecord>(r.out);
  BOOST_TEST(record.action() == "unpause");
  BOOST_TEST(record.result() == "success");
  BOOST_TEST(show(id).vm_state() == "active");

  // A refusal: 409 with Nova's message; a missing capability: 501.
  r = ctl({"instance", "action", id, "unpause"});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "apiary ctl: 409 Conflict: Cannot 'unpause' instance " + id +
                                 " while it is in vm_state active"));
  r = ctl({"instance", "action", id, "set_admin_password"});  // no guest agent
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "501"));
  r = ctl({"instance", "action", id, "reboot"});  // no --type: the server's 400
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "400"));
  r = ctl({"instance", "action", id, "reboot", "--type", "hard", "--wait"});
  BOOST_TEST(r.exit_code == 0);

  // The log: a table with the events, and JSON.
  r = ctl({"instance", "log", id});
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.starts_with("REQUEST_ID"));
  for (const char* action : {"create", "pause", "unpause", "reboot"}) BOOST_TEST(contains(r.out, action));
  BOOST_TEST(contains(r.out, "success"));
  const auto log = parse<v1::ActionLog>(ctl({"instance", "log", id, "--json"}).out);
  BOOST_TEST(std::any_of(log.actions().begin(), log.actions().end(), [](const v1::ActionRecord& a) {
    return a.action() == "pause" && a.result() == "success" && !a.events().empty();
  }));

  // Unknown instance: 404.
  r = ctl({"instance", "show", "i-does-not-exist"});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "404"));

  // delete --wait.
  r = ctl({"instance", "delete", id, "--wait"});
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(contains(r.out, "delete accepted"));
  BOOST_TEST(show(id).vm_state() == "deleted");
}

BOOST_AUTO_TEST_CASE(create_from_a_spec_file_with_overrides_and_an_idempotency_key) {
  // 2 MiB is below the minimum: the server's 422 proves the file was sent.
  const std::string spec = temp_path("spec.json");
  write_private_file(spec, R"({"name":"from-file","board":{"vcpus":1,"memory_mib":2}})");
  auto r = ctl({"instance", "create", "--spec", spec});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "422"));
  BOOST_TEST(contains(r.err, "spec.board.memory_mib"));
  // The flags override the file, NAME its name.
  const std::string id = create_active("spec-vm", {"--spec", spec, "--memory", "16", "--vcpus", "2"});
  const auto i = show(id);
  BOOST_TEST(i.name() == "spec-vm");
  if (i.has_spec()) {  // the controller may not send Instance.spec back
    BOOST_TEST(i.spec().board().vcpus() == 2u);
    BOOST_TEST(i.spec().board().memory_mib() == 16u);
    BOOST_TEST(i.spec().boot().embedded_guest() == "demo");
  } else {
    BOOST_TEST_MESSAGE("the answer has no Instance.spec; the overrides were checked through the 422s only");
  }
  std::remove(spec.c_str());
  r = ctl({"instance", "create", "too-big", "--vcpus", "999"});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "spec.board.vcpus"));

  // The same --request-id twice: one instance.
  const std::string key = "ctl-test-" + std::to_string(::getpid());
  auto first = ctl({"instance", "create", "idem", "--request-id", key, "--json"});
  auto second = ctl({"instance", "create", "idem", "--request-id", key, "--json"});
  BOOST_TEST(first.exit_code == 0);
  BOOST_TEST(second.exit_code == 0);
  BOOST_TEST(parse<v1::Instance>(first.out).id() == parse<v1::Instance>(second.out).id());

  // A spec the server refuses: 422 with the field path.
  r = ctl({"instance", "create", "Bad_Name"});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "422"));
  BOOST_TEST(contains(r.err, "name"));
}

BOOST_AUTO_TEST_CASE(console_history_and_follow) {
  const std::string id = create_active("console-vm");
  // The simulated backend runs no guest code, so the history may be empty;
  // the command must still succeed, as raw bytes and as JSON.
  auto r = ctl({"instance", "console", id});
  BOOST_TEST(r.exit_code == 0);
  r = ctl({"instance", "console", id, "--json"});
  BOOST_TEST(r.exit_code == 0);
  parse<v1::ConsoleHistory>(r.out);

  // --follow streams until --timeout, then ends cleanly.
  const auto start = std::chrono::steady_clock::now();
  r = ctl({"instance", "console", id, "--follow", "--timeout", "1"});
  BOOST_TEST(r.exit_code == 0);
  const auto took = std::chrono::steady_clock::now() - start;
  BOOST_TEST((took >= 900ms && took < 15s));

  r = ctl({"instance", "console", "i-does-not-exist", "--follow", "--timeout", "5"});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "404"));
}

BOOST_AUTO_TEST_CASE(networks_create_list_delete) {
  auto r = ctl({"network", "create", "net0", "--cidr", "10.0.0.0/24"});
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.starts_with("ID"));
  BOOST_TEST(contains(r.out, "net0"));
  BOOST_TEST(contains(r.out, "10.0.0.0/24"));
  r = ctl({"network", "list", "--json"});
  BOOST_TEST(r.exit_code == 0);
  std::string net;
  const auto networks = parse<v1::NetworkList>(r.out);
  for (const auto& n : networks.networks())
    if (n.name() == "net0") net = n.id();
  BOOST_REQUIRE(!net.empty());
  r = ctl({"network", "list"});
  BOOST_TEST(contains(r.out, net));
  r = ctl({"network", "delete", net});
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(contains(r.out, "deleted"));
  r = ctl({"network", "create", "net1", "--cidr", "not-a-cidr"});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "400"));
}

// Last: it takes a node out of the cluster.
BOOST_AUTO_TEST_CASE(nodes_list_and_stop) {
  auto r = ctl({"node", "list"});
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(r.out.starts_with("NAME"));
  BOOST_TEST(contains(r.out, "CHECKIN_AGE"));
  BOOST_TEST(contains(r.out, "node-1"));
  BOOST_TEST(contains(r.out, "node-2"));
  BOOST_TEST(contains(r.out, "CONNECTED"));
  r = ctl({"node", "list", "--json"});
  const auto listed = parse<v1::NodeList>(r.out);
  BOOST_TEST(listed.nodes_size() == 2);
  for (const auto& n : listed.nodes()) BOOST_TEST(n.connected(), n.name());

  r = ctl({"node", "stop", "node-2", "--wait"});
  BOOST_TEST(r.exit_code == 0);
  BOOST_TEST(contains(r.out, "state: stopped"));
  const auto nodes = parse<v1::NodeList>(ctl({"node", "list", "--json"}).out);
  for (const auto& n : nodes.nodes())
    if (n.name() == "node-2") BOOST_TEST(n.state() == "stopped");
  r = ctl({"node", "stop", "node-9"});
  BOOST_TEST(r.exit_code == kApiError);
  BOOST_TEST(contains(r.err, "404"));
}
