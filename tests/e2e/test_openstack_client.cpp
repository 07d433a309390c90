// Debian's unmodified OpenStack client (`openstack`, python3-openstackclient)
// drives Apiary through Nova's compute API (/compute/v2.1, api/nova_api.hpp)
// as an operator would script it: no Keystone, Apiary's token given to the
// client's admin_token plugin (docs/nova-api.md has the command line).
// Against a real `apiary cluster` (2 nodes, the simulated vCPU backend): the
// flavors and images on offer, server create -> ACTIVE, list, pause -> show
// PAUSED, a refused action printing Nova's conflict message, stop -> SHUTOFF,
// start, reboot, delete; and a wrong token refused.
#define BOOST_TEST_MODULE openstack_client
#include <unistd.h>

#include <boost/test/unit_test.hpp>

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <cstdio>
#include <memory>

#include "tests/support/e2e.hpp"
#include "tests/support/process.hpp"

using namespace apiary::test;
namespace pb = google::protobuf;

namespace {

constexpr const char* kOpenstack = "/usr/bin/openstack";
constexpr auto kDeadline = 90s;  // one client run: Python starts slowly

std::string temp_path(const std::string& what) {
  return "/tmp/apiary-osc-" + std::to_string(::getpid()) + "-" + what;
}

struct Cluster {
  const std::string store = temp_path("store.sqlite");
  const std::string token_file = temp_path("api.token");
  std::unique_ptr<ApiaryProcess> process;
  std::string token;
  int port = 0;

  Cluster() {
    remove_files();
    process = std::make_unique<ApiaryProcess>(std::vector<std::string>{
        "cluster", "--nodes", "2", "--simulated", "--port", "0", "--store", store, "--token-file", token_file});
    port = process->http_port();
    token = read_token(token_file);
    BOOST_REQUIRE_MESSAGE(!token.empty(), "the cluster wrote no token to " << token_file);
  }
  ~Cluster() {
    process->stop(SIGTERM);
    remove_files();
  }
  void remove_files() const {
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((store + suffix).c_str());
    std::remove(token_file.c_str());
  }
  std::string endpoint() const { return "http://127.0.0.1:" + std::to_string(port) + "/compute/v2.1"; }
};

Cluster& cluster() {
  static Cluster c;
  return c;
}

// `openstack ARGS...` with the endpoint and `token`, as docs/nova-api.md
// shows it.
ProcessResult osc_with(const std::string& token, std::vector<std::string> args) {
  auto& c = cluster();
  std::vector<std::string> argv{"/usr/bin/env", "-u", "OS_CLOUD", "OS_AUTH_TYPE=admin_token",
                                "OS_ENDPOINT=" + c.endpoint(), "OS_TOKEN=" + token, kOpenstack};
  argv.insert(argv.end(), args.begin(), args.end());
  auto r = run_process(argv, "", kDeadline);
  std::string line;
  for (const auto& a : args) line += a + " ";
  BOOST_TEST_MESSAGE("openstack " << line << "-> " << r.exit_code << "\n--- stdout\n"
                                  << r.out << "--- stderr\n"
                                  << r.err);
  BOOST_TEST(!r.timed_out);
  return r;
}

ProcessResult osc(std::vector<std::string> args) { return osc_with(cluster().token, std::move(args)); }

// The JSON the client prints with `-f json`.
pb::Value json_of(const ProcessResult& r) {
  // Wrapped in an object: the output may be a list, and a Struct is what
  // the JSON parser takes at the top.
  pb::Struct s;
  BOOST_REQUIRE_MESSAGE(pb::util::JsonStringToMessage("{\"v\": " + r.out + "}", &s).ok(), "not JSON: " << r.out);
  return s.fields().at("v");
}

std::string field(const pb::Value& obj, const std::string& key) {
  const auto& f = obj.struct_value().fields();
  auto it = f.find(key);
  if (it == f.end()) return {};
  if (it->second.kind_case() == pb::Value::kNumberValue)
    return std::to_string(static_cast<long long>(it->second.number_value()));
  return it->second.string_value();
}

std::string status_of(const std::string& id) {
  auto r = osc({"server", "show", id, "-f", "json"});
  BOOST_REQUIRE_EQUAL(r.exit_code, 0);
  return field(json_of(r), "status");
}

bool reaches(const std::string& id, const std::string& status) {
  return eventually([&] { return status_of(id) == status; }, 60s);
}

bool contains(const std::string& text, const std::string& what) { return text.find(what) != std::string::npos; }

}  // namespace

BOOST_AUTO_TEST_CASE(flavors_are_the_boards_and_images_the_embedded_guests) {
  auto f = osc({"flavor", "list", "-f", "json"});
  BOOST_REQUIRE_EQUAL(f.exit_code, 0);
  const auto flavors = json_of(f);
  BOOST_REQUIRE_EQUAL(flavors.list_value().values_size(), 5);
  bool small = false;
  for (const auto& v : flavors.list_value().values())
    small |= field(v, "Name") == "a1.small" && field(v, "RAM") == "128" && field(v, "VCPUs") == "1";
  BOOST_TEST(small, f.out);
  auto i = osc({"image", "show", "demo", "-f", "json"});
  // Not every client version asks the compute endpoint for images; `server
  // create --image demo` below is what must work.
  if (i.exit_code == 0) BOOST_TEST(field(json_of(i), "name") == "demo");
}

BOOST_AUTO_TEST_CASE(create_list_pause_show_refuse_stop_start_reboot_delete) {
  auto made = osc({"server", "create", "--flavor", "a1.small", "--image", "demo", "--wait", "-f", "json", "web-1"});
  BOOST_REQUIRE_EQUAL(made.exit_code, 0);
  const auto server = json_of(made);
  const std::string id = field(server, "id");
  BOOST_REQUIRE(!id.empty());
  BOOST_TEST(field(server, "status") == "ACTIVE");
  BOOST_TEST(field(server, "name") == "web-1");

  auto list = osc({"server", "list", "-f", "json"});
  BOOST_REQUIRE_EQUAL(list.exit_code, 0);
  bool listed = false;
  const auto servers = json_of(list);
  for (const auto& v : servers.list_value().values())
    listed |= field(v, "ID") == id && field(v, "Name") == "web-1" && field(v, "Status") == "ACTIVE";
  BOOST_TEST(listed, list.out);

  BOOST_REQUIRE_EQUAL(osc({"server", "pause", id}).exit_code, 0);
  BOOST_TEST(reaches(id, "PAUSED"));
  auto shown = osc({"server", "show", "web-1", "-f", "json"});  // by name, as users do
  BOOST_REQUIRE_EQUAL(shown.exit_code, 0);
  BOOST_TEST(field(json_of(shown), "status") == "PAUSED");
  BOOST_TEST(field(json_of(shown), "OS-EXT-STS:vm_state") == "paused");

  // Nova refuses a pause of a paused server; the client shows Nova's message.
  auto refused = osc({"server", "pause", id});
  BOOST_TEST(refused.exit_code == 1);
  BOOST_TEST(contains(refused.err + refused.out, "409"), refused.err);
  BOOST_TEST(contains(refused.err + refused.out, "Cannot 'pause' instance " + id + " while it is in vm_state paused"),
             refused.err);
  BOOST_TEST(status_of(id) == "PAUSED");  // nothing changed

  BOOST_REQUIRE_EQUAL(osc({"server", "unpause", id}).exit_code, 0);
  BOOST_TEST(reaches(id, "ACTIVE"));
  BOOST_REQUIRE_EQUAL(osc({"server", "stop", id}).exit_code, 0);
  BOOST_TEST(reaches(id, "SHUTOFF"));
  BOOST_REQUIRE_EQUAL(osc({"server", "start", id}).exit_code, 0);
  BOOST_TEST(reaches(id, "ACTIVE"));
  BOOST_REQUIRE_EQUAL(osc({"server", "reboot", "--hard", id}).exit_code, 0);
  BOOST_TEST(reaches(id, "ACTIVE"));

  BOOST_REQUIRE_EQUAL(osc({"server", "delete", "--wait", id}).exit_code, 0);
  auto gone = osc({"server", "show", id});
  BOOST_TEST(gone.exit_code == 1);
  auto after = osc({"server", "list", "-f", "json"});
  BOOST_TEST(!contains(after.out, id));
}

BOOST_AUTO_TEST_CASE(a_wrong_token_is_refused) {
  auto r = osc_with("not-the-token", {"server", "list"});
  BOOST_TEST(r.exit_code != 0);
  BOOST_TEST(contains(r.err + r.out, "401"), r.err);
}
